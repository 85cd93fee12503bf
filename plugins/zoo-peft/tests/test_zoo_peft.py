"""zoo-peft: real LoRA fine-tunes (peft), frozen base weights, merged exports that plain timm loads, resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import zoo
from zoo.api import UsageError, classifier_param_names, hookimpl
from zoo.testing import add_plugin, build_model, build_policy, reload_plugins

FAST = dict(data="digits", shots=10, pretrained=False, img_size=32, batch_size=16, aug="none", device="cpu", seed=0)
VIT = {"img_size": 32}


class Watch:
    """A real in-process plugin: keeps the trained model and its weights before the first step."""

    @hookimpl
    def zoo_on_train_start(self, trainer, config):
        self.model = trainer.model
        self.start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


def lora_model_is_trained(backbone, model_args, tmp_path):
    watch = Watch()
    add_plugin(watch, "watch")
    result = zoo.finetune(backbone, out=tmp_path / "run", freeze="lora", model_args=model_args, epochs=1, **FAST)
    return result.run_dir, watch


@pytest.mark.parametrize("backbone, model_args, adapted", [
    ("test_vit", VIT, ["patch_embed.proj", "blocks.0.attn.qkv", "blocks.0.mlp.fc2"]),   # Linear and Conv2d layers
    ("test_resnet", {}, ["conv1.0", "layer1.0.conv1", "layer4.0.downsample.1"]),       # Conv2d layers
])
def test_only_adapters_and_head_change_and_the_export_loads_in_plain_timm(tmp_path, monkeypatch, backbone, model_args, adapted):
    import timm

    run, watch = lora_model_is_trained(backbone, model_args, tmp_path)
    trained = watch.model.eval()
    head = classifier_param_names(trained)
    assert head
    for name in adapted:
        assert f"{name}.lora_A.default.weight" in watch.start and f"{name}.base_layer.weight" in watch.start
    assert not any(".lora_" in n for n in head)  # the classifier has no adapter: it trains fully

    now = dict(trained.named_parameters())
    changed = {n for n, p in now.items() if not torch.equal(p.detach(), watch.start[n])}
    assert head <= changed
    assert any(".lora_B." in n for n in changed)  # B starts at zero: a trained adapter has moved it
    assert changed <= head | {n for n in now if ".lora_" in n}, sorted(changed - head)[:5]  # base weights frozen

    # The published weights: the original architecture's keys, adapters merged.
    state = load_file(run / "model.safetensors")
    plain = timm.create_model(backbone, pretrained=False, num_classes=10, **model_args)
    assert state.keys() == plain.state_dict().keys()
    config = json.loads((run / "config.json").read_text())
    assert config["zoo"]["freeze"] == {"name": "lora", "options": {}}
    assert any(p["name"] == "zoo-peft" for p in config["zoo"]["plugins"])

    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = trained(x)
        loaded = timm.create_model(f"local-dir:{run}", pretrained=True).eval()  # plain timm, no peft; model_args from config.json
        assert not any("lora" in n for n in loaded.state_dict())
        torch.testing.assert_close(loaded(x), expected, atol=1e-5, rtol=1e-4)
        monkeypatch.setenv("ZOO_LOAD_PLUGINS", "")  # zoo without zoo-peft loads the published model
        reload_plugins()
        torch.testing.assert_close(zoo.load(run)[0](x), expected, atol=1e-5, rtol=1e-4)
    assert any(not torch.equal(state[n], plain_w) for n, plain_w in
               ((f"{a}.weight", watch.start[f"{a}.base_layer.weight"]) for a in adapted))  # merged, not the base


def test_head_plugin_trains_fully_and_options_pick_layers():
    """With a WithHead head (zoo's mlp) and target/exclude patterns; no training needed."""
    model = build_model("test_vit", num_classes=3, head="mlp", pretrained=False, model_args=VIT)
    policy = build_policy("lora", r=4, alpha=8, target="qkv,mlp.fc*", exclude=["blocks.[1-5].*", "blocks.0.mlp.fc2"])
    model = policy.prepare(model)
    adapted = sorted({n.split(".lora_A")[0] for n, _ in model.named_parameters() if ".lora_A." in n})
    assert adapted == ["backbone.blocks.0.attn.qkv", "backbone.blocks.0.mlp.fc1"]
    assert model.backbone.blocks[0].attn.qkv.lora_A["default"].weight.shape[0] == 4  # rank r
    heads = [n for n, _ in model.named_parameters() if n.startswith("head.")]
    assert heads and all(policy.trainable(n) for n in heads)
    assert not policy.trainable("backbone.blocks.0.attn.qkv.base_layer.weight")
    assert policy.trainable("backbone.blocks.0.attn.qkv.lora_B.default.weight")


@pytest.mark.parametrize("options, message", [
    ({"r": 0}, "r must be at least 1"),
    ({"r": 2.5}, "r must be a whole number"),
    ({"dropout": 1}, r"dropout must be in \[0, 1\)"),
    ({"target": "no_such_layer"}, "no Linear or Conv2d layer in target=no_such_layer"),
])
def test_bad_options_are_usage_errors(options, message):
    with pytest.raises(UsageError, match=message):
        policy = build_policy("lora", **options)
        policy.prepare(build_model("test_resnet", num_classes=3, pretrained=False))


class StopAfterOneEpoch:
    """A real in-process plugin: ends training after the first epoch, leaving a run that --resume continues."""

    @hookimpl
    def zoo_on_epoch_end(self, trainer, epoch, metrics):
        trainer.should_stop = True


def test_resume_continues_the_adapters_exactly(cli, tmp_path):
    def last_checkpoint(run):  # the training state --resume reads
        return torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)

    options = dict(freeze="lora", freeze_opts={"r": 4}, epochs=2, **FAST)
    straight = zoo.finetune("test_resnet", out=tmp_path / "straight", **options).run_dir
    add_plugin(StopAfterOneEpoch(), "stop")
    resumed = zoo.finetune("test_resnet", out=tmp_path / "resumed", **options).run_dir
    assert [json.loads(line)["epoch"] for line in (resumed / "metrics.jsonl").read_text().splitlines()] == [1]
    cli("finetune", "--resume", resumed, "--quiet")  # a new process: the adapters come back from checkpoints/last.pt
    assert [json.loads(line)["epoch"] for line in (resumed / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    a, b = last_checkpoint(straight)["model"], last_checkpoint(resumed)["model"]
    assert a.keys() == b.keys() and any(".lora_A." in k for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)
    assert not any("lora" in k or "base_layer" in k for k in load_file(resumed / "model.safetensors"))
    out = cli("evaluate", resumed, "--data", "digits", "--json")
    assert 0.0 <= json.loads(out.stdout)["top1"] <= 1.0
