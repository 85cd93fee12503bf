"""zoo-heads: the heads are registered, train through `zoo finetune`, and load again with the same structure."""

from __future__ import annotations

import json

import pytest
import torch

import zoo
from zoo.testing import build_model, registered

FAST = ["--data", "digits", "--shots", "10", "--no-pretrained", "--img-size", "32", "--epochs", "1",
        "--batch-size", "16", "--aug", "none", "--device", "cpu", "--quiet"]


def test_heads_are_registered_by_this_plugin():
    heads = registered("heads")
    assert heads["cosine"].plugin == "heads"
    assert heads["attn-pool"].plugin == "heads"
    assert "scale" in heads["cosine"].description


def test_cosine_head_trains_and_loads(cli, tmp_path):
    run = tmp_path / "cosine"
    cli("finetune", "test_resnet", *FAST, "--head", "cosine", "--head-opt", "scale=10", "--out", run)
    config = json.loads((run / "config.json").read_text())
    assert config["zoo"]["head"] == {"name": "cosine", "options": {"scale": 10}}
    assert any(p["name"] == "zoo-heads" and "cosine" in p["provides"] for p in config["zoo"]["plugins"])

    model, _, classes = zoo.load(run)
    assert type(model.head).__name__ == "CosineClassifier"
    assert float(model.head.log_scale.exp()) == pytest.approx(10.0)
    assert "log_scale" not in dict(model.head.named_parameters())  # a fixed scale is a buffer, not trained
    with torch.no_grad():
        logits = model(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, len(classes)) == (4, 10)
    assert logits.abs().max() <= 10.0 + 1e-4  # a cosine times the scale


@pytest.mark.parametrize("backbone, extra, feature_dims", [
    ("test_resnet", [], 4),                               # a CNN: (B, C, H, W) feature maps
    ("test_vit", ["--model-arg", "img_size=32"], 3),      # a ViT: (B, tokens, C)
])
def test_attention_pool_trains_on_cnn_and_vit(cli, tmp_path, backbone, extra, feature_dims):
    run = tmp_path / backbone
    cli("finetune", backbone, *FAST, *extra, "--head", "attn-pool", "--head-opt", "heads=2", "--out", run)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1] and history[0]["train_loss"] > 0

    model, _transform, classes = zoo.load(run)
    assert type(model.head).__name__ == "AttentionPool"
    assert model.head.attn.num_heads == 2
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        features = model.backbone(x)
        assert features.ndim == feature_dims and model.head.dim in features.shape  # unpooled
        assert model(x).shape == (3, len(classes))

    image = tmp_path / "digit.png"
    from PIL import Image

    Image.new("L", (8, 8), 200).save(image)
    assert zoo.predict(run, [image])[0]["predictions"][0]["label"] in classes


@pytest.mark.parametrize("head, options, message", [
    ("attn-pool", {"heads": 3}, "heads must be a positive divisor of the feature width 64"),
    ("attn-pool", {"dropout": 1.5}, r"dropout must be in \[0, 1\)"),
    ("cosine", {"scale": -1}, "scale must be positive"),
    ("cosine", {"scale": "big"}, "scale must be a number"),
    ("cosine", {"learn_scale": "maybe"}, "learn_scale must be true or false"),
])
def test_bad_options_are_usage_errors(head, options, message):
    with pytest.raises(zoo.UsageError, match=message):
        build_model("test_vit", num_classes=3, head=head, head_opts=options, pretrained=False, model_args={"img_size": 32})
