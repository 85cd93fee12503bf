"""For tests: ``python -m zoo ARGS`` and ``python -c CODE`` as real processes forked from an interpreter that has
imported torch once.

Every zoo process a test starts spends 3-4 CPU-seconds importing torch and torchvision before zoo runs a line;
on a 2-core machine that was half of ``make test``. A server imports them once and forks one child per call.
The child is a new process with its own pid, environment, working directory, stdin/stdout/stderr, file-size limit
and exit status, and it runs zoo's real ``__main__``. Nothing of zoo, timm or huggingface_hub is imported before the
fork (they read the environment when imported), so each child starts as ``python -m zoo`` would, with torch already
in ``sys.modules``; the children share the server's hash seed.

zoo's tests and ``zoo.testing``'s ``cli`` fixture use it. Tests about start-up itself (what gets imported, how
fast), terminals, signals and torchrun keep plain subprocesses. A call that sets PYTHONPATH or another PYTHON*
variable gets a new interpreter, as does every call under ``ZOO_TEST_FORK=0``: there :func:`run` is a plain
``subprocess.run``, to check that both give the same results.
"""

from __future__ import annotations

import atexit
import json
import locale
import os
import resource
import socket
import subprocess
import sys
import tempfile

_servers: dict[str, tuple[subprocess.Popen, str]] = {}  # interpreter -> the server it runs, and its socket
# Python reads PYTHONPATH and its other PYTHON* variables only as it starts: the server starts with these (the test
# process's own), and a call that sets others gets a new interpreter.
_STARTUP = {k: v for k, v in os.environ.items() if k.startswith("PYTHON")}


def run(args, *, env=None, cwd=None, timeout=None, input=None, capture_output=False, text=False, check=False,
        file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(args, ...)`` for ``[PYTHON, "-m", "zoo", ...]`` or ``[PYTHON, "-c", CODE]``; each PYTHON
    (this one, a virtual environment's) gets a server of its own."""
    args = [str(a) for a in args]
    if not (args[1:3] == ["-m", "zoo"] or args[1] == "-c"):
        raise ValueError(f"forkserver.run starts only `python -m zoo` or `python -c`, not {args[:3]}")
    env = dict(os.environ if env is None else env)
    if os.environ.get("ZOO_TEST_FORK") == "0" or {k: v for k, v in env.items() if k.startswith("PYTHON")} != _STARTUP:
        limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))) \
            if file_size_limit else None
        return subprocess.run(args, env=env, cwd=cwd, timeout=timeout, input=input, capture_output=capture_output,
                              text=text, check=check, preexec_fn=limit)
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        if input is not None:
            stdin.write(input.encode() if isinstance(input, str) else input)
            stdin.seek(0)
        fds = [stdin.fileno() if input is not None else 0, *((out.fileno(), err.fileno()) if capture_output else (1, 2))]
        request = {"argv": args[1:], "env": env, "cwd": str(cwd or os.getcwd()),
                   "file_size_limit": file_size_limit}
        code = _call(_address(args[0]), request, fds, timeout, args)
        stdout = stderr = None
        if capture_output:
            out.seek(0), err.seek(0)
            stdout, stderr = out.read(), err.read()
            if text:
                # as subprocess does in text mode
                encoding = locale.getpreferredencoding(False)
                stdout, stderr = (s.decode(encoding).replace("\r\n", "\n").replace("\r", "\n") for s in (stdout, stderr))
    done = subprocess.CompletedProcess(args, code, stdout, stderr)
    if check:
        done.check_returncode()
    return done


def _call(address: str, request: dict, fds: list[int], timeout: float | None, args: list[str]) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(address)
        payload = json.dumps(request).encode()
        socket.send_fds(conn, [len(payload).to_bytes(8, "big") + payload], fds)
        pid = int(_line(conn))
        conn.settimeout(timeout)
        try:
            status = _line(conn)
        except TimeoutError:
            os.kill(pid, 9)  # as subprocess.run does on a timeout
            conn.settimeout(None)
            _line(conn)
            raise subprocess.TimeoutExpired(args, timeout) from None
        return os.waitstatus_to_exitcode(int(status))


def _line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(64)
        if not chunk:
            raise RuntimeError("the fork server stopped")
        data += chunk
    return data


def _address(python: str) -> str:
    """The socket of ``python``'s server, started on first use (servers belong to one test process)."""
    server = _servers.get(python)
    if server is None or server[0].poll() is not None:
        path = os.path.join(tempfile.mkdtemp(prefix="zoo-fork-"), "s")
        # run as a file, not as zoo.forkserver: the server must not have imported zoo
        serve = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
        proc = subprocess.Popen([python, "-c", serve, __file__, path, str(os.getpid())],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                                env={**{k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}, **_STARTUP})
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the fork server did not start (exit {proc.wait()})")
        atexit.register(proc.kill)
        server = _servers[python] = (proc, path)
    return server[1]


# -- the server ----------------------------------------------------------------------------------------------------

def _serve(path: str, parent: int) -> None:
    import torch  # noqa: F401  what every child needs and no child should import again
    import torchvision  # noqa: F401  (timm imports it; it pulls in torch._dynamo)

    del sys.path[0]  # '' from -c: each child puts its own working directory there
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    listener.settimeout(2)
    print("ready", flush=True)
    while os.getppid() == parent:  # the test process is gone: stop
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        with conn:
            request, fds = _receive(conn)
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                _child(request, fds)
            for fd in fds:
                os.close(fd)
            conn.sendall(f"{pid}\n".encode())
            _, status = os.waitpid(pid, 0)
            conn.sendall(f"{status}\n".encode())


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    size = int.from_bytes(data[:8], "big")
    data = data[8:]
    while len(data) < size:
        data += conn.recv(size - len(data))
    return json.loads(data), fds


def _child(request: dict, fds: list[int]) -> None:
    """Become ``python ARGV`` in the caller's environment, directory and files; never returns."""
    import atexit as exits
    import runpy
    import threading
    import traceback
    import types

    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        for fd, name in enumerate(("stdin", "stdout", "stderr")):
            stream = getattr(sys, name)
            # as Python sets up its standard streams: line-buffered on a terminal, stderr always
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", encoding=stream.encoding, errors=stream.errors,
                                    closefd=False, buffering=1 if fd == 2 or (fd == 1 and os.isatty(1)) else -1))
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        if request["file_size_limit"]:
            limit = request["file_size_limit"]
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        argv = request["argv"]
        if argv[0] == "-m":
            sys.argv = ["-m", *argv[2:]]
            sys.path.insert(0, os.getcwd())
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *argv[2:]]
            sys.path.insert(0, "")
            main = types.ModuleType("__main__")
            sys.modules["__main__"] = main
            exec(compile(argv[1], "<string>", "exec"), main.__dict__)
        code = 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        try:  # what the interpreter does on its way out
            threading._shutdown()
            exits._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


if __name__ == "__main__":
    _serve(sys.argv[-2], int(sys.argv[-1]))  # after the file: the socket and the test process
