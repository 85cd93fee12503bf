"""End-to-end tests of zoo's plugin system with real plugin distributions and real pip installs.

Nothing is mocked. Once per module a throwaway virtual environment is created with this
interpreter (``sys.executable -m venv``); a ``.pth`` file makes it see the checkout's zoo and the
outer venv's packages (torch, timm, ...) without reinstalling them. The plugin packages under
tests/plugins/ are then installed into it with ``zoo plugins install`` (pip under the hood),
and ``zoo`` runs there as a subprocess, as a user would run it (forked from a server that imported torch in that
environment: ``zoo.forkserver``).

The plugin folders are copied to a temporary directory before they are installed, because a
setuptools build writes ``build/`` and ``*.egg-info`` into the source folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import make_evil_package, venv_python, write_plugin_record

from zoo import forkserver

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "plugins"
BUILTIN_NAMES = ("linear", "mlp", "head-only", "digits", "synthetic")


@dataclass
class Venv:
    root: Path  # the throwaway virtual environment
    python: Path
    site: Path  # its site-packages
    work: Path  # a scratch folder: cwd of every command, plugin copies, configuration

    def env(self, **extra: str) -> dict:
        """This process's environment without ZOO_* settings, isolated from the user's configuration."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("ZOO_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(XDG_CONFIG_HOME=str(self.work / "config"), ZOO_CACHE=str(self.work / "cache"),
                   PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", NO_COLOR="1", COLUMNS="200")
        env.update(extra)
        return env

    def run(self, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """This environment's ``python ARGS`` (see conftest.venv_python)."""
        return venv_python(self.python, *args, cwd=self.work, env=env or self.env(), timeout=timeout)

    def zoo(self, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        return self.run("-m", "zoo", *args, env=self.env(**env), timeout=timeout)

    def zoo_json(self, *args: str, **env: str):
        proc = self.zoo(*args, "--json", **env)
        assert proc.returncode == 0, describe(proc)
        return json.loads(proc.stdout)

    def is_installed(self, dist: str) -> bool:
        return any(self.site.glob(f"{dist.replace('-', '_')}-*.dist-info"))

    def install(self, folder: str) -> subprocess.CompletedProcess:
        """`zoo plugins install` a copy of tests/plugins/FOLDER."""
        copy = self.work / "src" / folder
        if not copy.exists():
            shutil.copytree(PLUGINS / folder, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        proc = self.zoo("plugins", "install", str(copy))
        assert proc.returncode == 0, describe(proc)
        assert f"Successfully installed {folder}-0.1.0" in proc.stdout, describe(proc)
        return proc

    def uninstall(self, dist: str) -> subprocess.CompletedProcess:
        proc = self.zoo("plugins", "uninstall", dist, "-y")
        assert proc.returncode == 0, describe(proc)
        return proc


def describe(proc: subprocess.CompletedProcess) -> str:
    return f"command {proc.args} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def stderr_lines(proc: subprocess.CompletedProcess, *words: str) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if all(w in ln for w in words)]


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Venv:
    root = tmp_path_factory.mktemp("venv")
    work = tmp_path_factory.mktemp("work")
    # Without a pip of its own (installing one takes seconds): the outer venv's pip, seen through the .pth file
    # below, installs into this environment, its sys.prefix.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, capture_output=True, timeout=300)
    python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    outer_site = sysconfig.get_paths()["purelib"]
    # A plain path line adds the checkout (so the zoo under test is this one); the import line runs
    # site.addsitedir, which, unlike a path line, also processes the outer site-packages' own .pth
    # files (the editable install of zoo, setuptools' distutils shim).
    (site / "_zoo_outer_venv.pth").write_text(f"{REPO}\nimport site; site.addsitedir({outer_site!r})\n", encoding="utf-8")
    v = Venv(root, python, site, work)
    proc = v.run("-c", "import zoo, torch, timm, pip; print(zoo.__file__)")
    assert proc.returncode == 0, describe(proc)
    assert Path(proc.stdout.strip()).resolve() == REPO / "zoo" / "__init__.py", proc.stdout
    return v


@pytest.fixture
def example(venv: Venv) -> Venv:
    """The venv with zoo-example installed (installed on first use, again after the uninstall test)."""
    if not venv.is_installed("zoo-example"):
        venv.install("zoo-example")
    return venv


@pytest.fixture
def only(venv: Venv):
    """Install plugin folders for one test and uninstall them afterwards."""
    installed = []

    def install(folder: str) -> Venv:
        venv.install(folder)
        installed.append(folder)
        return venv

    yield install
    for folder in installed:
        venv.uninstall(folder)


# -- zoo-example ------------------------------------------------------------------------------
def test_throwaway_venv_sees_zoo_torch_and_no_plugins(venv: Venv):
    assert venv.root.resolve() != Path(sys.prefix).resolve()
    proc = venv.run("-c", "import sys, zoo, torch; print(sys.prefix)")
    assert proc.returncode == 0, describe(proc)
    assert Path(proc.stdout.strip()).resolve() == venv.root.resolve()
    assert isinstance(venv.zoo_json("plugins", "list"), list)
    proc = venv.zoo("list", ZOO_LOAD_PLUGINS="")
    assert proc.returncode == 0 and "linear" in proc.stdout and proc.stderr == "", describe(proc)


def test_example_registers_head_backbone_and_command(example: Venv):
    heads = {h["name"]: h for h in example.zoo_json("list", "heads")}
    assert heads["example-cosine"]["provider"] == "example"
    assert "scale" in heads["example-cosine"]["description"]
    assert heads["linear"]["provider"] == "zoo.builtins.heads"  # built-ins are still there

    rows = example.zoo_json("list", "backbones", "example-net")
    assert [r["name"] for r in rows] == ["example-net"]
    row = rows[0]
    assert row["source"] == "timm:test_resnet.r160_in1k"
    assert row["provider"] == "example"
    assert (row["family"], row["params_m"], row["input_size"], row["license"], row["pretrain"], row["tags"]) == (
        "resnet", 0.5, 160, "apache-2.0", "imagenet-1k", ["test"])

    proc = example.zoo("example-hello")
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.strip() == "hello from zoo-example"
    assert "example-hello" in example.zoo("--help").stdout

    table = example.zoo("list", "heads")
    assert table.returncode == 0 and "example-cosine" in table.stdout, describe(table)
    assert table.stderr == "", describe(table)


def test_plugins_list_shows_version_and_hooks(example: Venv):
    rows = {r["name"]: r for r in example.zoo_json("plugins", "list")}
    assert "example" in rows, rows
    ex = rows["example"]
    assert ex["version"] == "0.1.0"
    assert ex["distribution"] == "zoo-example"
    assert ex["builtin"] is False
    assert ex["errors"] == []
    assert set(ex["hooks"]) == {"zoo_register_heads", "zoo_register_backbones", "zoo_register_datasets", "zoo_register_commands",
                                "zoo_on_epoch_end"}
    assert set(ex["registered"]) == {"heads:example-cosine", "backbones:example-net", "datasets:npz"}
    assert not any(r["builtin"] for r in rows.values())

    everything = {r["name"] for r in example.zoo_json("plugins", "list", "--all")}
    assert {"zoo.builtins.backbones", "zoo.builtins.heads", "zoo.builtins.freeze", "zoo.builtins.datasets", "example"} <= everything


def test_zoo_load_plugins_selects_plugins(example: Venv):
    def heads(value: str) -> set[str]:
        return {h["name"] for h in example.zoo_json("list", "heads", ZOO_LOAD_PLUGINS=value)}

    assert "example-cosine" not in heads("")
    assert {"linear", "mlp"} <= heads("")
    assert "example" not in {r["name"] for r in example.zoo_json("plugins", "list", ZOO_LOAD_PLUGINS="")}
    assert "example-cosine" in heads("example")
    assert "example-cosine" in heads("zoo-example")  # the distribution name works too
    assert "example-cosine" not in heads("someone-else")
    hidden = example.zoo("example-hello", ZOO_LOAD_PLUGINS="")
    assert hidden.returncode != 0 and "No such command" in hidden.stderr, describe(hidden)


def test_zoo_trace_hooks_names_the_answering_plugin(example: Venv):
    proc = example.zoo("list", "heads", ZOO_TRACE_HOOKS="1")
    assert proc.returncode == 0, describe(proc)
    lines = proc.stderr.splitlines()
    assert "zoo: hook zoo_register_heads -> example" in lines, proc.stderr
    assert "zoo: hook zoo_register_heads -> zoo.builtins.heads" in lines, proc.stderr
    assert lines.index("zoo: hook zoo_register_heads -> zoo.builtins.heads") < lines.index("zoo: hook zoo_register_heads -> example")
    quiet = example.zoo("list", "heads")
    assert "zoo: hook" not in quiet.stderr


def test_example_head_trains_and_epoch_hook_logs(example: Venv):
    log = example.work / "epochs.jsonl"
    log.unlink(missing_ok=True)
    out = example.work / "run-cosine"
    proc = example.zoo("finetune", "test_resnet", "--data", "digits", "--no-pretrained", "--img-size", "32",
                       "--epochs", "2", "--shots", "8", "--batch-size", "16", "--device", "cpu",
                       "--head", "example-cosine", "--head-opt", "scale=16", "--out", str(out), "--json",
                       ZOO_EXAMPLE_LOG=str(log))
    assert proc.returncode == 0, describe(proc)
    summary = json.loads(proc.stdout)
    assert 0.0 <= summary["top1"] <= 1.0
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(entries) == 2, entries
    # The hook's `epoch` argument is 0-based while metrics["epoch"] is 1-based (see the report);
    # only the order of the hook's argument is checked here.
    assert entries[0]["epoch"] + 1 == entries[1]["epoch"], entries
    assert [e["metrics"]["epoch"] for e in entries] == [1, 2], entries
    assert all("train_loss" in e["metrics"] and "val_top1" in e["metrics"] for e in entries), entries
    assert "example-cosine" in (out / "run_config.yaml").read_text()

    # The head the factory builds: a WithHead whose cosine classifier has the right shape and scale.
    probe = example.run("-c", (
        "import torch, zoo\n"
        f"m = zoo.load({str(out)!r})[0]\n"
        "print(type(m).__name__, m.head.out_features, m.head.scale, tuple(m(torch.zeros(2, 3, 32, 32)).shape))\n"
    ))
    assert probe.returncode == 0, describe(probe)
    assert probe.stdout.split() == ["WithHead", "10", "16.0", "(2,", "10)"], probe.stdout


def test_finetune_from_a_plugin_head_run_keeps_its_head_and_image_size(example: Venv):
    first, second = example.work / "run-cosine-first", example.work / "run-cosine-again"
    common = ("--data", "digits", "--batch-size", "32", "--device", "cpu", "--head", "example-cosine", "--head-opt", "scale=16",
              "--json")
    trained = example.zoo("finetune", "test_resnet", "--no-pretrained", "--img-size", "40", "--epochs", "2",
                          "--out", str(first), *common)
    assert trained.returncode == 0, describe(trained)
    before = json.loads(trained.stdout)["top1"]
    assert before > 0.5, trained.stdout  # well above chance (0.1), so a re-initialised head shows
    again = example.zoo("finetune", str(first), "--lr", "1e-6", "--epochs", "1", "--out", str(second), *common)
    assert again.returncode == 0, describe(again)
    assert abs(json.loads(again.stdout)["top1"] - before) < 0.05, (before, again.stdout)
    sizes = [json.loads((run / "config.json").read_text())["pretrained_cfg"]["input_size"] for run in (first, second)]
    assert sizes == [[3, 40, 40], [3, 40, 40]], sizes
    same = example.run("-c", (
        "import sys, torch; from safetensors.torch import load_file\n"
        "a, b = (load_file(p + '/model.safetensors')['head.weight'] for p in sys.argv[1:])\n"
        "print(torch.allclose(a, b, atol=1e-4))\n"), str(first), str(second))
    assert same.stdout.strip() == "True", describe(same)


def test_a_dataset_plugin_claims_a_file_extension(example: Venv):
    digits = example.work / "digits.NPZ"  # extensions match whatever the case
    made = example.run("-c", (
        "import sys, numpy as np; from sklearn.datasets import load_digits\n"
        "d = load_digits(); keep = d.target < 3\n"
        "with open(sys.argv[1], 'wb') as f:\n"
        "    np.savez(f, images=(d.images[keep] * 16).astype(np.uint8), labels=d.target[keep], classes=['zero', 'one', 'two'])\n"
        ), str(digits))
    assert made.returncode == 0, describe(made)
    datasets = {d["name"]: d for d in example.zoo_json("list", "datasets")}
    assert datasets["npz"]["extensions"] == [".npz"] and datasets["csv"]["extensions"] == [".csv"], datasets

    for spec in (str(digits), f"npz:{digits}"):  # the bare file reaches the plugin, as npz:FILE does
        plan = example.zoo_json("finetune", "test_resnet", "--data", spec, "--no-pretrained", "--dry-run")
        assert plan["classes"] == ["zero", "one", "two"], plan

    for typo in (f"nzp:{digits}", "nzp:missing.npz", "nzp"):
        proc = example.zoo("finetune", "test_resnet", "--data", typo, "--dry-run")
        assert proc.returncode == 2, describe(proc)
        assert proc.stderr.strip() == "Error: unknown dataset 'nzp'. Did you mean: npz? Run 'zoo list datasets' to see them all.", \
            describe(proc)

    other = example.work / "notes.txt"
    other.write_text("not images")
    proc = example.zoo("finetune", "test_resnet", "--data", str(other), "--dry-run")
    assert proc.returncode == 2 and "(.csv, .npz)" in proc.stderr and len(proc.stderr.splitlines()) == 1, describe(proc)


def test_install_from_model_installs_what_the_run_needs(example: Venv):
    out = example.work / "run-needs"
    trained = example.zoo("finetune", "test_resnet", "--data", "digits", "--no-pretrained", "--img-size", "32", "--epochs", "1",
                          "--shots", "5", "--batch-size", "16", "--head", "example-cosine", "--out", str(out), "--quiet")
    assert trained.returncode == 0, describe(trained)
    needs = [p for p in json.loads((out / "config.json").read_text())["zoo"]["plugins"] if not p["builtin"]]
    assert [(p["name"], p["version"], p["entry_point"], p["provides"]) for p in needs] == [
        ("zoo-example", "0.1.0", "example", ["example-cosine"])]
    nothing = example.zoo("plugins", "install", "--from-model", str(out))
    assert nothing.returncode == 0 and "needs no plugin that is missing here" in nothing.stdout, describe(nothing)

    wheels = example.work / "wheels"  # a private wheelhouse: the plugin is not on PyPI
    built = example.run("-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(example.work / "src" / "zoo-example"))
    assert built.returncode == 0, describe(built)
    example.uninstall("zoo-example")
    cmd = [str(example.python), "-m", "zoo", "plugins", "install", "--from-model", str(out), "--find-links", str(wheels), "--no-index"]
    declined = subprocess.run(cmd, cwd=example.work, env=example.env(), input="n\n", capture_output=True, text=True, timeout=300)
    assert declined.returncode == 1 and "will install zoo-example==0.1.0 (entry point 'example', provides example-cosine)" \
        in declined.stdout, describe(declined)
    assert not example.is_installed("zoo-example")
    accepted = subprocess.run([*cmd, "-y"], cwd=example.work, env=example.env(), capture_output=True, text=True, timeout=300)
    assert accepted.returncode == 0 and "Successfully installed zoo-example-0.1.0" in accepted.stdout, describe(accepted)
    predicted = example.zoo("predict", str(out), str(REPO / "docs" / "transfer-digits.png"), "--json")
    assert predicted.returncode == 0, describe(predicted)


def test_install_from_model_never_builds_a_package_a_record_points_at(venv: Venv):
    """A config.json recording ``zoo-cosine @ file:///PKG``: PKG's build backend would run code, zoo hands pip nothing."""
    marker = venv.work / "PWNED"
    pkg = make_evil_package(venv.work / "evilpkg", marker)
    built = venv.run("-m", "pip", "wheel", "--no-deps", "--no-index", "-w", str(venv.work / "evil-wheels"), str(pkg))
    assert marker.exists(), describe(built)  # building it does run its code
    marker.unlink()
    model = venv.work / "evil-model"
    write_plugin_record(model, {"name": f"zoo-cosine @ {pkg.as_uri()}", "version": "0.1.0"})
    proc = venv.zoo("plugins", "install", "--from-model", str(model), "-y")
    assert proc.returncode == 1 and proc.stdout == "" and len(proc.stderr.splitlines()) == 1, describe(proc)
    assert proc.stderr.startswith(f"Error: {model} records a plugin zoo will not install: name 'zoo-cosine @ {pkg.as_uri()}'")
    assert not marker.exists() and not venv.is_installed("zoo-cosine")


def test_plugins_new_writes_a_skeleton_that_installs_and_passes_its_test(venv: Venv):
    made = venv.zoo("plugins", "new", "zoo-fresh")  # in the current folder
    assert made.returncode == 0, describe(made)
    # "./": a bare "zoo-fresh" would make pip look for a package of that name on the index
    assert made.stdout.strip() == ("created ./zoo-fresh: install it with: zoo plugins install ./zoo-fresh; "
                                   "then run: python -m pytest ./zoo-fresh/tests"), describe(made)
    folder = venv.work / "zoo-fresh"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "README.md", "pyproject.toml", "tests/conftest.py", "tests/test_zoo_fresh.py", "zoo_fresh.py"]
    again = venv.zoo("plugins", "new", "zoo-fresh", "--dir", str(venv.work))
    assert again.returncode == 2 and "already exists" in again.stderr, describe(again)
    bad = venv.zoo("plugins", "new", "Zoo_Fresh!", "--dir", str(venv.work))
    assert bad.returncode == 2 and "must be lowercase" in bad.stderr, describe(bad)
    untested = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "./zoo-fresh/tests")
    assert untested.returncode == 1 and f"zoo-fresh is not installed in {venv.root}: install it with 'zoo plugins install PATH'" \
        in untested.stdout + untested.stderr, describe(untested)
    installed = venv.zoo("plugins", "install", "./zoo-fresh")  # the command the hint printed, run where it was printed
    assert installed.returncode == 0, describe(installed)
    try:
        assert "fresh-linear" in {h["name"] for h in venv.zoo_json("list", "heads")}
        tested = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "./zoo-fresh/tests")
        assert tested.returncode == 0 and "3 passed" in tested.stdout, describe(tested)
    finally:
        venv.uninstall("zoo-fresh")


def test_uninstall_removes_the_plugin(example: Venv):
    proc = example.uninstall("zoo-example")
    assert "zoo-example" in proc.stdout
    assert not example.is_installed("zoo-example")
    assert "example-cosine" not in {h["name"] for h in example.zoo_json("list", "heads")}
    assert example.zoo_json("list", "backbones", "example-net") == []
    assert "example" not in {r["name"] for r in example.zoo_json("plugins", "list")}
    gone = example.zoo("example-hello")
    assert gone.returncode != 0 and "No such command" in gone.stderr, describe(gone)
    again = example.zoo("plugins", "uninstall", "zoo-example", "-y")
    assert again.returncode != 0 and "not installed" in again.stderr and "Traceback" not in again.stderr, describe(again)


# -- misbehaving plugins -------------------------------------------------------------------------
def test_plugin_failing_at_import_is_one_line_and_skipped(venv: Venv, only):
    only("zoo-broken")
    proc = venv.zoo("list")
    assert proc.returncode == 0, describe(proc)
    for name in BUILTIN_NAMES:
        assert name in proc.stdout, name
    assert "resnet" in proc.stdout  # the packaged registry still lists its backbones
    lines = stderr_lines(proc, "broken")
    assert len(lines) == 1, proc.stderr
    assert "boom at import" in lines[0] and "RuntimeError" in lines[0], lines
    assert "Traceback" not in proc.stderr

    rows = {r["name"]: r for r in venv.zoo_json("plugins", "list")}
    assert rows["broken"]["distribution"] == "zoo-broken"
    assert len(rows["broken"]["errors"]) == 1 and "boom at import" in rows["broken"]["errors"][0]


def test_raising_hook_and_name_clash_are_reported(venv: Venv, only):
    only("zoo-raising")
    proc = venv.zoo("list", "--json")
    assert proc.returncode == 0, describe(proc)
    assert "Traceback" not in proc.stderr
    out = json.loads(proc.stdout)

    failed = stderr_lines(proc, "'raising'", "zoo_register_heads")
    assert len(failed) == 1, proc.stderr
    assert "ValueError: bad hook" in failed[0]
    assert {h["name"] for h in out["heads"]} >= {"linear", "mlp"}  # the other plugins' heads survive

    clash = stderr_lines(proc, "'digits'")
    assert len(clash) == 1, proc.stderr
    assert "'zoo.builtins.datasets'" in clash[0] and "'raising'" in clash[0], clash

    datasets = {d["name"]: d for d in out["datasets"]}
    assert datasets["digits"]["provider"] == "zoo.builtins.datasets"  # the built-in wins
    assert "impostor" not in datasets["digits"]["description"]
    assert datasets["raising-data"]["provider"] == "raising"

    assert datasets["raising-data"]["extensions"] == [] and datasets["csv"]["extensions"] == [".csv"], datasets
    ext = stderr_lines(proc, "'.csv'")
    assert len(ext) == 1 and "using 'csv'" in ext[0] and "'raising-data' ('raising')" in ext[0], proc.stderr

    # A policy whose settings() raises during training: one line naming the policy, the plugin and the method.
    trained = venv.zoo("finetune", "test_resnet", "--data", "synthetic:4", "--no-pretrained", "--img-size", "32", "--epochs", "1",
                       "--device", "cpu", "--freeze", "raising-freeze", "--out", str(venv.work / "run-raising-freeze"))
    assert trained.returncode == 1 and "Traceback" not in trained.stderr, describe(trained)
    errors = [ln for ln in trained.stderr.splitlines() if ln.startswith("Error:")]
    assert errors == ["Error: freeze policy 'raising-freeze' (plugin 'raising') failed in settings(): "
        "ZeroDivisionError: settings went wrong"], describe(trained)

    rows = {r["name"]: r for r in venv.zoo_json("plugins", "list")}
    assert any("zoo_register_heads" in e and "bad hook" in e for e in rows["raising"]["errors"]), rows["raising"]
    assert "datasets:raising-data" in rows["raising"]["registered"]


def test_install_of_unknown_package_fails_in_one_line(venv: Venv):
    proc = venv.zoo("plugins", "install", "zoo-definitely-not-a-real-package-xyz",
                    PIP_RETRIES="1", PIP_DEFAULT_TIMEOUT="30")
    assert proc.returncode != 0, describe(proc)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: pip install failed"), lines
    assert "zoo-definitely-not-a-real-package-xyz" in lines[0]
    assert not venv.is_installed("zoo-definitely-not-a-real-package-xyz")


# -- docs/plugin-tutorial.md, extracted and run as written ------------------------------------------
def tutorial_steps() -> list[tuple[str, str | None, str]]:
    """("file", PATH, TEXT) and ("run", None, SCRIPT) in page order, from the blocks marked for it."""
    import re

    text = (REPO / "docs" / "plugin-tutorial.md").read_text(encoding="utf-8")
    return [("file", m.group(2), m.group(3)) if m.group(2) else ("run", None, m.group(3))
            for m in re.finditer(r"<!-- (run|file: (\S+)) -->\n```\w*\n(.*?)```", text, re.S)]


def test_the_plugin_tutorial_runs_as_written(venv: Venv):
    steps = tutorial_steps()
    assert [k for k, _, _ in steps] == ["run", "file", "file", "run", "run"]
    work = venv.work / "tutorial"
    work.mkdir()
    shim = venv.root / "bin" / "zoo"  # the `zoo` command of that environment, forked from its python's server
    shim.write_text(f'#!/bin/sh\nexec "{forkserver.stand_in(str(venv.python))}" -m zoo "$@"\n')
    shim.chmod(0o755)
    env = venv.env(PATH=f"{venv.root / 'bin'}{os.pathsep}{os.environ['PATH']}")
    printed = []
    try:
        for kind, path, body in steps:
            if kind == "file":
                (work / path).write_text(body, encoding="utf-8")
                continue
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=work, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert proc.returncode == 0, describe(proc)
            printed.append(proc.stdout)
        assert "Successfully installed zoo-cosine-0.1.0" in printed[1] and "cosine" in printed[1]
        assert "freeze-first" in printed[1]  # the dry run names the policy
        assert "zero.png" in printed[2] and "'provides': ['cosine', 'freeze-first']" in printed[2]
    finally:
        venv.uninstall("zoo-cosine")
