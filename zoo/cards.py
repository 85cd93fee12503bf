"""config.json (timm's format plus a "zoo" section) and the README.md model card of a run.

The card is rendered from what the run directory holds (config.json, run_config.yaml), so that
``zoo push`` can regenerate it for a Hub repo, byte for byte the same on every push of an unchanged
run. Each generated card ends with a marker holding the sha256 of the text above it; a card whose
marker is missing or does not match was edited by hand, and zoo does not overwrite it on the Hub.
"""

from __future__ import annotations

import hashlib
import platform
import re
from importlib import metadata
from pathlib import Path

from zoo.model_config import PRETRAINED_CFG_DATA
from zoo.rundir import RunDir

MARKER = "<!-- zoo-card sha256:{} -->"
_MARKER = re.compile(r"\n<!-- zoo-card sha256:([0-9a-f]{64}) -->\n?\Z")
TEMPLATE = Path(__file__).with_name("model_card.md")  # a Jinja template (huggingface_hub's ModelCard.from_template)
CARD_METRICS = ("top1", "top5", "loss", "epoch", "eval_split", "images", "train_loss", "train_top1", "per_class")


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("zoo", "torch", "timm", "huggingface-hub", "safetensors"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def plugins_used(trainer) -> list[dict]:
    """The plugins whose backbone, head, freeze policy or dataset this run used (name, version, what)."""
    from zoo.plugins import get_plugins

    plugins = get_plugins()
    used: dict[str, dict] = {}
    for kind, name in (("backbones", trainer.config.backbone), ("heads", trainer.config.head), ("freeze", trainer.config.freeze),
                       ("datasets", trainer.dataset.meta.get("dataset_name"))):
        entry = plugins.collect(kind).get(name) if name else None
        if entry is None:
            continue
        info = plugins.info[entry.plugin]
        record = used.setdefault(entry.plugin, {"name": info.distribution or entry.plugin, "entry_point": entry.plugin,
                                                "version": info.version, "builtin": info.builtin, "provides": [],
                                                "needed_to_load": False})
        record["provides"].append(name)
        # Only a head is part of the saved model; a freeze policy or dataset is how it was trained.
        record["needed_to_load"] |= kind == "heads"
    return list(used.values())


def path_free(spec):
    """A backbone, data spec or dataset name as config.json and the card show it (both are uploaded): a local
    path in it (``./photos``, ``local-dir:/home/me/run``, ``imagefolder:/data/x``) becomes its last part.
    run_config.yaml keeps the spec as given: resume reads it there."""
    if not isinstance(spec, str):
        return spec
    head, sep, rest = spec.partition(":")
    if sep and (head == "local-dir" or rest.startswith(("/", "~", "./", "../"))):
        return f"{head}:{_last_part(rest)}"
    try:
        local = spec.startswith(("/", "~", "./", "../")) or Path(spec).exists()
    except OSError:  # e.g. a name too long for the file system: not a path
        local = False
    return _last_part(spec) if local else spec


def _last_part(path: str) -> str:
    p = Path(path).expanduser()
    return p.name or p.resolve().name


def config_dict(trainer, metrics: dict | None = None) -> dict:
    """What config.json holds: timm's keys plus the "zoo" section (and the card's metrics, when given)."""
    cfg = trainer.config
    zoo_section = {
        "head": {"name": cfg.head, "options": cfg.head_opts},
        "freeze": {"name": cfg.freeze, "options": cfg.freeze_opts},
        "recipe": cfg.recipe,
        "backbone": {"name": path_free(cfg.backbone), "source": path_free(trainer.spec.source), "revision": trainer.spec.revision,
                     "pretrained": cfg.pretrained, "license": trainer.spec.meta.get("license")},
        "dataset": {"spec": path_free(cfg.data), "name": path_free(trainer.dataset.name), "fingerprint": trainer.dataset.fingerprint,
                    "eval_split": trainer.eval_split},
        "classes": trainer.classes,
        "seed": cfg.seed,
        "plugins": plugins_used(trainer),
        "versions": versions(),
    }
    if metrics is not None:
        zoo_section["metrics"] = card_metrics(metrics)
    return {**timm_config(trainer.model, trainer.classes, trainer.data_cfg), "zoo": zoo_section}


# Of a source model's pretrained config: what no longer holds once it is fine-tuned at zoo's input size.
NOT_INHERITED = ("architecture", "label_names", "label_descriptions", "label_offset", "test_input_size", "test_crop_pct",
                 "test_pool_size", "pool_size")


def timm_config(model, classes: list[str], data_cfg: dict) -> dict:
    """The keys timm reads from a model folder's config.json (``timm.create_model("hf-hub:...")`` and
    ``local-dir:`` load it): architecture, class count and names, the arguments the model was built
    with, and its pretrained config (the source's data settings, replaced by the ones zoo trained at)."""
    from zoo.backbones import timm_model

    net = timm_model(model)
    source = net.pretrained_cfg
    pool = getattr(net, "global_pool", None)
    pool = pool if isinstance(pool, str) else getattr(pool, "pool_type", None)  # a pooling layer names its type
    pretrained = {k: v for k, v in source.items() if k in PRETRAINED_CFG_DATA and k not in NOT_INHERITED and v is not None}
    pretrained.update({k: list(v) if isinstance(v, tuple) else v for k, v in data_cfg.items()}, num_classes=len(classes))
    config = {"architecture": source["architecture"], "num_classes": len(classes), "num_features": int(net.num_features)}
    if isinstance(pool, str) and pool:
        config["global_pool"] = pool
    config["label_names"] = list(classes)
    config["model_args"] = {k: v for k, v in getattr(net, "zoo_model_args", {}).items() if k != "num_classes"}
    config["pretrained_cfg"] = pretrained
    return config


def write_config(trainer) -> None:
    RunDir(trainer.run_dir).write_config(config_dict(trainer))


def card_metrics(metrics: dict) -> dict:
    """The evaluation a card reports (no confusion matrix: it can be large; confusion.png shows it)."""
    return {k: metrics[k] for k in CARD_METRICS if metrics.get(k) is not None}


def metrics_from_history(history: list[dict], metric: str = "top1") -> dict:
    """The best epoch's evaluation from metrics.jsonl, for runs whose config.json has no "metrics"."""
    evaluated = [r for r in history if r.get("val_top1") is not None]
    out: dict = {}
    if evaluated:
        best = max(evaluated, key=lambda r: r["val_top1"] if metric == "top1" else -r["val_loss"])  # first of equals
        out = {k: best[f"val_{k}"] for k in ("top1", "top5", "loss") if best.get(f"val_{k}") is not None}
        out["epoch"] = best["epoch"]
    elif history:
        out["epoch"] = history[-1]["epoch"]
    if history:
        out.update({k: history[-1][k] for k in ("train_loss", "train_top1") if k in history[-1]})
    return out


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _opts(options) -> str:
    return f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else ""


def render(config: dict, run_config: dict, *, metrics: dict, plots: list[str], title: str, ref: str, timm_ref: str) -> str:
    """The model card, built with huggingface_hub's ModelCard so the Hub reads its metadata; ends with the marker.

    Depends only on its arguments (no clock, no installed versions): the same run renders the same bytes.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    z = config.get("zoo") or {}
    backbone, dataset = z.get("backbone") or {}, z.get("dataset") or {}
    head, freeze = z.get("head") or {"name": "linear"}, z.get("freeze") or {"name": "none"}
    classes = list(z.get("classes") or config.get("label_names") or [])
    source = backbone.get("source") or f"timm:{config.get('architecture')}"
    dataset_name = dataset.get("name") or path_free(run_config.get("data")) or "unknown"
    split = metrics.get("eval_split") or dataset.get("eval_split") or "validation"
    license_ = backbone.get("license") or (config.get("pretrained_cfg") or {}).get("license")
    eval_results = []
    for key, name in (("top1", "top-1 accuracy"), ("top5", "top-5 accuracy")):
        if key in metrics:
            eval_results.append(EvalResult(task_type="image-classification", dataset_type=dataset_name,
                                           dataset_name=dataset_name, dataset_split=split,
                                           metric_type="accuracy", metric_name=name, metric_value=round(metrics[key], 4)))
    base_model = source.removeprefix("hf-hub:").partition("@")[0] if source.startswith("hf-hub:") else None
    card_data = ModelCardData(
        library_name="timm", pipeline_tag="image-classification", license=license_ if license_ not in (None, "unknown") else None,
        tags=["zoo", "image-classification", "timm", f"freeze-{freeze['name']}", f"head-{head['name']}"],
        base_model=base_model, datasets=[dataset_name] if dataset.get("name") else None,
        model_name=title, eval_results=eval_results or None,
    )
    rows = "\n".join(f"| {k} | {_fmt(metrics[k])} |" for k in ("top1", "top5", "loss", "epoch") if k in metrics)
    size = (config.get("pretrained_cfg") or {}).get("input_size", [None])[-1]
    rc = run_config
    hparams = "\n".join(f"| {k} | {v} |" for k, v in (
        ("epochs", rc.get("epochs")), ("batch size", rc.get("batch_size")), ("learning rate", rc.get("lr")),
        ("momentum", rc.get("momentum")), ("weight decay", rc.get("weight_decay")), ("warm-up epochs", rc.get("warmup_epochs")),
        ("label smoothing", rc.get("label_smoothing")), ("augmentation", rc.get("aug")), ("image size", size),
        ("seed", rc.get("seed", z.get("seed"))), ("pretrained", rc.get("pretrained", backbone.get("pretrained"))),
        ("shots per class", rc.get("shots") or "all")) if v is not None)
    per_class = "\n".join(f"| {c} | {a:.4f} |" for c, a in (metrics.get("per_class") or {}).items())
    per_class_table = f"| class | accuracy |\n|---|---|\n{per_class}\n\n" if per_class else ""
    plugins = "\n".join(f"- {p.get('name')} {p.get('version') or ''} ({', '.join(map(str, p.get('provides') or []))})"
                        for p in z.get("plugins") or [] if isinstance(p, dict) and not p.get("builtin")) or "- none beyond zoo's built-ins"
    vers = "\n".join(f"- {k} {v}" for k, v in (z.get("versions") or {}).items() if v)
    timm_usage = (f'```python\nimport timm\nmodel = timm.create_model("{timm_ref}", pretrained=True).eval()\n```'
                  if head["name"] == "linear" else
                  f"This model uses the zoo head `{head['name']}`, which plain timm does not have: load it with zoo.")
    images = "\n".join(f"![{p}]({p})" for p in plots)
    card = ModelCard.from_template(
        card_data, template_path=str(TEMPLATE), title=title, architecture=backbone.get("name") or config.get("architecture"),
        source=source, dataset_name=dataset_name, num_classes=len(classes),
        class_list=", ".join(classes[:20]) + (" ..." if len(classes) > 20 else ""), split=split, results=rows,
        per_class_table=per_class_table, freeze=freeze["name"], freeze_options=_opts(freeze.get("options")), head=head["name"],
        head_options=_opts(head.get("options")), hyperparameters=hparams, plugins=plugins, framework_versions=vers,
        timm_usage=timm_usage, ref=ref, images=images)
    from zoo.redact import redact

    # Redacted (a data path or a label could hold a token) before the marker, so the card still counts as generated.
    text = redact(str(card)).rstrip("\n") + "\n"
    return text + "\n" + MARKER.format(hashlib.sha256(text.encode("utf-8")).hexdigest()) + "\n"


def is_generated(text: str) -> bool:
    """True for a card zoo wrote and nobody edited since (its marker matches the text above it)."""
    m = _MARKER.search(text)
    return bool(m) and hashlib.sha256(text[:m.start()].encode("utf-8")).hexdigest() == m.group(1)


def write_model_card(trainer, metrics: dict) -> None:
    """Record the card's metrics in config.json, then write README.md from the run directory."""
    run = RunDir(trainer.run_dir)
    config = run.read_config()
    config.setdefault("zoo", {})["metrics"] = card_metrics(metrics)
    run.write_config(config)
    run.write_card(card_for_run(run.path))


def card_for_run(run_dir: Path, *, repo_id: str | None = None, config: dict | None = None, metrics: dict | None = None,
                 plots: list[str] | None = None) -> str:
    """The card of a run directory: for the Hub repo ``repo_id`` (usage says hf-hub:...), or for the folder itself."""
    run = RunDir(run_dir)
    run_dir = run.path
    if config is None:
        config = run.read_config()
    run_config = run.read_run_config_or_none()
    if metrics is None:
        metrics = (config.get("zoo") or {}).get("metrics") or metrics_from_history(run.read_metrics(), run_config.get("metric", "top1"))
    if repo_id:
        title, ref, timm_ref = repo_id, f"hf-hub:{repo_id}", f"hf-hub:{repo_id}"
    else:
        # Relative to the folder that holds the run: an absolute path would tell the world the user's folders.
        title, ref, timm_ref = run_dir.name, f"./{run_dir.name}", f"local-dir:./{run_dir.name}"
    return render(config, run_config, metrics=metrics, plots=run.plots() if plots is None else plots,
                  title=title, ref=ref, timm_ref=timm_ref)
