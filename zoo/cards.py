"""config.json (timm's format plus a "zoo" section) and the README.md model card of a run."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

from zoo import runs


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("zoo", "torch", "timm", "huggingface-hub", "safetensors"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def plugins_used(trainer) -> list[dict]:
    """The plugins whose head, freeze policy or dataset this run used (name, version, what)."""
    from zoo.plugins import get_plugins

    plugins = get_plugins()
    used: dict[str, dict] = {}
    for kind, name in (("heads", trainer.config.head), ("freeze", trainer.config.freeze), ("datasets", trainer.dataset.meta.get("dataset_name"))):
        entry = plugins.collect(kind).get(name) if name else None
        if entry is None:
            continue
        info = plugins.info[entry.plugin]
        record = used.setdefault(entry.plugin, {"name": info.distribution or entry.plugin, "entry_point": entry.plugin,
                                                "version": info.version, "builtin": info.builtin, "provides": []})
        record["provides"].append(name)
    return list(used.values())


def write_config(trainer) -> None:
    from timm.models._hub import save_config_for_hf

    from zoo.backbones import WithHead, timm_model

    cfg, model = trainer.config, trainer.model
    zoo_section = {
        "head": {"name": cfg.head, "options": cfg.head_opts},
        "freeze": {"name": cfg.freeze, "options": cfg.freeze_opts},
        "backbone": {"name": cfg.backbone, "source": trainer.spec.source, "revision": trainer.spec.revision,
                     "pretrained": cfg.pretrained},
        "dataset": {"spec": cfg.data, "name": trainer.dataset.name, "fingerprint": trainer.dataset.fingerprint,
                    "eval_split": trainer.eval_split},
        "classes": trainer.classes,
        "seed": cfg.seed,
        "plugins": plugins_used(trainer),
        "versions": versions(),
    }
    inner = timm_model(model)
    path = trainer.run_dir / "config.json"
    with runs.atomic_path(path) as tmp:
        save_config_for_hf(inner, str(tmp), model_config={"label_names": trainer.classes} if not isinstance(model, WithHead) else {},
                           data_config=dict(trainer.data_cfg))
        written = json.loads(tmp.read_text())
        written["num_classes"] = len(trainer.classes)
        written["label_names"] = trainer.classes
        written["pretrained_cfg"]["num_classes"] = len(trainer.classes)
        written["zoo"] = zoo_section
        tmp.write_text(json.dumps(written, indent=2))


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_model_card(trainer, metrics: dict, plots: list[str], *, repo_id: str | None = None) -> None:
    """README.md built with huggingface_hub's ModelCard, so the Hub reads its metadata."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    cfg = trainer.config
    spec = trainer.spec
    license_ = spec.meta.get("license") or "unknown"
    eval_results = []
    if "top1" in metrics:
        for key, name in (("top1", "top-1 accuracy"), ("top5", "top-5 accuracy")):
            if key in metrics:
                eval_results.append(EvalResult(task_type="image-classification", dataset_type=trainer.dataset.name,
                                               dataset_name=trainer.dataset.name, dataset_split=trainer.eval_split,
                                               metric_type="accuracy", metric_name=name, metric_value=round(metrics[key], 4)))
    base_model = spec.target if spec.kind == "hf-hub" else None
    card_data = ModelCardData(
        library_name="timm", pipeline_tag="image-classification", license=license_ if license_ != "unknown" else None,
        tags=["zoo", "image-classification", "timm", f"freeze-{cfg.freeze}", f"head-{cfg.head}"],
        base_model=base_model, datasets=[trainer.dataset.name] if trainer.dataset.name else None,
        model_name=repo_id or trainer.run_dir.name, eval_results=eval_results or None,
    )
    rows = "\n".join(f"| {k} | {_fmt(metrics[k])} |" for k in ("top1", "top5", "loss", "epoch", "eval_split") if k in metrics)
    hparams = "\n".join(f"| {k} | {v} |" for k, v in (
        ("epochs", cfg.epochs), ("batch size", cfg.batch_size), ("learning rate", cfg.lr), ("momentum", cfg.momentum),
        ("weight decay", cfg.weight_decay), ("warm-up epochs", cfg.warmup_epochs), ("label smoothing", cfg.label_smoothing),
        ("augmentation", cfg.aug), ("image size", trainer.data_cfg["input_size"][-1]), ("seed", cfg.seed),
        ("pretrained", cfg.pretrained), ("shots per class", cfg.shots or "all")))
    per_class = "\n".join(f"| {c} | {a:.4f} |" for c, a in (metrics.get("per_class") or {}).items())
    plugins = "\n".join(f"- {p['name']} {p['version'] or ''} ({', '.join(p['provides'])})" for p in plugins_used(trainer) if not p["builtin"]) or "- none beyond zoo's built-ins"
    vers = "\n".join(f"- {k} {v}" for k, v in versions().items() if v)
    ref = f"hf-hub:{repo_id}" if repo_id else str(trainer.run_dir)
    timm_ref = f"hf-hub:{repo_id}" if repo_id else f"local-dir:{trainer.run_dir}"
    timm_usage = (f'```python\nimport timm\nmodel = timm.create_model("{timm_ref}", pretrained=True).eval()\n```'
                  if cfg.head == "linear" else f"This model uses the zoo head `{cfg.head}`: load it with zoo.")
    images = "\n".join(f"![{p}]({p})" for p in plots)
    body = f"""
# {repo_id or trainer.run_dir.name}

`{cfg.backbone}` ({spec.source}) fine-tuned with [zoo](https://github.com/) on **{trainer.dataset.name}**
({len(trainer.classes)} classes: {", ".join(trainer.classes[:20])}{" ..." if len(trainer.classes) > 20 else ""}).

## Results ({trainer.eval_split})

| metric | value |
|---|---|
{rows}

{"| class | accuracy |" + chr(10) + "|---|---|" + chr(10) + per_class if per_class else ""}

## Training

Freeze policy `{cfg.freeze}` {cfg.freeze_opts or ""}, head `{cfg.head}` {cfg.head_opts or ""}.

| hyperparameter | value |
|---|---|
{hparams}

Plugins used:
{plugins}

Framework versions:
{vers}

## Usage

{timm_usage}

```python
import zoo
model, transform, classes = zoo.load("{ref}")
```

```bash
zoo predict {ref} image.jpg
```

{images}
"""
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")
    runs.atomic_write_text(trainer.run_dir / "README.md", str(card))
