"""The default recipe: how to fine-tune a pretrained backbone when the user does not say.

It applies when a pretrained backbone is fine-tuned and none of ``freeze``, ``lr``, ``epochs``
or ``img_size`` is given. It reads the data (training images per class, image size) and the
backbone (pretrained input size, parameters) and picks one of two measured recipes
(docs/finetuning.md, "The default recipe"):

- ``linear-probe``: few images per class. Head only, on the frozen backbone's features computed
  once (no augmentation, so the frozen-feature cache serves every epoch).
- ``staged``: enough images per class. The head alone first, then the whole network with smaller
  learning rates for earlier stages (the ``gradual`` policy: fastai's ``fine_tune`` with SGD).

Anything the user gives is kept; the rest of the fields get zoo's fixed defaults (``DEFAULTS``).
The pick is deterministic: the same data and backbone give the same recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from zoo.config import WITHOUT_RECIPE as DEFAULTS  # without a recipe (stated with the settings, which --help shows)

TRIGGERS = ("freeze", "lr", "epochs", "img_size")  # giving any of these (or freeze options) turns the recipe off
KEPT_IF_GIVEN = ("aug", "crop_pct", "freeze_bn")  # the recipe sets these too, unless given
STAGED_FROM = 50  # images per class from which staged fine-tuning beats a linear probe
CPU_MAX_SIZE = 160  # px: a CPU pass at 224 px costs 2x that at 160 px; on 28 px Fashion-MNIST, 160 px scored as 224 px
# (and 3 points over 128 px: docs/finetuning.md, "The default recipe")
CPU_MAX_STAGED_PARAMS_M = 25.0  # larger backbones stay a linear probe on a CPU (a full pass is too slow to train)


@dataclass(frozen=True)
class Recipe:
    name: str
    settings: dict  # FinetuneConfig fields
    why: str

    def record(self) -> dict:
        return {"name": self.name, **self.settings, "why": self.why}


def image_settings(*, image_size: int, input_size: int, cuda: bool) -> tuple[dict, str]:
    """The size the recipe feeds a backbone (and crop 1 for smaller images), and why; `zoo compare` probes at it too."""
    size = input_size if cuda else min(input_size, CPU_MAX_SIZE)
    why = (f"{size} px: the backbone's pretrained size" if size == input_size
           else f"{size} px: the backbone's {input_size} px capped on a CPU")
    if image_size < size:  # small images are whole objects: a center crop would cut them (1.6-1.9 points measured)
        return {"img_size": size, "crop_pct": 1.0}, why + f" (images of {image_size} px are upscaled, whole: crop 1)"
    return {"img_size": size}, why


def typical_image_size(split) -> int:
    """The median shorter side of a few images spread over ``split``."""
    import numpy as np

    picks = np.linspace(0, len(split) - 1, num=min(8, len(split))).astype(int)
    return int(np.median([min(split.load(int(i)).size) for i in picks]))


def choose(*, per_class: int, image_size: int, input_size: int, params_m: float | None, cuda: bool) -> Recipe:
    """The recipe for this much data on this backbone (pure: no files, no torch)."""
    sizing, size_why = image_settings(image_size=image_size, input_size=input_size, cuda=cuda)
    too_big = not cuda and (params_m or 0) > CPU_MAX_STAGED_PARAMS_M
    if per_class < STAGED_FROM or too_big:
        reason = (f"{per_class} training images per class (< {STAGED_FROM})" if per_class < STAGED_FROM
                  else f"{params_m:g} M parameters on a CPU")
        return Recipe("linear-probe", {"freeze": "head-only", "freeze_opts": {}, "epochs": 30, "lr": 0.01, "aug": "none",
                                       "freeze_bn": False, **sizing},
                      f"{reason}: train the head on cached frozen features; {size_why}")
    return Recipe("staged", {"freeze": "gradual", "freeze_opts": {"k": 2, "decay": 0.5}, "epochs": 10, "lr": 0.01,
                             "aug": "light", "freeze_bn": True, **sizing},
                  f"{per_class} training images per class (>= {STAGED_FROM}): head first, then all layers at smaller rates "
                  f"for earlier stages, with the pretrained BatchNorm statistics; {size_why}")


def describe(recipe: dict) -> str:
    """Two lines for the console: what was picked, and why."""
    opts = "".join(f" {k}={v}" for k, v in recipe["freeze_opts"].items())
    crop = f", crop {recipe['crop_pct']:g}" if recipe.get("crop_pct") else ""
    bn = ", --freeze-bn" if recipe.get("freeze_bn") else ""
    return (f"default recipe '{recipe['name']}': freeze {recipe['freeze']}{opts}, {recipe['epochs']} epochs, lr {recipe['lr']:g}, "
            f"{recipe['img_size']} px{crop}, aug {recipe['aug']}{bn}\n  why: {recipe['why']} (give --freeze, --lr, --epochs or --img-size to choose)")


def resolve(config):
    """``config`` with every unset field filled: by the recipe when it applies, else by ``DEFAULTS``."""
    if config.pretrained and all(getattr(config, k) is None for k in TRIGGERS) and not config.freeze_opts:
        recipe = choose(**facts(config))
        # a given --aug, --crop-pct or --freeze-bn stays
        settings = {k: v for k, v in recipe.settings.items() if k not in KEPT_IF_GIVEN or getattr(config, k) is None}
        chosen = dataclasses.replace(config, **settings)
        return dataclasses.replace(chosen, recipe=recipe.record() | {k: getattr(chosen, k) for k in recipe.settings})
    return dataclasses.replace(config, **{k: v for k, v in DEFAULTS.items() if getattr(config, k) is None}, recipe=None)


def facts(config) -> dict:
    """What the recipe reads: training images per class, the images' size, the backbone's input size and parameters."""
    import numpy as np
    import torch

    from zoo import data
    from zoo.model_info import backbone_info

    info = backbone_info(config.backbone)
    dataset = data.open_dataset(config.data)
    train, _, _ = data.train_val(dataset, val_split=config.val_split, seed=config.seed, shots=config.shots)
    per_class = int(np.median(np.bincount(train.labels, minlength=len(dataset.classes))))
    input_size = int((info.get("input_size") or [3, 224, 224])[-1])
    cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    return {"per_class": per_class, "image_size": typical_image_size(train), "input_size": input_size,
            "params_m": info.get("params_m"), "cuda": cuda}
