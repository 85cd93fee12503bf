"""The one training loop every backbone, head, freeze policy and dataset shares.

SGD with momentum, weight decay off for norms and biases, cosine schedule with linear
warm-up stepped per update, label smoothing, accumulation, clipping, bf16 autocast on
CUDA, channels_last for conv nets, optional EMA, evaluation every epoch, best and last
checkpoints, early stopping, exact resume. Read ``Trainer._fit`` top to bottom: build, then
epochs of ``_train_step``, each epoch ended by ``_end_epoch`` (evaluate, checkpoint). Everything
that watches it (plugins, the console, the Hub push) is told through ``emit`` (zoo.train.events).
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zoo import data, distributed, freeze, recipe, rundir
from zoo.errors import STOP_SIGNALS, Interrupted, UsageError, ZooError, command
from zoo.train.build import build, check, default_out, feature_cache
from zoo.train.events import Events, Reporter


class Diverged(ZooError):
    """The loss or the weights stopped being finite: training stops before anything non-finite is saved."""


class _StopNow(BaseException):
    """A signal before training began: raised where the work is (a BaseException, so no ``except Exception`` keeps it)."""


@dataclass
class Result:
    run_dir: Path
    metrics: dict  # the best epoch's evaluation (or the last epoch's without a validation split)
    history: list[dict]
    hub: dict | None = None  # the answer of the end-of-run push, when there was one


def _one_provider(config, run_dir: Path) -> None:
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

    ``reporter`` and ``subscribers`` receive the events of zoo.train.events (``on_<event>`` methods);
    the trainer itself never talks to the Hub (``zoo.finetune(push_to_hub=...)`` subscribes a pusher).
    The build's parts (``model``, ``spec``, ``dataset``, ``classes``, ``device``, ...) read as attributes.
    """

    def __init__(self, config, *, out: Path | None = None, resume: Path | None = None, reporter: Reporter | None = None,
                 subscribers=()):
        check(config)
        self.reporter = reporter or Reporter(quiet=True)
        self.emit = Events(self, [self.reporter, *subscribers]).emit
        if resume is None:  # a resumed run continues as its run_config.yaml says
            config = recipe.resolve(config)
            if config.recipe:
                self.emit("note", text=recipe.describe(config.recipe))
        self.config = config
        self.should_stop = self.interrupted = False
        self.resumed, self.resume_state, self.built = resume is not None, None, None
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

    def __getattr__(self, name: str):
        built = self.__dict__.get("built")
        if built is not None and name in built.__dataclass_fields__:
            return getattr(built, name)
        raise AttributeError(f"'Trainer' object has no attribute '{name}'")

    # -- the run ---------------------------------------------------------------------------
    def fit(self) -> Result:
        lock = rundir.RunLock(self.run_dir) if self.dist.main else contextlib.nullcontext()
        try:
            with lock, _StopOnSignal(self) as self._signals:
                try:
                    return self._fit()
                except BaseException:
                    self._discard_unsaved()
                    raise
        except _StopNow:
            hint = (self._resume_with() if (self.run_dir / rundir.RUN_CONFIG).is_file()
                    else f"nothing was written to {self.run_dir} yet: run the same command again")
            raise Interrupted(f"interrupted; {hint}") from None
        except RuntimeError as exc:
            if self.dist.enabled and distributed.is_peer_failure(exc):
                if self.interrupted:  # told to stop as well: a peer that stopped first (before its training began) is no failure
                    raise self._interrupted() from None
                raise ZooError(f"rank {self.dist.rank}: another process of this run stopped ({str(exc).splitlines()[0][:160]}); "
                               f"{self._resume_with()}") from None
            raise
        finally:
            distributed.shutdown()

    def _resume_with(self) -> str:
        return f"resume with: {command('zoo', 'finetune', '--resume', self.run_dir)}"

    def _interrupted(self) -> Interrupted:
        return Interrupted(f"interrupted; {self._resume_with()}")

    def _fit(self) -> Result:
        cfg = self.config
        resuming = self.resume_state is not None and self.dist.main  # (other machines' file times may differ)
        self.built = build(cfg, self.dist, self.reporter, self._check_resumable if resuming else None)
        self._start()
        self.cache = feature_cache(self.built, cfg, self.dist, self.reporter)
        if self.dist.main:
            rundir.remove_stale_temporaries(self.run_dir)
            self._write_run_config()
            # The checkpoint's history is the truth: lines written after it by a killed run go.
            rundir.write_metrics(self.run_dir, self.history)
        self._signals.training = True  # from now on a signal lets the step finish and writes a checkpoint
        self.emit("train_start", config=cfg)
        try:
            while self.epoch < cfg.epochs and not self._early_stopped():
                self._train_epoch()
                if self.interrupted and self.batch < self.batches_per_epoch:
                    break  # interrupted mid-epoch: checkpoint written, resume continues this epoch
                metrics, improved = self._end_epoch()
                self.emit("epoch_end", epoch=self.epoch, metrics=metrics)
                if improved and self.dist.main:
                    self.emit("best", run_dir=self.run_dir)
                if self.dist.enabled:
                    self.should_stop = distributed.any_true(self.should_stop, self.device)
                if self.interrupted or self.should_stop:
                    break
        finally:
            self.emit("train_stop")
        if self.interrupted and self.epoch < cfg.epochs and not self._early_stopped():
            raise self._interrupted()
        result = self._finish()
        self.emit("train_end", run_dir=self.run_dir, metrics=result.metrics)
        return result

    def _start(self) -> None:
        """The training state: at its beginning, or the checkpoint's."""
        cfg = self.config
        self.epoch, self.batch, self.update = 0, 0, 0
        self.best, self.bad_epochs, self.history = None, 0, []
        self.totals, self.train_stats, self.last_eval = _zero_totals(), {}, {}
        self.aug_rng = torch.Generator().manual_seed(cfg.seed)
        self._train_net, self._eager_net, self._net_key = None, None, None
        self.cache = None  # the frozen-feature cache (zoo.train.build.feature_cache)
        self._running, self._bad_step = None, None  # this epoch's loss, hits and first non-finite batch, on the device
        if self.resume_state is not None:
            self._restore(self.resume_state)
        if self.dist.enabled:  # every process its own dropout and drop-path draws
            torch.manual_seed(cfg.seed * 1_000_003 + 7919 * self.dist.rank + self.update)

    def _check_resumable(self, dataset, classes) -> None:
        state = self.resume_state
        if state.get("classes") != classes:
            raise UsageError("cannot resume: the dataset's classes differ from the checkpoint's; start a new run with another --out")
        if state.get("dataset") != dataset.fingerprint:
            raise UsageError("cannot resume: the data changed since the checkpoint (fingerprint differs); start a new run")

    # -- an epoch ------------------------------------------------------------------------------
    def _train_epoch(self) -> None:
        cfg, b, world = self.config, self.built, self.dist.world
        settings = b.policy.settings(self.epoch, len(b.groups))
        frozen_norms = freeze.apply(b.model, b.groups, settings, b.policy, bool(cfg.freeze_bn))
        for g in b.optimizer.param_groups:
            g["lr_scale"] = settings[g["group"]].lr_scale
        freeze.train_mode(b.model, frozen_norms)
        net = self._net()
        # The order of an epoch depends only on (seed, epoch): a resumed epoch replays it. Every process
        # draws the same global batch (and its augmentation) and trains its own slice of it, so N
        # processes x batch B follow 1 process x batch N*B.
        order = torch.randperm(len(b.train_data.labels), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + self.epoch))
        # Loss and hits add up on the device, in float64 from the checkpoint's totals on, with the first batch whose
        # loss was not finite: no host sync per step.
        self._running = torch.tensor([self.totals["loss"], self.totals["correct"], math.inf], dtype=torch.float64, device=b.device)
        start = time.perf_counter()
        while self.batch < b.batches_per_epoch:
            idx = order[self.batch * b.global_batch:(self.batch + 1) * b.global_batch]
            loss, n = self._train_step(net, idx)
            self.emit("batch", n=n * world, loss=loss)
            if world > 1:
                self.interrupted = distributed.any_true(self.interrupted, self.device)
            at_update = self.batch % cfg.accum_steps == 0 and self.batch < b.batches_per_epoch
            if at_update and (self.interrupted or (cfg.save_every and self.batch % cfg.save_every == 0)):
                self._checkpoint()
                if self.interrupted:
                    return
        self._sync_totals()  # waits for the device: elapsed then covers all of the epoch's work
        elapsed = time.perf_counter() - start
        self._stop_if_diverged()
        t = distributed.all_sum(torch.tensor([self.totals["loss"], self.totals["correct"], self.totals["seen"]], dtype=torch.float64,
                                             device=self._collective_device())).tolist()
        self.train_stats = {"train_loss": t[0] / max(1, t[2]), "train_top1": t[1] / max(1, t[2]),
                            "images_per_s": t[2] / max(elapsed, 1e-9)}
        self.totals, self._running = _zero_totals(), None

    def _train_step(self, net, idx: torch.Tensor) -> tuple[torch.Tensor, int]:
        """One batch: gather, augment and normalize it, forward and backward, an update every --accum-steps batches.
        Returns the batch's loss (on the device) and this process's number of images."""
        cfg, b, world = self.config, self.built, self.dist.world
        y = b.train_data.labels[idx]
        cached = self.cache is not None and "train" in self.cache
        if cached:  # the frozen backbone's output, computed once (single process only)
            x = self.cache["train"][idx]
        else:
            x = data.augment(b.train_data.images[idx], cfg.aug, self.aug_rng)
            if world > 1:
                part = torch.tensor_split(torch.arange(len(idx)), world)[self.dist.rank]
                x, y = x[part], y[part]
            x = b.prepare(x)
        y = y.to(b.device, non_blocking=True)
        if len(idx) < b.global_batch:  # an epoch's short last batch runs eagerly: with --compile, a second graph for its
            net = self._eager_net      # shape would cost more than it saves (30 s of a 2-core CPU for a small ResNet)
        stepping = (self.batch + 1) % cfg.accum_steps == 0 or self.batch + 1 == b.batches_per_epoch
        sync = net.no_sync() if world > 1 and not stepping else contextlib.nullcontext()
        with sync:
            with b.autocast():
                logits = self.cache["split"].head(x) if cached else net(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            # DDP averages gradients over processes; weighting by the slice's share keeps the mean per image exact.
            (loss * (len(y) * world / len(idx)) / cfg.accum_steps).backward()
        self.batch += 1
        if stepping:
            self._update()
        loss = loss.detach()
        self._running[:2] += torch.stack((loss.double() * len(y), (logits.argmax(1) == y).sum().double()))
        self._running[2] = torch.minimum(self._running[2], torch.where(torch.isfinite(loss), math.inf, float(self.batch)))
        self.totals["seen"] += len(y)
        return loss, len(y)

    def _update(self) -> None:
        b = self.built
        lr = b.lr_at(self.update)
        for g in b.optimizer.param_groups:
            g["lr"] = lr * g["lr_scale"]
        if self.config.clip_grad:
            torch.nn.utils.clip_grad_norm_([p for p in b.model.parameters() if p.requires_grad], self.config.clip_grad)
        b.optimizer.step()
        b.optimizer.zero_grad(set_to_none=True)
        if b.ema is not None:
            b.ema.update(b.model, step=self.update)
        self.update += 1

    def _end_epoch(self) -> tuple[dict, bool]:
        """Evaluate; write the epoch's metrics line, the best weights when they improved, the checkpoint."""
        self.epoch, self.batch = self.epoch + 1, 0
        evaluated = self.evaluate() if self.val_data is not None else {}
        self.last_eval = evaluated
        record = {"epoch": self.epoch, **self.train_stats, "lr": self.built.lr_at(max(0, self.update - 1)),
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
                rundir.save_weights(self.run_dir / rundir.BEST, freeze.export_state(self.policy, self.built.eval_model()))
        elif score is not None:  # without an evaluation split there is nothing to stop early on
            self.bad_epochs += 1
        self._save_last()
        return record, improved

    def _collective_device(self):
        return self.device if self.device.type == "cuda" else torch.device("cpu")  # NCCL reduces CUDA tensors only

    def _early_stopped(self) -> bool:
        return bool(self.config.patience) and self.bad_epochs >= self.config.patience

    def _net(self):
        """The module to train: the model, or its DistributedDataParallel wrapper; compiled with ``compile``."""
        trainable = tuple(n for n, p in self.model.named_parameters() if p.requires_grad)
        if trainable != self._net_key:  # DDP fixes its parameters when built: rebuild when a freeze schedule changes them
            net = self.model
            if self.dist.enabled:
                from torch.nn.parallel import DistributedDataParallel

                net = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            self._train_net = torch.compile(net) if self.config.compile else net  # the weights stay self.model's: checkpoints are unchanged
            self._eager_net = net
            self._net_key = trainable
        return self._train_net

    @torch.inference_mode()
    def evaluate(self) -> dict:
        """Loss, top-1, top-5 (with 5+ classes), per-class accuracy and the confusion matrix."""
        b = self.built
        model = b.eval_model()
        model.eval()
        n_classes = len(b.classes)
        confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)
        loss_sum, top5, images, labels = 0.0, 0, b.val_data.images, b.val_data.labels
        if self.dist.enabled:  # each process scores its share; the sums are added up below
            part = torch.tensor_split(torch.arange(len(labels)), self.dist.world)[self.dist.rank]
            images, labels = images[part], labels[part]
        cached = self.cache.get("val") if self.cache else None
        for start in range(0, len(labels), 256):
            y = labels[start:start + 256].to(b.device)
            with b.autocast():
                if cached is not None:
                    logits = self.cache["split"].head(cached[start:start + 256]).float()
                else:
                    logits = model(b.prepare(images[start:start + 256])).float()
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
                  "per_class": {c: round(float(a), 4) for c, a in zip(b.classes, per_class, strict=False)},
                  "confusion": confusion.tolist(), "images": total}
        if n_classes >= 5:
            result["top5"] = top5 / total
        return result

    # -- divergence ------------------------------------------------------------------------------
    def _sync_totals(self) -> None:
        """Bring the device's running loss and hits into ``totals`` (a host sync: only for checkpoints and epoch ends)."""
        if self._running is not None:
            loss, correct, bad = self._running.tolist()
            self.totals["loss"], self.totals["correct"] = loss, int(correct)
            self._bad_step = None if bad == math.inf else int(bad)

    def _stop_if_diverged(self, where: str | None = None) -> None:
        """Raise Diverged when a batch's loss (read by the last ``_sync_totals``) or a weight of the model or its
        EMA is not finite. Called before every checkpoint and export: nothing non-finite is ever written."""
        b = self.built
        models = [b.model] if b.ema is None else [b.model, b.ema.module]
        tensors = [t for m in models for t in m.state_dict().values() if t.is_floating_point()]
        weights_ok = bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True
        diverged = self._bad_step is not None or not weights_ok
        if self.dist.enabled:
            diverged = distributed.any_true(diverged, self.device)
        if not diverged:
            return
        if where is None:
            step = self._bad_step if self._bad_step is not None else self.batch
            where = f"at epoch {self.epoch + 1}, step {step} of {b.batches_per_epoch}"
        what = "the loss" if self._bad_step is not None else "the weights" if weights_ok is False else "another process's loss"
        kept = (f"the last good checkpoint stays in {self.run_dir / rundir.LAST}" if self.dist.main and (self.run_dir / rundir.LAST).is_file()
                else "nothing was saved")
        raise Diverged(f"training diverged {where}: {what} became nan or inf; start again with a lower --lr "
                       f"(this run's is {self.config.lr:g}), or add --clip-grad 1.0 or --warmup-epochs 1; {kept}")

    # -- checkpoints and the run directory -------------------------------------------------
    def _checkpoint(self) -> None:
        """A mid-epoch checkpoint (--save-every, or a signal): only of a run that has not diverged."""
        self._sync_totals()
        self._stop_if_diverged()
        self._save_last()

    def _state(self) -> dict:
        b = self.built
        return {
            "format": 1, "model": b.model.state_dict(), "optimizer": b.optimizer.state_dict(),
            "ema": b.ema.state_dict() if b.ema is not None else None,
            "epoch": self.epoch, "batch": self.batch, "update": self.update, "totals": dict(self.totals),
            "global_batch": b.global_batch, "updates_per_epoch": b.updates_per_epoch, "world": self.dist.world,
            "best": self.best, "bad_epochs": self.bad_epochs, "history": self.history,
            "rng": {"torch": torch.get_rng_state(), "aug": self.aug_rng.get_state(),
                    "numpy": _numpy_state(), "python": list(random.getstate()[1]),
                    "cuda": torch.cuda.get_rng_state_all() if b.device.type == "cuda" else []},
            "classes": b.classes, "dataset": b.dataset.fingerprint,
            "train_stats": self.train_stats, "last_eval": _jsonable(self.last_eval),
        }

    def _save_last(self) -> None:
        if self.dist.main:
            rundir.save_checkpoint(self.run_dir / rundir.LAST, self._state())

    def _restore(self, state: dict) -> None:
        b = self.built
        try:
            b.model.load_state_dict(state["model"])
            b.optimizer.load_state_dict(state["optimizer"])
            if b.ema is not None and state.get("ema"):
                b.ema.load_state_dict(state["ema"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ZooError(f"the checkpoint in {self.run_dir} does not fit this model ({str(exc).splitlines()[0][:120]})") from None
        self.epoch, self.batch, self.update = state["epoch"], state["batch"], state["update"]
        self.totals = dict(state.get("totals") or _zero_totals())
        if state.get("global_batch", b.global_batch) != b.global_batch:
            # Another number of processes: same point of the epoch and of the schedule, in the new batch size.
            self.batch = round(self.batch * state["global_batch"] / b.global_batch)
            self.update = round(self.update * b.updates_per_epoch / state["updates_per_epoch"])
        self.best, self.bad_epochs, self.history = state["best"], state["bad_epochs"], state["history"]
        self.train_stats, self.last_eval = state.get("train_stats", {}), state.get("last_eval", {})
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        self.aug_rng.set_state(rng["aug"])
        np.random.set_state(("MT19937", np.asarray(rng["numpy"][0], dtype=np.uint32), *rng["numpy"][1:]))
        random.setstate((3, tuple(rng["python"]), None))
        if rng.get("cuda") and b.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])

    def _write_run_config(self) -> None:
        rundir.RunDir(self.run_dir).write_run_config(self.config)

    def _discard_unsaved(self) -> None:
        """A new run that stops before its first checkpoint takes back what it wrote, so that the same
        command (the same --out) starts afresh; the lock then removes the folder if it made it."""
        if self.resumed or not self.dist.main or (self.run_dir / rundir.LAST).is_file():
            return
        for name in (rundir.BEST, rundir.METRICS, rundir.RUN_CONFIG):
            with contextlib.suppress(OSError):
                (self.run_dir / name).unlink(missing_ok=True)
        rundir.remove_stale_temporaries(self.run_dir)
        with contextlib.suppress(OSError):
            (self.run_dir / rundir.BEST).parent.rmdir()

    def _finish(self) -> Result:
        from zoo import cards

        if self.best is not None:
            metrics = dict(self.best["metrics"], epoch=self.best["epoch"])
        else:
            metrics = dict(_jsonable(self.last_eval), epoch=self.epoch)
            self._stop_if_diverged(f"after epoch {self.epoch}")  # the current weights are the result: a plugin may have changed them
        metrics.update({k: self.history[-1][k] for k in ("train_loss", "train_top1") if self.history and k in self.history[-1]})
        metrics["eval_split"] = self.eval_split
        if not self.dist.main:
            return Result(self.run_dir, metrics, self.history)
        state = rundir.read_best(self.run_dir) if self.best is not None else freeze.export_state(self.policy, self.built.eval_model())
        rundir.save_weights(self.run_dir / rundir.WEIGHTS, state)
        cards.write_config(self)
        rundir.plot(self.run_dir, self.history, metrics.get("confusion"), self.classes,
                    best_epoch=self.best["epoch"] if self.best is not None else None, split=self.eval_split, top1=metrics.get("top1"))
        cards.write_model_card(self, metrics)
        return Result(self.run_dir, metrics, self.history)


# -- helpers ------------------------------------------------------------------------------
def _zero_totals() -> dict:
    return {"loss": 0.0, "correct": 0, "seen": 0}


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


class _StopOnSignal:
    """Ctrl-C / SIGTERM / SIGHUP: before training, stop at once; in training, finish the step, write a
    checkpoint, stop. A second signal aborts. Signals the user ignores (nohup, ``&``) stay ignored."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.previous, self.training, self.stopping = trainer, {}, False, False

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
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


