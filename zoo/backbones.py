"""Building models: a timm backbone from a spec plus a head, and loading saved models."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from zoo.errors import UsageError, ZooError
from zoo.registry import BackboneSpec


class WithHead(nn.Module):
    """A timm backbone with its classifier removed (``num_classes=0``) and a plugin head."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        return self.head(self.backbone(x))

    @property
    def num_classes(self) -> int:
        return getattr(self.head, "out_features", None) or list(self.head.modules())[-1].out_features


def feature_dim(model: nn.Module) -> int:
    """Width of what a timm model returns after ``reset_classifier(0)``: its pooled features.

    Not always ``num_features``: models with a head convolution (MobileNetV3) return ``head_hidden_size``.
    """
    return getattr(model, "head_hidden_size", None) or model.num_features


def timm_model(model: nn.Module) -> nn.Module:
    """The timm model inside (the backbone of a WithHead)."""
    return model.backbone if isinstance(model, WithHead) else model


def memory_format(model: nn.Module, channels_last: bool | None = None) -> torch.memory_format:
    """channels_last for convolutional nets (unless told otherwise), else contiguous."""
    if channels_last is None:
        channels_last = any(isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1) for m in model.modules())
    return torch.channels_last if channels_last else torch.contiguous_format


def classifier_param_names(model: nn.Module) -> set[str]:
    head = model.get_classifier()
    ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    return {n for n, p in model.named_parameters() if id(p) in ids}


def create(spec: BackboneSpec, *, num_classes: int, head: str = "linear", head_opts: dict | None = None,
           pretrained: bool = True, seed: int = 0, model_args: dict | None = None,
           classes: list[str] | None = None) -> nn.Module:
    """A backbone with a ``num_classes`` head; weights from the spec's source when ``pretrained``.

    A saved model's classifier is kept only when ``classes`` are the ones it was trained on.
    """
    import timm

    from zoo.plugins import build, lookup

    lookup("heads", head)  # an unknown head fails before anything is built
    torch.manual_seed(seed)  # head initialisation (and the whole model without pretrained weights) is seeded
    provided = model_folder(spec) if spec.kind == "package" else None  # it names the architecture, too
    folder = (provided or _zoo_folder(spec)) if pretrained else None
    if folder is not None and _zoo_head(folder) not in (None, "linear"):
        if spec.kind == "hf-hub":
            from zoo import hub

            folder = hub.download_model(spec.source.removeprefix("hf-hub:"))
        model = timm_model(load_folder(folder).model)  # a zoo run with a plugin head: keep its backbone
    else:
        try:
            name = f"local-dir:{provided}" if provided else spec.timm_name
            model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **(model_args or {}))
        except Exception as exc:  # noqa: BLE001 - timm raises many kinds; all mean "could not build"
            raise _build_error(spec, pretrained, exc) from None
        if folder is not None and classes is not None and _label_names(folder) != list(classes):
            model.reset_classifier(num_classes)  # same count, other classes: a new head, not the old one
    return build("heads", head, model, num_classes, **(head_opts or {}))


def model_folder(spec: BackboneSpec) -> Path:
    """The model folder (config.json + model.safetensors) that a plugin makes for a ``package:`` backbone."""
    try:
        folder = Path(spec.folder())
    except ZooError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's bug is reported in one line
        raise ZooError(f"backbone '{spec.name}' (plugin '{spec.origin}') could not provide its weights: "
                       f"{type(exc).__name__}: {exc}") from None
    if not (folder / "config.json").is_file():
        raise ZooError(f"backbone '{spec.name}' (plugin '{spec.origin}') gave {folder}, which is not a model folder (no config.json)")
    return folder


def _build_error(spec: BackboneSpec, pretrained: bool, exc: Exception) -> ZooError:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if spec.kind == "local-dir":
        if not Path(spec.target).is_dir():
            named = f"backbone '{spec.name}' (from {spec.origin}) points to" if spec.origin else "the folder"
            return ZooError(f"{named} {spec.target}, which does not exist")
        return ZooError(f"cannot load {spec.target}: {text}")
    if pretrained and any(w in text.lower() for w in ("connect", "offline", "resolve", "network", "hub", "not found", "cannot find")):
        return ZooError(
            f"cannot get pretrained weights for '{spec.name}' ({spec.source}): {text}. "
            "Check the network or HF_ENDPOINT, fill the cache, or use --no-pretrained"
        )
    return ZooError(f"cannot build '{spec.name}' ({spec.source}): {text}")


