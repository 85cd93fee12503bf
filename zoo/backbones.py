"""Building models: a timm backbone from a spec plus a head, and loading saved models."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from zoo.errors import UsageError, ZooError
from zoo.model_config import check_model_args, labels_of
from zoo.registry import BackboneSpec
from zoo.rundir import RunDir


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
           classes: list[str] | None = None, scratch_hint: bool = True) -> nn.Module:
    """A backbone with a ``num_classes`` head; weights from the spec's source when ``pretrained``.

    ``scratch_hint``: when the weights cannot be had, suggest ``--no-pretrained`` (a command that has it).

    A model folder or Hub repo is read by zoo, never by timm: its config.json is checked
    (:meth:`RunDir.read_config`) and its weights come only from model.safetensors (:meth:`RunDir.read_weights`).
    A saved model's classifier (timm's own, or a plugin head when ``head`` and ``head_opts`` are the ones it
    was trained with) is kept only when ``classes`` are the ones it was trained on.
    """
    import timm

    from zoo.plugins import build, lookup

    lookup("heads", head)  # an unknown head fails before anything is built
    check_model_args(model_args or {}, "--model-arg", error=UsageError)
    torch.manual_seed(seed)  # head initialisation (and the whole model without pretrained weights) is seeded
    if spec.kind == "timm":
        from zoo import hub

        try:  # timm fetches the weights through huggingface_hub: offline, it answers from the cache at once
            with hub.offline_unless_reachable() if pretrained else contextlib.nullcontext():
                model = timm.create_model(spec.target, pretrained=pretrained, num_classes=num_classes, **(model_args or {}))
        except Exception as exc:
            raise _build_error(spec, pretrained, exc, scratch_hint) from None
        model.zoo_model_args = dict(model_args or {})
        return build("heads", head, model, num_classes, **(head_opts or {}))
    folder = RunDir(_folder(spec, weights=pretrained))
    cfg = folder.read_config()
    saved_head = (cfg.get("zoo") or {}).get("head") or {"name": "linear", "options": {}}
    same_classes = classes is None or cfg.get("label_names") == list(classes)
    if pretrained and saved_head["name"] != "linear":  # a zoo run with a plugin head
        loaded = load_folder(folder.path).model
        if (saved_head["name"], saved_head.get("options") or {}) == (head, head_opts or {}) and same_classes \
                and int(cfg.get("num_classes") or 0) == num_classes:
            return loaded  # the same head for the same classes: keep it, trained weights and all
        model = timm_model(loaded)  # another head or other classes: keep the backbone, build a new head
    else:
        state = folder.read_weights() if pretrained else None
        try:
            model = _create_from_config(folder, cfg, num_classes=num_classes, state=state, model_args=model_args)
        except ZooError:
            raise
        except Exception as exc:
            raise _build_error(spec, pretrained, exc, scratch_hint) from None
        if pretrained and not same_classes:
            model.reset_classifier(num_classes)  # same count, other classes: a new head, not the old one
    return build("heads", head, model, num_classes, **(head_opts or {}))


def _folder(spec: BackboneSpec, *, weights: bool) -> Path:
    """The folder of a ``local-dir:``, ``package:`` or ``hf-hub:`` spec; for the Hub, config.json (and
    model.safetensors when ``weights``) fetched into the cache, nothing else: never a pickle (pytorch_model.bin)."""
    if spec.kind == "package":
        return model_folder(spec)  # it names the architecture too, so it is needed without weights as well
    if spec.kind == "local-dir":
        if not Path(spec.target).is_dir():
            named = f"backbone '{spec.name}' (from {spec.origin}) points to" if spec.origin else "the folder"
            raise ZooError(f"{named} {spec.target}, which does not exist")
        return Path(spec.target)
    from zoo import hub
    from zoo.registry import ready_offline

    repo = spec.source.removeprefix("hf-hub:")
    if weights:
        return hub.download_files(repo, (RunDir.CONFIG, RunDir.WEIGHTS), alternatives=ready_offline)
    return hub.download_file(repo, RunDir.CONFIG, alternatives=ready_offline).parent


def model_folder(spec: BackboneSpec) -> Path:
    """The model folder (config.json + model.safetensors) that a plugin makes for a ``package:`` backbone."""
    try:
        folder = Path(spec.folder())
    except ZooError:
        raise
    except Exception as exc:
        raise ZooError(f"backbone '{spec.name}' (plugin '{spec.origin}') could not provide its weights: "
                       f"{type(exc).__name__}: {exc}") from None
    if not RunDir(folder).config_path.is_file():
        raise ZooError(f"backbone '{spec.name}' (plugin '{spec.origin}') gave {folder}, which is not a model folder (no {RunDir.CONFIG})")
    return folder


def _build_error(spec: BackboneSpec, pretrained: bool, exc: Exception, scratch_hint: bool = True) -> ZooError:
    from huggingface_hub import constants

    from zoo import hub
    from zoo.registry import ready_offline

    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if spec.kind == "local-dir":
        return ZooError(f"cannot load {spec.target}: {text}")
    scratch = ", or train from random weights with --no-pretrained" if scratch_hint else ""
    subject = f"cannot get pretrained weights for '{spec.name}' ({spec.source})"
    if pretrained and (constants.HF_HUB_OFFLINE or hub.unreachable()) and not isinstance(exc, TypeError):
        return ZooError(hub.not_cached(subject, alternatives=ready_offline, also=scratch))
    if pretrained and any(w in text.lower() for w in ("connect", "offline", "resolve", "network", "hub", "not found", "cannot find")):
        return ZooError(f"{subject}: {text.rstrip('.')}; check the network or HF_ENDPOINT, fill the cache{scratch}")
    return ZooError(f"cannot build '{spec.name}' ({spec.source}): {text}")


@dataclass
class Loaded:
    model: nn.Module
    config: dict
    classes: list[str]
    preprocess: object  # zoo.data.Preprocess
    mean: tuple
    std: tuple


def _create_from_config(folder: RunDir, cfg: dict, *, num_classes: int, state: dict | None = None,
                        model_args: dict | None = None) -> nn.Module:
    """The timm model a config.json describes; with ``state`` (read by zoo from safetensors) loaded through
    timm's pretrained path, which adapts it (a new classifier for another class count, input channels)
    without opening anything: a ``state_dict`` in the pretrained config is timm's in-memory source."""
    import timm
    from timm.models import get_pretrained_cfg

    arch, args, pcfg = folder.timm_config(cfg)
    pcfg.setdefault("num_classes", cfg.get("num_classes") or num_classes)
    default = get_pretrained_cfg(arch) if timm.is_model(arch) else None
    for key in ("classifier", "first_conv"):  # where the classifier is, for a folder that does not say
        if key not in pcfg and default is not None:
            pcfg[key] = getattr(default, key)
    if state is not None:
        pcfg["state_dict"] = state
    args = {**args, **(model_args or {})}
    model = timm.create_model(arch, pretrained=state is not None, pretrained_cfg=pcfg, num_classes=num_classes, **args)
    model.pretrained_cfg.pop("state_dict", None)  # the loaded weights are in the model; do not keep a second copy
    model.zoo_model_args = args  # what config.json records to build it again (zoo.cards)
    return model


