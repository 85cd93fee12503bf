"""Transfer-learning experiments behind docs/results.md.

  split    Pretrain on Fashion-MNIST classes 0-4; fine-tune on classes 5-9 with 1, 5, 10 and 50
           images per class: head-only, last-n, gradual, full fine-tuning, and training from scratch,
           3 seeds, scored on all 5,000 test images of classes 5-9. Also checks `zoo compare`'s
           linear-probe ranking against full fine-tuning.
  digits   The shipped zoo-fmnist-resnet fine-tuned on scikit-learn's digits at several shot
           counts, against the same architecture from scratch.
  imagenet EfficientNet-Lite0/1/2 (ImageNet-1k weights, the zoo-efficientnet-lite plugin) with zoo's
           default recipe (no options) against the best from-scratch recipe (bench/demo.py's), on
           Fashion-MNIST at --shots images per class, scored on all 10,000 test images.

    .venv/bin/python bench/transfer.py split  [--seeds 3] [--out runs/transfer]
    .venv/bin/python bench/transfer.py digits [--seeds 3]
    .venv/bin/python bench/transfer.py imagenet [--seeds 3] [--shots 10 ...] [--backbones efficientnet-lite0 ...]

Writes a JSON file of every result, a Markdown table and a PNG plot into --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

import zoo
from zoo.builtins.datasets import FASHION_MNIST_CLASSES, fashion_mnist
from zoo.data import Dataset, Split
from zoo.plugins import get_plugins

WIDE = {"layers": [2, 2, 2, 2], "channels": [32, 64, 128, 256]}  # zoo-fmnist-resnet's architecture
SHOTS = (1, 5, 10, 50)
METHODS = {  # name -> finetune options
    "head-only": dict(freeze="head-only"),
    "last-n": dict(freeze="last-n", freeze_opts={"n": 1}),
    "gradual": dict(freeze="gradual", freeze_opts={"k": 5, "decay": 0.5}),
    "full": dict(freeze="none"),
    "scratch": dict(freeze="none", pretrained=False),
}


class SplitFashionMNIST:
    """Dataset plugin, registered in-process: `fmnist-split:a` (classes 0-4), `fmnist-split:b`
    (classes 5-9, 50 training images per class held out as val) and `fmnist-split:b-test`."""

    @zoo.hookimpl
    def zoo_register_datasets(self, register):
        register("fmnist-split", self.open, description="Fashion-MNIST halves for transfer experiments")

    def open(self, arg):
        full = fashion_mnist(None)
        part, _, which = (arg or "a").partition("-")
        classes = list(range(5)) if part == "a" else list(range(5, 10))
        splits = {name: _only(full.splits[name], classes) for name in ("train", "test")}
        if part == "b":
            labels = splits["train"].labels
            rng = np.random.default_rng(1234)
            val = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:50] for c in range(5)]))
            rest = np.setdiff1d(np.arange(len(labels)), val)
            splits = {"train": splits["train"].subset(rest), "val": splits["train"].subset(val), "test": splits["test"]}
        if which == "test":
            splits = {"train": splits["test"], "test": splits["test"]}
        return Dataset(f"fmnist-split:{arg}", [FASHION_MNIST_CLASSES[c] for c in classes], splits)


def _only(split: Split, classes: list[int]) -> Split:
    keep = np.flatnonzero(np.isin(split.labels, classes))
    sub = split.subset(keep)
    sub.labels = sub.labels - classes[0]
    return sub


def finetune(out: Path, backbone: str, data: str, shots: int, seed: int, method: str, n_classes: int = 5, **extra) -> dict:
    """One run; epochs scale so every shot count gets about 100 updates."""
    opts = dict(METHODS[method])
    if opts.get("pretrained") is False:
        extra.setdefault("model_args", WIDE)
        backbone = "test_resnet"
    batch = min(32, n_classes * shots)
    updates_per_epoch = -(-n_classes * shots // batch)
    epochs = extra.pop("epochs", min(50, max(10, -(-100 // updates_per_epoch))))
    if method == "gradual":
        opts["freeze_opts"] = {"k": max(1, epochs // 3), "decay": 0.5}
    start = time.perf_counter()
    result = zoo.finetune(backbone, data=data, out=out, shots=shots, seed=seed, epochs=epochs, batch_size=batch, lr=0.05,
                          img_size=32, aug="light", **opts, **extra)
    return {"run": str(out), "seconds": time.perf_counter() - start, "val_top1": result.metrics.get("top1")}


def summarize(results: list[dict], key: str = "test_top1") -> dict:
    table: dict = {}
    for r in results:
        table.setdefault((r["method"], r["shots"]), []).append(r[key])
    return {k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)) for k, v in table.items()}


def write_report(out: Path, title: str, results: list[dict], methods: list[str], shots: tuple) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = summarize(results)
    lines = ["| method | " + " | ".join(f"{s} shots" for s in shots) + " |", "|---|" + "---|" * len(shots)]
    for m in methods:
        cells = [f"{stats[(m, s)][0]:.3f} ± {stats[(m, s)][1]:.3f}" if (m, s) in stats else "-" for s in shots]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for m in methods:
        means = [stats[(m, s)][0] for s in shots]
        stds = [stats[(m, s)][1] for s in shots]
        ax.errorbar(shots, means, yerr=stds, marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    ax.set_xticks(shots, [str(s) for s in shots])
    ax.set_xlabel("labelled images per class")
    ax.set_ylabel("test top-1")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "transfer.png")
    (out / "results.md").write_text(f"## {title}\n\n{table}\n")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return table


def split_experiment(out: Path, seeds: int) -> None:
    get_plugins().add(SplitFashionMNIST(), "fmnist-split")
    pretrained = out / "pretrain-a"
    if not (pretrained / "model.safetensors").exists():
        t = time.perf_counter()
        zoo.finetune("test_resnet", data="fmnist-split:a", out=pretrained, pretrained=False, model_args=WIDE, img_size=32,
                     epochs=8, batch_size=128, lr=0.2, warmup_epochs=1, weight_decay=5e-4, label_smoothing=0.1, aug="light")
        print(f"pretrained on classes 0-4 in {time.perf_counter() - t:.0f} s", flush=True)
    backbone = f"local-dir:{pretrained}"
    results = []
    for shots in SHOTS:
        for seed in range(seeds):
            for method in METHODS:
                run = out / f"b-{method}-{shots}shot-seed{seed}"
                r = finetune(run, backbone, "fmnist-split:b", shots, seed, method)
                r["test_top1"] = zoo.evaluate(run, data="fmnist-split:b-test")["top1"]
                results.append({"method": method, "shots": shots, "seed": seed, **r})
                print(json.dumps(results[-1]), flush=True)
    print(write_report(out, "Fashion-MNIST 0-4 -> 5-9", results, list(METHODS), SHOTS))
    compare_agreement(out, backbone, seeds)


def compare_agreement(out: Path, split_backbone: str, seeds: int) -> None:
    """Does the linear-probe ranking of `zoo compare` match the ranking full fine-tuning gives?"""
    import timm
    import torch
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf

    random_dir = out / "random-init"
    if not (random_dir / "model.safetensors").exists():
        torch.manual_seed(0)
        model = timm.create_model("test_resnet", num_classes=5, **WIDE)
        random_dir.mkdir(parents=True, exist_ok=True)
        save_file(model.state_dict(), random_dir / "model.safetensors")
        save_config_for_hf(model, str(random_dir / "config.json"), data_config={"input_size": (3, 32, 32)})
    candidates = [split_backbone, "zoo-fmnist-resnet", f"local-dir:{random_dir}"]
    agree, rows = 0, []
    for seed in range(seeds):
        for shots in (10, 50):
            probe = {c.source: c.top1 for c in zoo_compare(candidates, shots, seed)}
            tuned = {}
            for cand in candidates:
                run = out / f"cmp-{abs(hash(cand)) % 10**6}-{shots}-{seed}"
                finetune(run, cand, "fmnist-split:b", shots, seed, "full")
                tuned[zoo.resolve(cand).source] = zoo.evaluate(run, data="fmnist-split:b-test")["top1"]
            rank_probe = sorted(probe, key=probe.get, reverse=True)
            rank_tuned = sorted(tuned, key=tuned.get, reverse=True)
            same = rank_probe == rank_tuned
            agree += same
            rows.append({"seed": seed, "shots": shots, "probe": probe, "finetuned": tuned, "same_ranking": same})
            print(json.dumps(rows[-1]), flush=True)
    (out / "compare.json").write_text(json.dumps(rows, indent=1))
    print(f"zoo compare ranking == full fine-tuning ranking in {agree}/{len(rows)} cases")


def zoo_compare(candidates, shots, seed):
    from zoo.compare import compare

    return compare(candidates, data_spec="fmnist-split:b", shots=shots, seed=seed, img_size=32)


def digits_experiment(out: Path, seeds: int) -> None:
    methods = ["head-only", "last-n", "full", "scratch"]
    shots_list = (1, 5, 10, 50)
    results = []
    for shots in shots_list:
        for seed in range(seeds):
            for method in methods:
                run = out / f"digits-{method}-{shots}shot-seed{seed}"
                r = finetune(run, "zoo-fmnist-resnet", "digits", shots, seed, method, n_classes=10, val_split=0.3)
                results.append({"method": method, "shots": shots, "seed": seed, "test_top1": r["val_top1"], **r})
                print(json.dumps(results[-1]), flush=True)
    print(write_report(out, "zoo-fmnist-resnet -> digits (held-out 30%)", results, methods, shots_list))


def imagenet_experiment(out: Path, seeds: int, shots_list: list[int], backbones: list[str]) -> None:
    import demo  # bench/demo.py: the from-scratch recipe

    results = []
    for shots in shots_list:
        for seed in range(seeds):
            for backbone in [*backbones, "scratch"]:
                opts = demo.SCRATCH if backbone == "scratch" else {}
                name = "test_resnet" if backbone == "scratch" else backbone
                run = out / f"{backbone}-{shots}shot-seed{seed}"
                t = time.perf_counter()
                r = zoo.finetune(name, data="fashion-mnist", out=run, shots=shots, seed=seed, **opts)
                picked = json.loads((run / "config.json").read_text())["zoo"].get("recipe")
                results.append({"method": backbone, "shots": shots, "seed": seed, "test_top1": r.metrics["top1"],
                                "last_top1": r.history[-1]["val_top1"], "recipe": picked and picked["name"],
                                "seconds": round(time.perf_counter() - t, 1)})
                print(json.dumps(results[-1]), flush=True)
    print(write_report(out, "ImageNet EfficientNet-Lite (default recipe) vs scratch, Fashion-MNIST test", results,
                       [*backbones, "scratch"], tuple(shots_list)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=["split", "digits", "imagenet"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shots", type=int, nargs="+", default=[10], help="imagenet: images per class")
    parser.add_argument("--backbones", nargs="+", default=["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or Path("runs") / f"transfer-{args.experiment}"
    out.mkdir(parents=True, exist_ok=True)
    if args.experiment == "imagenet":
        imagenet_experiment(out, args.seeds, args.shots, args.backbones)
    else:
        (split_experiment if args.experiment == "split" else digits_experiment)(out, args.seeds)


if __name__ == "__main__":
    main()
