import json
import os
import re
import sys

import pytest
from conftest import make_image_folder

from zoo import forkserver


def test_version_and_help(run):
    from zoo import __version__

    assert __version__ in run("--version").output
    for cmd in (["--help"], ["list", "--help"], ["info", "--help"], ["finetune", "--help"], ["predict", "--help"],
                ["evaluate", "--help"], ["plugins", "list", "--help"], ["plugins", "install", "--help"]):
        result = run(*cmd)
        assert result.exit_code == 0
        assert re.match(rf"Usage: \S+{''.join(' ' + w for w in cmd[:-1])} \[OPTIONS\]", result.output), result.output  # its own help
        assert re.search(r"^  Examples?:\n    zoo ", result.output, re.M), result.output  # with examples to copy


def test_list_shows_every_kind_with_provider(run):
    out = json.loads(run("list", "--json").output)
    assert set(out) == {"backbones", "heads", "freeze", "datasets"}
    assert {r["name"] for r in out["heads"]} >= {"linear", "mlp"}
    assert {r["name"] for r in out["freeze"]} == {"none", "head-only", "last-n", "gradual", "layer-decay"}
    assert {r["name"] for r in out["datasets"]} >= {"imagefolder", "csv", "fashion-mnist", "digits", "synthetic"}
    assert all(r["provider"].startswith("zoo.") for r in out["heads"])
    table = run("list").output
    assert "Freeze policies" in table and "head-only" in table


def test_info_reads_pretrained_config_without_download(run):
    result = run("info", "test_resnet", "--json")
    data = json.loads(result.output)
    assert data["architecture"] == "test_resnet"
    assert data["input_size"] == [3, 160, 160]
    assert data["num_features"] == 96
    assert 0.3 < data["params_m"] < 0.6
    assert data["license"] == "apache-2.0"
    registry = json.loads(run("info", "resnet18", "--json").output)
    assert registry["params_m"] == pytest.approx(11.69, abs=0.01)
    assert registry["pretrain"] == "imagenet-1k"


def _zoo(*args, **env):
    return forkserver.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=dict(os.environ, **env))


def test_info_of_hub_name_offline_says_what_to_do():
    proc = _zoo("info", "hf-hub:nobody/nothing", HF_HUB_OFFLINE="1")
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: hf-hub:nobody/nothing: offline mode")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_info_of_hub_name_with_unreachable_hub():
    proc = _zoo("info", "hf-hub:nobody/nothing", HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens on port 9
    assert proc.returncode == 1
    assert "cannot reach the Hub at http://127.0.0.1:9" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_names_are_one_line_usage_errors(run):
    result = run("info", "resnet-18x")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: unknown backbone 'resnet-18x'. Did you mean")
    assert "Traceback" not in result.stderr
    result = run("finetune", "test_resnet", "--data", "synthetic", "--head", "mpl", "--dry-run")
    assert result.exit_code == 2 and "Did you mean: mlp" in result.stderr
    result = run("finetune", "test_resnet", "--data", "synthetic", "--freeze", "head_only", "--dry-run")
    assert result.exit_code == 2 and "head-only" in result.stderr
    result = run("finetune", "test_resnet", "--data", "digitz", "--dry-run")
    assert result.exit_code == 2 and "digits" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "--epochs must be a positive"),
    (["--epochs", "-3"], "--epochs must be a positive"),
    (["--lr", "-0.1"], "--lr must be a positive"),
    (["--batch-size", "100000"], "larger than the"),
    (["--device", "cuda"], "CUDA is not available"),
    (["--freeze", "last-n", "--freeze-opt", "n=zero"], "must be a whole number"),
    (["--head-opt", "nonsense"], "KEY=VALUE"),
])
def test_bad_finetune_options(run, tmp_path, args, message):
    if "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is present")
    result = run("finetune", "test_resnet", "--data", "synthetic", "--no-pretrained", "--img-size", "32", "--out", tmp_path / "r", *args)
    assert result.exit_code != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_non_numeric_lr_is_one_line_that_names_the_flag(run):
    result = run("finetune", "test_resnet", "--data", "synthetic", "--lr", "fast")
    assert result.exit_code == 2 and result.stderr == "Error: --lr must be a positive number, got 'fast'\n"


