"""`make demo`: what transfer learning buys, offline, on real data, in about a minute.

zoo's own pretrained backbone (zoo-fmnist-resnet, trained by zoo on Fashion-MNIST and shipped
in models/) is fine-tuned on scikit-learn's real handwritten digits with only 10 labelled
images per class, three ways (head-only, last-n, full), against the same architecture
trained from scratch. Prints a table and writes a plot.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import zoo

ROOT = Path(__file__).resolve().parents[1]
SHOTS = 10
RUNS = {  # label -> (backbone, options)
    "head-only": ("zoo-fmnist-resnet", dict(freeze="head-only")),
    "last-n (n=2)": ("zoo-fmnist-resnet", dict(freeze="last-n", freeze_opts={"n": 2})),
    "full fine-tune": ("zoo-fmnist-resnet", dict(freeze="none")),
    "from scratch": ("test_resnet", dict(freeze="none", pretrained=False,
                                         model_args={"layers": [2, 2, 2, 2], "channels": [32, 64, 128, 256]})),
}


def main() -> int:
    out = ROOT / "runs" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"digits: {SHOTS} labelled images per class, scored on 539 held-out digits (30%); runs in {out}\n", flush=True)
    rows = []
    for label, (backbone, opts) in RUNS.items():
        start = time.perf_counter()
        result = zoo.finetune(backbone, data="digits", out=out / label.split()[0], shots=SHOTS, val_split=0.3, seed=0,
                              epochs=30, batch_size=32, lr=0.05, img_size=32, aug="light", **opts)
        seconds = time.perf_counter() - start
        rows.append((label, backbone, result.metrics["top1"], seconds))
        print(f"  {label:<15} top-1 {result.metrics['top1']:.3f}   {seconds:5.1f} s", flush=True)
    print_table(rows)
    best = max(rows[:3], key=lambda r: r[2])
    gain = best[2] - rows[3][2]
    print(f"best use of the pretrained backbone: {best[0]} ({best[2]:.3f}), {gain:+.3f} against training from scratch"
          + ("" if gain > 0.01 else ": on these digits, Fashion-MNIST features do not buy much (see docs/results.md)"))
    plot(rows, out / "demo.png")
    print(f"\nplot: {out / 'demo.png'}\ntry:  .venv/bin/zoo predict {out / 'full'} IMAGE.png")
    return 0


def print_table(rows) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"digits, {SHOTS} images per class", title_justify="left")
    for col in ("method", "backbone", "top-1", "seconds"):
        table.add_column(col)
    for label, backbone, top1, seconds in rows:
        table.add_row(label, backbone, f"{top1:.3f}", f"{seconds:.1f}")
    Console().print(table)


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    labels = [r[0] for r in rows]
    bars = ax.bar(labels, [r[2] for r in rows], color=["#4c72b0"] * 3 + ["#c44e52"])
    ax.bar_label(bars, fmt="%.3f")
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out top-1")
    ax.set_title(f"zoo-fmnist-resnet -> digits, {SHOTS} images per class")
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
