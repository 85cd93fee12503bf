"""What a fine-tune trains, built in one place: ``build_model`` serves both ``fit()`` and ``--dry-run``.

``build_model``: the backbone with its head, the freeze policy, the parameter groups and the freeze
schedule. ``build``: that, plus the device, the data (decoded once), the optimizer and the
learning-rate schedule, which only training needs. ``plan`` is the dry run.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo import backbones, data, distributed, features, freeze, recipe
from zoo.config import BATCH_SIZE
from zoo.errors import UsageError
from zoo.plugins import build as build_plugin
from zoo.plugins import warn
from zoo.registry import BackboneSpec, resolve


@dataclass
class Model:
    """The network and how it is frozen, epoch by epoch."""

    policy: Any  # the freeze policy (a plugin's object)
    model: torch.nn.Module
    groups: list  # freeze.ParamGroup: stem ... stages ... head
    schedule: list  # (first epoch, a GroupSetting per group) at each change


def build_model(config, spec: BackboneSpec, classes: list[str], *, pretrained: bool) -> Model:
    """The backbone with its head, prepared by the freeze policy, its groups and its freeze schedule."""
    policy = build_plugin("freeze", config.freeze, **config.freeze_opts)
    model = backbones.create(spec, num_classes=len(classes), head=config.head, head_opts=config.head_opts, pretrained=pretrained,
                             seed=config.seed, model_args=config.model_args, classes=classes)
    model = freeze.prepare(policy, model)
    groups = freeze.param_groups(model)
    return Model(policy, model, groups, freeze.schedule(policy, len(groups), config.epochs))


@dataclass
class Build(Model):
    """Everything training needs besides its state (epoch, step, best, ...): fixed for the whole run."""

    device: torch.device
    spec: BackboneSpec
    dataset: data.Dataset
    classes: list[str]
    eval_split: str
    data_cfg: dict  # timm's data config of the exported model
    pre: data.Preprocess
    train_data: data.Decoded
    val_data: data.Decoded | None
    prepare: data.Normalize  # uint8 images to the model's normalized input, on the device
    memory_format: torch.memory_format
    amp_dtype: torch.dtype | None
    feature_dtype: torch.dtype | None  # of the frozen-feature pass
    optimizer: torch.optim.Optimizer
    ema: Any  # timm's ModelEmaV3, or None
    lr: float
    global_batch: int
    batches_per_epoch: int
    updates_per_epoch: int
    total_updates: int
    warmup_updates: int

    def lr_at(self, update: int) -> float:
        """Linear warm-up, then cosine decay to zero, per optimizer update."""
        if update < self.warmup_updates:
            return self.lr * (update + 1) / self.warmup_updates
        progress = (update - self.warmup_updates) / max(1, self.total_updates - self.warmup_updates)
        return self.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def autocast(self):
        return features.autocast(self.device, self.amp_dtype)

    def eval_model(self) -> torch.nn.Module:
        """The weights that are evaluated and exported: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model


