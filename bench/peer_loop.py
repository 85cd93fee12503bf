"""Peer (a) of bench/speed.py: the loop a user writes from the PyTorch and timm docs.

torchvision ImageFolder + DataLoader + a timm model + plain SGD, on the PNG folder the benchmark
writes. ``--frozen`` trains only the classifier (a linear probe: backbone weights frozen, its
BatchNorm layers in eval mode). Prints one JSON line: seconds, val_top1.
"""

from __future__ import annotations

import argparse
import json
import time

import timm
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--model", default="test_resnet")
    ap.add_argument("--model-arg", action="append", default=[])
    ap.add_argument("--pretrained", default=None, help="a local-dir: source to start from")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frozen", action="store_true")
    args = ap.parse_args()
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    kwargs = {k: json.loads(v) for k, v in (a.split("=", 1) for a in args.model_arg)}
    if args.pretrained:
        model = timm.create_model(args.pretrained, pretrained=True, num_classes=10)
    else:
        model = timm.create_model(args.model, pretrained=False, num_classes=10, **kwargs)
    cfg = timm.data.resolve_data_config({}, model=model)
    tf = transforms.Compose([transforms.Grayscale(3), transforms.Resize(args.img_size), transforms.ToTensor(),
                             transforms.Normalize(cfg["mean"], cfg["std"])])
    train = DataLoader(datasets.ImageFolder(f"{args.root}/train", tf), batch_size=args.batch_size, shuffle=True,
                       num_workers=args.workers, drop_last=True, persistent_workers=args.workers > 0)
    val = DataLoader(datasets.ImageFolder(f"{args.root}/val", tf), batch_size=256, num_workers=args.workers)
    if args.frozen:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.get_classifier().parameters():
            p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=1e-4)
    steps = args.epochs * len(train)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    top1 = 0.0
    for _ in range(args.epochs):
        model.train()
        if args.frozen:
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in val:
                correct += int((model(x).argmax(1) == y).sum())
                total += len(y)
        top1 = correct / total
    print(json.dumps({"seconds": time.perf_counter() - start, "val_top1": top1}))


if __name__ == "__main__":
    main()
