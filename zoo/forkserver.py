"""For tests: ``python -m zoo ARGS`` and ``python -c CODE`` as real processes forked from an interpreter that has
imported torch once.

Every zoo process a test starts spends 3-4 CPU-seconds importing torch and torchvision before zoo runs a line;
on a 2-core machine that was half of ``make test``. A server imports them once and forks one child per call.
The child is a new process with its own pid, environment, working directory, stdin/stdout/stderr, file-size limit
and exit status, and it runs zoo's real ``__main__``. Nothing of zoo, timm or huggingface_hub is imported before the
fork (they read the environment when imported), so each child starts as ``python -m zoo`` would, with torch (and
matplotlib and jinja2, which a finished run needs) already in ``sys.modules``; the children share the server's hash
seed.

:func:`run` stands for ``subprocess.run`` and :func:`start` for ``subprocess.Popen``. zoo's tests and
``zoo.testing``'s ``cli`` fixture use them (on a pseudo-terminal too); tests about start-up itself (what gets
imported, how fast) are plain processes. A forked child's torchrun forks its workers too: the child gets
torchrun's ``PYTHON_EXEC``, a stand-in (:func:`worker`) that asks the server for the worker, passes torchrun's
signals on and exits as the worker does (torchrun started 22 workers in test_distributed.py, 4-5 CPU-seconds each).
A call that sets PYTHONPATH or another PYTHON* variable gets a new interpreter, as does every call under
``ZOO_TEST_FORK=0`` (to check that both give the same results); a torchrun started outside the server starts plain
workers.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import locale
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile

_servers: dict[str, tuple[subprocess.Popen, str]] = {}  # interpreter -> the server it runs, and its socket


def _python_vars(env) -> dict:
    return {k: v for k, v in env.items() if k.startswith("PYTHON") and k != "PYTHON_EXEC"}  # (that one is torchrun's)


# Python reads PYTHONPATH and its other PYTHON* variables only as it starts: the server starts with these (the test
# process's own), and a call that sets others gets a new interpreter.
_STARTUP = _python_vars(os.environ)


def run(args, *, env=None, cwd=None, timeout=None, input=None, capture_output=False, text=False, check=False,
        file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(args, ...)`` for ``[PYTHON, "-m", "zoo", ...]`` or ``[PYTHON, "-c", CODE]``; each PYTHON
    (this one, a virtual environment's) gets a server of its own."""
    args = [str(a) for a in args]
    env = dict(os.environ if env is None else env)
    if _plain(args, env):
        return subprocess.run(args, env=env, cwd=cwd, timeout=timeout, input=input, capture_output=capture_output,
                              text=text, check=check, preexec_fn=lambda: _limit_and_signals(file_size_limit, False))
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        if input is not None:
            stdin.write(input.encode() if isinstance(input, str) else input)
            stdin.seek(0)
        proc = _fork(args, env=env, cwd=cwd, stdin=stdin if input is not None else None,
                     stdout=out if capture_output else None, stderr=err if capture_output else None,
                     file_size_limit=file_size_limit)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # as subprocess.run does
            proc.wait()
            raise
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


def start(args, *, env=None, cwd=None, stdin=None, stdout=None, stderr=None, start_new_session=False,
          default_signals=False, file_size_limit: int | None = None) -> Process:
    """``subprocess.Popen(args, ...)`` for the same commands: stdin, stdout and stderr are None (this process's),
    ``subprocess.DEVNULL`` or an open file; ``default_signals`` resets SIGINT and SIGHUP to their defaults, as a
    shell with job control does."""
    args = [str(a) for a in args]
    env = dict(os.environ if env is None else env)
    if _plain(args, env):
        return subprocess.Popen(args, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
                                start_new_session=start_new_session,
                                preexec_fn=lambda: _limit_and_signals(file_size_limit, default_signals))
    return _fork(args, env=env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr, new_session=start_new_session,
                 default_signals=default_signals, file_size_limit=file_size_limit)


