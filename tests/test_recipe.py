"""The default recipe: picked from the data and the backbone, off as soon as the user chooses, printed and recorded."""

import json

import pytest
import yaml

from zoo import recipe


@pytest.fixture
def pretrained(tmp_path):
    """A tiny 'pretrained' backbone as a local-dir folder (timm's format, 32 px input)."""
    import timm
    import torch
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10)
    folder = tmp_path / "tiny"
    folder.mkdir()
    save_file(model.state_dict(), folder / "model.safetensors")
    save_config_for_hf(model, str(folder / "config.json"), data_config={"input_size": (3, 32, 32)})
    return f"local-dir:{folder}"


@pytest.mark.parametrize("facts, name, size", [
    (dict(per_class=1, image_size=28, input_size=224, params_m=4.7, cuda=False), "linear-probe", 160),
    (dict(per_class=10, image_size=28, input_size=224, params_m=4.7, cuda=False), "linear-probe", 160),
    (dict(per_class=recipe.STAGED_FROM - 1, image_size=500, input_size=224, params_m=4.7, cuda=True), "linear-probe", 224),
    (dict(per_class=recipe.STAGED_FROM, image_size=28, input_size=224, params_m=4.7, cuda=False), "staged", 160),
    (dict(per_class=1000, image_size=28, input_size=160, params_m=4.7, cuda=True), "staged", 160),
    (dict(per_class=1000, image_size=500, input_size=224, params_m=86.6, cuda=False), "linear-probe", 160),  # too big for a CPU
    (dict(per_class=1000, image_size=500, input_size=224, params_m=86.6, cuda=True), "staged", 224),
    (dict(per_class=10, image_size=20, input_size=32, params_m=0.3, cuda=False), "linear-probe", 32),
])
def test_recipe_by_images_per_class_image_size_and_backbone(facts, name, size):
    picked = recipe.choose(**facts)
    assert (picked.name, picked.settings["img_size"]) == (name, size)
    assert picked == recipe.choose(**facts)  # deterministic
    assert picked.settings["freeze"] == {"linear-probe": "head-only", "staged": "gradual"}[name]
    assert picked.settings["aug"] == ("none" if name == "linear-probe" else "light")  # a probe trains on cached features
    assert picked.settings["freeze_bn"] is (name == "staged")  # new batch statistics would undo the pretrained features
    # upscaled small images are whole objects: no center crop; larger ones keep the backbone's crop
    assert picked.settings.get("crop_pct") == (1.0 if facts["image_size"] < size else None)


def _plan(run, *args):
    result = run("finetune", *args, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_recipe_reads_the_data_and_the_backbone(run, pretrained):
    few = _plan(run, pretrained, "--data", "synthetic:8")["recipe"]
    assert few["name"] == "linear-probe" and few["img_size"] == 32 and few["freeze"] == "head-only"
    assert "8 training images per class" in few["why"]
    many = _plan(run, pretrained, "--data", f"synthetic:{recipe.STAGED_FROM}")
    assert many["recipe"]["name"] == "staged" and many["freeze"] == "gradual" and many["freeze_bn"] is True
    assert {s["norm"] for g in many["groups"][:-1] for s in g["schedule"]} == {"frozen"}  # the backbone's statistics stay
    assert _plan(run, pretrained, "--data", f"synthetic:{recipe.STAGED_FROM}", "--no-freeze-bn")["freeze_bn"] is False  # given: kept
    assert many["groups"][0]["schedule"][0]["trainable"] is False and many["groups"][0]["schedule"][1]["trainable"] is True
    assert _plan(run, pretrained, "--data", f"synthetic:{recipe.STAGED_FROM}", "--shots", "5")["recipe"]["name"] == "linear-probe"


@pytest.mark.parametrize("flag", [["--freeze", "none"], ["--lr", "0.01"], ["--epochs", "2"], ["--img-size", "32"], ["--no-pretrained"]])
def test_choosing_any_of_freeze_lr_epochs_img_size_turns_the_recipe_off(run, pretrained, flag):
    plan = _plan(run, pretrained, "--data", "synthetic:8", *flag)
    assert plan["recipe"] is None
    defaults = {"freeze": "none", "epochs": 5}
    assert {k: plan[k] for k in defaults} == (defaults | ({"freeze": "none"} if flag[0] != "--epochs" else {"epochs": 2}))


def test_recipe_is_printed_before_training_and_recorded_in_the_run(run, pretrained, tmp_path):
    out = tmp_path / "run"
    result = run("finetune", pretrained, "--data", "synthetic:8", "--batch-size", "8", "--out", out)
    assert result.exit_code == 0, result.output
    picked, why = result.stderr.splitlines()[:2]
    assert picked == "default recipe 'linear-probe': freeze head-only, 30 epochs, lr 0.01, 32 px, aug none"
    assert why.startswith("  why: 8 training images per class (< 50)")
    run_config = yaml.safe_load((out / "run_config.yaml").read_text())
    assert run_config["recipe"]["name"] == "linear-probe"
    assert {k: run_config[k] for k in ("freeze", "epochs", "lr", "img_size", "aug")} == \
        {k: run_config["recipe"][k] for k in ("freeze", "epochs", "lr", "img_size", "aug")}
    assert json.loads((out / "config.json").read_text())["zoo"]["recipe"] == run_config["recipe"]
    # The recorded config re-runs as is: its values are explicit, so no recipe is picked again.
    again = _plan(run, "--config", out / "run_config.yaml")
    assert again["recipe"] is None and again["freeze"] == "head-only" and again["epochs"] == 30


def test_python_api_uses_the_recipe_too(pretrained, tmp_path):
    import zoo

    result = zoo.finetune(pretrained, data="synthetic:8", out=tmp_path / "r", epochs=1, batch_size=8)
    assert yaml.safe_load((result.run_dir / "run_config.yaml").read_text())["recipe"] is None  # epochs given: off
    result = zoo.finetune(pretrained, data="synthetic:8", out=tmp_path / "auto", batch_size=8)
    config = yaml.safe_load((result.run_dir / "run_config.yaml").read_text())
    assert config["recipe"]["name"] == "linear-probe" and config["batch_size"] == 8 and len(result.history) == 30


def test_dry_run_prints_the_recipe_as_two_lines(run, pretrained):
    result = run("finetune", pretrained, "--data", "synthetic:8", "--dry-run")
    assert result.exit_code == 0, result.output
    picked, why = result.stdout.splitlines()[:2]
    assert picked.startswith("default recipe 'linear-probe': freeze head-only") and why.startswith("  why: ")
    assert "\\n" not in result.stdout
