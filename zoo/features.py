"""The frozen-feature cache: a backbone that never trains is run once per image, not once per epoch.

When every epoch trains only the head, augmentation is off and nothing random runs in the frozen
part, the trainer computes each image's pooled features once and trains the head on them;
``zoo compare`` probes the same features. They are kept under ``$ZOO_CACHE/features/``, keyed by
everything they depend on: the frozen part's modules, settings and weight bits, the decoded data's
fingerprint and preprocessing, normalization, device, precision, batch size and library versions.
Any change computes them again. ``--no-feature-cache`` turns the cache off; ``ZOO_FEATURE_CACHE=0``
keeps it in memory only.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain

import torch
from torch import nn

FORMAT = 1  # bump when what an entry holds changes


@dataclass
class Cut:
    """A model cut into a frozen feature extractor and the head that trains on its output."""

    features: Callable[[torch.Tensor], torch.Tensor]
    head: nn.Module
    frozen: list[nn.Module]  # the modules of the feature extractor (checked for randomness)

    @functools.cached_property
    def key(self) -> str:
        """:func:`digest`, once per cut: the frozen part does not change while its features are computed."""
        return digest(self)


def split(model: nn.Module) -> Cut | None:
    """The model as features + head, or None when zoo does not know where to cut it."""
    from zoo.backbones import WithHead

    if isinstance(model, WithHead):
        return Cut(model.backbone, model.head, list(model.backbone.modules()))
    classifier = model.get_classifier() if hasattr(model, "get_classifier") and hasattr(model, "forward_head") else None
    if not isinstance(classifier, nn.Module):
        return None
    inside = {id(m) for m in classifier.modules()}
    return Cut(lambda x: model.forward_head(model.forward_features(x), pre_logits=True), classifier,
                 [m for m in model.modules() if id(m) not in inside])


def random_inside(part: Cut, model: nn.Module) -> bool:
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


def compute(part: Cut, images: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor], batch_size: int,
            autocast: Callable, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Features of uint8 images, in batches of the training batch size (the model must be in eval mode).

    Runs under inference mode (no autograd bookkeeping at all); the result is an ordinary tensor a head can train on.
    """
    out = []
    if progress:
        progress(0)
    for start in range(0, len(images), batch_size):
        with torch.inference_mode(), autocast():
            out.append(part.features(prepare(images[start:start + batch_size])))
        if progress:
            progress(len(out[-1]))
    return torch.cat(out)  # outside inference mode: a normal tensor


def pass_dtype(device, amp: str, amp_dtype: torch.dtype | None) -> torch.dtype | None:
    """The precision of a frozen-feature pass: the run's, except that ``--amp auto`` uses bf16 on a CPU with bf16 units.

    Training keeps float32 on CPUs (bf16 gradients cost accuracy there); a frozen pass only reads the
    weights, and on CPUs with AVX512-BF16 or AMX it runs about twice as fast (see bench/features.py).
    """
    if amp == "auto" and torch.device(device).type == "cpu" and cpu_bf16():
        return torch.bfloat16
    return amp_dtype


@functools.cache
def cpu_bf16() -> bool:
    """Whether this CPU has bf16 units (AVX512-BF16 or AMX); elsewhere oneDNN would emulate bf16, slowly."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # another build of torch: keep float32
        return False


@torch.no_grad()
def same_as_model(part: Cut, model: nn.Module, x: torch.Tensor, autocast: Callable) -> bool:
    """Whether head(features(x)) is exactly model(x): the cut must not change a single bit."""
    with autocast():
        return torch.equal(part.head(part.features(x)), model(x))


def digest(part: Cut) -> str:
    """What the frozen part computes: each module's type, children and plain settings, and every weight's bits."""
    h = hashlib.sha256()
    for m in part.frozen:
        settings = sorted((k, v) for k, v in vars(m).items() if k != "training" and _plain(v))
        h.update(f"{type(m).__module__}.{type(m).__qualname__}{list(m._modules)}{settings!r}".encode())
        for name, t in chain(m.named_parameters(recurse=False), m.named_buffers(recurse=False)):
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    """The precision zoo runs a model in: bf16 autocast when ``amp_dtype`` is set, else plain float32."""
    return torch.autocast(torch.device(device).type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)


def _plain(value) -> bool:
    """Values whose repr is the same in every process (no object addresses)."""
    if isinstance(value, tuple):
        return all(map(_plain, value))
    return isinstance(value, (str, int, float, bool, type(None)))


def cached(part: Cut, decoded, pre, prepare, batch_size: int, amp_dtype: torch.dtype | None,
           progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """:func:`compute` for a decoded split, read from and kept in ``$ZOO_CACHE/features/``.

    ``prepare`` is a :class:`zoo.data.Normalize` (its repr names the normalization, device and memory
    format); the model must be in eval mode. The features come back on the CPU when read from disk.
    """
    import timm

    from zoo import data

    path = None
    if decoded.fingerprint and os.environ.get("ZOO_FEATURE_CACHE", "1") != "0":
        key = "|".join(map(str, (FORMAT, part.key, decoded.fingerprint, len(decoded.labels), repr(pre), repr(prepare),
                                 amp_dtype, batch_size, torch.__version__, timm.__version__)))
        path = data.cache_dir() / "features" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"
        if os.path.isfile(path):  # one image's features say the shape and dtype the entry must have (False on any error)
            probe = compute(part, decoded.images[:1], prepare, 1, lambda: autocast(prepare.device, amp_dtype))
            stored = data.read_entry(path, {"features": ((len(decoded.labels), *probe.shape[1:]), probe.dtype)})
            if stored is not None and bool(stored["features"].isfinite().all()):
                return stored["features"]
    out = compute(part, decoded.images, prepare, batch_size, lambda: autocast(prepare.device, amp_dtype), progress)
    if path is not None:
        data.write_entry(path, {"features": out})
    return out
