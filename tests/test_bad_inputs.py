"""The catalogue of bad inputs in docs/bad-inputs.md, each case run for real.

For every case: a non-zero exit, no traceback, the documented message (``<...>`` in the docs
stands for a path or a detail), nothing half-written, and every file that was there before
unchanged. The docs table and the cases here must list the same case names.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import make_evil_package, make_image_folder, write_plugin_record

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"
TINY = ["--no-pretrained", "--img-size", "32", "--epochs", "1", "--batch-size", "8", "--aug", "none", "--quiet"]


@dataclass
class Call:
    args: list
    out: Path | None = None  # a run directory that must not be left half-written
    subprocess: bool = False  # for cases that need their own environment (huggingface_hub reads it at import)
    env: dict = field(default_factory=dict)
    cleanup: object = None  # called after the command ran
    file_size_limit: int | None = None  # bytes any file may grow to (RLIMIT_FSIZE), as a full disk would allow; needs subprocess


CASES = {}


def case(fn):
    CASES[fn.__name__.removeprefix("case_").replace("_", "-")] = fn
    return fn


class Evil:
    """Unpickling this would create a file: proof that zoo never unpickles what it is given."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    import zoo

    out = tmp_path_factory.mktemp("good") / "run"
    zoo.finetune("test_resnet", data="synthetic:6", out=out, pretrained=False, img_size=32, epochs=1, batch_size=8, aug="none")
    return out


def copy_run(good_run, tmp):
    shutil.copytree(good_run, tmp / "run")
    (tmp / "run" / ".lock").unlink(missing_ok=True)
    return tmp / "run"


def image(tmp):
    make_image_folder(tmp / "imgs", classes=("a", "b"), per_class=2)
    return tmp / "imgs" / "a" / "0.png"


# -- model files -----------------------------------------------------------------------------
@case
def case_truncated_safetensors(tmp, good_run):
    run = copy_run(good_run, tmp)
    blob = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    return Call(["predict", run, image(tmp)])


@case
def case_tampered_safetensors_header(tmp, good_run):
    run = copy_run(good_run, tmp)
    blob = bytearray((run / "model.safetensors").read_bytes())
    blob[8:12] = b"\x00\xff\x00\xff"  # the JSON header no longer parses
    (run / "model.safetensors").write_bytes(bytes(blob))
    return Call(["predict", run, image(tmp)])


@case
def case_config_does_not_match_weights(tmp, good_run):
    import json

    run = copy_run(good_run, tmp)
    cfg = json.loads((run / "config.json").read_text())
    cfg["num_classes"] = 7
    cfg["label_names"] = [f"c{i}" for i in range(7)]
    (run / "config.json").write_text(json.dumps(cfg))
    return Call(["predict", run, image(tmp)])


@case
def case_pickle_offered_as_safetensors(tmp, good_run):
    run = copy_run(good_run, tmp)
    (run / "model.safetensors").write_bytes(pickle.dumps(Evil(tmp / "PWNED")))
    return Call(["predict", run, image(tmp)])


@case
def case_only_pytorch_model_bin(tmp, good_run):
    run = copy_run(good_run, tmp)
    (run / "model.safetensors").unlink()
    (run / "pytorch_model.bin").write_bytes(pickle.dumps(Evil(tmp / "PWNED")))
    return Call(["predict", run, image(tmp)])


def edit_config(run: Path, change) -> Path:
    import json

    cfg = json.loads((run / "config.json").read_text())
    change(cfg)
    (run / "config.json").write_text(json.dumps(cfg))
    return run


def evil_file(tmp) -> Path:
    """A pickle whose unpickling creates tmp/PWNED, where a config.json points timm."""
    (tmp / "evil.pth").write_bytes(pickle.dumps(Evil(tmp / "PWNED")))
    return tmp / "evil.pth"


@case
def case_config_names_a_checkpoint_path(tmp, good_run):
    run = edit_config(copy_run(good_run, tmp), lambda c: c["model_args"].update(checkpoint_path=str(evil_file(tmp))))
    return Call(["predict", run, image(tmp)])


