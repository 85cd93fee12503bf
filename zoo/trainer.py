"""The settings of a fine-tune (FinetuneConfig), and the names the training loop had when it lived here.

The loop itself is zoo.train: build.py (what is trained, shared with --dry-run), loop.py (the
Trainer), events.py (the one observer channel). ``from zoo.trainer import ...`` keeps working.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from zoo import backbones, data
from zoo.errors import UsageError
from zoo.train.build import default_out, pick_device, plan
from zoo.train.events import Reporter
from zoo.train.loop import Diverged, Interrupted, Result, Trainer

__all__ = ["Diverged", "FinetuneConfig", "Interrupted", "Reporter", "Result", "Trainer", "default_out", "pick_device", "plan"]


@dataclass
class FinetuneConfig:
    """Everything that decides a fine-tune. Saved as run_config.yaml; ``--config`` reads it back."""

    backbone: str
    data: str
    head: str = "linear"
    head_opts: dict = field(default_factory=dict)
    freeze: str | None = None  # None: the default recipe picks (zoo.recipe), else "none"
    freeze_opts: dict = field(default_factory=dict)
    model_args: dict = field(default_factory=dict)  # passed to timm.create_model (e.g. drop_path_rate)
    epochs: int | None = None  # None: the default recipe picks, else 5
    batch_size: int = 64
    lr: float | None = None  # None: the default recipe picks, else 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    accum_steps: int = 1
    clip_grad: float | None = None
    amp: str = "auto"  # auto (bf16 on CUDA) | bf16 | off
    channels_last: bool | None = None  # None: on for convolutional nets
    ema_decay: float | None = None
    img_size: int | None = None  # None: the default recipe picks, else the backbone's pretrained size
    crop_pct: float | None = None  # None: the backbone's (timm's evaluation crop)
    aug: str | None = None  # None: the default recipe picks, else "light"
    val_split: float = 0.1
    shots: int | None = None
    seed: int = 0
    pretrained: bool = True
    device: str = "auto"
    metric: str = "top1"  # top1 | loss: picks the best checkpoint
    patience: int | None = None
    strict: bool = False
    sync_bn: bool = False  # with several processes: BatchNorm statistics over the global batch
    save_every: int | None = None  # also checkpoint every N batches (an epoch's work is never all lost)
    feature_cache: bool = True  # a backbone frozen for the whole run computes each image's features once
    compile: bool = False  # torch.compile the training forward (worth it on GPUs; slow to start on CPUs)
    recipe: dict | None = None  # what the default recipe picked and why (set by zoo.recipe.resolve; a record)

    @classmethod
    def from_dict(cls, values: dict) -> FinetuneConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UsageError(f"unknown config key(s): {', '.join(unknown)} (valid: {', '.join(sorted(names))})")
        for key in ("backbone", "data"):
            if not values.get(key):
                raise UsageError(f"missing '{key}': give it on the command line or in --config")
        return cls(**values)

    def validate(self) -> None:
        def need(ok, message):
            if not ok:
                raise UsageError(message)

        need(self.epochs is None or (isinstance(self.epochs, int) and self.epochs > 0), f"--epochs must be a positive whole number, got {self.epochs}")
        need(isinstance(self.batch_size, int) and self.batch_size > 0, f"--batch-size must be positive, got {self.batch_size}")
        need(self.lr is None or (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)),
             f"--lr must be a positive number, got {self.lr}")
        need(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        need(self.accum_steps >= 1, f"--accum-steps must be >= 1, got {self.accum_steps}")
        need(self.aug is None or self.aug in data.AUGMENTATIONS, f"--aug must be one of {', '.join(data.AUGMENTATIONS)}, got '{self.aug}'")
        need(self.amp in ("auto", "bf16", "off"), f"--amp must be auto, bf16 or off, got '{self.amp}'")
        need(self.metric in ("top1", "loss"), f"--metric must be top1 or loss, got '{self.metric}'")
        need(self.img_size is None or 8 <= self.img_size <= 4096, f"--img-size must be between 8 and 4096, got {self.img_size}")
        need(self.crop_pct is None or (isinstance(self.crop_pct, (int, float)) and 0 < self.crop_pct <= 1),
             f"--crop-pct must be in (0, 1], got {self.crop_pct}")
        need(self.shots is None or self.shots > 0, f"--shots must be positive, got {self.shots}")
        need(0 <= self.val_split < 1, f"--val-split must be in [0, 1), got {self.val_split}")
        need(self.ema_decay is None or 0 < self.ema_decay < 1, f"--ema-decay must be in (0, 1), got {self.ema_decay}")
        backbones.check_model_args(self.model_args, "--model-arg", error=UsageError)
        need(self.patience is None or (isinstance(self.patience, int) and self.patience >= 0),  # 0: off
             f"--patience must be a positive number of epochs (leave it out for no early stopping), got {self.patience}")
        need(isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}")
        need(isinstance(self.warmup_epochs, (int, float)) and 0 <= self.warmup_epochs < math.inf,
             f"--warmup-epochs must be >= 0, got {self.warmup_epochs}")
        need(self.clip_grad is None or (isinstance(self.clip_grad, (int, float)) and self.clip_grad > 0),
             f"--clip-grad must be a positive number, got {self.clip_grad}")
        need(self.save_every is None or (isinstance(self.save_every, int) and self.save_every > 0),
             f"--save-every must be a positive number of batches, got {self.save_every}")
