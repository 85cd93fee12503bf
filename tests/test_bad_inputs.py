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
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import alias_bomb, make_evil_package, make_image_folder, write_plugin_record

from zoo import forkserver

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
    from zoo.rundir import RunLock

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
def case_csv_not_utf_8(tmp, good_run):
    image(tmp)
    (tmp / "list.csv").write_bytes(b"image,label\nimgs/a/0.png,a\nimgs/b/0.png,caf\xe9\n")
    return Call(["finetune", "test_resnet", "--data", tmp / "list.csv", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_csv_with_a_nul_byte(tmp, good_run):
    image(tmp)
    (tmp / "list.csv").write_bytes(b"image,label\nimgs/a/0.png,a\x00\nimgs/b/0.png,b\n")
    return Call(["finetune", "test_resnet", "--data", tmp / "list.csv", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_csv_empty_file(tmp, good_run):
    (tmp / "list.csv").write_bytes(b"")
    return Call(["finetune", "test_resnet", "--data", tmp / "list.csv", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_csv_row_without_a_label(tmp, good_run):
    image(tmp)
    (tmp / "list.csv").write_text('image,label\nimgs/a/0.png,"two\nlines"\nimgs/b/0.png,\n')  # a quoted value may span lines
    return Call(["finetune", "test_resnet", "--data", tmp / "list.csv", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_csv_value_over_the_size_limit(tmp, good_run):
    image(tmp)
    (tmp / "list.csv").write_text(f"image,label\nimgs/a/0.png,{'a' * 200_000}\nimgs/b/0.png,b\n")
    return Call(["finetune", "test_resnet", "--data", tmp / "list.csv", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_empty_class_folder(tmp, good_run):
    make_image_folder(tmp / "imgs", classes=("a", "b"), per_class=4)
    (tmp / "imgs" / "c").mkdir()
    (tmp / "imgs" / "c" / ".DS_Store").write_bytes(b"")  # hidden files are not images
    return Call(["finetune", "test_resnet", "--data", tmp / "imgs", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_class_with_only_unreadable_images(tmp, good_run):
    make_image_folder(tmp / "imgs", classes=("a", "b"), per_class=4)
    (tmp / "imgs" / "c").mkdir()
    for i in range(2):
        (tmp / "imgs" / "c" / f"{i}.jpg").write_bytes(b"")  # 0 bytes: skipped, so c would have no images
    return Call(["finetune", "test_resnet", "--data", tmp / "imgs", *TINY, "--out", tmp / "out"], out=tmp / "out")


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
def case_registry_file_alias_bomb(tmp, good_run):
    (tmp / "reg.yaml").write_text(alias_bomb())  # 9**9 strings in 600 bytes: `zoo list` used to hang expanding them
    return Call(["list", "--json"], env={"ZOO_REGISTRY": str(tmp / "reg.yaml")}, subprocess=True)


@case
def case_registry_file_not_utf_8(tmp, good_run):
    (tmp / "reg.yaml").write_bytes(b"backbones:\n  x:\n    source: timm:resnet18\n    description: caf\xe9\n")
    return Call(["list"], env={"ZOO_REGISTRY": str(tmp / "reg.yaml")})


@case
def case_registry_file_with_a_nul_byte(tmp, good_run):
    (tmp / "reg.yaml").write_bytes(b"backbones:\n  x:\n    source: timm:resnet18\x00\n")
    return Call(["list"], env={"ZOO_REGISTRY": str(tmp / "reg.yaml")})


@case
def case_unknown_head(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", "--head", "mpl", *TINY, "--out", tmp / "out"], out=tmp / "out")


@case
def case_bad_freeze_option(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", "--freeze", "last-n", "--freeze-opt", "depth=2", *TINY,
                 "--out", tmp / "out"], out=tmp / "out")


@case
def case_bad_freeze_option_value(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", "--freeze", "last-n", "--freeze-opt", "n=true", *TINY,
                 "--out", tmp / "out"], out=tmp / "out")


@case
def case_bad_head_option_value(tmp, good_run):
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", "--head", "mlp", "--head-opt", "hidden=wide", *TINY,
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


# -- settings out of range or of the wrong type (every setting: test_every_bad_setting_* below) ------------
def finetune_with(tmp, *args):
    return Call(["finetune", "test_resnet", "--data", "synthetic:4", *TINY, *args, "--out", tmp / "out"], out=tmp / "out")


@case
def case_negative_momentum(tmp, good_run):
    return finetune_with(tmp, "--momentum", "-1")


@case
def case_negative_seed(tmp, good_run):
    return finetune_with(tmp, "--seed", "-1")


@case
def case_seed_numpy_cannot_take(tmp, good_run):
    return finetune_with(tmp, "--seed", str(2**32))


@case
def case_negative_clip_grad(tmp, good_run):
    return finetune_with(tmp, "--clip-grad", "-1")


@case
def case_negative_warmup(tmp, good_run):
    return finetune_with(tmp, "--warmup-epochs", "-5")


@case
def case_fraction_of_an_epoch(tmp, good_run):
    return finetune_with(tmp, "--epochs", "2.5")


@case
def case_learning_rate_nan(tmp, good_run):
    return finetune_with(tmp, "--lr", "nan")


@case
def case_nesterov_without_momentum(tmp, good_run):
    return finetune_with(tmp, "--nesterov", "--momentum", "0")


@case
def case_node_rank_not_below_nnodes(tmp, good_run):
    return finetune_with(tmp, "--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "127.0.0.1:29400")


@case
def case_config_file_value_of_the_wrong_type(tmp, good_run):
    (tmp / "cfg.yaml").write_text("backbone: test_resnet\ndata: synthetic\nweight_decay: abc\n")
    return Call(["finetune", "--config", tmp / "cfg.yaml", "--out", tmp / "out"], out=tmp / "out")


@case
def case_config_file_bool_given_as_text(tmp, good_run):
    (tmp / "cfg.yaml").write_text("backbone: test_resnet\ndata: synthetic\npretrained: 'no'\n")
    return Call(["finetune", "--config", tmp / "cfg.yaml", "--out", tmp / "out"], out=tmp / "out")


@case
def case_config_file_not_a_mapping(tmp, good_run):
    (tmp / "cfg.yaml").write_text("- backbone: test_resnet\n")
    return Call(["finetune", "--config", tmp / "cfg.yaml", "--out", tmp / "out"], out=tmp / "out")


@case
def case_config_file_not_utf8(tmp, good_run):
    (tmp / "cfg.yaml").write_bytes("backbone: caf\u00e9\n".encode("latin-1"))
    return Call(["finetune", "--config", tmp / "cfg.yaml", "--out", tmp / "out"], out=tmp / "out")


@case
def case_config_file_number_too_long(tmp, good_run):
    (tmp / "cfg.yaml").write_text("backbone: test_resnet\ndata: synthetic\nseed: " + "9" * 5000 + "\n")
    return Call(["finetune", "--config", tmp / "cfg.yaml", "--out", tmp / "out"], out=tmp / "out")


@case
def case_resume_with_a_bad_value_in_run_config(tmp, good_run):
    run = copy_run(good_run, tmp)
    text = (run / "run_config.yaml").read_text()
    (run / "run_config.yaml").write_text(text.replace("\nseed: 0\n", "\nseed: -1\n"))
    return Call(["finetune", "--resume", run, "--epochs", "2", "--quiet"])


# -- predict, push, Hub ---------------------------------------------------------------------------
@case
def case_predict_a_missing_image(tmp, good_run):
    return Call(["predict", good_run, tmp / "missing.jpg"])


@case
def case_predict_a_text_file(tmp, good_run):
    (tmp / "notes.txt").write_text("hello")
    return Call(["predict", good_run, tmp / "notes.txt"])


@case
def case_predict_an_image_over_the_pixel_budget(tmp, good_run):
    from PIL import Image

    Image.new("L", (10_000, 9_000)).save(tmp / "big.png")  # 90M pixels, 90 KB: past Image.MAX_IMAGE_PIXELS
    return Call(["predict", good_run, tmp / "big.png"])


@case
def case_predict_a_truncated_image(tmp, good_run):
    from PIL import Image

    Image.new("RGB", (200, 200), (200, 30, 30)).save(tmp / "whole.jpg")
    (tmp / "cut.jpg").write_bytes((tmp / "whole.jpg").read_bytes()[:400])
    return Call(["predict", good_run, tmp / "cut.jpg"])


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
    """case name -> message, from the table rows ``| `case` | input | `message` |`` of the docs' catalogue
    (the sections below it, such as the damaged config.json's, belong to other test files)."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").split("\n### ")[0].splitlines():
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
        done = forkserver.run([sys.executable, "-m", "zoo", *map(str, call.args)], capture_output=True, text=True, timeout=120,
                              env={**os.environ, **call.env},
                              file_size_limit=limit)
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
    from zoo.rundir import holds_run

    if call.out is not None:
        assert not holds_run(call.out)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if k not in before and not k.endswith(".lock")], "new files appeared"
    assert not (tmp_path / "PWNED").exists()


# -- the whole class: every setting's bad values, through flags, --config files and zoo.finetune ---------------------
# setting: (bad text for its flag, bad values for a --config file and a zoo.finetune keyword). A bool's flag
# cannot carry a bad value, and the settings of processes and publishing are not keys of a --config file.
BAD_SETTINGS = {
    "backbone": ([], [5, ["resnet18"]]),
    "data": ([""], [5, ["x"], {"a": 1}]),
    "head": ([""], [1, None, ""]),
    "head_opts": (["hidden"], [["hidden"], "hidden=1", {1: 2}]),
    "freeze": ([""], [0, ""]),
    "freeze_opts": (["n"], [[1], "n=2"]),
    "model_args": (["drop_rate"], ["drop_rate=0.1", [1]]),
    "epochs": (["0", "-3", "2.5", "1e9", str(2**31)], [0, -1, 2.5, "2", True, 2**31]),
    "batch_size": (["0", "abc", "-8"], [0, 1.5, "64", True]),
    "lr": (["-1", "0", "nan", "inf", "fast"], [-0.1, float("nan"), "0.1", [0.1], True]),
    "momentum": (["-1", "1", "nan"], [-1, 1.0, "0.9", None]),
    "nesterov": ([], ["yes", 1, None]),
    "weight_decay": (["-1e-4", "inf", "abc"], ["abc", -1, float("inf"), None, 10**400]),
    "warmup_epochs": (["-5", "nan", "1e12"], [-5, "1", float("nan")]),
    "label_smoothing": (["1", "-0.1"], [1, "0.1"]),
    "accum_steps": (["0", "1.5"], [0, 1.5, False]),
    "clip_grad": (["-1", "0", "nan"], [-1, 0, "1"]),
    "amp": (["fp16"], ["fp16", None, True]),
    "channels_last": ([], ["on", 1]),
    "ema_decay": (["0", "1", "1.5"], [0, 1, "0.99"]),
    "img_size": (["4", "5000", "32.5"], [4, 32.5, "32"]),
    "crop_pct": (["0", "1.5", "-1"], [0, 1.5, "0.9"]),
    "aug": (["heavy"], ["heavy", 1]),
    "freeze_bn": ([], ["on", 1]),
    "val_split": (["1", "-0.1"], [1, "0.1", None]),
    "shots": (["0", "-1"], [0, 1.5]),
    "seed": (["-1", str(2**32), "1.5", "9" * 5000], [-1, 2**32, 2**64, 10**5000, "0", None, 0.0]),
    "pretrained": ([], ["false", 0, None]),
    "device": (["gpu", "cuda:x", "CPU"], ["gpu", 0, None]),
    "metric": (["accuracy"], ["accuracy", None]),
    "patience": (["-1", "1.5"], [-1, "3"]),
    "strict": ([], ["yes"]),
    "sync_bn": ([], ["no"]),
    "save_every": (["0", "-5"], [0, "10"]),
    "feature_cache": ([], [1]),
    "compile": ([], ["true"]),
    "recipe": ([], ["staged", [1]]),
    "nproc_per_node": (["0", "-1", "2000", "two"], []),
    "nnodes": (["0", "x"], []),
    "node_rank": (["-1", "1.5"], []),
    "rdzv_endpoint": (["nohost", "host:port", ""], []),
    "max_restarts": (["-1", "1.5"], []),
    "push_to_hub": ([""], []),
    "hub_strategy": (["never"], ["never", None]),
    "private": ([], ["yes"]),
}


def _cases(which: int, keep=lambda name, value: True):
    return [pytest.param(name, value, id=f"{name}={_short(value)}") for name, bad in BAD_SETTINGS.items()
            for value in bad[which] if keep(name, value)]


def _short(value) -> str:
    return f"<int of {value.bit_length()} bits>" if isinstance(value, int) and value.bit_length() > 64 else repr(value)[:40]


def _dumpable(name, value) -> bool:
    """Keys of a --config file, with values YAML can write (Python cannot write an int of 5000 digits: a case of its own)."""
    return name not in ("hub_strategy", "private") and not (isinstance(value, int) and value.bit_length() > 1000)


def _one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0].removeprefix("Error: ")


def test_every_setting_has_bad_values_here():
    """A new setting comes with its bad values, so that its check is tested three ways."""
    from zoo import config

    assert set(BAD_SETTINGS) == set(config.SETTINGS)
    for name, (texts, values) in BAD_SETTINGS.items():
        s = config.SETTINGS[name]
        assert texts or s.kind is bool or s.flag == "", f"{name}: no bad flag value"  # backbone is an argument
        assert values or config.SCHEMA[name] is config.Launch or name == "push_to_hub", f"{name}: no bad value for files and keywords"


@pytest.mark.parametrize("name, text", _cases(0))
def test_every_bad_setting_on_the_command_line(name, text, run, tmp_path):
    from zoo import config

    flag = config.flag_of(name)
    result = run("finetune", "test_resnet", "--data", "synthetic:4", "--no-pretrained", flag, text, "--out", tmp_path / "out")
    assert _one_error_line(result).startswith(f"{flag} "), result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, value", _cases(1, _dumpable))
def test_every_bad_setting_in_a_config_file(name, value, run, tmp_path):
    import yaml

    good = {"backbone": "test_resnet", "data": "synthetic:4", "pretrained": False}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({**good, name: value}, sort_keys=False, width=10**6))
    result = run("finetune", "--config", tmp_path / "cfg.yaml", "--out", tmp_path / "out")
    line = list(good).index(name) + 1 if name in good else len(good) + 1
    assert _one_error_line(result).startswith(f"--config {tmp_path / 'cfg.yaml'}:{line}: {name} must be "), result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, value", _cases(1))
def test_every_bad_setting_as_a_keyword(name, value, tmp_path):
    import zoo

    options = {"backbone": "test_resnet", "data": "synthetic:4", "pretrained": False, name: value}
    with pytest.raises(zoo.UsageError) as caught:
        zoo.finetune(**options, out=tmp_path / "out")
    assert str(caught.value).startswith(f"{name} must be ") and "\n" not in str(caught.value)
    assert caught.value.exit_code == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name, value", _cases(1, lambda name, value: name in ("epochs", "device", "patience")))
def test_a_bad_setting_with_resume(name, value, good_run, tmp_path):
    """What --resume may change is checked as strictly as the rest, before the run is touched."""
    import zoo

    before = snapshot(good_run)
    with pytest.raises(zoo.UsageError, match=f"^{name} must be "):
        zoo.finetune(resume=good_run, **{name: value})
    assert snapshot(good_run) == before


@pytest.mark.parametrize("flag, text", [("--seed", "-1"), ("--val-split", "1"), ("--shots", "0"), ("--img-size", "4")])
def test_compare_checks_the_settings_it_shares_with_finetune(flag, text, run):
    assert _one_error_line(run("compare", "test_resnet", "--data", "synthetic:4", flag, text)).startswith(f"{flag} must be ")


def test_run_config_round_trips_and_reads_1e_numbers(tmp_path):
    """dump() writes what load_file() reads back as the same config; a hand-written 1e-4 is a number, not text."""
    from zoo import config

    cfg = config.FinetuneConfig.from_dict({"backbone": "test_resnet", "data": "synthetic:4", "head_opts": {"hidden": 8}, "lr": 1e-5,
                                           "epochs": 3, "nesterov": True, "clip_grad": 2.0, "seed": 2**32 - 1, "recipe": {"name": "x"}})
    (tmp_path / "run_config.yaml").write_text(config.dump(cfg))
    assert config.FinetuneConfig.from_dict(config.load_file(tmp_path / "run_config.yaml")) == cfg
    (tmp_path / "cfg.yaml").write_text("weight_decay: 1e-4\nlr: 5E-3\n")
    assert config.load_file(tmp_path / "cfg.yaml") == {"weight_decay": 1e-4, "lr": 5e-3}