def build(config, dist: distributed.Context, reporter, check_resumable=None) -> Build:
    """Seed, pick the device, build the model, decode the data, place both, make the optimizer.

    The order is the seeded order of every run so far: a run repeats bit for bit.
    ``check_resumable(dataset, classes)`` runs before anything big is built.
    """
    cfg = config
    seed_everything(cfg.seed)
    device = pick_device(cfg.device, dist.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    spec = resolve(cfg.backbone)
    dataset = data.open_dataset(cfg.data)
    classes = dataset.classes
    train, val, eval_split = data.train_val(dataset, val_split=cfg.val_split, seed=cfg.seed, shots=cfg.shots)
    if check_resumable is not None:
        check_resumable(dataset, classes)
    m = build_model(cfg, spec, classes, pretrained=cfg.pretrained)
    model = m.model
    if cfg.sync_bn and dist.enabled:
        if device.type != "cuda":
            raise UsageError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm does not run on CPU)")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    groups = freeze.param_groups(model) if model is not m.model else m.groups
    if not any(s.trainable for _, settings in m.schedule for s in settings):
        raise UsageError(f"freeze policy '{cfg.freeze}' with these options leaves nothing to train")

    # Data: decode once at the backbone's input size; normalize and augment per batch.
    from timm.data import resolve_data_config

    dcfg = resolve_data_config({}, model=backbones.timm_model(model))
    size = cfg.img_size or int(dcfg["input_size"][-1])
    data_cfg = {"input_size": (3, size, size), "interpolation": dcfg["interpolation"], "mean": tuple(dcfg["mean"]),
                "std": tuple(dcfg["std"]), "crop_pct": float(cfg.crop_pct or dcfg["crop_pct"]), "crop_mode": "center"}
    pre = data.Preprocess(size, data_cfg["crop_pct"], data_cfg["interpolation"])
    train_data = decode("train", train, pre, cfg.strict, reporter)
    val_data = decode(eval_split, val, pre, cfg.strict, reporter) if val is not None and len(val) else None
    n = len(train_data.labels)
    if cfg.batch_size is None:  # not given: 64, or one batch of every training image (recorded in run_config.yaml)
        cfg.batch_size = max(1, min(BATCH_SIZE, n // dist.world))
    global_batch = cfg.batch_size * dist.world  # --batch-size is per process, as with torchrun
    if global_batch > n:
        per = f" x {dist.world} processes" if dist.enabled else ""
        raise UsageError(f"--batch-size {cfg.batch_size}{per} is larger than the {n} training images: use at most {n // dist.world}")

    # Model placement and precision.
    memory_format = backbones.memory_format(model, cfg.channels_last)
    model.to(device, memory_format=memory_format)
    prepare = data.Normalize(data_cfg["mean"], data_cfg["std"], device, memory_format)
    keep_data_on_gpu(device, train_data, val_data)
    amp_dtype = torch.bfloat16 if (cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")) else None

    # Optimizer: one SGD group per (parameter group, decay or not); lr is set every update.
    params = dict(model.named_parameters())
    opt_groups = []
    for i, group in enumerate(groups):
        decay = [params[n] for n in group.params if params[n].ndim > 1]
        no_decay = [params[n] for n in group.params if params[n].ndim <= 1]
        opt_groups += [{"params": p, "weight_decay": wd, "group": i, "lr_scale": 1.0}
                       for p, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)) if p]
    optimizer = torch.optim.SGD(opt_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    batches_per_epoch = batches(n, global_batch, dist.world)
    updates_per_epoch = math.ceil(batches_per_epoch / cfg.accum_steps)
    ema = None
    if cfg.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema_decay)
    return Build(policy=m.policy, model=model, groups=groups, schedule=m.schedule, device=device, spec=spec, dataset=dataset,
                 classes=classes, eval_split=eval_split, data_cfg=data_cfg, pre=pre, train_data=train_data, val_data=val_data,
                 prepare=prepare, memory_format=memory_format, amp_dtype=amp_dtype,
                 feature_dtype=features.pass_dtype(device, cfg.amp, amp_dtype), optimizer=optimizer, ema=ema, lr=cfg.lr,
                 global_batch=global_batch, batches_per_epoch=batches_per_epoch, updates_per_epoch=updates_per_epoch,
                 total_updates=updates_per_epoch * cfg.epochs, warmup_updates=round(cfg.warmup_epochs * updates_per_epoch))


def decode(name: str, split: data.Split, pre: data.Preprocess, strict: bool, reporter) -> data.Decoded:
    """Every image of a split once, at the model's size (cached on disk); unreadable ones skipped with a warning."""
    with reporter.work(f"decoding {len(split)} {name} images at {pre.size}x{pre.size} ...", len(split)) as advance:
        decoded = data.cached_decode(split, pre, strict=strict, progress=advance)
    if decoded.skipped:
        shown = ", ".join(decoded.skipped[:3])
        warn(f"skipped {len(decoded.skipped)} unreadable {name} file(s): {shown}{' ...' if len(decoded.skipped) > 3 else ''} "
             f"(use --strict to fail instead)")
    return decoded


def keep_data_on_gpu(device: torch.device, *decoded) -> None:
    """On CUDA, hold the decoded images on the GPU when they take under a quarter of its free memory:
    batches are then gathered and augmented there, with no host-to-device copy per step."""
    if device.type != "cuda":
        return
    decoded = [d for d in decoded if d is not None]
    free, _ = torch.cuda.mem_get_info(device)
    if sum(d.images.nbytes + d.labels.nbytes for d in decoded) < free // 4:
        for d in decoded:
            d.images, d.labels = d.images.to(device), d.labels.to(device)


def feature_cache(b: Build, config, dist: distributed.Context, reporter) -> dict | None:
    """Pooled features of the images the frozen part would compute exactly the same way every epoch.

    The evaluation images' features never change while the backbone is frozen (evaluation runs in
    eval mode, without augmentation): they are computed once. The training images' too, when
    nothing random runs on them (no augmentation, no dropout or drop-path in the frozen part).
    """
    if not config.feature_cache or b.ema is not None or dist.enabled:
        return None
    if any(s.trainable for _, settings in b.schedule for s in settings[:-1]) or hasattr(b.policy, "trainable"):
        return None  # some backbone group trains in some epoch
    part = features.split(b.model)
    if part is None:
        return None
    train_too = config.aug == "none" and not features.random_inside(part, b.model)
    if not train_too and b.val_data is None:
        return None
    settings = b.policy.settings(0, len(b.groups))
    frozen_norms = {id(m) for m in freeze.apply(b.model, b.groups, settings, b.policy, bool(config.freeze_bn))}
    if any(isinstance(m, torch.nn.modules.batchnorm._NormBase) and id(m) not in frozen_norms for m in part.frozen):
        return None  # a norm layer that would use batch statistics in training
    b.model.eval()
    try:
        if not features.same_as_model(part, b.model, b.prepare(b.train_data.images[:8]), b.autocast):
            return None
        cached = {"split": part}
        for name, shown, decoded in (("train", "train", b.train_data), ("val", b.eval_split, b.val_data)):
            if decoded is not None and (name == "val" or train_too):
                n = len(decoded.labels)
                with reporter.work(f"frozen features of {n} {shown} images: once, not every epoch ...", n) as advance:
                    out = features.cached(part, decoded, b.pre, b.prepare, config.batch_size, b.feature_dtype, advance)
                    # bf16 features of a float32 run (pass_dtype): the head trains and scores in the run's precision
                    cached[name] = out.to(b.device, torch.float32 if b.amp_dtype is None else out.dtype)
        return cached
    finally:
        b.model.train()


def check(config) -> None:
    """The config's values (zoo.config), and its timm arguments, which only timm's signatures can check."""
    config.validate()
    backbones.check_model_args(config.model_args, "--model-arg", error=UsageError)


def plan(config) -> dict:
    """What ``--dry-run`` shows: parameter groups and the freeze schedule (and the default recipe), without training."""
    check(config)
    config = recipe.resolve(config)
    spec = resolve(config.backbone)
    dataset = data.open_dataset(config.data)
    m = build_model(config, spec, dataset.classes, pretrained=False)
    rows = []
    allowed = getattr(m.policy, "trainable", None)  # e.g. LoRA: only adapters train inside a trainable group
    params = dict(m.model.named_parameters())
    for i, group in enumerate(m.groups):
        trainable = sum(params[n].numel() for n in group.params if allowed is None or allowed(n))
        rows.append({"group": group.name, "params": group.numel, "trainable_params": trainable, "norm_layers": len(group.norms),
                     "schedule": [{"from_epoch": epoch + 1, "trainable": s[i].trainable, "lr_scale": s[i].lr_scale,
                                   "norm": "frozen" if freeze.norms_frozen(i, len(m.groups), s[i], bool(config.freeze_bn)) else "train"}
                                  for epoch, s in m.schedule]})
    trainable = any(s.trainable for _, settings in m.schedule for s in settings)
    return {"backbone": spec.source, "classes": dataset.classes, "freeze": config.freeze, "freeze_bn": bool(config.freeze_bn),
            "epochs": config.epochs, "groups": rows, "trainable": trainable, "recipe": config.recipe}


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """The training device; under torchrun a bare ``cuda`` means this process's GPU (LOCAL_RANK)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
        if name == "cpu":
            return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda was asked for but CUDA is not available here: use --device cpu or auto")
        if device.index is None and distributed.env_context().enabled:
            device = torch.device("cuda", local_rank)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device '{name}': use auto, cpu, cuda or cuda:N")
    return device


def batches(n: int, batch_size: int, world: int = 1) -> int:
    """Batches per epoch; a last batch that leaves a process fewer than 2 images is dropped (BatchNorm cannot train on 1)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 * world else 0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_out(config) -> Path:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{config.backbone}-{Path(config.data).name or config.data}").strip("-")[:60]
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
