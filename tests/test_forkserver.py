"""zoo.forkserver: the forked children behave as new ``python`` processes would, as far as the tests rely on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from zoo import forkserver

PY = sys.executable


@pytest.fixture(params=["forked", "plain"])
def mode(request, monkeypatch):
    """Every check holds for the forked children and for plain processes (ZOO_TEST_FORK=0) alike."""
    if request.param == "plain":
        monkeypatch.setenv("ZOO_TEST_FORK", "0")
    return request.param


def test_a_child_gets_its_arguments_environment_directory_input_and_exit_code(tmp_path, mode):
    code = "import os, sys; print(sys.argv[1:], os.environ['ZOO_X'], os.getcwd(), sys.stdin.read()); sys.exit(3)"
    done = forkserver.run([PY, "-c", code, "a b"], env={**os.environ, "ZOO_X": "ü"}, cwd=tmp_path, input="in",
                          capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (3, f"['a b'] ü {tmp_path} in\n", "")


def test_zoo_runs_as_python_m_zoo(tmp_path, mode):
    done = forkserver.run([PY, "-m", "zoo", "info", "nope-nope"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("Error: unknown backbone 'nope-nope'"), done.stderr
    done = forkserver.run([PY, "-c", "import sys; print('zoo' in sys.modules, 'timm' in sys.modules)"], capture_output=True, text=True)
    assert done.stdout == "False False\n"  # nothing of zoo or timm comes from the server


def test_an_uncaught_exception_is_a_traceback_and_exit_1(mode):
    done = forkserver.run([PY, "-c", "raise KeyError('k')"], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.startswith("Traceback") and done.stderr.endswith("KeyError: 'k'\n")


def test_a_file_size_limit_makes_writes_fail(tmp_path, mode):
    code = f"open({str(tmp_path / 'f')!r}, 'wb').write(b'x' * 5000); open({str(tmp_path / 'g')!r}, 'wb').write(b'y')"
    forkserver.run([PY, "-c", code], file_size_limit=1000, check=True)
    assert (tmp_path / "f").stat().st_size == 1000 and (tmp_path / "g").stat().st_size == 1
    grow = f"import os; os.write(os.open({str(tmp_path / 'f')!r}, os.O_WRONLY | os.O_APPEND), b'z')"
    done = forkserver.run([PY, "-c", grow], file_size_limit=1000, capture_output=True, text=True)
    assert done.returncode == 1 and "File too large" in done.stderr


def test_a_timeout_kills_the_child(mode):
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        forkserver.run([PY, "-c", "import time; time.sleep(60)"], timeout=1)
    assert time.monotonic() - started < 30


def test_started_children_run_at_once_and_take_signals_in_their_own_session(tmp_path, mode):
    code = "import os, signal, time; print(os.getpgid(0) == os.getpid(), flush=True); time.sleep(60)"
    logs = [open(tmp_path / f"{i}.log", "w+") for i in range(2)]
    errs = [open(tmp_path / f"{i}.err", "w+") for i in range(2)]
    procs = [forkserver.start([PY, "-c", code], stdout=log, stderr=err, start_new_session=True,
                              default_signals=True) for log, err in zip(logs, errs, strict=True)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"{i}.log").read_text() for i in range(2)):  # both run, neither waits for the other
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert all((tmp_path / f"{i}.log").read_text() == "True\n" for i in range(2))
    assert procs[0].poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        procs[0].wait(timeout=0.1)
    procs[0].send_signal(signal.SIGINT)  # KeyboardInterrupt, then killed by the signal, as Python ends after a shell's Ctrl-C
    procs[1].kill()
    assert [p.wait(timeout=30) for p in procs] == [-signal.SIGINT, -signal.SIGKILL]
    assert (tmp_path / "0.err").read_text().rstrip().endswith("KeyboardInterrupt")
    for f in (*logs, *errs):
        f.close()


def test_pythonpath_of_a_call_is_honoured(tmp_path, mode):
    (tmp_path / "only_here.py").write_text("WHERE = 'here'\n")
    done = forkserver.run([PY, "-c", "import only_here; print(only_here.WHERE)"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.stdout == "here\n", done.stderr


# -- PYTHON_EXEC: the workers that torchrun, started by a forked child, starts ------------------------------------

@pytest.fixture
def worker_exec() -> str:
    """This python's stand-in: the ``PYTHON_EXEC`` a forked child gets (torchrun runs ``PYTHON_EXEC -u -m zoo ...``
    for each worker)."""
    path = forkserver.stand_in(PY)
    printed = forkserver.run([PY, "-c", "import os; print(os.environ['PYTHON_EXEC'])"], capture_output=True, text=True, check=True)
    assert printed.stdout == f"{path}\n"
    return path


def test_a_worker_is_forked_and_exits_as_it_did(worker_exec, tmp_path):
    code = "import sys; print('torch' in sys.modules, sys.argv[1:]); sys.exit(3)"
    done = subprocess.run([worker_exec, "-u", "-c", code, "a b"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stdout) == (3, "True ['a b']\n"), done.stderr  # torch came with the fork
    done = subprocess.run([worker_exec, "-u", "-m", "zoo", "info", "nope-nope"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("Error: unknown backbone 'nope-nope'"), done.stderr
    # other PYTHON* variables than the server started with, or ZOO_TEST_FORK=0: a new interpreter, as for forkserver.run
    for env in ({"PYTHONPATH": str(tmp_path)}, {"ZOO_TEST_FORK": "0"}):
        done = subprocess.run([worker_exec, "-u", "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ, **env})
        assert (done.returncode, done.stdout) == (3, "False []\n"), done.stderr


def test_a_worker_writes_unbuffered_gets_the_signals_sent_to_its_stand_in_and_dies_with_it(worker_exec, tmp_path):
    code = ("import os, signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))\n"
            "print(os.getpid(), end='')\n"  # no newline, no flush: -u writes it at once
            "time.sleep(60)\n")
    for sig, code_after in ((signal.SIGTERM, 7), (signal.SIGKILL, -signal.SIGKILL)):
        proc = subprocess.Popen([worker_exec, "-u", "-c", code], stdout=subprocess.PIPE, start_new_session=True)
        try:
            pid = int(os.read(proc.stdout.fileno(), 64))
            assert pid != proc.pid
            proc.send_signal(sig)
            assert proc.wait(timeout=30) == code_after
            deadline = time.monotonic() + 30
            while os.path.exists(f"/proc/{pid}"):  # the worker too (the server reaps it)
                assert time.monotonic() < deadline, f"the worker outlived the process torchrun knows ({sig!r})"
                time.sleep(0.05)
        finally:
            proc.kill()
            proc.stdout.close()
