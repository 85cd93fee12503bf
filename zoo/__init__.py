"""zoo: a plugin-based model zoo for transfer learning.

    import zoo
    result = zoo.finetune("resnet18", data="./photos", freeze="head-only", epochs=5)
    model, transform, classes = zoo.load(result.run_dir)

Importing zoo is cheap: torch and timm load only when a function needs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import NotFoundError, UsageError, ZooError
from zoo.hookspecs import hookimpl

if TYPE_CHECKING:
    from zoo.registry import BackboneSpec
    from zoo.trainer import Result

__version__ = "0.1.0"
__all__ = [
    "NotFoundError",
    "UsageError",
    "ZooError",
    "__version__",
    "evaluate",
    "finetune",
    "hookimpl",
    "info",
    "list_backbones",
    "load",
    "predict",
    "push",
    "resolve",
]


def resolve(name: str) -> BackboneSpec:
    """Resolve a backbone name (registry name, timm name, ``hf-hub:``/``local-dir:`` source)."""
    from zoo.registry import resolve as _resolve

    return _resolve(name)


def list_backbones(pattern: str | None = None, *, all: bool = False) -> list[dict]:
    """Registry entries (and, with ``all``, every pretrained timm model) matching a wildcard."""
    from zoo.registry import get_registry, timm_rows

    rows = get_registry().rows(pattern)
    if all:
        known = {r["source"] for r in rows}
        rows += [r for r in timm_rows(pattern) if r["source"] not in known]
    return rows


def info(name: str) -> dict:
    """Source, parameters, input size, normalization, feature dimension, license; no weights downloaded."""
    from zoo.model_info import backbone_info

    return backbone_info(name)


def finetune(backbone: str | None = None, *, data: str | None = None, out: str | Path | None = None,
             resume: str | Path | None = None, reporter: Any = None, push_to_hub: str | None = None, hub_strategy: str = "end",
             private: bool = False, **options: Any) -> Result:
    """Fine-tune ``backbone`` on ``data``; returns the result (metrics, run directory, history).

    ``options`` are FinetuneConfig fields (zoo.config): head, freeze, epochs, batch_size, lr, seed, ...
    A bad value is a UsageError, before any data is read.

    ``resume=RUN_DIR`` continues that run as its run_config.yaml says, without ``backbone`` and
    ``data``; only ``epochs``, ``device`` and ``patience`` may be given again (see the settings'
    ``resume``).

    ``push_to_hub="ORG/NAME"`` publishes the run to that Hub repo when training ends (the repo is
    created first, so a login problem shows before training); with ``hub_strategy="best"`` also
    each new best checkpoint as it is written (a failed push of one is a warning, not an error).
    The end push's answer (see :func:`push`) is ``result.hub``.
    """
    from zoo import config as settings
    from zoo import distributed
    from zoo.rundir import RUN_CONFIG

    settings.check("hub_strategy", hub_strategy)
    settings.check("private", private)
    given = {k: v for k, v in (("backbone", backbone), ("data", data)) if v}  # "": not given (calls before resume= alone)
    if resume is None and out is not None and distributed.restart_count() and (Path(out) / RUN_CONFIG).is_file():
        resume, options, given = out, {}, {}  # torchrun restarted this worker (--max-restarts): continue from the checkpoint
    if resume is not None:
        from zoo.rundir import RunDir

        config = RunDir(resume).resumed_config({**given, **options})
    else:
        config = settings.FinetuneConfig.from_dict({**given, **options})
    from zoo.trainer import Trainer  # torch: only once the settings are known to be good

    publisher = None
    if push_to_hub:
        from zoo import hub

        publisher = _Publisher(hub.parse_repo_id(push_to_hub), private=private, each_best=hub_strategy == "best")
    trainer = Trainer(config, out=Path(out) if out else None, resume=Path(resume) if resume else None, reporter=reporter,
                      subscribers=[publisher] if publisher is not None else [])
    if publisher is not None and trainer.dist.main:  # one process publishes
        hub.ensure_repo(publisher.repo_id, private=private)  # a login or naming problem shows now, not after training
    result = trainer.fit()
    if publisher is not None:
        result.hub = publisher.answer
    return result


class _Publisher:
    """Subscribes to a fine-tune's events (zoo.train.events): pushes the finished run, and with
    ``each_best`` every new best checkpoint as it is written (a failed push of one is a warning)."""

    def __init__(self, repo_id: str, *, private: bool, each_best: bool):
        self.repo_id, self.private, self.each_best, self.answer = repo_id, private, each_best, None

    def on_best(self, trainer, run_dir: Path) -> None:
        if not self.each_best:
            return
        from zoo import publish
        from zoo.plugins import warn

        try:
            publish.push_best(trainer, self.repo_id, private=self.private)
        except ZooError as exc:
            warn(f"{exc} (training goes on; the end of the run pushes again)")

    def on_train_end(self, trainer, run_dir: Path, metrics: dict) -> None:
        if trainer.dist.main:
            self.answer = push(run_dir, self.repo_id, private=self.private)


def load(model: str | Path) -> tuple[Any, Any, list[str]]:
    """A saved model (run directory, ``local-dir:PATH`` or ``hf-hub:ORG/NAME``) as (model, transform, class names).

    ``transform`` turns a PIL image into a normalized float tensor (3, H, W).
    """
    from zoo.backbones import load as _load
    from zoo.inference import Transform

    loaded = _load(model)
    return loaded.model, Transform(loaded), loaded.classes


def predict(model: str | Path, images: list[str | Path], *, top_k: int = 5) -> list[dict]:
    """Top-k class predictions for image files."""
    from zoo.inference import predict as _predict

    return _predict(model, images, top_k=top_k)


def evaluate(model: str | Path, *, data: str, batch_size: int = 64) -> dict:
    """Accuracy, per-class accuracy and confusion matrix of a saved model on a dataset."""
    from zoo.inference import evaluate as _evaluate

    return _evaluate(model, data=data, batch_size=batch_size)


def push(run_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
         commit_message: str | None = None, with_checkpoints: bool = False, overwrite_card: bool = False,
         dry_run: str | Path | None = None) -> dict:
    """Publish a run directory to the Hugging Face Hub repo ``repo_id`` (``ORG/NAME``) as one commit.

    Uploads model.safetensors, config.json, a model card for the repo, run_config.yaml, metrics.jsonl
    and the plots (and checkpoints/ with ``with_checkpoints``). Unchanged files are skipped: pushing an
    unchanged run makes no commit. A card edited by hand on the Hub is kept unless ``overwrite_card``.
    ``dry_run=DIR`` writes the folder that would be uploaded to DIR and uploads nothing.

    Returns a dict: ``repo_url``, ``commit`` (None when nothing changed), ``files``, ``notes``, ...
    """
    from zoo.publish import push as _push

    return _push(run_dir, repo_id, private=private, revision=revision, commit_message=commit_message,
                 with_checkpoints=with_checkpoints, overwrite_card=overwrite_card, dry_run=dry_run)
