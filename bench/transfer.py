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
  grid     The ImageNet grid of docs/results.md: Fashion-MNIST and digits at 1, 5, 10 and 50 images per
           class; EfficientNet-Lite0 head-only, last-n, full and the default recipe, Lite1 and Lite2 with
           the default recipe, and scratch; 3 seeds. Each run picks its best epoch on a fixed val split
           (10 images per class, outside the shots) and is scored once on held-out test images.
  full     EfficientNet-Lite0 on all 60,000 Fashion-MNIST training images, scored on the 10,000 test images:
           a linear probe at --size (default 160, the recipe's CPU size) and a full fine-tune at --tune-size
           (default 64) for --tune-epochs (default 2); prints how long each took.
  rank     `zoo compare` over Lite0/1/2, zoo-fmnist-resnet and a randomly initialised Lite0 on the grid's
           Fashion-MNIST at 10 and 50 shots, against the ranking their default-recipe fine-tunes give.

    .venv/bin/python bench/transfer.py split  [--seeds 3] [--out runs/transfer]
    .venv/bin/python bench/transfer.py digits [--seeds 3]
    .venv/bin/python bench/transfer.py imagenet [--seeds 3] [--shots 10 ...] [--backbones efficientnet-lite0 ...]
    .venv/bin/python bench/transfer.py grid [--seeds 3] [--shots 1 5 10 50] [--datasets fashion-mnist digits]
    .venv/bin/python bench/transfer.py rank [--seeds 3]
    .venv/bin/python bench/transfer.py full [--size 160] [--tune-size 64] [--tune-epochs 2]

grid and rank append each finished run to results.jsonl in --out and skip the runs already there,
so an interrupted run continues where it stopped.

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
from zoo import recipe
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


def _shots_axes(ax, shots, title: str) -> None:
    """Test top-1 against images per class, on a log axis."""
    ax.set_xscale("log")
    ax.set_xticks(shots, [str(s) for s in shots])
    ax.set_xlabel("labelled images per class")
    ax.set_ylabel("test top-1")
    ax.set_title(title)
    ax.grid(alpha=0.3)


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
    _shots_axes(ax, shots, title)
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


# -- the ImageNet grid and the compare ranking (docs/results.md, section 1) ---------------------
LITE = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
VAL_PER_CLASS = 10
TEST_PER_CLASS = {"fashion-mnist": 100, "digits": 80}
CPU_SIZE = dict(img_size=160, crop_pct=1.0)  # what the default recipe picks for these backbones on a CPU
GRID_METHODS = ("default", "head-only", "last-n", "full", "scratch")


def _draw(labels: np.ndarray, per_class: int, classes: int, rng) -> np.ndarray:
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(classes)]))


class GridData:
    """`grid:fashion-mnist`, `grid:digits`: the training images less a fixed draw of VAL_PER_CLASS per class,
    which is the val split (it picks each run's best epoch, and `zoo compare` ranks on it). `grid:NAME-test`:
    TEST_PER_CLASS images per class that no run trains or selects on (Fashion-MNIST's test split; for the
    digits, which have one split, a fixed draw set aside first)."""

    @zoo.hookimpl
    def zoo_register_datasets(self, register):
        register("grid", self.open, description="Fashion-MNIST or digits with fixed val and test draws (bench/transfer.py)")

    def open(self, arg):
        from zoo.builtins.datasets import digits

        name, test_only, _ = (arg or "fashion-mnist").partition("-test")
        full = fashion_mnist(None) if name == "fashion-mnist" else digits(None)
        n, rng = len(full.classes), np.random.default_rng(1234)
        train = full.splits["train"]
        if "test" in full.splits:
            test_pool = full.splits["test"]
            test = test_pool.subset(_draw(test_pool.labels, TEST_PER_CLASS[name], n, rng))
        else:
            held = _draw(train.labels, TEST_PER_CLASS[name], n, rng)
            test, train = train.subset(held), train.subset(np.setdiff1d(np.arange(len(train.labels)), held))
        if test_only:
            return Dataset(f"grid:{arg}", full.classes, {"train": test, "test": test})
        val = _draw(train.labels, VAL_PER_CLASS, n, rng)
        rest = np.setdiff1d(np.arange(len(train.labels)), val)
        return Dataset(f"grid:{arg}", full.classes, {"train": train.subset(rest), "val": train.subset(val)})


def _grid_options(method: str, shots: int, classes: int = 10) -> tuple[str | None, dict]:
    """(backbone override, finetune options) of one grid method; "default" gives none: zoo's recipe picks."""
    import demo  # bench/demo.py: the best from-scratch recipe

    if method == "scratch":
        return "test_resnet", {**demo.SCRATCH, "batch_size": min(demo.SCRATCH["batch_size"], classes * shots)}
    if method == "head-only":  # the linear probe the recipe runs below 50 shots, named explicitly
        return None, dict(freeze="head-only", epochs=30, lr=0.01, aug="none", **CPU_SIZE)
    if method in ("last-n", "full"):  # the staged recipe's rate, size, augmentation and (from 50 shots) epochs
        batch = min(32, classes * shots)
        epochs = 10 if shots >= 50 else 20  # fewer images: more epochs, so that 1 shot still gets 20 updates
        freeze = dict(freeze="last-n", freeze_opts={"n": 1}) if method == "last-n" else dict(freeze="none")
        return None, dict(**freeze, epochs=epochs, batch_size=batch, lr=0.01, aug="light", **CPU_SIZE)
    return None, {}


