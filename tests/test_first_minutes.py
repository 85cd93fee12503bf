"""The first ten minutes without a network: the README's commands fail fast, in one line, and leave nothing behind.

Every command runs as a real ``python -m zoo`` subprocess with the Hub at a closed local port and an
empty Hugging Face cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zoo import forkserver

CLOSED = "http://127.0.0.1:9"  # nothing listens on port 9


def zoo(tmp: Path, *args, cwd: Path | None = None, **env) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m zoo ARGS`` offline (closed Hub port, empty cache); returns the process and its seconds."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    full.update(HF_ENDPOINT=CLOSED, HF_HOME=str(tmp / "hf-home"), HF_HUB_DISABLE_TELEMETRY="1", NO_COLOR="1", COLUMNS="200", **env)
    start = time.perf_counter()
    proc = forkserver.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=120)
    return proc, time.perf_counter() - start


@pytest.fixture(scope="module")
def startup() -> float:
    """Seconds this machine takes to import zoo, torch and timm: a busy machine is slow before any network wait."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, timm, zoo.cli"], check=True, timeout=120)
    return time.perf_counter() - start


def one_line_naming_offline_backbones(proc: subprocess.CompletedProcess) -> str:
    # finetune first prints the default recipe it picked (two lines): what it would have done, not a failure
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith(("default recipe '", "  why: "))]
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert "backbones ready offline: " in lines[0] and "zoo-fmnist-resnet" in lines[0], lines[0]
    assert "Retry" not in proc.stderr and "Traceback" not in proc.stderr and ".." not in lines[0]
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("args", [["finetune", "resnet18", "--data", "digits"], ["info", "convnext-tiny"],
                                  ["compare", "resnet18", "--data", "digits"]], ids=["finetune", "info", "compare"])
