"""The one training loop every backbone, head, freeze policy and dataset shares.

SGD with momentum, weight decay off for norms and biases, cosine schedule with linear
warm-up stepped per update, label smoothing, accumulation, clipping, bf16 autocast on
CUDA, channels_last for conv nets, optional EMA, evaluation every epoch, best and last
checkpoints, early stopping, exact resume. Plugins see it through the zoo_on_* events.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zoo import backbones, data, distributed, features, freeze, recipe, rundir
from zoo.config import FinetuneConfig  # defined there (no torch); imported from here by plugins and tests
from zoo.errors import UsageError, ZooError, command
from zoo.plugins import build, fire
from zoo.registry import resolve


def _check(config: FinetuneConfig) -> None:
    """The config's values (zoo.config), and its timm arguments, which only timm's signatures can check."""
    config.validate()
    backbones.check_model_args(config.model_args, "--model-arg", error=UsageError)


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


class Interrupted(ZooError):
    exit_code = 130


class _StopNow(BaseException):
    """A signal before training began: raised where the work is (a BaseException, so no ``except Exception`` keeps it)."""


@dataclass
class Result:
    run_dir: Path
    metrics: dict  # the best epoch's evaluation (or the last epoch's without a validation split)
    history: list[dict]
    hub: dict | None = None  # the answer of the end-of-run push, when there was one


def _one_provider(config: FinetuneConfig, run_dir: Path) -> None:
    """A resumed run names its head and freeze policy only by name: when two installed plugins register
    one of them, zoo cannot tell which trained the checkpoint, and runs neither (one line naming both)."""
    from zoo.plugins import LABELS, get_plugins

    plugins = get_plugins()
    for kind, name in (("heads", config.head), ("freeze", config.freeze)):
        claims = plugins.claims(kind, name) if name else []
        if len(claims) > 1:
            a, b = (plugins.label(e.plugin) for e in claims[:2])
            raise ZooError(f"cannot resume {run_dir}: the {LABELS[kind]} '{name}' is registered by both '{a}' and '{b}', "
                           f"and the run does not say which trained it: select one with ZOO_LOAD_PLUGINS")


class Trainer:
    """Set up with a config, then ``fit()``.

    A plugin may set ``trainer.should_stop = True`` in an event: training ends after that epoch
    and the run directory is completed (as with early stopping). ``trainer.interrupted`` is set by
    Ctrl-C / SIGTERM / SIGHUP: the step finishes, a checkpoint is written, and ``--resume`` continues.
    Before training begins (decoding, frozen features) the same signals stop at once.

    ``on_best(run_dir)``, when given, is called after each new best checkpoint is written (the CLI
    and ``zoo.finetune(push_to_hub=...)`` pass one that publishes it; the trainer itself never
    talks to the Hub).
    """

    def __init__(self, config: FinetuneConfig, *, out: Path | None = None, resume: Path | None = None, reporter=None,
                 on_best: Callable[[Path], None] | None = None):
        _check(config)
        self.reporter = reporter or Reporter(quiet=True)
        if resume is None:  # a resumed run continues as its run_config.yaml says
            config = recipe.resolve(config)
            if config.recipe:
                self.reporter.note(recipe.describe(config.recipe))
        self.config = config
        self.should_stop = self.interrupted = False
        self.on_best = on_best
        self.resume_state = None
        cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
        self.dist = distributed.init("cuda" if cuda else "cpu")
        if resume is not None:
            self.run_dir = Path(resume)
            _one_provider(config, self.run_dir)
            # A run killed before its first checkpoint has only run_config.yaml: it starts again from scratch.
            if self.dist.main and (self.run_dir / rundir.LAST).is_file():
                self.resume_state = rundir.load_checkpoint(self.run_dir / rundir.LAST)
        else:
            self.run_dir = Path(out) if out else default_out(config)
            if self.dist.main:
                rundir.refuse_existing_run(self.run_dir)
        if self.dist.enabled:  # rank 0's run for all: another machine may not see its folder
            self.config, self.run_dir, self.resume_state = distributed.broadcast((self.config, self.run_dir, self.resume_state))

    # -- setup --------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.config
        _seed_everything(cfg.seed)
        self.device = pick_device(cfg.device, self.dist.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.spec = resolve(cfg.backbone)
        self.dataset = data.open_dataset(cfg.data)
        self.classes = self.dataset.classes
        train, val, self.eval_split = data.train_val(self.dataset, val_split=cfg.val_split, seed=cfg.seed, shots=cfg.shots)
        if self.resume_state is not None and self.dist.main:  # (other machines' file times may differ)
            self._check_resumable(self.resume_state)
        self.policy = build("freeze", cfg.freeze, **cfg.freeze_opts)
        self.model = backbones.create(self.spec, num_classes=len(self.classes), head=cfg.head, head_opts=cfg.head_opts,
                                      pretrained=cfg.pretrained, seed=cfg.seed, model_args=cfg.model_args,
                                      classes=self.classes)
        self.model = freeze.prepare(self.policy, self.model)
        if cfg.sync_bn and self.dist.enabled:
            if self.device.type != "cuda":
                raise UsageError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm does not run on CPU)")
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.groups = freeze.param_groups(self.model)
        self.schedule = freeze.schedule(self.policy, len(self.groups), cfg.epochs)
        if not any(s.trainable for _, settings in self.schedule for s in settings):
            raise UsageError(f"freeze policy '{cfg.freeze}' with these options leaves nothing to train")

        # Data: decode once at the backbone's input size; normalize and augment per batch.
        from timm.data import resolve_data_config

        dcfg = resolve_data_config({}, model=backbones.timm_model(self.model))
        size = cfg.img_size or int(dcfg["input_size"][-1])
        self.data_cfg = {"input_size": (3, size, size), "interpolation": dcfg["interpolation"], "mean": tuple(dcfg["mean"]),
                         "std": tuple(dcfg["std"]), "crop_pct": float(cfg.crop_pct or dcfg["crop_pct"]), "crop_mode": "center"}
        self.pre = data.Preprocess(size, self.data_cfg["crop_pct"], self.data_cfg["interpolation"])
        self.train_data = self.reporter.decode("train", train, self.pre, cfg.strict)
        self.val_data = self.reporter.decode(self.eval_split, val, self.pre, cfg.strict) if val is not None and len(val) else None
        n = len(self.train_data.labels)
        self.global_batch = cfg.batch_size * self.dist.world  # --batch-size is per process, as with torchrun
        if self.global_batch > n:
            per = f" x {self.dist.world} processes" if self.dist.enabled else ""
            raise UsageError(f"--batch-size {cfg.batch_size}{per} is larger than the {n} training images: use at most {n // self.dist.world}")

        # Model placement and precision.
        self.memory_format = backbones.memory_format(self.model, cfg.channels_last)
        self.model.to(self.device, memory_format=self.memory_format)
        self._prepare = data.Normalize(self.data_cfg["mean"], self.data_cfg["std"], self.device, self.memory_format)
        self._keep_data_on_gpu()
        self.amp_dtype = torch.bfloat16 if (cfg.amp == "bf16" or (cfg.amp == "auto" and self.device.type == "cuda")) else None
        self.feature_dtype = features.pass_dtype(self.device, cfg.amp, self.amp_dtype)  # of the frozen-feature pass

        # Optimizer: one SGD group per (parameter group, decay or not); lr is set every update.
        params = dict(self.model.named_parameters())
        opt_groups = []
        for i, group in enumerate(self.groups):
            decay = [params[n] for n in group.params if params[n].ndim > 1]
            no_decay = [params[n] for n in group.params if params[n].ndim <= 1]
            opt_groups += [{"params": p, "weight_decay": wd, "group": i, "lr_scale": 1.0}
                           for p, wd in ((decay, cfg.weight_decay), (no_decay, 0.0)) if p]
        self.optimizer = torch.optim.SGD(opt_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        self.batches_per_epoch = _batches(n, self.global_batch, self.dist.world)
        self.updates_per_epoch = math.ceil(self.batches_per_epoch / cfg.accum_steps)
        self.total_updates = self.updates_per_epoch * cfg.epochs
        self.warmup_updates = round(cfg.warmup_epochs * self.updates_per_epoch)
        self.ema = None
        if cfg.ema_decay:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay)

        # Training state (replaced by the checkpoint on resume).
        self.epoch, self.batch, self.update = 0, 0, 0
        self.best, self.bad_epochs, self.history = None, 0, []
        self.totals = _zero_totals()
        self.aug_rng = torch.Generator().manual_seed(cfg.seed)
        self._train_net, self._net_key = None, None
        self.cache = None  # the frozen-feature cache, built by _fit when it changes nothing
        self._running = None  # this epoch's loss and hits on the device (see _train_epoch)
        if self.resume_state is not None:
            self._restore(self.resume_state)
        if self.dist.enabled:  # every process its own dropout and drop-path draws
            torch.manual_seed(cfg.seed * 1_000_003 + 7919 * self.dist.rank + self.update)

    def _keep_data_on_gpu(self) -> None:
        """On CUDA, hold the decoded images on the GPU when they take under a quarter of its free memory:
        batches are then gathered and augmented there, with no host-to-device copy per step."""
        if self.device.type != "cuda":
            return
        decoded = [d for d in (self.train_data, self.val_data) if d is not None]
        free, _ = torch.cuda.mem_get_info(self.device)
        if sum(d.images.nbytes + d.labels.nbytes for d in decoded) < free // 4:
            for d in decoded:
                d.images, d.labels = d.images.to(self.device), d.labels.to(self.device)

    def _check_resumable(self, state: dict) -> None:
        if state.get("classes") != self.classes:
            raise UsageError("cannot resume: the dataset's classes differ from the checkpoint's; start a new run with another --out")
        if state.get("dataset") != self.dataset.fingerprint:
            raise UsageError("cannot resume: the data changed since the checkpoint (fingerprint differs); start a new run")

    def lr_at(self, update: int) -> float:
        """Linear warm-up, then cosine decay to zero, per optimizer update."""
        if update < self.warmup_updates:
            return self.config.lr * (update + 1) / self.warmup_updates
        progress = (update - self.warmup_updates) / max(1, self.total_updates - self.warmup_updates)
        return self.config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # -- the loop ------------------------------------------------------------------------
    def fit(self) -> Result:
        lock = rundir.RunLock(self.run_dir) if self.dist.main else contextlib.nullcontext()
        try:
            with lock, _StopOnSignal(self) as self._signals:
                return self._fit()
        except _StopNow:
            hint = (f"resume with: {command('zoo', 'finetune', '--resume', self.run_dir)}" if (self.run_dir / rundir.RUN_CONFIG).is_file()
                    else f"nothing was written to {self.run_dir} yet: run the same command again")
            raise Interrupted(f"interrupted; {hint}") from None
        except RuntimeError as exc:
            if self.dist.enabled and distributed.is_peer_failure(exc):
                raise ZooError(f"rank {self.dist.rank}: another process of this run stopped ({str(exc).splitlines()[0][:160]}); "
                               f"resume with: {command('zoo', 'finetune', '--resume', self.run_dir)}") from None
            raise
        finally:
            distributed.shutdown()

    def _fit(self) -> Result:
        self.setup()
        cfg = self.config
        self.cache = self._feature_cache()
        if self.dist.main:
            rundir.remove_stale_temporaries(self.run_dir)
            self._write_run_config()
            # The checkpoint's history is the truth: lines written after it by a killed run go.
            rundir.write_metrics(self.run_dir, self.history)
        self._signals.training = True  # from now on a signal lets the step finish and writes a checkpoint
        fire("zoo_on_train_start", trainer=self, config=cfg)
        self.reporter.start(self)
        while self.epoch < cfg.epochs and not self._early_stopped():
            self._train_epoch()
            if self.interrupted and self.batch < self.batches_per_epoch:
                break  # interrupted mid-epoch: checkpoint written, resume continues this epoch
            metrics = self._end_epoch()
            fire("zoo_on_epoch_end", trainer=self, epoch=self.epoch, metrics=metrics)
            if self.dist.enabled:
                self.should_stop = distributed.any_true(self.should_stop, self.device)
            if self.interrupted or self.should_stop:
                break
        self.reporter.stop()
        if self.interrupted and self.epoch < cfg.epochs and not self._early_stopped():
            raise Interrupted(f"interrupted; resume with: {command('zoo', 'finetune', '--resume', self.run_dir)}")
        result = self._finish()
        fire("zoo_on_train_end", trainer=self, run_dir=self.run_dir, metrics=result.metrics)
        return result

    def _autocast(self):
        return features.autocast(self.device, self.amp_dtype)

    def _feature_cache(self) -> dict | None:
        """Pooled features of the images the frozen part would compute exactly the same way every epoch.

        The evaluation images' features never change while the backbone is frozen (evaluation runs in
        eval mode, without augmentation): they are computed once. The training images' too, when
        nothing random runs on them (no augmentation, no dropout or drop-path in the frozen part).
        """
        cfg = self.config
        if not cfg.feature_cache or self.ema is not None or self.dist.enabled:
            return None
        if any(s.trainable for _, settings in self.schedule for s in settings[:-1]) or hasattr(self.policy, "trainable"):
            return None  # some backbone group trains in some epoch
        part = features.split(self.model)
        if part is None:
            return None
        train_too = cfg.aug == "none" and not features.random_inside(part, self.model)
        if not train_too and self.val_data is None:
            return None
        frozen_norms = {id(m) for m in freeze.apply(self.model, self.groups, self.policy.settings(0, len(self.groups)), self.policy)}
        if any(isinstance(m, torch.nn.modules.batchnorm._NormBase) and id(m) not in frozen_norms for m in part.frozen):
            return None  # a norm layer that would use batch statistics in training
        self.model.eval()
        try:
            if not features.same_as_model(part, self.model, self._prepare(self.train_data.images[:8]), self._autocast):
                return None
            cached = {"split": part}
            for name, shown, decoded in (("train", "train", self.train_data), ("val", self.eval_split, self.val_data)):
                if decoded is not None and (name == "val" or train_too):
                    n = len(decoded.labels)
                    with self.reporter.work(f"frozen features of {n} {shown} images: once, not every epoch ...", n) as advance:
                        out = features.cached(part, decoded, self.pre, self._prepare, cfg.batch_size, self.feature_dtype, advance)
                        # bf16 features of a float32 run (pass_dtype): the head trains and scores in the run's precision
                        cached[name] = out.to(self.device, torch.float32 if self.amp_dtype is None else out.dtype)
            return cached
        finally:
            self.model.train()

    def _net(self):
        """The module to train: the model, or its DistributedDataParallel wrapper; compiled with ``compile``."""
        trainable = tuple(n for n, p in self.model.named_parameters() if p.requires_grad)
        if trainable != self._net_key:  # DDP fixes its parameters when built: rebuild when a freeze schedule changes them
            net = self.model
            if self.dist.enabled:
                from torch.nn.parallel import DistributedDataParallel

                net = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self._train_net = torch.compile(net) if self.config.compile else net  # the weights stay self.model's: checkpoints are unchanged
            self._net_key = trainable
        return self._train_net

    def _train_epoch(self) -> None:
        cfg, model = self.config, self.model
        settings = self.policy.settings(self.epoch, len(self.groups))
        frozen_norms = freeze.apply(model, self.groups, settings, self.policy)
        for g in self.optimizer.param_groups:
            g["lr_scale"] = settings[g["group"]].lr_scale
        freeze.train_mode(model, frozen_norms)
        net = self._net()
        images, labels = self.train_data.images, self.train_data.labels
        rank, world, G = self.dist.rank, self.dist.world, self.global_batch
        # The order of an epoch depends only on (seed, epoch): a resumed epoch replays it. Every process
        # draws the same global batch (and its augmentation) and trains its own slice of it, so N
        # processes x batch B follow 1 process x batch N*B.
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + self.epoch))
        # Loss and hits add up on the device, in float64 from the checkpoint's totals on: no host sync per step.
        self._running = torch.tensor([self.totals["loss"], self.totals["correct"]], dtype=torch.float64, device=self.device)
        start = time.perf_counter()
        while self.batch < self.batches_per_epoch:
            idx = order[self.batch * G:(self.batch + 1) * G]
            y = labels[idx]
            cached = self.cache is not None and "train" in self.cache
            if cached:  # the frozen backbone's output, computed once (single process only)
                x = self.cache["train"][idx]
            else:
                x = data.augment(images[idx], cfg.aug, self.aug_rng)
                if world > 1:
                    part = torch.tensor_split(torch.arange(len(idx)), world)[rank]
                    x, y = x[part], y[part]
                x = self._prepare(x)
            y = y.to(self.device, non_blocking=True)
            stepping = (self.batch + 1) % cfg.accum_steps == 0 or self.batch + 1 == self.batches_per_epoch
            sync = net.no_sync() if world > 1 and not stepping else contextlib.nullcontext()
            with sync:
                with self._autocast():
                    logits = self.cache["split"].head(x) if cached else net(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                # DDP averages gradients over processes; weighting by the slice's share keeps the mean per image exact.
                (loss * (len(y) * world / len(idx)) / cfg.accum_steps).backward()
            self.batch += 1
            if stepping:
                self._step()
            self._running += torch.stack((loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double()))
            self.totals["seen"] += len(y)
            self.reporter.batch(self, len(y) * world, loss.detach())
            if world > 1:
                self.interrupted = distributed.any_true(self.interrupted, self.device)
            at_update = self.batch % cfg.accum_steps == 0 and self.batch < self.batches_per_epoch
            if at_update and (self.interrupted or (cfg.save_every and self.batch % cfg.save_every == 0)):
                self._save_last()
                if self.interrupted:
                    return
        self._sync_totals()  # waits for the device: elapsed then covers all of the epoch's work
        elapsed = time.perf_counter() - start
        t = distributed.all_sum(torch.tensor([self.totals["loss"], self.totals["correct"], self.totals["seen"]], dtype=torch.float64,
                                             device=self._collective_device())).tolist()
        self.train_stats = {"train_loss": t[0] / max(1, t[2]), "train_top1": t[1] / max(1, t[2]),
                            "images_per_s": t[2] / max(elapsed, 1e-9)}
        self.totals, self._running = _zero_totals(), None

    def _sync_totals(self) -> None:
        """Bring the device's running loss and hits into ``totals`` (a host sync: only for checkpoints and epoch ends)."""
        if self._running is not None:
            loss, correct = self._running.tolist()
            self.totals["loss"], self.totals["correct"] = loss, int(correct)

    def _step(self) -> None:
        lr = self.lr_at(self.update)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g["lr_scale"]
        if self.config.clip_grad:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.config.clip_grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model, step=self.update)
        self.update += 1

    def _end_epoch(self) -> dict:
        self.epoch, self.batch = self.epoch + 1, 0
        evaluated = self.evaluate() if self.val_data is not None else {}
        self.last_eval = evaluated
        record = {"epoch": self.epoch, **self.train_stats, "lr": self.lr_at(max(0, self.update - 1)),
                  **{f"val_{k}": v for k, v in evaluated.items() if k in ("loss", "top1", "top5")}}
        self.history.append(record)
        main = self.dist.main  # every process keeps the same state; only rank 0 writes it
        if main:
            rundir.append_line(self.run_dir / rundir.METRICS, record)
        score, improved = None, False
        if evaluated:
            score = evaluated["top1"] if self.config.metric == "top1" else -evaluated["loss"]
        if score is not None and (self.best is None or score > self.best["score"]):
            self.best = {"score": score, "epoch": self.epoch, "metrics": _jsonable(evaluated)}
            self.bad_epochs, improved = 0, True
            if main:
                rundir.save_weights(self.run_dir / rundir.BEST, freeze.export_state(self.policy, self._eval_model()))
        elif score is not None:  # without an evaluation split there is nothing to stop early on
            self.bad_epochs += 1
        self._save_last()
        self.reporter.epoch(self, record)
        if improved and main and self.on_best is not None:
            self.on_best(self.run_dir)
        return record

    def _collective_device(self):
        return self.device if self.device.type == "cuda" else torch.device("cpu")  # NCCL reduces CUDA tensors only

    def _early_stopped(self) -> bool:
        return bool(self.config.patience) and self.bad_epochs >= self.config.patience

    def _eval_model(self):
        return self.ema.module if self.ema is not None else self.model

    @torch.inference_mode()
    def evaluate(self) -> dict:
        """Loss, top-1, top-5 (with 5+ classes), per-class accuracy and the confusion matrix."""
        model = self._eval_model()
        model.eval()
        n_classes = len(self.classes)
        confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
        loss_sum, top5, images, labels = 0.0, 0, self.val_data.images, self.val_data.labels
        if self.dist.enabled:  # each process scores its share; the sums are added up below
            part = torch.tensor_split(torch.arange(len(labels)), self.dist.world)[self.dist.rank]
            images, labels = images[part], labels[part]
        cached = self.cache.get("val") if self.cache else None
        for start in range(0, len(labels), 256):
            y = labels[start:start + 256].to(self.device)
            with self._autocast():
                if cached is not None:
                    logits = self.cache["split"].head(cached[start:start + 256]).float()
                else:
                    logits = model(self._prepare(images[start:start + 256])).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            pred = logits.argmax(1)
            confusion += torch.bincount((y * n_classes + pred).cpu(), minlength=n_classes * n_classes).view(n_classes, n_classes)
            if n_classes >= 5:
                top5 += int((logits.topk(5, dim=1).indices == y[:, None]).any(1).sum())
        if self.dist.enabled:
            sums = distributed.all_sum(torch.cat([torch.tensor([loss_sum, top5], dtype=torch.float64),
                                                  confusion.flatten().double()]).to(self._collective_device())).cpu()
            loss_sum, top5 = float(sums[0]), int(sums[1])
            confusion = sums[2:].round().long().view(n_classes, n_classes)
        total = int(confusion.sum())
        per_class = confusion.diag().float() / confusion.sum(1).clamp(min=1)
        result = {"loss": loss_sum / total, "top1": float(confusion.diag().sum()) / total,
                  "per_class": {c: round(float(a), 4) for c, a in zip(self.classes, per_class, strict=False)},
                  "confusion": confusion.tolist(), "images": total}
        if n_classes >= 5:
            result["top5"] = top5 / total
        return result

    # -- checkpoints and the run directory -------------------------------------------------
    def _state(self) -> dict:
        self._sync_totals()
        return {
            "format": 1, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.epoch, "batch": self.batch, "update": self.update, "totals": dict(self.totals),
            "global_batch": self.global_batch, "updates_per_epoch": self.updates_per_epoch, "world": self.dist.world,
            "best": self.best, "bad_epochs": self.bad_epochs, "history": self.history,
            "rng": {"torch": torch.get_rng_state(), "aug": self.aug_rng.get_state(),
                    "numpy": _numpy_state(), "python": list(random.getstate()[1]),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []},
            "classes": self.classes, "dataset": self.dataset.fingerprint,
            "train_stats": getattr(self, "train_stats", {}), "last_eval": _jsonable(getattr(self, "last_eval", {})),
        }

    def _save_last(self) -> None:
        if self.dist.main:
            rundir.save_checkpoint(self.run_dir / rundir.LAST, self._state())

    def _restore(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.ema is not None and state.get("ema"):
                self.ema.load_state_dict(state["ema"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ZooError(f"the checkpoint in {self.run_dir} does not fit this model ({str(exc).splitlines()[0][:120]})") from None
        self.epoch, self.batch, self.update = state["epoch"], state["batch"], state["update"]
        self.totals = dict(state.get("totals") or _zero_totals())
        if state.get("global_batch", self.global_batch) != self.global_batch:
            # Another number of processes: same point of the epoch and of the schedule, in the new batch size.
            self.batch = round(self.batch * state["global_batch"] / self.global_batch)
            self.update = round(self.update * self.updates_per_epoch / state["updates_per_epoch"])
        self.best, self.bad_epochs, self.history = state["best"], state["bad_epochs"], state["history"]
        self.train_stats, self.last_eval = state.get("train_stats", {}), state.get("last_eval", {})
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        self.aug_rng.set_state(rng["aug"])
        np.random.set_state(("MT19937", np.asarray(rng["numpy"][0], dtype=np.uint32), *rng["numpy"][1:]))
        random.setstate((3, tuple(rng["python"]), None))
        if rng.get("cuda") and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])

    def _write_run_config(self) -> None:
        rundir.RunDir(self.run_dir).write_run_config(self.config)

    def _finish(self) -> Result:
        from zoo import cards

        if self.best is not None:
            metrics = dict(self.best["metrics"], epoch=self.best["epoch"])
        else:
            metrics = dict(_jsonable(self.last_eval), epoch=self.epoch)
        metrics.update({k: self.history[-1][k] for k in ("train_loss", "train_top1") if self.history and k in self.history[-1]})
        metrics["eval_split"] = self.eval_split
        if not self.dist.main:
            return Result(self.run_dir, metrics, self.history)
        state = rundir.read_best(self.run_dir) if self.best is not None else freeze.export_state(self.policy, self._eval_model())
        rundir.save_weights(self.run_dir / rundir.WEIGHTS, state)
        cards.write_config(self)
        rundir.plot(self.run_dir, self.history, metrics.get("confusion"), self.classes,
                    best_epoch=self.best["epoch"] if self.best is not None else None, split=self.eval_split, top1=metrics.get("top1"))
        cards.write_model_card(self, metrics)
        return Result(self.run_dir, metrics, self.history)


# -- helpers ------------------------------------------------------------------------------
def _batches(n: int, batch_size: int, world: int = 1) -> int:
    """Batches per epoch; a last batch that leaves a process fewer than 2 images is dropped (BatchNorm cannot train on 1)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 * world else 0)


def _zero_totals() -> dict:
    return {"loss": 0.0, "correct": 0, "seen": 0}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _numpy_state():
    _kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return [keys.tolist(), int(pos), int(has_gauss), float(gauss)]


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.item()
    return value


def default_out(config: FinetuneConfig) -> Path:
    import re

    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{config.backbone}-{Path(config.data).name or config.data}").strip("-")[:60]
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


class _StopOnSignal:
    """Ctrl-C / SIGTERM / SIGHUP: before training, stop at once; in training, finish the step, write a
    checkpoint, stop. A second signal aborts. Signals the user ignores (nohup, ``&``) stay ignored."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.previous, self.training, self.stopping = trainer, {}, False, False

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in data.STOP_SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.trainer.interrupted or self.stopping:
            raise KeyboardInterrupt
        if not self.training:  # decoding or computing features: nothing to save, and minutes may be left
            self.stopping = True
            raise _StopNow
        self.trainer.interrupted = True

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class Reporter:
    """Quiet progress: subclasses (the CLI's) draw bars and tables."""

    def __init__(self, quiet: bool = True):
        self.quiet = quiet

    @contextlib.contextmanager
    def work(self, header: str, total: int):
        """A callback ``advance(n)`` for long work (decoding, frozen features), or None; see the CLI's reporter."""
        yield None

    def decode(self, name, split, pre, strict):
        with self.work(f"decoding {len(split)} {name} images at {pre.size}x{pre.size} ...", len(split)) as advance:
            decoded = data.cached_decode(split, pre, strict=strict, progress=advance)
        if decoded.skipped:
            from zoo.plugins import warn

            shown = ", ".join(decoded.skipped[:3])
            warn(f"skipped {len(decoded.skipped)} unreadable {name} file(s): {shown}{' ...' if len(decoded.skipped) > 3 else ''} "
                 f"(use --strict to fail instead)")
        return decoded

    def note(self, text: str):
        """A line worth showing before training (the default recipe's pick)."""

    def start(self, trainer): ...

    def batch(self, trainer, n, loss):
        """After each batch of n images; ``loss`` is a 0-d tensor on the device: ``float(loss)`` waits for the step."""

    def epoch(self, trainer, record): ...

    def stop(self): ...


def plan(config: FinetuneConfig) -> dict:
    """What ``--dry-run`` shows: parameter groups and the freeze schedule (and the default recipe), without training."""
    _check(config)
    config = recipe.resolve(config)
    spec = resolve(config.backbone)
    dataset = data.open_dataset(config.data)
    policy = build("freeze", config.freeze, **config.freeze_opts)
    model = backbones.create(spec, num_classes=len(dataset.classes), head=config.head, head_opts=config.head_opts,
                             pretrained=False, seed=config.seed, model_args=config.model_args)
    model = freeze.prepare(policy, model)
    groups = freeze.param_groups(model)
    changes = freeze.schedule(policy, len(groups), config.epochs)
    rows = []
    allowed = getattr(policy, "trainable", None)  # e.g. LoRA: only adapters train inside a trainable group
    params = dict(model.named_parameters())
    for i, group in enumerate(groups):
        trainable = sum(params[n].numel() for n in group.params if allowed is None or allowed(n))
        rows.append({"group": group.name, "params": group.numel, "trainable_params": trainable, "norm_layers": len(group.norms),
                     "schedule": [{"from_epoch": epoch + 1, "trainable": s[i].trainable, "lr_scale": s[i].lr_scale,
                                   "norm": "train" if s[i].trainable else "frozen"} for epoch, s in changes]})
    trainable = any(s.trainable for _, settings in changes for s in settings)
    return {"backbone": spec.source, "classes": dataset.classes, "freeze": config.freeze, "epochs": config.epochs,
            "groups": rows, "trainable": trainable, "recipe": config.recipe}