def _zoo_folder(spec: BackboneSpec) -> Path | None:
    """The folder holding the spec's config.json (fetched alone for a Hub model), if any."""
    if spec.kind == "local-dir":
        return Path(spec.target)
    if spec.kind == "hf-hub":
        from zoo import hub

        return hub.download_file(spec.source.removeprefix("hf-hub:"), "config.json").parent
    return None


def _label_names(folder: Path) -> list | None:
    try:
        return json.loads((folder / "config.json").read_text()).get("label_names")
    except (OSError, ValueError, AttributeError):
        return None


def _zoo_head(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text()).get("zoo", {}).get("head", {}).get("name")
    except (OSError, ValueError, AttributeError):
        return None


@dataclass
class Loaded:
    model: nn.Module
    config: dict
    classes: list[str]
    preprocess: "object"  # zoo.data.Preprocess
    mean: tuple
    std: tuple


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{folder} is not a model folder: it has no config.json") from None
    except ValueError as exc:
        raise ZooError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict) or "architecture" not in cfg or "pretrained_cfg" not in cfg:
        raise ZooError(f"{path} is not a timm model config (needs 'architecture' and 'pretrained_cfg')")
    return cfg


def read_weights(path: Path) -> dict:
    """A safetensors state dict. Never unpickles: a pickle offered as weights is refused."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ZooError(f"{path.parent} has no model.safetensors (zoo reads weights only as safetensors)")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ZooError(f"{path} is damaged or not a safetensors file ({str(exc).splitlines()[0]}); re-download or re-export it") from None


def load_folder(folder: Path) -> Loaded:
    """Load a run directory or timm model folder: config.json + model.safetensors."""
    import timm

    from zoo.data import Preprocess
    from zoo.plugins import get_plugins

    cfg = read_config(folder)
    zoo_meta = cfg.get("zoo") or {}
    head = zoo_meta.get("head") or {"name": "linear", "options": {}}
    num_classes = int(cfg.get("num_classes") or cfg["pretrained_cfg"].get("num_classes") or 0)
    if head["name"] not in get_plugins().collect("heads"):
        from zoo.plugin_packages import install_hint, provides

        records = zoo_meta.get("plugins") if isinstance(zoo_meta.get("plugins"), list) else []
        plugin = next((p for p in records if isinstance(p, dict) and head["name"] in provides(p)), None)
        raise ZooError(f"{folder} uses the head {head['name']!r}, which no installed plugin provides: run: {install_hint(plugin)}")
    try:
        model_args = {k: v for k, v in (cfg.get("model_args") or {}).items() if k != "num_classes"}
        model = timm.create_model(cfg["architecture"], pretrained=False, num_classes=num_classes, **model_args)
    except Exception as exc:  # noqa: BLE001
        raise ZooError(f"{folder}/config.json names a model timm cannot build: {exc}") from None
    from zoo.plugins import build

    model = build("heads", head["name"], model, num_classes, **head.get("options", {}))
    state = read_weights(folder / "model.safetensors")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)[:200]
        raise ZooError(f"the weights in {folder} do not match its config.json ({cfg['architecture']}): {first.strip()}") from None
    model.eval()
    pcfg = cfg["pretrained_cfg"]
    labels = cfg.get("label_names") or pcfg.get("label_names") or [str(i) for i in range(num_classes)]
    if isinstance(labels, dict):
        labels = [labels[k] for k in sorted(labels, key=int)]
    pre = Preprocess(int(pcfg.get("input_size", (3, 224, 224))[-1]), float(pcfg.get("crop_pct", 0.875)), pcfg.get("interpolation", "bicubic"))
    return Loaded(model, cfg, list(labels), pre, tuple(pcfg.get("mean", (0.485, 0.456, 0.406))), tuple(pcfg.get("std", (0.229, 0.224, 0.225))))


def load(ref: str | Path) -> Loaded:
    """A saved model: a run directory, ``local-dir:PATH``, ``hf-hub:ORG/NAME[@REV]``, or a registered
    backbone that is a model folder (``local-dir:``, ``hf-hub:`` or ``package:`` source), with its own classes."""
    ref = str(ref)
    if ref.startswith("hf-hub:"):
        from zoo import hub

        return load_folder(hub.download_model(ref.removeprefix("hf-hub:")))
    folder = Path(ref.removeprefix("local-dir:")).expanduser()
    if not folder.is_dir():
        from zoo.registry import get_registry

        spec = get_registry().specs.get(ref) if not ref.startswith("local-dir:") else None
        if spec is not None and spec.kind != "timm":
            return load(spec.source if spec.kind != "package" else model_folder(spec))
        raise UsageError(f"model '{ref}' not found: give a run directory, local-dir:PATH, hf-hub:ORG/NAME "
                         f"or a registered model folder (see 'zoo list')")
    return load_folder(folder)