def test_data_errors(run, tmp_path):
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    result = run("finetune", "test_resnet", "--data", empty, "--dry-run")
    assert result.exit_code == 2 and f"no images found in {empty}" in result.stderr
    one = make_image_folder(tmp_path / "one", classes=("only",))
    result = run("finetune", "test_resnet", "--data", one, "--dry-run")
    assert result.exit_code == 2 and "1 class(es)" in result.stderr
    result = run("finetune", "test_resnet", "--data", "fashion-mnist:" + str(tmp_path), "--dry-run")
    assert result.exit_code == 2 and "apt-get install dataset-fashion-mnist" in result.stderr


def test_dry_run_prints_groups_and_schedule(run):
    result = run("finetune", "test_resnet", "--data", "synthetic", "--freeze", "gradual", "--freeze-opt", "k=2",
                 "--epochs", "4", "--dry-run", "--json")
    plan = json.loads(result.output)
    names = [g["group"] for g in plan["groups"]]
    assert names[0] == "stem" and names[-1] == "head"
    head, stem = plan["groups"][-1], plan["groups"][0]
    assert [s["from_epoch"] for s in stem["schedule"]] == [1, 3]
    assert stem["schedule"][0]["trainable"] is False and stem["schedule"][0]["norm"] == "frozen"
    assert stem["schedule"][1]["trainable"] is True and stem["schedule"][1]["lr_scale"] < 0.1
    assert all(s["trainable"] for s in head["schedule"])
    table = run("finetune", "test_resnet", "--data", "synthetic", "--freeze", "head-only", "--dry-run").output
    assert "trainable" in table and "frozen" in table


def test_debug_shows_traceback(tmp_path):
    env = dict(os.environ, ZOO_DEBUG="1")
    proc = forkserver.run([sys.executable, "-m", "zoo", "info", "nope-nope"], capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    env.pop("ZOO_DEBUG")
    proc = forkserver.run([sys.executable, "-m", "zoo", "info", "nope-nope"], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_unknown_tag_of_a_real_architecture(run):
    result = run("info", "resnet18.nope")
    assert result.exit_code == 2 and result.stderr.startswith("Error: unknown backbone 'resnet18.nope'")


def test_install_from_model_skips_plugins_that_only_trained_the_model(tmp_path, run):
    """A plugin freeze policy is recorded but not needed to load the model: --from-model installs nothing."""
    from zoo import hookimpl
    from zoo.plugins import get_plugins

    class Freezer:
        @hookimpl
        def zoo_register_freeze_policies(self, register):
            from zoo.builtins.freeze import Policy

            register("all-but-stem", lambda: Policy(lambda epoch, n: [(i > 0, 1.0) for i in range(n)]))

    get_plugins().add(Freezer(), "zoo-freezer")
    out = tmp_path / "run"
    trained = run("finetune", "test_resnet", "--data", "synthetic:4", "--no-pretrained", "--img-size", "32", "--epochs", "1",
                  "--batch-size", "8", "--aug", "none", "--freeze", "all-but-stem", "--quiet", "--out", out)
    assert trained.exit_code == 0, trained.stderr
    records = json.loads((out / "config.json").read_text())["zoo"]["plugins"]
    freezer = next(p for p in records if p["entry_point"] == "zoo-freezer")
    assert freezer["needed_to_load"] is False and freezer["provides"] == ["all-but-stem"]
    result = run("plugins", "install", "--from-model", out)
    assert result.exit_code == 0, result.stderr
    assert "zoo-freezer trained it (all-but-stem) but is not needed to load it: skipped" in result.stdout
    assert result.stdout.rstrip().endswith("needs no plugin to load")
