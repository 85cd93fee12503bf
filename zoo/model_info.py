"""``zoo info``: what a backbone is, from timm's pretrained configs and the registry, no weights;
for a model zoo trained (a run directory, a Hub repo), also what it was trained for and what it needs."""

from __future__ import annotations

from pathlib import Path

from zoo.errors import ZooError


def backbone_info(name: str) -> dict:
    import timm
    import torch
    from timm.models import get_pretrained_cfg

    from zoo.model_config import labels_of
    from zoo.registry import ready_offline, resolve
    from zoo.rundir import RunDir

    spec = resolve(name)
    model_args: dict = {}
    trained: dict = {}
    if spec.kind == "timm":
        pcfg = get_pretrained_cfg(spec.target)
        pcfg = pcfg.to_dict() if pcfg is not None else {}
        arch = spec.target.partition(".")[0]
    else:
        if spec.kind == "hf-hub":
            from zoo import hub

            folder = hub.download_file(spec.target + (f"@{spec.revision}" if spec.revision else ""), RunDir.CONFIG,
                                       alternatives=ready_offline).parent
        elif spec.kind == "package":
            from zoo.backbones import model_folder

            folder = model_folder(spec)
        else:
            folder = Path(spec.target)
        cfg = RunDir(folder).read_config()
        arch, model_args, pcfg = RunDir(folder).timm_config(cfg)  # checked: nothing in it makes timm open a file
        pcfg.setdefault("num_classes", cfg.get("num_classes"))
        pcfg["label_names"] = labels_of(cfg)
        trained = trained_info(cfg, folder if spec.kind == "local-dir" else None)
    try:
        with torch.device("meta"):  # shapes only: no memory, no download
            model = timm.create_model(arch, pretrained=False, num_classes=pcfg.get("num_classes") or 1000, **model_args)
    except Exception as exc:
        raise ZooError(f"timm cannot build '{arch}' for {spec.source}: {exc}") from None
    params = sum(p.numel() for p in model.parameters())
    meta = spec.meta
    return {
        "name": spec.name,
        "source": spec.source,
        "architecture": arch,
        "description": meta.get("description", ""),
        "family": meta.get("family"),
        "params_m": round(params / 1e6, 2),
        "num_features": int(model.num_features),
        "num_classes": pcfg.get("num_classes"),
        "label_names": list(pcfg.get("label_names") or ()),
        "input_size": list(pcfg.get("input_size") or ()),
        "mean": list(pcfg.get("mean") or ()),
        "std": list(pcfg.get("std") or ()),
        "interpolation": pcfg.get("interpolation"),
        "crop_pct": pcfg.get("crop_pct"),
        "license": meta.get("license") or pcfg.get("license"),
        "pretrain": meta.get("pretrain"),
        "top1": meta.get("top1"),
        "tags": meta.get("tags", []),
        "hf_hub_id": pcfg.get("hf_hub_id"),
        **trained,
    }


def trained_info(cfg: dict, run_dir: Path | None) -> dict:
    """What the "zoo" section of a model's config.json records: classes, head, freeze policy, data, metrics, plugins.

    The section is data anyone can write: parts of the wrong shape are left out. A run directory
    whose config.json has no metrics yet gives its best epoch from metrics.jsonl.
    """
    from zoo import cards, plugin_packages
    from zoo.rundir import RunDir

    z = cfg.get("zoo")
    if not isinstance(z, dict):
        return {}

    def part(key) -> dict:
        value = z.get(key)
        return value if isinstance(value, dict) else {}

    metrics = part("metrics")
    if not metrics and run_dir is not None:
        try:
            metrics = cards.metrics_from_history(RunDir(run_dir).read_metrics())
        except (ValueError, TypeError, KeyError):
            metrics = {}  # a damaged metrics.jsonl: info still answers
    plugins = []
    for record in z.get("plugins") if isinstance(z.get("plugins"), list) else []:
        if isinstance(record, dict) and isinstance(record.get("name"), str) and record["name"] and not record.get("builtin"):
            have = plugin_packages.installed(record)
            plugins.append({"name": record["name"], "version": record.get("version"),
                            "provides": plugin_packages.provides(record), "needed_to_load": plugin_packages.needed(record),
                            "installed": have,
                            "install": plugin_packages.install_hint(record) if have is None and plugin_packages.needed(record) else None})
    backbone, dataset = part("backbone"), part("dataset")
    classes = z.get("classes")
    return {
        "classes": [str(c) for c in classes] if isinstance(classes, list) else [],
        "head": part("head"),
        "freeze": part("freeze"),
        "trained_from": backbone.get("source"),
        "data": dataset.get("name") or dataset.get("spec"),
        "metrics": metrics,
        "plugins": plugins,
    }
