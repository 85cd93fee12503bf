"""`make demo`: fine-tune on real data offline and print the accuracy.

scikit-learn's 1,797 handwritten 8x8 digits (real scans, shipped inside the package),
test_resnet at 32x32 trained by zoo's trainer on 2 CPU cores in about a minute.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import subprocess

def main() -> int:
    out = Path(tempfile.mkdtemp(prefix="zoo-demo-")) / "digits-test_resnet"
    args = ["finetune", "test_resnet", "--data", "digits", "--no-pretrained", "--img-size", "32", "--epochs", "8",
            "--batch-size", "64", "--lr", "0.1", "--warmup-epochs", "1", "--aug", "light", "--out", str(out)]
    print("$ zoo " + " ".join(args), flush=True)
    start = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "zoo", *args])  # progress streams to the terminal
    if code:
        return code
    import json

    cfg = json.loads((out / "config.json").read_text())
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = max(m["val_top1"] for m in metrics)
    print(f"\ndigits ({len(cfg['label_names'])} classes), held-out top-1 {best:.3f} in {time.perf_counter() - start:.0f} s; "
          f"run directory {out}")
    print(f"try: .venv/bin/zoo evaluate {out} --data digits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
