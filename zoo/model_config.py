"""What a model folder's config.json may say: checked before zoo or timm uses any of it.

zoo.rundir reads the file (:meth:`zoo.rundir.RunDir.read_config`) and hands it to :func:`check_config`;
nothing else parses a config.json. A value of the wrong type or out of range fails here, in one line
that names the file and the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from zoo.errors import ZooError, shown

# config.json comes with a downloaded model: it is data, never an instruction to open something.
# timm's create_model and build_model_with_cfg take arguments that load weights (checkpoint_path,
# pretrained_cfg{,_overlay} with file / url / hf_hub_id / state_dict, pretrained_strict, feature_cfg,
# cache_dir, ...), so those names are refused, read from timm's own signatures so a new timm stays
# covered. Beyond that the check is an allow-list by value, not a list of bad keys: a path or a URL
# is a string (or a mapping holding one), so an architecture argument passes only as a number, a
# boolean, null or a list of numbers, and as a string only for the keys below, which name a layer
# type that timm looks up in its own tables. Of pretrained_cfg only the data keys (sizes, mean/std,
# labels, ...) reach timm; any other key is refused unless null or false (timm's exports write
# "custom_load": false, older ones "hf_hub_id": null). Refused, not dropped: a model built without
# an argument its weights need would be silently wrong. The values zoo itself uses (class count,
# image sizes, crop, mean/std, labels, the "zoo" section) are checked for type and range too.
# The message names the file and the key.
LAYER_NAME_ARGS = ("global_pool", "act_layer", "norm_layer", "attn_layer", "se_layer", "pos_embed", "stem_type",
                   "block_type", "conv_mode", "pool_type", "output_fmt")
PRETRAINED_CFG_DATA = ("architecture", "tag", "input_size", "test_input_size", "min_input_size", "fixed_input_size",
                       "interpolation", "crop_pct", "test_crop_pct", "crop_mode", "mean", "std", "num_classes",
                       "label_offset", "label_names", "label_descriptions", "pool_size", "test_pool_size", "first_conv",
                       "classifier", "license", "description", "origin_url", "paper_name", "paper_ids", "notes")
WEIGHT_SOURCES = ("url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source", "custom_load")
# Model arguments that are no parameter of timm's loaders (a test checks): `zoo push` of a run recording only
# these reads its config.json without importing timm.
ARCHITECTURE_ARGS = ("in_chans", "global_pool", "img_size", "drop_rate", "drop_path_rate")
MAX_CLASSES = 100_000  # ImageNet-22k has 21,843
SIDES = (8, 4096)  # an image side zoo accepts (as --img-size does)


def _loader_params() -> set[str]:
    import inspect

    import timm
    from timm.models import build_model_with_cfg

    names = set(inspect.signature(timm.create_model).parameters) | set(inspect.signature(build_model_with_cfg).parameters)
    return names - {"model_name", "model_cls", "variant", "kwargs"}


def _plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, (bool, int, float)) for v in value)
    return value is None or isinstance(value, (bool, int, float))


def check_model_args(args: dict, where: str, prefix: str = "", error: type[ZooError] = ZooError) -> dict:
    """``args`` when every key is safe to pass to ``timm.create_model``; else a one-line ``error``."""
    if not isinstance(args, dict):
        raise error(f"{where}: '{prefix.rstrip('.') or 'model_args'}' must be a mapping of timm arguments")
    # timm's loader parameters cost its import (seconds): not needed for the arguments zoo's own runs record.
    loaders = _loader_params() if set(args) - set(ARCHITECTURE_ARGS) else set()
    for key, value in args.items():
        if key in loaders and value is not None:  # null says "none": timm's own exports write a few
            why = "an argument of timm's weight loading; zoo reads weights only from model.safetensors"
        elif not (_plain(value) or (key in LAYER_NAME_ARGS and isinstance(value, str))):
            why = f"a {type(value).__name__}, and zoo passes timm strings only for layer names such as global_pool or act_layer"
        else:
            continue
        raise error(f"{where}: '{prefix}{key}' is not allowed ({why}): remove it")
    return args


def _got(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return shown(text if len(text) <= 60 else text[:57] + "...")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CLASSES


def _labels(value) -> list | None:
    """label_names as a list of strings (timm writes a list; a mapping of "0", "1", ... is read too), or None."""
    if isinstance(value, dict) and all(isinstance(k, str) and k.isdigit() for k in value):
        value = [value[k] for k in sorted(value, key=int)] if sorted(map(int, value)) == list(range(len(value))) else None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def check_config(cfg, where: Path) -> dict:
    """``cfg`` (a parsed config.json) when zoo and timm can use every part of it; else a one-line ZooError."""

    def bad(field: str, need: str, value) -> ZooError:
        return ZooError(f"{where}: '{field}' must be {need}, got {_got(value)}")

    if not isinstance(cfg, dict) or "architecture" not in cfg or "pretrained_cfg" not in cfg:
        raise ZooError(f"{where} is not a timm model config (needs 'architecture' and 'pretrained_cfg')")
    if not isinstance(cfg["architecture"], str) or not cfg["architecture"]:
        raise bad("architecture", "a timm model name", cfg["architecture"])
    pcfg = cfg["pretrained_cfg"]
    if not isinstance(pcfg, dict):
        raise bad("pretrained_cfg", "a mapping", pcfg)
    for key, value in pcfg.items():
        if key not in PRETRAINED_CFG_DATA and value not in (None, False):  # null / false: no source, no custom loader
            why = ("it tells timm where or how to load weights; zoo reads weights only from model.safetensors"
                   if key in WEIGHT_SOURCES else "not a data setting zoo knows")
            raise ZooError(f"{where}: 'pretrained_cfg.{key}' is not allowed ({why}): remove it")
    check_model_args(cfg.get("model_args") or {}, str(where), "model_args.")
    for field, section, key in (("num_classes", cfg, "num_classes"), ("pretrained_cfg.num_classes", pcfg, "num_classes")):
        if section.get(key) is not None and not _count(section[key]):
            raise bad(field, f"a whole number from 0 to {MAX_CLASSES:,}", section[key])
    for key in ("input_size", "test_input_size", "min_input_size"):
        value = pcfg.get(key)
        if value is not None and not (isinstance(value, list) and len(value) == 3 and value[0] == 3
                                      and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                                      and all(SIDES[0] <= v <= SIDES[1] for v in value[1:])):
            raise bad(f"pretrained_cfg.{key}", f"[3, height, width] with sides from {SIDES[0]} to {SIDES[1]}", value)
    for key in ("crop_pct", "test_crop_pct"):
        if pcfg.get(key) is not None and not (_number(pcfg[key]) and 0 < pcfg[key] <= 1):
            raise bad(f"pretrained_cfg.{key}", "a number above 0 and at most 1", pcfg[key])
    for key, positive in (("mean", False), ("std", True)):
        value = pcfg.get(key)
        if value is not None and not (isinstance(value, list) and len(value) == 3 and all(map(_number, value))
                                      and (not positive or all(v > 0 for v in value))):
            raise bad(f"pretrained_cfg.{key}", f"3 {'positive ' if positive else ''}numbers, one per channel", value)
    for key in ("interpolation", "crop_mode"):
        if pcfg.get(key) is not None and not isinstance(pcfg[key], str):
            raise bad(f"pretrained_cfg.{key}", "a name such as 'bicubic'" if key == "interpolation" else "a name such as 'center'", pcfg[key])
    for field, section, count in (("label_names", cfg, cfg.get("num_classes")),
                                  ("pretrained_cfg.label_names", pcfg, pcfg.get("num_classes"))):
        value = section.get(field.rpartition(".")[2])
        if value is None:
            continue
        labels = _labels(value)
        if labels is None:
            raise bad(field, "a list of class names (strings)", value)
        offset = pcfg.get("label_offset") if _count(pcfg.get("label_offset")) else 0  # e.g. 1: a background class has no name
        if count and len(labels) not in (count, count - offset):
            raise ZooError(f"{where}: '{field}' has {len(labels)} names for {count} classes (num_classes): give one name per class")
    _check_zoo_section(cfg.get("zoo"), where, bad)
    return cfg


def labels_of(cfg: dict) -> list[str]:
    """The class names a checked config.json gives (label_names, at the top or in pretrained_cfg), or []."""
    return _labels(cfg.get("label_names")) or _labels(cfg["pretrained_cfg"].get("label_names")) or []


def _check_zoo_section(z, where: Path, bad) -> None:
    """The parts of the "zoo" section that loading reads; the rest (metrics, versions, ...) is shown as it is."""
    if z is None:
        return
    if not isinstance(z, dict):
        raise bad("zoo", "a mapping (zoo's record of the run)", z)
    head = z.get("head")
    if head is not None:
        if not isinstance(head, dict) or not isinstance(head.get("name"), str) or not head["name"]:
            raise bad("zoo.head", 'a mapping such as {"name": "linear", "options": {}}', head)
        if head.get("options") is not None and not isinstance(head["options"], dict):
            raise bad("zoo.head.options", "a mapping of head options", head["options"])
    for key in ("plugins", "classes"):
        if z.get(key) is not None and not isinstance(z[key], list):
            raise bad(f"zoo.{key}", "a list", z[key])