@case
def case_config_overlays_a_weights_url(tmp, good_run):
    run = edit_config(copy_run(good_run, tmp),
                      lambda c: c["model_args"].update(pretrained_cfg_overlay={"url": "http://127.0.0.1:9/evil.pth"}))
    return Call(["info", f"local-dir:{run}"])


@case
def case_config_pretrained_cfg_names_a_file(tmp, good_run):
    run = edit_config(copy_run(good_run, tmp), lambda c: c["pretrained_cfg"].update(file=str(evil_file(tmp))))
    return Call(["finetune", f"local-dir:{run}", "--data", "synthetic:4", *TINY[1:], "--out", tmp / "out"], out=tmp / "out")


@case
def case_config_model_arg_holding_a_path(tmp, good_run):
    run = edit_config(copy_run(good_run, tmp), lambda c: c["model_args"].update(weights=str(evil_file(tmp))))
    return Call(["evaluate", run, "--data", "synthetic:4"])


@case
def case_model_arg_that_loads_weights(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", *TINY, "--model-arg", f"checkpoint_path={evil_file(tmp)}",
                 "--out", tmp / "out"], out=tmp / "out")


@case
def case_finetune_from_a_folder_with_only_pytorch_model_bin(tmp, good_run):
    run = copy_run(good_run, tmp)
    (run / "model.safetensors").unlink()
    (run / "pytorch_model.bin").write_bytes(pickle.dumps(Evil(tmp / "PWNED")))
    return Call(["finetune", f"local-dir:{run}", "--data", "synthetic:4", *TINY[1:], "--out", tmp / "out"], out=tmp / "out")


@case
def case_compare_a_registry_folder_with_only_pytorch_model_bin(tmp, good_run):
    run = copy_run(good_run, tmp)
    (run / "model.safetensors").unlink()
    (run / "pytorch_model.bin").write_bytes(pickle.dumps(Evil(tmp / "PWNED")))
    (tmp / "reg.yaml").write_text(f"backbones:\n  mine:\n    source: local-dir:{run}\n")
    return Call(["compare", "mine", "--data", "synthetic:4", "--img-size", "32"], env={"ZOO_REGISTRY": str(tmp / "reg.yaml")})


@case
def case_damaged_checkpoint(tmp, good_run):
    run = copy_run(good_run, tmp)
    (run / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    return Call(["finetune", "--resume", run, "--epochs", "2", "--quiet"])


@case
def case_pickle_payload_in_checkpoint(tmp, good_run):
    import torch

    run = copy_run(good_run, tmp)
    torch.save({"model": Evil(tmp / "PWNED")}, run / "checkpoints" / "last.pt")
    return Call(["finetune", "--resume", run, "--epochs", "2", "--quiet"])


@case
def case_resume_a_folder_that_is_not_a_run(tmp, good_run):
    (tmp / "notarun").mkdir()
    return Call(["finetune", "--resume", tmp / "notarun"])


@case
def case_resume_with_changed_options(tmp, good_run):
    run = copy_run(good_run, tmp)
    return Call(["finetune", "--resume", run, "--lr", "0.5"])


@case
def case_resume_on_changed_data(tmp, good_run):
    import yaml

    run = copy_run(good_run, tmp)
    cfg = yaml.safe_load((run / "run_config.yaml").read_text())
    cfg["data"] = "synthetic:7"
    (run / "run_config.yaml").write_text(yaml.safe_dump(cfg))
    return Call(["finetune", "--resume", run, "--epochs", "2", "--quiet"])


@case
def case_output_folder_holds_a_run(tmp, good_run):
    run = copy_run(good_run, tmp)
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", *TINY, "--out", run])


@case
def case_concurrent_run_in_the_same_folder(tmp, good_run):
    from zoo.runs import RunLock

    out = tmp / "busy"
    lock = RunLock(out).__enter__()  # another zoo run holds the folder (a real flock)
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", *TINY, "--out", out], out=out,
                cleanup=lambda: lock.__exit__(None, None, None))