class Results:
    """results.jsonl in the output folder: one line per finished run, read back so that nothing runs twice."""

    def __init__(self, out: Path):
        self.path = out / "results.jsonl"
        self.rows = [json.loads(line) for line in self.path.read_text().splitlines() if line] if self.path.exists() else []

    def get(self, **key) -> dict | None:
        return next((r for r in self.rows if all(r.get(k) == v for k, v in key.items())), None)

    def add(self, row: dict) -> dict:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        return row


def grid_run(out: Path, results: Results, dataset: str, backbone: str, method: str, shots: int, seed: int) -> dict:
    key = dict(dataset=dataset, backbone=backbone, method=method, shots=shots, seed=seed)
    if done := results.get(**key):
        return done
    name, opts = _grid_options(method, shots)
    run = out / f"{dataset}-{backbone.rsplit('/', 1)[-1]}-{method}-{shots}shot-seed{seed}"
    if run.exists():  # an interrupted run: start it again
        import shutil

        shutil.rmtree(run)
    start = time.perf_counter()
    result = zoo.finetune(name or backbone, data=f"grid:{dataset}", out=run, shots=shots, seed=seed, **opts)
    seconds = time.perf_counter() - start
    test = zoo.evaluate(run, data=f"grid:{dataset}-test")
    picked = json.loads((run / "config.json").read_text())["zoo"].get("recipe")
    return results.add({**key, "test_top1": test["top1"], "test_images": test["images"], "val_top1": result.metrics["top1"],
                        "recipe": picked and picked["name"], "epochs": len(result.history), "seconds": round(seconds, 1)})


def _expensive(method: str, shots: int) -> bool:
    """Runs that train the backbone (no feature cache): after every cheap run, so partial results cover the grid."""
    return method in ("last-n", "full") or (method == "default" and shots >= 50)


def grid_experiment(out: Path, seeds: int, shots_list: list[int], datasets: list[str]) -> None:
    get_plugins().add(GridData(), "grid")
    results = Results(out)
    # Below 50 shots the default recipe is head-only with the same settings: one run gives both rows.
    cells = [(d, LITE[0], m, s, seed) for d in datasets for s in shots_list for seed in range(seeds) for m in GRID_METHODS
             if not (m == "head-only" and s < recipe.STAGED_FROM)]
    cells += [(d, b, "default", s, seed) for d in datasets for s in shots_list for seed in range(seeds) for b in LITE[1:]]
    for cell in sorted(cells, key=lambda c: (_expensive(c[2], c[3]), c[2] != "default", c[3], c[0])):
        grid_run(out, results, *cell)
    print(grid_report(out, results, shots_list, datasets))


def grid_report(out: Path, results: Results, shots_list: list[int], datasets: list[str]) -> str:
    """One Markdown table per dataset (test top-1 mean ± std over seeds; mean seconds per run) and one plot."""
    from matplotlib.figure import Figure

    rows = [(LITE[0], m) for m in GRID_METHODS if m != "scratch"] + [(b, "default") for b in LITE[1:]] + [(LITE[0], "scratch")]
    fig = Figure(figsize=(11, 4), dpi=100)
    text = []
    for ax, dataset in zip(fig.subplots(1, len(datasets), squeeze=False)[0], datasets, strict=True):
        lines = [f"**{dataset}**, test top-1 (mean ± std over seeds; seconds per run)", "",
                 "| backbone | method | " + " | ".join(f"{s} shots" for s in shots_list) + " |", "|---|---|" + "---|" * len(shots_list)]
        for backbone, method in rows:
            cells, means, stds = [], [], []
            for shots in shots_list:
                same = "default" if method == "head-only" and shots < recipe.STAGED_FROM else method  # one run, see grid_experiment
                got = [r for r in results.rows if (r.get("dataset"), r.get("backbone"), r.get("method"), r.get("shots")) ==
                       (dataset, backbone, same, shots)]
                if not got:
                    cells.append("-")
                    means.append(np.nan), stds.append(np.nan)
                    continue
                v = [r["test_top1"] for r in got]
                m, sd = statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0
                means.append(m), stds.append(sd)
                cells.append(f"{m:.3f} ± {sd:.3f} ({statistics.mean(r['seconds'] for r in got):.0f} s)" + ("" if len(v) == 3 else f" n={len(v)}"))
            label = "test_resnet" if method == "scratch" else backbone.replace("efficientnet-", "")
            lines.append(f"| {label} | {method} | " + " | ".join(cells) + " |")
            ax.errorbar(shots_list, means, yerr=stds, marker="o", capsize=3, label=f"{label} {method}")
        _shots_axes(ax, shots_list, dataset)
        text.append("\n".join(lines))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "grid.png")
    report = "\n\n".join(text)
    (out / "grid.md").write_text(report + "\n")
    return report


