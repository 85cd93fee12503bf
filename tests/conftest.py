"""Every test runs with no installed plugins, a private config/cache, and fresh plugin state."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

# Set before anything imports huggingface_hub or zoo: tests never see the developer's setup.
os.environ["ZOO_LOAD_PLUGINS"] = ""
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# `make test` runs one pytest per core (xdist): each, and every process it starts, gets its share of the cores, as
# torchrun gives its workers. With torch's default (a thread per core in every process) two processes' OpenMP
# threads spin against each other: on 2 cores the suite used 906 CPU-seconds instead of 697.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path_factory.getbasetemp() / "zoo-cache"))
    monkeypatch.setenv("ZOO_LOAD_PLUGINS", "")
    monkeypatch.delenv("ZOO_REGISTRY", raising=False)
    monkeypatch.delenv("ZOO_DEBUG", raising=False)
    monkeypatch.delenv("ZOO_TRACE_HOOKS", raising=False)
    _reset()
    yield
    _reset()


def _reset():
    from zoo import plugins, registry
    from zoo.cli import ZooGroup

    plugins.reset()
    registry.reset()
    ZooGroup._plugins_loaded = False


@pytest.fixture(autouse=True)
def _no_leftover_faults(request):
    """Faults injected into a module's Hub test server never leak into the next test."""
    yield
    if "server" in request.fixturenames:
        request.getfixturevalue("server").clear_faults()


@pytest.fixture
def run(tmp_path):
    """Invoke the CLI in-process; returns click's Result (stdout and stderr separate)."""
    from click.testing import CliRunner

    from zoo.cli import cli

    def invoke(*args, **kwargs):
        return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke


def venv_python(python, *args: str, cwd, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """A throwaway environment's ``python ARGS``, output captured; ``-m zoo``, ``-c CODE`` and ``-m pytest`` fork
    from its server (torch imported once), anything else (pip) is a new interpreter."""
    from zoo import forkserver

    if args[:2] == ("-m", "pytest"):
        args = ("-c", "import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))", *args[2:])
    start = forkserver.run if args[0] == "-c" or args[:2] == ("-m", "zoo") else subprocess.run
    return start([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def make_image_folder(root: Path, classes=("cat", "dog"), per_class=6, size=(20, 16), mode="RGB") -> Path:
    """Real PNG files on disk: each class a distinct colour, with some noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 60, size=(size[1], size[0], 3), dtype=np.uint8)
            arr[..., c % 3] += 180
            Image.fromarray(arr).convert(mode).save(root / name / f"{i}.png")
    return root


def alias_bomb(levels: int = 9) -> str:
    """A registry entry whose tags are 9**levels strings, written in about 600 bytes ("billion laughs")."""
    lines = ["backbones:", "  x:", "    source: timm:resnet18", '    tags: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines += [f"  x{i}:", "    source: timm:resnet18", f"    tags: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]"]
    return "\n".join(lines) + "\n"


def make_evil_package(root: Path, marker: Path, name: str = "zoo-cosine") -> Path:
    """A real source package whose in-tree build backend creates ``marker`` as soon as pip asks it anything:
    if the file appears, something built the package (and could have run any code)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        f'[build-system]\nrequires = []\nbuild-backend = "evil_backend"\nbackend-path = ["."]\n\n'
        f'[project]\nname = "{name}"\nversion = "0.1.0"\n', encoding="utf-8")
    (root / "evil_backend.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n\n"
        "def get_requires_for_build_wheel(config_settings=None):\n    return []\n\n"
        "def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n"
        "    raise RuntimeError('evil_backend builds nothing')\n", encoding="utf-8")
    return root


def write_plugin_record(model: Path, record: dict) -> Path:
    """Give a model folder's config.json one more plugin record (what --from-model reads); a bare folder gets a config.json."""
    import json

    path = model / "config.json"
    model.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    cfg.setdefault("zoo", {}).setdefault("plugins", []).append(
        {"entry_point": "cosine", "builtin": False, "provides": ["cosine"], "needed_to_load": True, **record})
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return path


FAST = dict(backbone="test_resnet", pretrained=False, img_size=32, batch_size=16, epochs=2, seed=0, aug="none")


# The longest files, longest first (seconds each took in `make test` on 2 cores, 2026-12-02): 116, 111, 105, 107, 80, 43.
LONGEST = ("test_distributed.py", "test_first_party_plugins.py", "test_plugins_e2e.py", "test_finetune.py", "test_faults.py",
           "test_hub.py")


def pytest_collection_modifyitems(config, items):
    """The longest files first, then the other end-to-end files (marked ``slow`` as a whole), then the files with the
    most ``slow`` tests: ``make test`` hands whole files to its workers in this order, so that no long file starts
    last (test_finetune, started last of the long ones, left one worker idle for 33 s). Tests marked ``cuda`` run
    only where a CUDA device is present."""
    from collections import Counter

    import torch

    def file(item):
        return item.nodeid.split("::")[0]

    def longest(item):
        name = file(item).rpartition("/")[2]
        return LONGEST.index(name) if name in LONGEST else len(LONGEST)

    slow = Counter(file(item) for item in items if "slow" in item.keywords)
    whole = {file(item) for item in items if any(m.name == "slow" for m in item.getparent(pytest.Module).own_markers)}
    items.sort(key=lambda item: (longest(item), file(item) not in whole, -slow[file(item)]))  # stable: each file keeps its order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# -- signals to a running zoo (test_faults, test_distributed) ---------------------------------------------------------
def forked_workers(pid: int) -> list[int]:
    """zoo's forked worker processes (not, say, the ldconfig that importing torch runs)."""
    found = []
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        for task in Path(f"/proc/{pid}/task").glob("*"):
            found += [int(p) for p in (task / "children").read_text().split()]
        return [p for p in found if Path(f"/proc/{p}/cmdline").read_bytes() == command]
    except OSError:  # a process ended as we looked
        return []


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def interrupt(cmd: list[str], log: Path, *, when, sig: signal.Signals, group: bool = True, workers: bool = False,
              env: dict | None = None) -> tuple[int, str, float, list[int]]:
    """Start zoo in its own process group; once ``when`` is on stderr, or ``when()`` is true (and worker processes
    run), send ``sig`` to the group, or to zoo only.

    Returns the exit code, stderr, the seconds from the signal to the exit, and the workers seen."""
    from zoo import forkserver

    with open(log, "w") as err:
        # default_signals: zoo as a shell with job control starts it. A runner started in the background of a
        # shell without job control (`cmd &` in a script) ignores SIGINT, one started by nohup SIGHUP, and zoo
        # rightly keeps an ignored signal ignored.
        proc = forkserver.start(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                env={**os.environ, **(env or {})}, default_signals=True)
    try:
        deadline = time.monotonic() + 180
        while not ((when() if callable(when) else when in log.read_text()) and (forked_workers(proc.pid) or not workers)):
            assert proc.poll() is None, f"zoo ended before '{when}':\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no '{when}' after 180 s:\n{log.read_text()}"
            time.sleep(0.02)
        seen = forked_workers(proc.pid)
        (os.killpg if group else os.kill)(proc.pid, sig)
        sent = time.monotonic()
        proc.wait(timeout=60)
        return proc.returncode, log.read_text(), time.monotonic() - sent, seen
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
