"""How close does zoo's training step come to what this machine can do? (issue 6, efficiency)

For each workload: the FLOPs of one training step (forward + backward, counted by PyTorch's
FlopCounterMode), the step's measured time in zoo's configuration (SGD with momentum, on the
CPU; channels_last, zoo's default for conv nets, and NCHW, ``--no-channels-last``), and the achieved FLOP/s as a fraction of the matrix-multiply FLOP/s
measured in the same run on the same machine: float32 steps against float32 matmul, and
``--amp bf16`` steps (bf16 autocast) against bf16 matmul.

    .venv/bin/python bench/efficiency.py
"""

from __future__ import annotations

import contextlib
import time

import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

WORKLOADS = [  # (name, timm model, kwargs, image size, batch)
    ("W1: test_resnet 32x32", "test_resnet", {}, 32, 128),
    ("resnet18 64x64", "resnet18", {}, 64, 64),
]


def matmul_flops(n: int = 2048, repeats: int = 10, dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def step_flops_and_time(model_name: str, kwargs: dict, size: int, batch: int, bf16: bool, layout: torch.memory_format,
                        steps: int = 8) -> tuple[float, float]:
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=10, **kwargs).to(memory_format=layout).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (batch,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return float(counter.get_total_flops()), (time.perf_counter() - start) / steps


def main() -> None:
    peaks = {"float32": matmul_flops(), "bf16": matmul_flops(dtype=torch.bfloat16)}
    for precision, peak in peaks.items():
        print(f"{precision} matmul (2048x2048): {peak / 1e9:.1f} GFLOP/s on {torch.get_num_threads()} threads")
    layouts = {"channels_last": torch.channels_last, "NCHW (--no-channels-last)": torch.contiguous_format}
    for name, model, kwargs, size, batch in WORKLOADS:
        for precision, peak in peaks.items():
            for layout_name, layout in layouts.items():
                flops, seconds = step_flops_and_time(model, kwargs, size, batch, precision == "bf16", layout)
                achieved = flops / seconds
                print(f"{name:22s} {precision:7s} {layout_name:26s} batch {batch:3d}: {flops / 1e9:6.2f} GFLOP/step, "
                      f"{seconds * 1e3:6.1f} ms/step, {achieved / 1e9:6.1f} GFLOP/s = {achieved / peak:.2f} of {precision} matmul")


if __name__ == "__main__":
    main()
