"""``zoo compare``: which pretrained backbone to start from, by a quick linear probe.

Each candidate's frozen features (timm's pooled pre-logits) are extracted once for the
training and validation images, a multinomial logistic regression (scikit-learn) is fitted
on them, and candidates are ranked by validation accuracy. The features come from the same
on-disk feature cache as ``zoo finetune --freeze head-only``: a second comparison, or a
linear probe of a candidate on the same split, does not run the backbone again. A candidate that
fails (no weights offline, a broken folder) is kept in the results with its error; the others stand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from zoo import backbones, data, recipe
from zoo import features as feature_cache
from zoo.errors import UsageError, ZooError
from zoo.registry import resolve


@dataclass
class Candidate:
    name: str
    source: str
    top1: float | None  # None: the candidate failed, see error
    seconds: float
    params_m: float | None = None
    feature_dim: int | None = None
    error: str | None = None


@torch.inference_mode()
def probe_features(model, splits: list[data.Decoded], pre: data.Preprocess, mean, std) -> list[np.ndarray]:
    """Pooled pre-logit features of every decoded image, as ``zoo finetune --freeze head-only`` computes them on the CPU."""
    from zoo.config import BATCH_SIZE

    part = feature_cache.split(model) or feature_cache.Cut(  # e.g. distilled ViTs, whose classifier is a pair of heads
        lambda x: model.forward_head(model.forward_features(x), pre_logits=True), None, list(model.modules()))
    layout = backbones.memory_format(model)
    model.to(memory_format=layout).eval()
    prepare = data.Normalize(tuple(mean), tuple(std), torch.device("cpu"), layout)
    dtype = feature_cache.pass_dtype("cpu", "auto", None)  # bf16 on CPUs with bf16 units
    return [feature_cache.cached(part, d, pre, prepare, BATCH_SIZE, dtype).float().numpy() for d in splits]


def probe(train_x, train_y, val_x, val_y, seed: int = 0) -> float:
    """Validation accuracy of a logistic regression on standardized features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=1.0, random_state=seed))
    clf.fit(train_x, train_y)
    return float(clf.score(val_x, val_y))


def compare(names: list[str], *, data_spec: str, shots: int | None = None, img_size: int | None = None,
            val_split: float = 0.1, seed: int = 0, progress=None) -> list[Candidate]:
    """Rank backbones by linear-probe validation accuracy on ``data_spec`` (best first, failed ones last).

    A candidate that fails is kept with its ``error``; only when every one fails is it an error.
    """
    if len(names) < 1:
        raise UsageError("name at least one backbone to compare")
    dataset = data.open_dataset(data_spec)
    train, val, _ = data.train_val(dataset, val_split=val_split, seed=seed, shots=shots)
    if val is None or not len(val):
        raise UsageError(f"'{data_spec}' has no validation images: use --val-split")
    from zoo.trainer import Interrupted

    specs = [resolve(name) for name in names]  # an unknown name fails before any work
    results = []
    for name, spec in zip(names, specs, strict=False):
        start = time.perf_counter()
        try:
            results.append(_probe_one(name, spec, dataset, train, val, img_size, seed, start))
        except (ZooError, RuntimeError, ValueError) as exc:  # e.g. no weights offline, an input size the model refuses
            if len(names) == 1 or isinstance(exc, Interrupted):
                raise
            text = str(exc) if isinstance(exc, ZooError) else f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            results.append(Candidate(name, spec.source, None, time.perf_counter() - start, error=text))
        if progress:
            progress(results[-1])
    if all(c.error for c in results):
        raise ZooError(f"none of the {len(names)} backbones could be compared; the first failed with: {results[0].error}")
    return sorted(results, key=lambda c: (c.top1 is None, -(c.top1 or 0), c.seconds))


def _probe_one(name, spec, dataset, train, val, img_size, seed, start) -> Candidate:
    from timm.data import resolve_data_config

    model = backbones.create(spec, num_classes=len(dataset.classes), pretrained=True, seed=seed, scratch_hint=False)
    inner = backbones.timm_model(model)
    cfg = resolve_data_config({}, model=inner)
    # The images as `zoo finetune`'s default recipe would feed this backbone (on the CPU, where the probe runs),
    # so that the ranking is of what a fine-tune will see; a given --img-size keeps the backbone's crop.
    sizing = ({"img_size": img_size} if img_size else
              recipe.image_settings(image_size=recipe.typical_image_size(train), input_size=int(cfg["input_size"][-1]), cuda=False)[0])
    pre = data.Preprocess(sizing["img_size"], float(sizing.get("crop_pct", cfg["crop_pct"])), cfg["interpolation"])
    tr, va = data.cached_decode(train, pre), data.cached_decode(val, pre)
    tx, vx = probe_features(model, [tr, va], pre, cfg["mean"], cfg["std"])
    top1 = probe(tx, tr.labels.numpy(), vx, va.labels.numpy(), seed)
    params = sum(p.numel() for p in inner.parameters()) / 1e6
    return Candidate(name, spec.source, top1, time.perf_counter() - start, round(params, 2), tx.shape[1])
