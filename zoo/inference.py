"""Inference with saved models: predict on image files, evaluate on a dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zoo import backbones, data
from zoo.errors import UsageError, ZooError


class Transform:
    """PIL image -> normalized float tensor (3, H, W), exactly as the trainer evaluates."""

    def __init__(self, loaded: backbones.Loaded):
        self.pre = loaded.preprocess
        self.normalize = data.Normalize(tuple(loaded.mean), tuple(loaded.std), torch.device("cpu"), torch.contiguous_format)

    def __call__(self, img) -> torch.Tensor:
        return self.normalize(torch.from_numpy(self.pre(img)))


def _pixels(path: Path, pre: data.Preprocess):
    """An image file as the model's input pixels: decoded one at a time, never kept at full size."""
    from PIL import Image

    if not path.is_file():
        raise UsageError(f"image {path} does not exist")
    try:
        return data.read_pixels(lambda: Image.open(path), pre)
    except data.UnreadableImage as exc:
        raise ZooError(f"cannot read image {path}: {exc}") from None


def _batches(loaded: backbones.Loaded) -> data.Normalize:
    """Normalizes batches as the trainer evaluates them: channels_last for a convolutional net, whose CPU
    pass is then about 2x faster than in NCHW (the model is moved to that layout too)."""
    layout = backbones.memory_format(loaded.model)
    loaded.model.to(memory_format=layout)
    return data.Normalize(tuple(loaded.mean), tuple(loaded.std), torch.device("cpu"), layout)


@torch.inference_mode()
def logits_for(loaded: backbones.Loaded, pixels: list) -> torch.Tensor:
    return loaded.model(_batches(loaded)(torch.from_numpy(np.stack(pixels)))).float()


def predict(model, images, *, top_k: int = 5) -> list[dict]:
    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    loaded = backbones.load(model)
    paths = [Path(p) for p in images]
    logits = logits_for(loaded, [_pixels(p, loaded.preprocess) for p in paths])
    probs = logits.softmax(1)
    k = min(top_k, probs.shape[1])
    out = []
    for path, p in zip(paths, probs, strict=False):
        values, indices = p.topk(k)
        out.append({"image": str(path), "predictions": [{"label": loaded.classes[i], "index": int(i), "score": round(float(v), 6)}
                                                         for v, i in zip(values, indices, strict=False)]})
    return out


@torch.inference_mode()
def evaluate(model, *, data: str, batch_size: int = 64) -> dict:
    from zoo.data import EVAL_SPLITS, decode, open_dataset

    loaded = backbones.load(model)
    dataset = open_dataset(data)
    split_name = next((s for s in EVAL_SPLITS if s in dataset.splits), "train")
    if dataset.classes != loaded.classes:
        raise UsageError(f"the model's classes ({', '.join(loaded.classes[:5])} ...) differ from the data's ({', '.join(dataset.classes[:5])} ...)")
    decoded = decode(dataset.splits[split_name], loaded.preprocess)
    normalize = _batches(loaded)
    n = len(loaded.classes)
    confusion = torch.zeros(n, n, dtype=torch.long)
    for start in range(0, len(decoded.labels), batch_size):
        x = normalize(decoded.images[start:start + batch_size])
        pred = loaded.model(x).argmax(1)
        y = decoded.labels[start:start + batch_size]
        confusion += torch.bincount(y * n + pred, minlength=n * n).view(n, n)
    total = int(confusion.sum())
    return {"data": data, "split": split_name, "images": total, "skipped": len(decoded.skipped),
            "top1": float(confusion.diag().sum()) / total,
            "per_class": {c: round(float(confusion[i, i]) / max(1, int(confusion[i].sum())), 4) for i, c in enumerate(loaded.classes)},
            "confusion": confusion.tolist(), "classes": loaded.classes}
