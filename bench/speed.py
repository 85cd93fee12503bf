"""Speed against what users would run instead, side by side in one run (issue 6: W1 and W2).

Writes Fashion-MNIST (Debian's IDX files) once as PNG files in an image folder
(60,000 train / 10,000 val, under $ZOO_CACHE/bench/fmnist-png), then times, as subprocesses:

  W1  full fine-tune, test_resnet at 32x32, batch 128, SGD lr 0.1, no augmentation, 1 epoch:
      zoo finetune in float32 and with --amp bf16 (each: a first run, and a run whose images
      were decoded before)  against
      peer (a) bench/peer_loop.py (torchvision ImageFolder + DataLoader with 2 workers + timm +
      a plain SGD loop) and peer (b) bench/peer_hf.py (transformers' Trainer with timm's model)
  W2  linear probe (head-only), 10 epochs, from zoo's pretrained zoo-fmnist-resnet:
      zoo finetune (feature cache on)  against  peer (a) with a frozen backbone,
      and against zoo with --no-feature-cache; then zoo again with another learning rate,
      reading the features an earlier run stored

Each line: wall seconds (start-up, decoding and evaluation included), validation top-1, peak RSS.

    .venv/bin/python -m pip install -e '.[bench]'     # torchvision and transformers, for the peers
    .venv/bin/python bench/speed.py [w1|w2|all]
    .venv/bin/python bench/speed.py seeds [N]         # W1's top-1 of every tool over N seeds (default 3)

Run it on a quiet machine: it reports, it does not judge (always exits 0 once it has measured).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PNG = Path(os.environ.get("ZOO_CACHE") or Path.home() / ".cache" / "zoo") / "bench" / "fmnist-png"


def write_pngs() -> Path:
    """The Fashion-MNIST image folder (written once; a marker file says it is complete)."""
    done = PNG / ".complete"
    if done.exists():
        return PNG
    from zoo.data import open_dataset

    ds = open_dataset("fashion-mnist")
    start = time.perf_counter()
    for split, folder in (("train", "train"), ("test", "val")):
        s = ds.splits[split]
        for i, label in enumerate(s.labels):
            target = PNG / folder / f"{int(label):d}"
            target.mkdir(parents=True, exist_ok=True)
            s.load(i).save(target / f"{i:05d}.png")
    done.write_text("")
    print(f"wrote {PNG} in {time.perf_counter() - start:.0f}s", flush=True)
    return PNG


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run a command; its wall time, its own peak RSS (ru_maxrss of the child) and its JSON summary."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    # The summary is the last JSON object printed (transformers prints dicts of its own before it).
    summary = json.loads(out[out.rindex("\n{") + 1:] if "\n{" in out else out[out.index("{"):])
    result = {"seconds": seconds, "top1": summary.get("top1", summary.get("val_top1")), "peak_rss_mb": usage.ru_maxrss / 1024}
    if "run_dir" in summary:  # zoo: the training loop's own rate, from the run's metrics
        epochs = [json.loads(line) for line in (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        result["images_per_s"] = sum(e["images_per_s"] for e in epochs) / len(epochs)
    return result


def zoo(*args: str) -> list[str]:
    return [sys.executable, "-m", "zoo", "finetune", *args, "--json", "--out", tempfile.mkdtemp(prefix="zoo-bench-") + "/run"]


def peer(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "peer_loop.py"), str(PNG), *args]


def peer_hf(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "bench" / "peer_hf.py"), str(PNG), *args]


W1 = ["--img-size", "32", "--batch-size", "128", "--lr", "0.1", "--epochs", "1"]  # every tool's W1 settings
W1_ZOO = ["test_resnet", "--data", str(PNG), "--no-pretrained", "--aug", "none", "--weight-decay", "1e-4", *W1]


def show(name: str, r: dict, base: dict | None = None) -> None:
    ratio = f"  ratio {r['seconds'] / base['seconds']:.2f}" if base else ""
    rate = f"  training {r['images_per_s']:5.0f} img/s" if "images_per_s" in r else ""
    print(f"  {name:34s} {r['seconds']:7.1f} s  top-1 {r['top1']:.4f}  peak RSS {r['peak_rss_mb']:6.0f} MB{ratio}{rate}", flush=True)


def w1() -> None:
    print("W1 full fine-tune, test_resnet 32x32, 1 epoch, no augmentation (ratio: zoo / peer)")
    p = timed(peer("--workers", "2", *W1))
    hf = timed(peer_hf("--workers", "2", *W1))
    show("peer (a) torchvision + timm loop", p)
    show("peer (b) transformers Trainer", hf)
    for amp in ("off", "bf16"):  # float32 as the peers; then bf16 autocast, native on CPUs with AMX
        cache = {"ZOO_CACHE": tempfile.mkdtemp(prefix="zoo-bench-cache-")}
        cold = timed(zoo(*W1_ZOO, "--amp", amp), env=cache)  # an empty cache: decodes the PNG files
        warm = timed(zoo(*W1_ZOO, "--amp", amp), env=cache)  # the next run on the same folder reads $ZOO_CACHE/decoded
        for name, r in ((f"zoo --amp {amp}, first run", cold), (f"zoo --amp {amp}, decoded before", warm)):
            show(name, r, p)
            print(f"  {'':34s} zoo / peer (b): {r['seconds'] / hf['seconds']:.2f}")
    print(f"  decoded uint8 cache of the 60,000 train images at 3x32x32: {60_000 * 3 * 32 * 32 / 2**20:.0f} MiB")


def seeds(n: int) -> None:
    """W1's top-1 over seeds 0..n-1: one seed's top-1 moves by about a point, so compare means."""
    cache = {"ZOO_CACHE": tempfile.mkdtemp(prefix="zoo-bench-cache-")}
    tools = {
        "peer (a) torchvision + timm loop": lambda s: peer("--workers", "2", *W1, "--seed", s),
        "peer (b) transformers Trainer": lambda s: peer_hf("--workers", "2", *W1, "--seed", s),
        "zoo": lambda s: zoo(*W1_ZOO, "--seed", s),
        # transformers re-initializes timm's weights (normal(0, 0.02) convolutions, BatchNorm scales 1): each residual
        # block's last BatchNorm no longer starts at zero as timm's ResNets have it. This line starts zoo the same way.
        "zoo --model-arg zero_init_last=false": lambda s: zoo(*W1_ZOO, "--model-arg", "zero_init_last=false", "--seed", s),
    }
    print(f"W1 validation top-1 over seeds 0..{n - 1}")
    for name, cmd in tools.items():
        top1 = [timed(cmd(str(seed)), env=cache)["top1"] for seed in range(n)]
        print(f"  {name:38s} mean {sum(top1) / n:.4f}   " + "  ".join(f"{t:.4f}" for t in top1), flush=True)


def w2() -> None:
    common = ["--img-size", "32", "--batch-size", "128", "--epochs", "10"]
    src = f"local-dir:{ROOT / 'models' / 'zoo-fmnist-resnet'}"
    print("W2 linear probe from zoo-fmnist-resnet, 10 epochs, no augmentation (ratio: zoo / the line's tool)")
    p = timed(peer("--workers", "2", "--frozen", "--pretrained", src, "--lr", "0.1", *common))
    flags = ["zoo-fmnist-resnet", "--data", str(PNG), "--freeze", "head-only", "--aug", "none", "--weight-decay", "1e-4", *common]
    off = timed(zoo(*flags, "--lr", "0.1", "--no-feature-cache"), env={"ZOO_CACHE": tempfile.mkdtemp(prefix="zoo-bench-cache-")})
    cache = {"ZOO_CACHE": tempfile.mkdtemp(prefix="zoo-bench-cache-")}
    z = timed(zoo(*flags, "--lr", "0.1"), env=cache)  # a first run: decoding and features included
    again = timed(zoo(*flags, "--lr", "0.05"), env=cache)  # another learning rate: the features are on disk
    show("peer (a), frozen backbone", p)
    show("zoo, feature cache off", off)
    show("zoo finetune --freeze head-only", z)
    print(f"  zoo / peer (a): {z['seconds'] / p['seconds']:.3f}   zoo / zoo without the cache: {z['seconds'] / off['seconds']:.3f}")
    show("zoo again, --lr 0.05 (features cached)", again, p)


def main() -> int:
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    write_pngs()
    if which in ("w1", "all"):
        w1()
    if which in ("w2", "all"):
        w2()
    if which == "seeds":
        seeds(int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
