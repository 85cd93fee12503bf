"""Two real plugins that register the same head name: which one zoo uses, and for a saved model, whose code runs.

tests/plugins/zoo-clash-a and zoo-clash-b both register the head ``twin`` with other behaviour
(zoo-clash-b with pluggy's ``trylast``). They are installed for real with
``pip install --no-deps --target DIR``, and each zoo command runs in this process (click's runner)
with DIR first on ``sys.path`` and fresh plugin state, as a new process would start; no process
boundary is under test, and starting torch again for each command cost most of this module's time.
``ZOO_LOAD_PLUGINS`` chooses which of them a command sees. Each head's factory appends its
plugin's letter to the file named by ZOO_CLASH_LOG, so a test sees whose code ran.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import make_image_folder

from zoo.rundir import holds_run

pytestmark = pytest.mark.slow

PLUGINS = Path(__file__).resolve().parent / "plugins"
BOTH = "clash-a,clash-b"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    src, target = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("site")
    for name in ("zoo-clash-a", "zoo-clash-b"):  # copies: a setuptools build writes into the source folder
        shutil.copytree(PLUGINS / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--target", str(target), str(src / "zoo-clash-a"), str(src / "zoo-clash-b")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("clash")
    make_image_folder(work / "imgs", classes=("a", "b"), per_class=4, size=(32, 32))
    return work


def zoo(site: Path | str, work: Path, *args, plugins: str = BOTH) -> tuple[SimpleNamespace, list[str]]:
    """Run zoo with the plugins in ``site`` (those ``plugins`` names); returns its exit code and output, and whose head
    code ran."""
    from click.testing import CliRunner
    from conftest import _reset

    from zoo.cli import cli

    log = work / "heads.log"
    log.unlink(missing_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        for folder in reversed(str(site).split(os.pathsep)):
            mp.syspath_prepend(folder)
        mp.setenv("ZOO_LOAD_PLUGINS", plugins)
        mp.setenv("ZOO_CLASH_LOG", str(log))
        mp.chdir(work)
        _reset()  # plugins, registry and commands found afresh, as by a new process
        try:
            result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        finally:
            _reset()
    proc = SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)
    return proc, log.read_text().split() if log.exists() else []


def error(proc: SimpleNamespace) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def run_b(site, work) -> Path:
    """A run trained with zoo-clash-b's twin (only zoo-clash-b loaded)."""
    out = work / "run-b"
    proc, ran = zoo(site, work, "finetune", "test_resnet", "--data", work / "imgs", "--head", "twin", "--no-pretrained",
                    "--img-size", "32", "--epochs", "1", "--batch-size", "4", "--aug", "none", "--quiet", "--out", out,
                    plugins="clash-b")
    assert proc.returncode == 0, proc.stderr
    assert set(ran) == {"b"}
    needs = [p for p in json.loads((out / "config.json").read_text())["zoo"]["plugins"] if p["provides"] == ["twin"]]
    assert [(p["name"], p["entry_point"]) for p in needs] == [("zoo-clash-b", "clash-b")]
    return out


def test_registration_clash_first_wins_whatever_pluggy_order(site, work):
    proc, ran = zoo(site, work, "list", "heads", "--json")
    assert proc.returncode == 0, proc.stderr
    heads = {h["name"]: h for h in json.loads(proc.stdout)}
    assert heads["twin"]["provider"] == "clash-a"  # by entry-point name, though zoo-clash-b asked pluggy for trylast
    assert "zoo-clash-a's twin" in heads["twin"]["description"]
    warned = [line for line in proc.stderr.splitlines() if "'twin'" in line]
    assert len(warned) == 1 and "'clash-a'" in warned[0] and "'clash-b'" in warned[0], proc.stderr
    assert ran == []  # listing builds nothing