def test_a_hub_backbone_offline_fails_at_once_naming_what_works_offline(tmp_path, args, startup):
    proc, seconds = zoo(tmp_path, *args, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    line = one_line_naming_offline_backbones(proc)
    assert f"cannot reach the Hub at {CLOSED}" in line
    assert seconds < max(10, startup + 5), f"took {seconds:.1f} s (startup {startup:.1f} s)"  # retries took 26-50 s
    assert ("--no-pretrained" in line) == (args[0] == "finetune")  # compare and info have no such option
    assert not any(tmp_path.glob("runs")), "a failed start left a run folder"


def test_hf_hub_offline_names_the_offline_backbones_too(tmp_path):
    proc, _ = zoo(tmp_path, "info", "hf-hub:nobody/nothing", HF_HUB_OFFLINE="1")
    assert proc.returncode == 1
    assert one_line_naming_offline_backbones(proc).startswith("Error: hf-hub:nobody/nothing: offline mode (HF_HUB_OFFLINE=1)")


@pytest.mark.slow
def test_compare_keeps_the_candidates_that_worked(tmp_path):
    args = ["compare", "zoo-fmnist-resnet", "resnet18", "--data", "digits", "--shots", "5", "--img-size", "32"]
    proc, _ = zoo(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("│")[2].strip(): line for line in proc.stdout.splitlines() if line.count("│") > 3}
    assert set(rows) >= {"zoo-fmnist-resnet", "resnet18"}, proc.stdout
    assert "failed" in rows["resnet18"] and "failed" not in rows["zoo-fmnist-resnet"]
    assert "resnet18: failed: cannot get pretrained weights" in proc.stderr and "Traceback" not in proc.stderr

    proc, _ = zoo(tmp_path, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    ranked = json.loads(proc.stdout)
    assert [c["name"] for c in ranked] == ["zoo-fmnist-resnet", "resnet18"]
    assert ranked[0]["error"] is None and 0 <= ranked[0]["top1"] <= 1
    assert ranked[1]["top1"] is None and "backbones ready offline" in ranked[1]["error"]

    proc, _ = zoo(tmp_path, "compare", "resnet18", "resnet34", "--data", "digits", "--json")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("Error: none of the 2 backbones could be compared; the first failed with: cannot get")


# -- first-party plugins install from the checkout's plugins/ folder ----------------------------------------
def pip_env(tmp: Path) -> dict:
    """pip installs only into target/ (never this venv), from no index and no folder of wheels (this machine's pip
    configuration has some): as on a machine without a network."""
    (tmp / "no-wheels").mkdir(exist_ok=True)
    return {"PIP_TARGET": str(tmp / "target"), "PIP_NO_INDEX": "1", "PIP_NO_INPUT": "1", "PIP_NO_DEPS": "1",
            "PIP_LOG": str(tmp / "pip.log"), "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": str(tmp / "no-wheels")}


def installed(tmp: Path) -> set[str]:
    return {p.name.split("-")[0] for p in (tmp / "target").glob("*.dist-info")}


def model_recording(folder: Path, name: str, version: str) -> Path:
    folder.mkdir(parents=True)
    record = {"name": name, "version": version, "entry_point": "heads", "provides": ["cosine"]}
    (folder / "config.json").write_text(json.dumps({"zoo": {"plugins": [record]}}))
    return folder


@pytest.mark.slow
def test_plugins_install_a_first_party_name_offline(tmp_path):
    proc, _ = zoo(tmp_path, "plugins", "install", "zoo-heads", "zoo-tensorboard", cwd=tmp_path, **pip_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "zoo-heads: from this checkout's plugins/zoo-heads" in proc.stdout
    assert installed(tmp_path) == {"zoo_heads", "zoo_tensorboard"}, proc.stdout
    assert (tmp_path / "target" / "zoo_heads.py").is_file()


def test_a_plugin_folder_installs_offline_with_this_environments_setuptools(tmp_path):
    """A new plugin's folder, on a machine without a network: pip could not fetch setuptools for a build environment
    of its own, so zoo has it build with this environment's, which meets the folder's build requirements."""
    made, _ = zoo(tmp_path, "plugins", "new", "zoo-offline", "--dir", tmp_path)
    assert made.returncode == 0, made.stderr
    proc, _ = zoo(tmp_path, "plugins", "install", tmp_path / "zoo-offline", cwd=tmp_path, **pip_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert installed(tmp_path) == {"zoo_offline"}, proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("find_links", [False, True])
def test_install_from_model_finds_a_first_party_plugin_of_the_checkout_version(tmp_path, find_links):
    model = model_recording(tmp_path / "model", "zoo-heads", "0.1.0")
    links = ["--find-links", tmp_path] if find_links else []
    proc, _ = zoo(tmp_path, "plugins", "install", "--from-model", model, "-y", *links, **pip_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "will install zoo-heads==0.1.0" in proc.stdout and installed(tmp_path) == {"zoo_heads"}


def test_a_first_party_record_of_another_version_goes_to_pip_as_name_eq_version(tmp_path):
    model = model_recording(tmp_path / "model", "zoo-heads", "9.9.9")
    proc, _ = zoo(tmp_path, "plugins", "install", "--from-model", model, "-y", **pip_env(tmp_path))
    assert proc.returncode == 1 and not installed(tmp_path)
    assert proc.stderr.startswith("Error: pip install failed: ") and "zoo-heads==9.9.9" in proc.stderr, proc.stderr
    assert "zoo-heads==9.9.9" in (tmp_path / "pip.log").read_text()


def test_only_exact_first_party_names_map_to_folders():
    from zoo.plugin_packages import requirement

    folder = Path(__file__).resolve().parents[1] / "plugins" / "zoo-heads"
    assert requirement("zoo-heads") == requirement("zoo-heads==0.1.0") == requirement("zoo-heads==0.1") == str(folder)
    for spec in ("zoo-heads==0.2.0", "zoo-heads>=0.1", "zoo-heads[test]", "zoo-headsx", "zoo-cosine", "./zoo-heads",
                 "zoo-heads @ file:///tmp/x", "zoo-heads; python_version>'3'"):
        assert requirement(spec) == spec


# -- a failed start leaves no run folder --------------------------------------------------------------------
TINY = ["--no-pretrained", "--img-size", "32", "--epochs", "1", "--batch-size", "8", "--aug", "none", "--quiet"]


def failing_starts(tmp: Path) -> dict[str, list]:
    """Commands that fail after the run folder was made (under the run lock), or just before it."""
    from conftest import make_image_folder

    broken = make_image_folder(tmp / "broken")
    (broken / "cat" / "9.png").write_bytes(b"not a png")
    no_weights = tmp / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"architecture": "resnet18", "pretrained_cfg": {}}))
    synthetic = ["test_resnet", "--data", "synthetic:4", *TINY]
    return {
        "unknown-head-option": [*synthetic, "--head-opt", "foo=1"],
        "unknown-head": [*synthetic, "--head", "nosuch"],
        "unknown-freeze-option": [*synthetic, "--freeze", "head-only", "--freeze-opt", "x=1"],
        "unknown-freeze-policy": [*synthetic, "--freeze", "nosuch"],
        "refused-model-arg": [*synthetic, "--model-arg", "drop_rate=foo"],
        "dataset-with-a-broken-image": ["test_resnet", "--data", broken, "--strict", *TINY],
        "missing-dataset": ["test_resnet", "--data", tmp / "nothing-here", *TINY],
        "hub-backbone-not-there": ["hf-hub:nobody/nothing-zoo-test", "--data", "synthetic:4", "--img-size", "32", "--epochs", "1"],
        "folder-without-weights": [f"local-dir:{no_weights}", "--data", "synthetic:4", "--img-size", "32", "--epochs", "1"],
        "batch-larger-than-the-data": ["test_resnet", "--data", "synthetic:4", *TINY, "--batch-size", "100000"],
        "negative-patience": [*synthetic, "--patience", "-1"],
    }


@pytest.mark.slow
def test_a_failed_start_leaves_no_run_folder(tmp_path, run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = failing_starts(tmp_path)
    for case, args in cases.items():
        out = tmp_path / "out" / case
        result = run("finetune", *args, "--out", out)
        assert result.exit_code in (1, 2), f"{case}: {result.output}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), f"{case}: {result.stderr}"
        assert case != "missing-dataset" or "nothing-here' does not exist: give a folder" in lines[0], lines[0]
        assert not out.exists() and not (tmp_path / "out").exists(), f"{case} left {sorted(p.name for p in out.rglob('*'))}"
        default = run("finetune", *args)  # the default --out, runs/NAME-TIME: runs/ goes too
        assert default.exit_code in (1, 2) and not (tmp_path / "runs").exists(), f"{case}: {default.stderr}"
    mine = tmp_path / "mine"  # a folder the user made stays, as empty as it was: a rerun accepts it
    mine.mkdir()
    assert run("finetune", *cases["unknown-head-option"], "--out", mine).exit_code == 2
    assert list(mine.iterdir()) == []
    assert run("finetune", "test_resnet", "--data", "synthetic:4", *TINY, "--out", mine).exit_code == 0


# -- no local path in what is uploaded ----------------------------------------------------------------------
def test_card_and_config_hold_no_local_path(tmp_path, run):
    """A run from a local-dir: backbone, on data in a folder: the card and config.json (both uploaded) name
    the folders, never where they are; run_config.yaml keeps the full specs, which resume needs."""
    from conftest import make_image_folder

    place = tmp_path / "private-place-7f3a"
    photos = make_image_folder(place / "photos")
    first = place / "first-run"
    assert run("finetune", "test_resnet", "--data", "synthetic:4", *TINY, "--out", first).exit_code == 0
    second = place / "second-run"
    made = run("finetune", f"local-dir:{first}", "--data", photos, *TINY, "--out", second)
    assert made.exit_code == 0, made.output
    for name in ("README.md", "config.json"):
        text = (second / name).read_text()
        assert "private-place-7f3a" not in text and str(tmp_path) not in text, f"{name} shows a local path"
    config = json.loads((second / "config.json").read_text())
    assert config["zoo"]["backbone"]["name"] == config["zoo"]["backbone"]["source"] == "local-dir:first-run"
    assert config["zoo"]["dataset"]["spec"] == "photos"
    assert "local-dir:first-run" in (second / "README.md").read_text()
    assert str(first) in (second / "run_config.yaml").read_text()  # resume reads the full spec
