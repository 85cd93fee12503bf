"""GPU throughput: zoo's trainer against peer (a) on the same device, on images already in memory.

For each model: zoo finetune (bf16 autocast, channels_last, --compile) on an in-memory dataset,
and peer (a), the plain timm + SGD loop (bf16 autocast, channels_last, no compile) on the same
tensors. Prints images/s (the last epoch, after compilation) and model FLOP utilization:
training FLOP/s (PyTorch's FlopCounterMode over one step) over the device's peak bf16 rate.

    bash bench/gpu.sh                  # resnet50 and vit_base_patch16_224 at 224 px on CUDA
    .venv/bin/python bench/gpu.py --device cpu --models test_resnet --size 32 --images 512 --peak-tflops 0.4   # smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

H200_BF16_DENSE_TFLOPS = 989.0  # NVIDIA's figure for H100/H200 SXM, dense (no sparsity)


def step_flops(name: str, size: int, batch: int, device: str) -> float:
    model = timm.create_model(name, num_classes=10).to(device).train()
    x = torch.randn(batch, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long, device=device)).backward()
    return float(counter.get_total_flops())


def peer(name: str, size: int, batch: int, images: int, epochs: int, device: str) -> float:
    """Peer (a) on in-memory tensors; images/s of its last epoch."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    data = torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 10, (images,), device=device)
    rate = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        for i in range(0, images - batch + 1, batch):
            x = (data[i:i + batch].float() / 255).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                loss = F.cross_entropy(model(x), labels[i:i + batch])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        rate = (images // batch * batch) / (time.perf_counter() - start)
    return rate


def zoo(name: str, size: int, batch: int, images: int, epochs: int, device: str, compile_: bool) -> float:
    """zoo finetune on the in-memory synthetic dataset; images/s of its last epoch."""
    per_class = max(1, images // 4)  # zoo's synthetic dataset has 4 classes
    out = tempfile.mkdtemp(prefix="zoo-gpu-") + "/run"
    cmd = [sys.executable, "-m", "zoo", "finetune", name, "--data", f"synthetic:{per_class}", "--no-pretrained", "--img-size",
           str(size), "--batch-size", str(batch), "--epochs", str(epochs), "--aug", "none", "--val-split", "0.01", "--device", device,
           "--lr", "0.01", "--out", out, "--quiet", *(["--compile"] if compile_ else [])]
    subprocess.run(cmd, check=True)
    last = [json.loads(line) for line in open(f"{out}/metrics.jsonl")][-1]
    return float(last["images_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="resnet50,vit_base_patch16_224")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--images", type=int, default=8192)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    if args.device == "cuda":
        print(torch.cuda.get_device_name(0), flush=True)
    for name in args.models.split(","):
        flops_per_image = step_flops(name, args.size, 8, args.device) / 8
        p = peer(name, args.size, args.batch, args.images, args.epochs, args.device)
        z = zoo(name, args.size, args.batch, args.images, args.epochs, args.device, not args.no_compile)
        for who, rate in (("peer (a)", p), ("zoo", z)):
            mfu = rate * flops_per_image / (args.peak_tflops * 1e12)
            print(f"{name:24s} {who:9s} {rate:9.0f} images/s  MFU {mfu:.3f}", flush=True)
        print(f"{name:24s} zoo / peer throughput: {z / p:.2f}", flush=True)


if __name__ == "__main__":
    main()
