#!/usr/bin/env bash
# Issue 6's GPU benchmark: resnet50, vit_base_patch16_224 and tf_efficientnet_lite0 (efficientnet-lite0's architecture) at 224 px, bf16, channels_last,
# torch.compile, images in memory; zoo against peer (a) on the same GPU. Run from the repository root.
set -euo pipefail
make .venv/.installed >/dev/null
.venv/bin/python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
.venv/bin/python bench/gpu.py --device cuda --models resnet50,vit_base_patch16_224,tf_efficientnet_lite0 --size 224 --batch 128 --images 8192 --epochs 3