def test_a_new_run_uses_the_winning_head(site, work):
    proc, ran = zoo(site, work, "finetune", "test_resnet", "--data", work / "imgs", "--head", "twin", "--no-pretrained",
                    "--img-size", "32", "--epochs", "1", "--batch-size", "4", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert ran == ["a"]


def test_loading_builds_the_head_of_the_recorded_provider(site, work, run_b):
    image = work / "imgs" / "a" / "0.png"
    alone, ran_alone = zoo(site, work, "predict", run_b, image, "--json", plugins="clash-b")
    assert alone.returncode == 0 and ran_alone == ["b"], alone.stderr
    both, ran = zoo(site, work, "predict", run_b, image, "--json")
    assert both.returncode == 0, both.stderr
    assert ran == ["b"]  # zoo-clash-a's twin wins the name, but its code never runs for this model
    assert json.loads(both.stdout) == json.loads(alone.stdout)
    evaluated, ran = zoo(site, work, "evaluate", run_b, "--data", work / "imgs", "--json")
    assert evaluated.returncode == 0 and ran == ["b"], evaluated.stderr
    continued, ran = zoo(site, work, "finetune", f"local-dir:{run_b}", "--data", work / "imgs", "--head", "linear",
                         "--img-size", "32", "--epochs", "1", "--batch-size", "4", "--aug", "none", "--quiet",
                         "--out", work / "continued")
    assert continued.returncode == 0 and ran == ["b"], continued.stderr


def test_another_plugins_head_of_the_same_name_is_refused(site, work, run_b):
    proc, ran = zoo(site, work, "predict", run_b, work / "imgs" / "a" / "0.png", plugins="clash-a")
    assert error(proc) == (f"Error: {run_b} was trained with the head 'twin' of plugin 'zoo-clash-b', but here 'zoo-clash-a' "
                           f"provides it: run: zoo plugins install zoo-clash-b==0.1.0, or uninstall 'zoo-clash-a'")
    assert ran == []
    proc, ran = zoo(site, work, "finetune", f"local-dir:{run_b}", "--data", work / "imgs", "--img-size", "32", "--epochs", "1",
                    "--out", work / "never", plugins="clash-a")
    assert "'zoo-clash-b'" in error(proc) and "'zoo-clash-a'" in error(proc) and ran == []
    assert not holds_run(work / "never")


def test_a_model_that_does_not_record_its_provider_is_refused_when_two_provide_it(site, work, run_b, tmp_path):
    shutil.copytree(run_b, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["zoo"]["plugins"] = [p for p in config["zoo"]["plugins"] if "twin" not in p["provides"]]
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    proc, ran = zoo(site, work, "predict", tmp_path / "run", work / "imgs" / "a" / "0.png")
    assert error(proc) == (f"Error: {tmp_path / 'run'} does not say which plugin's head 'twin' it was trained with "
                           f"('zoo-clash-a' or 'zoo-clash-b'): uninstall the wrong one or select one with ZOO_LOAD_PLUGINS")
    assert ran == []
    alone, ran = zoo(site, work, "predict", tmp_path / "run", work / "imgs" / "a" / "0.png", plugins="clash-b")
    assert alone.returncode == 0 and ran == ["b"], alone.stderr  # one provider installed: no doubt which


def test_a_plugin_cannot_take_a_builtins_name(site, work, tmp_path):
    """An entry point named like a built-in plugin is not loaded (it would replace the built-in's record)."""
    fake = tmp_path / "fake"
    (fake / "zoo_fake-0.1.0.dist-info").mkdir(parents=True)
    (fake / "zoo_fake-0.1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: zoo-fake\nVersion: 0.1.0\n")
    (fake / "zoo_fake-0.1.0.dist-info" / "entry_points.txt").write_text("[zoo]\nzoo.heads = zoo_clash_a\n")
    proc, _ = zoo(f"{fake}{os.pathsep}{site}", work, "plugins", "list", "--all", "--json", plugins="zoo.heads,zoo-fake")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["zoo.builtins.heads"]["builtin"] is True and rows["zoo.builtins.heads"]["errors"] == []
    assert any("'zoo.heads'" in line and "zoo-fake" in line for line in proc.stderr.splitlines()), proc.stderr


def test_resuming_when_two_plugins_register_the_head_runs_neither(site, work, run_b):
    resumed = work / "resumed"
    shutil.copytree(run_b, resumed)
    proc, ran = zoo(site, work, "finetune", "--resume", resumed, "--epochs", "2", "--quiet")
    assert error(proc) == (f"Error: cannot resume {resumed}: the head 'twin' is registered by both 'zoo-clash-a' and "
                           f"'zoo-clash-b', and the run does not say which trained it: select one with ZOO_LOAD_PLUGINS")
    assert ran == []
    proc, ran = zoo(site, work, "finetune", "--resume", resumed, "--epochs", "2", "--quiet", plugins="clash-b")
    assert proc.returncode == 0, proc.stderr
    assert set(ran) == {"b"}