# -- data ------------------------------------------------------------------------------------
@case
def case_csv_path_escapes_its_folder(tmp, good_run):
    image(tmp)
    (tmp / "data").mkdir()
    (tmp / "data" / "list.csv").write_text("image,label\n../imgs/a/0.png,a\n")
    return Call(["finetune", "test_resnet", "--data", tmp / "data" / "list.csv", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_csv_label_not_in_the_training_labels(tmp, good_run):
    image(tmp)
    (tmp / "list.csv").write_text("image,label,split\nimgs/a/0.png,a,train\nimgs/b/0.png,b,train\nimgs/a/1.png,zebra,val\n")
    return Call(["finetune", "test_resnet", "--data", tmp / "list.csv", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_csv_without_image_or_label_column(tmp, good_run):
    (tmp / "list.csv").write_text("picture,kind\nx.png,a\n")
    return Call(["finetune", "test_resnet", "--data", tmp / "list.csv", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_csv_image_missing(tmp, good_run):
    (tmp / "list.csv").write_text("image,label\nnope.png,a\nnope2.png,b\n")
    return Call(["finetune", "test_resnet", "--data", tmp / "list.csv", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_image_folder_missing(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", f"imagefolder:{tmp / 'nowhere'}", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_symlink_loops_and_no_images(tmp, good_run):
    for name in ("a", "b"):
        (tmp / "loops" / name).mkdir(parents=True)
        (tmp / "loops" / name / "again").symlink_to(tmp / "loops", target_is_directory=True)
    return Call(["finetune", "test_resnet", "--data", tmp / "loops", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_decompression_bomb_with_strict(tmp, good_run):
    from PIL import Image

    make_image_folder(tmp / "imgs", classes=("a", "b"), per_class=4)
    # 16k x 16k pixels in a small PNG: past Pillow's 2 x MAX_IMAGE_PIXELS limit, refused before decoding.
    Image.new("L", (16_400, 16_400)).save(tmp / "imgs" / "a" / "bomb.png", optimize=True)
    return Call(["finetune", "test_resnet", "--data", tmp / "imgs", *TINY, "--strict", "--out", tmp / "out"], out=tmp / "out")


@case
def case_corrupt_image_with_strict(tmp, good_run):
    make_image_folder(tmp / "imgs", classes=("a", "b"), per_class=4)
    (tmp / "imgs" / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return Call(["finetune", "test_resnet", "--data", tmp / "imgs", *TINY, "--strict", "--out", tmp / "out"], out=tmp / "out")


@case
def case_class_names_differing_only_in_unicode_form(tmp, good_run):
    make_image_folder(tmp / "imgs", classes=("caf\u00e9", "cafe\u0301"), per_class=2)  # NFC and NFD spellings of café
    return Call(["finetune", "test_resnet", "--data", tmp / "imgs", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_validation_folder_with_an_unknown_class(tmp, good_run):
    make_image_folder(tmp / "imgs" / "train", classes=("a", "b"), per_class=2)
    make_image_folder(tmp / "imgs" / "val", classes=("a", "c"), per_class=1)
    return Call(["finetune", "test_resnet", "--data", tmp / "imgs", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_unknown_dataset_name(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "fashion-mnsit", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_misspelt_dataset_name_before_a_colon(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", f"csvv:{tmp / 'labels.csv'}", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_data_file_no_dataset_reads(tmp, good_run):
    (tmp / "notes.txt").write_text("not images")
    return Call(["finetune", "test_resnet", "--data", tmp / "notes.txt", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_fashion_mnist_folder_missing(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", f"fashion-mnist:{tmp / 'fm'}", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_batch_larger_than_the_data(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "synthetic:2", *TINY, "--batch-size", "64", "--out", tmp / "out"], out=tmp / "out")


# -- backbones, registry, plugins ---------------------------------------------------------------
@case
def case_unknown_backbone(tmp, good_run):
    return Call(["finetune", "resnet19", "--data", "synthetic:4", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_registry_entry_pointing_nowhere(tmp, good_run):
    (tmp / "reg.yaml").write_text(f"backbones:\n  ghost:\n    source: local-dir:{tmp / 'gone'}\n")
    return Call(["finetune", "ghost", "--data", "synthetic:4", *TINY, "--out", tmp / "out"], out=tmp / "out",
                env={"ZOO_REGISTRY": str(tmp / "reg.yaml")})


@case
def case_registry_entries_outside_backbones(tmp, good_run):
    (tmp / "reg.yaml").write_text("ghost:\n  source: timm:resnet18\n")
    return Call(["list"], env={"ZOO_REGISTRY": str(tmp / "reg.yaml")})


@case
def case_registry_file_with_bad_yaml(tmp, good_run):
    (tmp / "reg.yaml").write_text("ghost:\n  source: [unclosed\n")
    return Call(["list"], env={"ZOO_REGISTRY": str(tmp / "reg.yaml")})


@case
def case_unknown_head(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", "--head", "mpl", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_bad_freeze_option(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", "--freeze", "last-n", "--freeze-opt", "depth=2", *TINY,
                 "--out", tmp / "out"], out=tmp / "out")


@case
def case_plugin_head_returns_garbage(tmp, good_run):
    from zoo import hookimpl
    from zoo.plugins import get_plugins

    class Garbage:
        @hookimpl
        def zoo_register_heads(self, register):
            register("garbage", lambda model, num_classes: "not a module")

    get_plugins().add(Garbage(), "zoo-garbage")
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", "--head", "garbage", *TINY, "--out", tmp / "out"], out=tmp / "out")


def plugin_record(tmp, good_run, **record):
    """``zoo plugins install --from-model RUN -y`` for a run whose config.json records ``record``. pip, if it ran,
    would install into target/ and log to pip.log: new files the check refuses, never this environment."""
    run = copy_run(good_run, tmp)
    write_plugin_record(run, record)
    return Call(["plugins", "install", "--from-model", run, "-y"], subprocess=True,
                env={"PIP_TARGET": str(tmp / "target"), "PIP_LOG": str(tmp / "pip.log"), "PIP_NO_INDEX": "1"})


@case
def case_plugin_record_with_a_url(tmp, good_run):
    package = make_evil_package(tmp / "evilpkg", tmp / "PWNED")  # building it would create PWNED
    return plugin_record(tmp, good_run, name=f"zoo-cosine @ {package.as_uri()}", version="0.1.0")


@case
def case_plugin_record_shaped_like_a_pip_option(tmp, good_run):
    return plugin_record(tmp, good_run, name="-ihttp://127.0.0.1:9/simple", version="0.1.0")


@case
def case_plugin_record_with_a_bad_version(tmp, good_run):
    return plugin_record(tmp, good_run, name="zoo-cosine", version='1.0; os_name=="posix"')


# -- options -----------------------------------------------------------------------------------
@case
def case_zero_epochs(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", *TINY, "--epochs", "0", "--out", tmp / "out"], out=tmp / "out")


@case
def case_negative_learning_rate(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", *TINY, "--lr", "-1", "--out", tmp / "out"], out=tmp / "out")


@case
def case_model_arg_without_value(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", *TINY, "--model-arg", "drop_rate", "--out", tmp / "out"],
                out=tmp / "out")


@case
def case_model_arg_timm_rejects(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", *TINY, "--model-arg", "wings=2", "--out", tmp / "out"],
                out=tmp / "out")


@case
def case_config_file_not_yaml(tmp, good_run):
    (tmp / "cfg.yaml").write_text("epochs: [1\n")
    return Call(["finetune", "--config", tmp / "cfg.yaml", "--out", tmp / "out"], out=tmp / "out")


@case
def case_config_file_unknown_key(tmp, good_run):
    (tmp / "cfg.yaml").write_text("backbone: test_resnet\ndata: synthetic\nlearning_rate: 0.1\n")
    return Call(["finetune", "--config", tmp / "cfg.yaml", "--out", tmp / "out"], out=tmp / "out")


# -- predict, push, Hub ---------------------------------------------------------------------------
@case
def case_predict_a_missing_image(tmp, good_run):
    return Call(["predict", good_run, tmp / "missing.jpg"])


@case
def case_predict_a_text_file(tmp, good_run):
    (tmp / "notes.txt").write_text("hello")
    return Call(["predict", good_run, tmp / "notes.txt"])


@case
def case_push_a_folder_that_is_not_a_run(tmp, good_run):
    (tmp / "empty").mkdir()
    return Call(["push", tmp / "empty", "me/model"])


@case
def case_push_to_a_bad_repo_id(tmp, good_run):
    return Call(["push", good_run, "not a repo id"])


@case
def case_push_weights_that_are_a_link(tmp, good_run):
    run = copy_run(good_run, tmp)
    shutil.move(run / "model.safetensors", tmp / "weights.safetensors")
    (run / "model.safetensors").symlink_to(tmp / "weights.safetensors")
    return Call(["push", run, "me/model"])


@case
def case_unreachable_hub_without_cache(tmp, good_run):
    return Call(["predict", "hf-hub:me/model", image(tmp)], subprocess=True,
                env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp / "hf-home")})


@case
def case_offline_without_cache(tmp, good_run):
    return Call(["predict", "hf-hub:me/model", image(tmp)], subprocess=True,
                env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf-home")})


@case
def case_backbone_offline_without_cache(tmp, good_run):
    return Call(["finetune", "resnet18", "--data", "synthetic:4", "--out", tmp / "out"], out=tmp / "out", subprocess=True,
                env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp / "hf-home")})


@case
def case_negative_patience(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", *TINY, "--patience", "-1", "--out", tmp / "out"], out=tmp / "out")


# -- failures once training began: nothing is left that a rerun would refuse -----------------------------
@case
def case_learning_rate_that_diverges(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", *TINY, "--lr", "1e30", "--out", tmp / "out"], out=tmp / "out")


@case
def case_freeze_policy_failing_after_training_began(tmp, good_run):
    from zoo import hookimpl
    from zoo.freeze import GroupSetting
    from zoo.plugins import get_plugins

    class Merging:
        def settings(self, epoch, n_groups):
            return [GroupSetting(True, 1.0)] * n_groups

        def export(self, model):  # called for the first best checkpoint, after run_config.yaml and metrics.jsonl exist
            raise ValueError("cannot merge the adapters")

    class Plugin:
        @hookimpl
        def zoo_register_freeze_policies(self, register):
            register("merging", Merging)

    get_plugins().add(Plugin(), "zoo-merging")
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", "--freeze", "merging", *TINY, "--out", tmp / "out"],
                out=tmp / "out")


@case
def case_disk_full_at_the_first_checkpoint(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", *TINY, "--out", tmp / "out"], out=tmp / "out", subprocess=True,
                file_size_limit=64 * 1024)  # run_config.yaml and metrics.jsonl fit, best.safetensors does not


# -- the checks ------------------------------------------------------------------------------------
def documented() -> dict[str, str]:
    """case name -> message, from the table rows ``| `case` | input | `message` |`` of the docs."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*`([a-z0-9-]+)`\s*\|.*\|\s*`(.+)`\s*\|\s*$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def pattern(message: str) -> re.Pattern:
    parts = re.split(r"<[^<>]+>", message)
    return re.compile(".+?".join(re.escape(p) for p in parts))


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink() and "hf-home" not in p.parts:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_every_case_is_documented_and_the_catalogue_is_big_enough():
    docs = documented()
    assert sorted(docs) == sorted(CASES)
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, tmp_path, good_run, run, monkeypatch):
    call = CASES[name](tmp_path, good_run)
    before = {k: v for k, v in snapshot(tmp_path).items() if not k.endswith(".lock")}  # a lock goes with its holder
    if call.subprocess:
        limit = call.file_size_limit
        done = subprocess.run([sys.executable, "-m", "zoo", *map(str, call.args)], capture_output=True, text=True, timeout=120,
                              env={**os.environ, **call.env},
                              preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))) if limit else None)
        code, stderr, stdout = done.returncode, done.stderr, done.stdout
    else:
        for key, value in call.env.items():
            monkeypatch.setenv(key, value)
        result = run(*call.args)
        code, stderr, stdout = result.exit_code, result.stderr, result.stdout
    if call.cleanup:
        call.cleanup()
    assert code != 0, f"exit 0 for a bad input:\n{stdout}\n{stderr}"
    assert "Traceback" not in stderr + stdout
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, stderr
    message = documented()[name]
    assert pattern(message).fullmatch(errors[0].removeprefix("Error: ")), f"\ndocumented: {message}\nprinted:    {errors[0]}"
    # Nothing half-written, nothing else harmed, nothing unpickled.
    from zoo.runs import holds_run

    if call.out is not None:
        assert not holds_run(call.out)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if k not in before and not k.endswith(".lock")], "new files appeared"
    assert not (tmp_path / "PWNED").exists()