def rank_experiment(out: Path, seeds: int) -> None:
    """`zoo compare`'s linear-probe ranking on the val split against the test ranking of default-recipe fine-tunes."""
    import timm
    import torch
    from safetensors.torch import save_file
    from scipy.stats import spearmanr
    from timm.models._hub import save_config_for_hf

    from zoo.compare import compare

    get_plugins().add(GridData(), "grid")
    results = Results(out)
    random_dir = out / "lite0-random-init"
    if not (random_dir / "model.safetensors").exists():
        torch.manual_seed(0)
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        random_dir.mkdir(parents=True, exist_ok=True)
        save_file(model.state_dict(), random_dir / "model.safetensors")
        save_config_for_hf(model, str(random_dir / "config.json"))
    candidates = [*LITE, "zoo-fmnist-resnet", f"local-dir:{random_dir}"]
    cases = []
    for shots in (10, 50):
        for seed in range(seeds):
            key = dict(experiment="rank", shots=shots, seed=seed)
            if not (case := results.get(**key)):
                start = time.perf_counter()
                probe = {c.name: c.top1 for c in compare(candidates, data_spec="grid:fashion-mnist", shots=shots, seed=seed)}
                seconds = round(time.perf_counter() - start, 1)
                tuned = {c: grid_run(out, results, "fashion-mnist", c, "default", shots, seed)["test_top1"] for c in candidates}
                case = results.add({**key, "probe": probe, "compare_seconds": seconds, "finetuned": tuned})
            cases.append(case)
    agree = 0
    for case in cases:
        names = list(case["probe"])
        rho = spearmanr([case["probe"][n] for n in names], [case["finetuned"][n] for n in names]).statistic
        top_probe, top_tuned = max(names, key=case["probe"].get), max(names, key=case["finetuned"].get)
        agree += top_probe == top_tuned
        print(f"{case['shots']} shots, seed {case['seed']}: Spearman {rho:+.2f}; compare's top {top_probe}, fine-tuning's top {top_tuned}")
    print(f"same top backbone in {agree}/{len(cases)} cases")


def full_experiment(out: Path, size: int, tune_size: int, tune_epochs: int) -> None:
    """All of Fashion-MNIST: what the ImageNet features give with a linear head, and with the whole network trained."""
    results = Results(out)
    runs = {"linear-probe": dict(freeze="head-only", img_size=size, epochs=10, lr=0.01, aug="none", batch_size=256),
            "fine-tune": dict(freeze="none", img_size=tune_size, epochs=tune_epochs, lr=0.02, aug="light", batch_size=64,
                              warmup_epochs=0.2, label_smoothing=0.1)}
    for method, opts in runs.items():
        key = dict(experiment="full", method=method, img_size=opts["img_size"], epochs=opts["epochs"])
        if results.get(**key):
            continue
        run = out / f"full-{method}-{opts['img_size']}px"
        if run.exists():
            import shutil

            shutil.rmtree(run)
        start = time.perf_counter()
        r = zoo.finetune(LITE[0], data="fashion-mnist", out=run, crop_pct=1.0, seed=0, **opts)
        results.add({**key, "test_top1": r.metrics["top1"], "last_top1": r.history[-1]["val_top1"],
                     "per_epoch": [h["val_top1"] for h in r.history], "seconds": round(time.perf_counter() - start, 1)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=["split", "digits", "imagenet", "grid", "rank", "full"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--shots", type=int, nargs="+", help="imagenet (default 10), grid (default 1 5 10 50): images per class")
    parser.add_argument("--datasets", nargs="+", default=["fashion-mnist", "digits"], help="grid: the datasets")
    parser.add_argument("--backbones", nargs="+", default=["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
    parser.add_argument("--size", type=int, default=160, help="full: the linear probe's image size")
    parser.add_argument("--tune-size", type=int, default=64, help="full: the fine-tune's image size")
    parser.add_argument("--tune-epochs", type=int, default=2, help="full: the fine-tune's epochs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or Path("runs") / ("transfer-grid" if args.experiment == "rank" else f"transfer-{args.experiment}")
    out.mkdir(parents=True, exist_ok=True)
    if args.experiment == "imagenet":
        imagenet_experiment(out, args.seeds, args.shots or [10], args.backbones)
    elif args.experiment == "grid":
        grid_experiment(out, args.seeds, args.shots or list(SHOTS), args.datasets)
    elif args.experiment == "rank":
        rank_experiment(out, args.seeds)
    elif args.experiment == "full":
        full_experiment(out, args.size, args.tune_size, args.tune_epochs)
    else:
        (split_experiment if args.experiment == "split" else digits_experiment)(out, args.seeds)


if __name__ == "__main__":
    main()
