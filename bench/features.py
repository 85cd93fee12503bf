"""The frozen-feature pass (``zoo compare``, head-only fine-tuning) against a plain timm eval loop.

Both extract the pooled pre-logit features of the same Fashion-MNIST test images, decoded once at
the backbone's input size (224 px for EfficientNet-Lite0), in batches of 64, measured side by side
in one run (alternating rounds, best of each):

  plain timm   model.eval(), torch.no_grad(), default layout, float32 (what a user would write)
  zoo          zoo.features.compute as the trainer and compare run it: inference mode, channels_last,
               bf16 autocast on CPUs with bf16 units (zoo.features.pass_dtype)

Prints images/s of each and the ratio, then what the precision changes: agreement of the ImageNet
top-1 class between the two, and the top-1 of a logistic-regression probe (first half of the images
trains, second half scores) on each one's features.

    .venv/bin/python bench/features.py [BACKBONE] [--images 512] [--rounds 3]

BACKBONE defaults to efficientnet-lite0 (the zoo-efficientnet-lite plugin); any pretrained spec works,
e.g. local-dir:/path/to/a/timm/folder.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def plain_features(model, images: torch.Tensor, mean, std, batch: int) -> torch.Tensor:
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = (images[start:start + batch].float() / 255 - mean) / std
            out.append(model.forward_head(model.forward_features(x), pre_logits=True))
    return torch.cat(out)


def main() -> None:
    import timm
    from timm.data import resolve_data_config

    from zoo import backbones, data, features
    from zoo.builtins.datasets import fashion_mnist
    from zoo.compare import probe
    from zoo.registry import resolve

    parser = argparse.ArgumentParser()
    parser.add_argument("backbone", nargs="?", default="efficientnet-lite0")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    spec = resolve(args.backbone)
    # the user's loop loads the same weights timm's own way (a plugin's backbone: the model folder it made)
    name = f"local-dir:{backbones.model_folder(spec)}" if spec.kind == "package" else spec.timm_name
    plain = timm.create_model(name, pretrained=True).eval()
    cfg = resolve_data_config({}, model=plain)
    size = int(cfg["input_size"][-1])
    test = fashion_mnist(None).splits["test"]
    pick = data.per_class(test.labels, args.images // 10, seed=0)
    decoded = data.cached_decode(test.subset(pick), data.Preprocess(size, float(cfg["crop_pct"]), cfg["interpolation"]))
    images, labels = decoded.images, decoded.labels.numpy()

    model = backbones.create(spec, num_classes=1000, pretrained=True, seed=0).eval()  # what zoo builds for a linear probe
    layout = backbones.memory_format(model)
    model.to(memory_format=layout)
    part = features.split(model)
    dtype = features.pass_dtype("cpu", "auto", None)
    prepare = data.Normalize(tuple(cfg["mean"]), tuple(cfg["std"]), torch.device("cpu"), layout)
    run_zoo = lambda: features.compute(part, images, prepare, args.batch, lambda: features.autocast("cpu", dtype))  # noqa: E731
    run_plain = lambda: plain_features(plain, images, cfg["mean"], cfg["std"], args.batch)  # noqa: E731

    print(f"{spec.source} at {size} px, {len(images)} Fashion-MNIST test images, batch {args.batch}, "
          f"{torch.get_num_threads()} threads; zoo's pass in {dtype or torch.float32}, {layout}", flush=True)
    best = {"plain timm": float("inf"), "zoo": float("inf")}
    outputs = {}
    for _ in range(args.rounds):
        for name, fn in (("plain timm", run_plain), ("zoo", run_zoo)):
            start = time.perf_counter()
            outputs[name] = fn().float()
            best[name] = min(best[name], time.perf_counter() - start)
    rates = {name: len(images) / seconds for name, seconds in best.items()}
    for name, rate in rates.items():
        print(f"  {name:<11} {rate:7.1f} images/s")
    print(f"zoo / plain timm: {rates['zoo'] / rates['plain timm']:.2f}x")

    head = plain.get_classifier()
    with torch.no_grad():
        agree = (head(outputs["plain timm"]).argmax(1) == head(outputs["zoo"]).argmax(1)).float().mean().item()
    cos = torch.nn.functional.cosine_similarity(outputs["plain timm"], outputs["zoo"]).min().item()
    half = len(images) // 2
    order = np.random.default_rng(0).permutation(len(images))
    tr, te = order[:half], order[half:]
    probes = {name: probe(f.numpy()[tr], labels[tr], f.numpy()[te], labels[te]) for name, f in outputs.items()}
    print(f"precision: ImageNet top-1 class agrees on {agree:.1%} of images; feature cosine similarity >= {cos:.4f}; "
          f"probe top-1 plain {probes['plain timm']:.3f}, zoo {probes['zoo']:.3f} ({probes['zoo'] - probes['plain timm']:+.3f})")


if __name__ == "__main__":
    main()