def _fork(args: list[str], *, env: dict, cwd, stdin, stdout, stderr, new_session=False, default_signals=False,
          file_size_limit: int | None = None) -> Process:
    """Ask ``args[0]``'s server for the child (the checks of :func:`_plain` done)."""
    address = _address(args[0])
    env = {"PYTHON_EXEC": _stand_in(address), **env}  # torchrun, started by the child, forks its workers here too
    with open(os.devnull, "r+b") as null:
        fds = [null.fileno() if f == subprocess.DEVNULL else default if f is None else f.fileno()
               for f, default in ((stdin, 0), (stdout, 1), (stderr, 2))]
        request = {"argv": args[1:], "env": env, "cwd": str(cwd or os.getcwd()), "file_size_limit": file_size_limit,
                   "new_session": new_session, "default_signals": default_signals}
        conn = _send(address, request, fds)
        return Process(args, conn, int(_line(conn)))


def _send(address: str, request: dict, fds: list[int]) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(address)
    payload = json.dumps(request).encode()
    socket.send_fds(conn, [len(payload).to_bytes(8, "big") + payload], fds)
    return conn


def stand_in(python: str) -> str:
    """An executable that runs as ``python`` does, ``-m zoo`` and ``-c`` forked from ``python``'s server (see
    :func:`worker`): torchrun's ``PYTHON_EXEC`` in a forked child, and what a test's ``zoo`` command can run."""
    return _stand_in(_address(python))


def _stand_in(address: str) -> str:
    return os.path.join(os.path.dirname(address), "python")


def worker(address: str, python: str, startup: dict) -> None:
    """torchrun's ``PYTHON_EXEC`` in a forked zoo: its workers (``python -u -m zoo ARGS``) as children of the server
    at ``address``, as ``python -c`` is too.

    This process stands for the worker torchrun started: the signals torchrun sends it go on to the worker, the
    worker dies when it does (SIGKILL too), and it exits as the worker did. Other commands, or other PYTHON*
    variables, get ``python`` itself."""
    argv = sys.argv[1:]
    unbuffered = argv[:1] == ["-u"]
    command = argv[1:] if unbuffered else argv
    env = dict(os.environ)
    if (not (command[:2] == ["-m", "zoo"] or command[:1] == ["-c"]) or _python_vars(env) != startup
            or env.get("ZOO_TEST_FORK") == "0"):
        os.execv(python, [python, *argv])
    passed_on = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2}
    signal.pthread_sigmask(signal.SIG_BLOCK, passed_on)  # held until the worker's pid is known
    request = {"argv": command, "env": env, "cwd": os.getcwd(), "file_size_limit": None, "new_session": True,
               "default_signals": False, "unbuffered": unbuffered, "watch": os.getpid()}
    conn = _send(address, request, [0, 1, 2])
    child = int(_line(conn))

    def forward(sig, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, sig)

    for sig in passed_on:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, passed_on)
    code = os.waitstatus_to_exitcode(int(_line(conn)))
    if code < 0:  # killed by a signal: so is this process
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


class Process:
    """A forked child, as ``subprocess.Popen`` shows one: ``pid``, ``returncode``, ``poll``, ``wait``, signals."""

    def __init__(self, args: list[str], conn: socket.socket, pid: int):
        self.args, self.pid, self.returncode, self._conn = args, pid, None, conn

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._conn], [], [], 0)[0]:
            self.wait()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._conn], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = os.waitstatus_to_exitcode(int(_line(self._conn)))  # the server reaped it
            self._conn.close()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def _limit_and_signals(file_size_limit: int | None, default_signals: bool) -> None:
    """In the child, before it runs: the file-size limit (Python ignores SIGXFSZ, so writes past it fail with EFBIG),
    and SIGINT and SIGHUP back to their defaults where asked: as a new interpreter has them, SIGINT raising
    KeyboardInterrupt (an exec'd one gets the default action, and Python sets that handler as it starts)."""
    if file_size_limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
    if default_signals:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _plain(args: list, env: dict) -> bool:
    """Whether ``args`` must start a new interpreter (PYTHON* variables are read only as Python starts)."""
    if not (args[1:3] == ["-m", "zoo"] or args[1] == "-c"):
        raise ValueError(f"the fork server starts only `python -m zoo` or `python -c`, not {args[:3]}")
    return os.environ.get("ZOO_TEST_FORK") == "0" or _python_vars(env) != _STARTUP


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
        # The stand-in: a Python without site (a few milliseconds) that runs worker.
        with open(_stand_in(path), "w", encoding="utf-8") as f:
            f.write(f"#!{python} -IS\nimport runpy\nrunpy.run_path({__file__!r})['worker']({path!r}, {python!r}, {_STARTUP!r})\n")
        os.chmod(_stand_in(path), 0o755)
        atexit.register(proc.kill)
        server = _servers[python] = (proc, path)
    return server[1]


