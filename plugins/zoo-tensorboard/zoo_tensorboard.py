"""zoo-tensorboard: every epoch's metrics (the metrics.jsonl line) as TensorBoard scalars.

Event files go to ``RUN_DIR/tensorboard/``, or to ``$ZOO_TENSORBOARD_DIR/RUN_NAME/`` when that
variable is set (one folder for many runs, so that TensorBoard compares them). Tags:
``train_loss`` -> ``train/loss``, ``val_top1`` -> ``val/top1`` (every ``train_*``/``val_*`` key
likewise), ``lr`` and ``images_per_s`` as they are; the step is the epoch (from 1). At the end
of training, the best epoch's evaluation is logged as ``best/top1``, ``best/top5``, ``best/loss``.
Under torchrun only the main process writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import weakref
from pathlib import Path

from zoo.api import hookimpl

ENV_DIR = "ZOO_TENSORBOARD_DIR"
_writers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # trainer -> its SummaryWriter


def log_dir(run_dir: Path) -> Path:
    """Where a run's event files go."""
    root = os.environ.get(ENV_DIR)
    return Path(root).expanduser() / Path(run_dir).resolve().name if root else Path(run_dir) / "tensorboard"


def tag(key: str) -> str:
    """The TensorBoard tag of a metrics.jsonl key: train_* and val_* become sections."""
    return key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key


@hookimpl
def zoo_on_train_start(trainer, config):
    if not trainer.dist.main:  # under torchrun every process fires the events; one writes
        return
    from torch.utils.tensorboard import SummaryWriter

    # On --resume, events a killed run wrote after its last checkpoint are dropped (TensorBoard purges
    # steps >= purge_step), so the replayed epochs are not shown twice.
    writer = SummaryWriter(str(log_dir(trainer.run_dir)), purge_step=trainer.epoch + 1 if trainer.epoch else None)
    if not trainer.epoch:
        settings = json.dumps(dataclasses.asdict(config), indent=2, default=str)
        writer.add_text("run_config", "```\n" + settings + "\n```", 0)
    _writers[trainer] = writer


@hookimpl
def zoo_on_epoch_end(trainer, epoch, metrics):
    writer = _writers.get(trainer)
    if writer is None:
        return
    for key, value in metrics.items():
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(tag(key), value, epoch)
    writer.flush()  # an interrupted run keeps every epoch it finished


@hookimpl
def zoo_on_train_end(trainer, run_dir, metrics):
    writer = _writers.pop(trainer, None)
    if writer is None:
        return
    for key in ("top1", "top5", "loss"):
        if isinstance(metrics.get(key), (int, float)) and metrics.get("epoch"):
            writer.add_scalar(f"best/{key}", metrics[key], metrics["epoch"])
    writer.close()