def load_folder(folder: Path) -> Loaded:
    """Load a run directory or timm model folder: config.json + model.safetensors."""
    from zoo.data import Preprocess
    from zoo.plugins import build_entry, recorded_provider

    run = RunDir(folder)
    cfg = run.read_config()
    zoo_meta = cfg.get("zoo") or {}
    head = zoo_meta.get("head") or {"name": "linear"}
    pcfg = cfg["pretrained_cfg"]
    num_classes = cfg.get("num_classes") or pcfg.get("num_classes") or 0
    if not num_classes:
        raise ZooError(f"{run.config_path}: 'num_classes' is 0 or missing: this model has no classifier "
                       f"(fine-tune it as a backbone to get one)")
    entry = recorded_provider("heads", head["name"], zoo_meta.get("plugins") or [], str(folder))
    try:
        model = _create_from_config(run, cfg, num_classes=num_classes)
    except ZooError:
        raise
    except Exception as exc:
        raise ZooError(f"{run.config_path} names a model timm cannot build: {exc}") from None
    model = build_entry("heads", entry, model, num_classes, **(head.get("options") or {}))
    state = run.read_weights()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)[:200]
        raise ZooError(f"the weights in {folder} do not match its {RunDir.CONFIG} ({cfg['architecture']}): {first.strip()}") from None
    model.eval()
    labels = labels_of(cfg) or [str(i) for i in range(num_classes)]
    pre = Preprocess(int(pcfg.get("input_size", (3, 224, 224))[-1]), float(pcfg.get("crop_pct", 0.875)), pcfg.get("interpolation", "bicubic"))
    return Loaded(model, cfg, labels, pre, tuple(pcfg.get("mean", (0.485, 0.456, 0.406))), tuple(pcfg.get("std", (0.229, 0.224, 0.225))))


def load(ref: str | Path) -> Loaded:
    """A saved model: a run directory, ``local-dir:PATH``, ``hf-hub:ORG/NAME[@REV]``, or a registered
    backbone that is a model folder (``local-dir:``, ``hf-hub:`` or ``package:`` source), with its own classes."""
    ref = str(ref)
    if ref.startswith("hf-hub:"):
        from zoo import hub

        return load_folder(hub.download_files(ref.removeprefix("hf-hub:"), (RunDir.CONFIG, RunDir.WEIGHTS)))
    folder = Path(ref.removeprefix("local-dir:")).expanduser()
    if not folder.is_dir():
        from zoo.registry import get_registry

        spec = get_registry().specs.get(ref) if not ref.startswith("local-dir:") else None
        if spec is not None and spec.kind != "timm":
            return load(spec.source if spec.kind != "package" else model_folder(spec))
        raise UsageError(f"model '{ref}' not found: give a run directory, local-dir:PATH, hf-hub:ORG/NAME "
                         f"or a registered model folder (see 'zoo list')")
    return load_folder(folder)