# -- the server ----------------------------------------------------------------------------------------------------

def _serve(path: str, parent: int) -> None:
    # torch: what every child needs and no child should import again; torchvision: timm imports it (it pulls in
    # torch._dynamo). jinja2 and matplotlib: what a finished run writes its card and plots with (0.2-0.5 CPU-s a
    # child); neither reads zoo's or the Hub's settings, and matplotlib takes its own (MPL*, a matplotlibrc) from the
    # server's environment, where tests set none.
    import jinja2  # noqa: F401
    import matplotlib.backends.backend_agg
    import matplotlib.figure  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    del sys.path[0]  # '' from -c: each child puts its own working directory there
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    print("ready", flush=True)
    running: dict[int, socket.socket] = {}  # child -> the caller waiting for its exit status
    while os.getppid() == parent:  # the test process is gone: stop
        if select.select([listener], [], [], 0.05)[0]:
            conn, _ = listener.accept()
            request, fds = _receive(conn)
            pid = os.fork()
            if pid == 0:
                listener.close()
                for other in [conn, *running.values()]:
                    other.close()
                _child(request, fds)
            for fd in fds:
                os.close(fd)
            conn.sendall(f"{pid}\n".encode())
            running[pid] = conn
        for pid in list(running):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                conn = running.pop(pid)
                try:
                    conn.sendall(f"{status}\n".encode())
                except OSError:  # the caller is gone
                    pass
                conn.close()


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    size = int.from_bytes(data[:8], "big")
    data = data[8:]
    while len(data) < size:
        data += conn.recv(size - len(data))
    return json.loads(data), fds


def _child(request: dict, fds: list[int]) -> None:
    """Become ``python ARGV`` in the caller's environment, directory and files; never returns."""
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
            if fd and request.get("unbuffered"):  # as -u sets them up: every write goes straight to the file
                setattr(sys, name, io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding=stream.encoding,
                                                    errors=stream.errors, write_through=True))
                continue
            # as Python sets up its standard streams: line-buffered on a terminal, stderr always
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", encoding=stream.encoding, errors=stream.errors,
                                    closefd=False, buffering=1 if fd == 2 or (fd == 1 and os.isatty(1)) else -1))
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        if request["new_session"]:
            os.setsid()
        if request.get("watch"):  # a stand-in's pid (see worker): when it goes, this child goes too
            threading.Thread(target=_die_with, args=(request["watch"],), daemon=True).start()
        _limit_and_signals(request["file_size_limit"], request["default_signals"])
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
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:
        traceback.print_exc()
    finally:
        try:  # what the interpreter does on its way out
            threading._shutdown()
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            if code == -signal.SIGINT:  # as Python ends after an uncaught KeyboardInterrupt: killed by SIGINT
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
            os._exit(code)


def _die_with(pid: int) -> None:
    try:
        select.select([os.pidfd_open(pid)], [], [])
    except ProcessLookupError:  # already gone
        pass
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    _serve(sys.argv[-2], int(sys.argv[-1]))  # after the file: the socket and the test process
