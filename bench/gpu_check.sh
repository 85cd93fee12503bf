#!/usr/bin/env bash
# The GPU checks for the trainer's CUDA path (bf16 autocast, channels_last, --device cuda),
# for a machine with an NVIDIA GPU. Run from the repository root:  bash bench/gpu_check.sh
set -euo pipefail
make .venv/.installed >/dev/null
.venv/bin/python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
.venv/bin/python -m pytest -q -m cuda tests/
out=$(mktemp -d)/r
.venv/bin/zoo finetune zoo-fmnist-resnet --data digits --device cuda --epochs 3 --batch-size 64 --out "$out" --json
.venv/bin/zoo evaluate "$out" --data digits --json | head -8
