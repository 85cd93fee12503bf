"""Peer (b) of bench/speed.py: Hugging Face transformers' Trainer with timm's model.

`TimmWrapperForImageClassification` (timm's architecture inside transformers) + `Trainer` with
SGD (momentum 0.9) and a cosine schedule, on the PNG folder the benchmark writes, read with
torchvision's ImageFolder and 2 data workers. Prints one JSON line: seconds, val_top1.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from torchvision import datasets, transforms
from transformers import TimmWrapperConfig, TimmWrapperForImageClassification, Trainer, TrainingArguments


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--model", default="test_resnet")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    model = TimmWrapperForImageClassification(TimmWrapperConfig(architecture=args.model, num_labels=10))
    mean, std = model.timm_model.pretrained_cfg["mean"], model.timm_model.pretrained_cfg["std"]
    tf = transforms.Compose([transforms.Grayscale(3), transforms.Resize(args.img_size), transforms.ToTensor(),
                             transforms.Normalize(mean, std)])
    train, val = datasets.ImageFolder(f"{args.root}/train", tf), datasets.ImageFolder(f"{args.root}/val", tf)

    def collate(batch):
        return {"pixel_values": torch.stack([x for x, _ in batch]), "labels": torch.tensor([y for _, y in batch])}

    def accuracy(pred):
        return {"top1": float((np.argmax(pred.predictions, axis=1) == pred.label_ids).mean())}

    training = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="hf-bench-"), per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=256,
        num_train_epochs=args.epochs, learning_rate=args.lr, weight_decay=1e-4, optim="sgd", optim_args="momentum=0.9",
        lr_scheduler_type="cosine", dataloader_num_workers=args.workers, dataloader_drop_last=True, report_to=[],
        save_strategy="no", logging_strategy="no", eval_strategy="no", use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True, remove_unused_columns=False, seed=args.seed)
    trainer = Trainer(model=model, args=training, train_dataset=train, eval_dataset=val, data_collator=collate,
                      compute_metrics=accuracy)
    trainer.train()
    top1 = trainer.evaluate()["eval_top1"]
    print(json.dumps({"seconds": time.perf_counter() - start, "val_top1": top1}))


if __name__ == "__main__":
    main()
