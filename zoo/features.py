"""The frozen-feature cache: a backbone that never trains is run once per image, not once per epoch.

When every epoch trains only the head, augmentation is off and nothing random runs in the frozen
part, the trainer computes each image's pooled features once and trains the head on them. The
cache lives in memory for one run, built from the run's own model, weights, transform and data,
so nothing can go stale; ``--no-feature-cache`` turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class Split:
    """A model cut into a frozen feature extractor and the head that trains on its output."""

    features: Callable[[torch.Tensor], torch.Tensor]
    head: nn.Module
    frozen: list[nn.Module]  # the modules of the feature extractor (checked for randomness)


def split(model: nn.Module) -> Split | None:
    """The model as features + head, or None when zoo does not know where to cut it."""
    from zoo.backbones import WithHead

    if isinstance(model, WithHead):
        return Split(model.backbone, model.head, list(model.backbone.modules()))
    classifier = model.get_classifier() if hasattr(model, "get_classifier") and hasattr(model, "forward_head") else None
    if not isinstance(classifier, nn.Module):
        return None
    inside = {id(m) for m in classifier.modules()}
    return Split(lambda x: model.forward_head(model.forward_features(x), pre_logits=True), classifier,
                 [m for m in model.modules() if id(m) not in inside])


def random_inside(part: Split, model: nn.Module) -> bool:
    """True when the frozen part draws random numbers in training (dropout, drop-path)."""
    from zoo.backbones import timm_model

    if float(getattr(timm_model(model), "drop_rate", 0) or 0) > 0:  # timm's functional dropout before the classifier
        return True
    for m in part.frozen:
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return True
        if type(m).__name__ == "DropPath" and float(getattr(m, "drop_prob", 0) or 0) > 0:
            return True
    return False


@torch.no_grad()
def compute(part: Split, images: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor], batch_size: int,
            autocast: Callable) -> torch.Tensor:
    """Features of uint8 images, in batches of the training batch size (the model must be in eval mode)."""
    out = []
    for start in range(0, len(images), batch_size):
        with autocast():
            out.append(part.features(prepare(images[start:start + batch_size])))
    return torch.cat(out)


@torch.no_grad()
def same_as_model(part: Split, model: nn.Module, x: torch.Tensor, autocast: Callable) -> bool:
    """Whether head(features(x)) is exactly model(x): the cut must not change a single bit."""
    with autocast():
        return torch.equal(part.head(part.features(x)), model(x))
