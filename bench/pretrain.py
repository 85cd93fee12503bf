"""Pretrain zoo's own backbone on Fashion-MNIST with `zoo finetune --no-pretrained`.

The result ships in models/zoo-fmnist-resnet/ (a timm model folder, fp16 weights) and is
the registry entry `zoo-fmnist-resnet`. Reproduce with:

    .venv/bin/python bench/pretrain.py            # about 15-20 minutes on 2 CPU cores

Fixed seed; the exact command and the versions used are written into the model card.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "models" / "zoo-fmnist-resnet"
ARGS = [
    "finetune", "test_resnet", "--data", "fashion-mnist", "--no-pretrained",
    "--model-arg", "layers=[2,2,2,2]", "--model-arg", "channels=[32,64,128,256]",
    "--img-size", "32", "--epochs", "15", "--batch-size", "128", "--lr", "0.2", "--warmup-epochs", "1",
    "--weight-decay", "5e-4", "--label-smoothing", "0.1", "--aug", "light", "--seed", "0",
]


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "runs" / f"pretrain-fmnist-{time.strftime('%Y%m%d-%H%M%S')}"
    command = [sys.executable, "-m", "zoo", *ARGS, "--out", str(out)]
    print("$ zoo " + shlex.join([*ARGS, "--out", str(out)]), flush=True)
    start = time.perf_counter()
    code = subprocess.call(command)
    if code:
        return code
    minutes = (time.perf_counter() - start) / 60
    export(out, minutes)
    return 0


def export(run: Path, minutes: float) -> None:
    """Copy the run's model into models/ as fp16 safetensors with its own model card."""
    from safetensors.torch import save_file

    from zoo.rundir import LAST, load_checkpoint

    TARGET.mkdir(parents=True, exist_ok=True)
    # The final weights, not the best epoch's: the test split must not pick the model it then scores.
    state = load_checkpoint(run / LAST)["model"]
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}, TARGET / "model.safetensors",
              metadata={"format": "pt"})
    cfg = json.loads((run / "config.json").read_text())
    cfg["pretrained_cfg"]["hf_hub_id"] = None
    cfg["pretrained_cfg"]["tag"] = "zoo_fmnist"
    cfg["pretrained_cfg"]["license"] = "mit"
    (TARGET / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    import zoo

    shipped = zoo.evaluate(TARGET, data="fashion-mnist")["top1"]  # the float16 weights as shipped
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = metrics[-1]
    shutil.copy(run / "accuracy.png", TARGET / "accuracy.png")
    versions = cfg["zoo"]["versions"]
    card = f"""---
library_name: timm
pipeline_tag: image-classification
license: mit
datasets: [fashion_mnist]
tags: [zoo, image-classification, timm]
---
# zoo-fmnist-resnet

A small ResNet (timm `test_resnet` with `layers=[2,2,2,2]`, `channels=[32,64,128,256]`, 3.8 M parameters)
trained from random weights by zoo's own trainer on the 60,000 Fashion-MNIST training images at 32x32.
It is zoo's offline pretrained backbone: the registry entry `zoo-fmnist-resnet`.

- Fashion-MNIST test top-1: **{best['val_top1']:.4f}** (10,000 test images, final epoch {best['epoch']}; no model selection on the test set)
- Training time: {minutes:.1f} minutes on the CPU of a 2-core machine
- Weights stored as float16 (timm and zoo load them into float32 models); these shipped weights score
  {shipped:.4f} (`zoo evaluate models/zoo-fmnist-resnet --data fashion-mnist`)

Recipe (seed 0):

```bash
zoo {shlex.join(ARGS)}
```

Versions: {", ".join(f"{k} {v}" for k, v in versions.items() if v)}.

```python
import timm
model = timm.create_model("local-dir:models/zoo-fmnist-resnet", pretrained=True)
```

![accuracy](accuracy.png)
"""
    (TARGET / "README.md").write_text(card)
    print(f"exported {TARGET} (test top-1 {best['val_top1']:.4f}, {minutes:.1f} min)")


if __name__ == "__main__":
    sys.exit(main())
