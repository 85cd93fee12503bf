"""The plugin API: everything a plugin needs from zoo, in one place (docs/plugins.md, "The plugin API").

    from zoo.api import UsageError, WithHead, feature_dim, hookimpl, number

Plugins import only ``zoo``, ``zoo.api`` and, in their tests, ``zoo.testing``; the modules behind
these names may move. Importing this module is cheap: the torch-heavy names (``WithHead``,
``feature_dim``, ``classifier_param_names``) and the dataset helpers (numpy) load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zoo.errors import NotFoundError, UsageError, ZooError
from zoo.freeze import ExportsWeights, FreezePolicy, FreezesParameters, GroupSetting, PreparesModel
from zoo.hookspecs import hookimpl
from zoo.options import flag, number
from zoo.plugins import warn
from zoo.registry import natural_key

if TYPE_CHECKING:
    from zoo.backbones import WithHead, classifier_param_names, feature_dim
    from zoo.data import Dataset, Split, array_split, cache_dir, file_split

__all__ = [
    "Dataset",
    "ExportsWeights",
    "FreezePolicy",
    "FreezesParameters",
    "GroupSetting",
    "NotFoundError",
    "PreparesModel",
    "Split",
    "UsageError",
    "WithHead",
    "ZooError",
    "array_split",
    "cache_dir",
    "classifier_param_names",
    "feature_dim",
    "file_split",
    "flag",
    "hookimpl",
    "natural_key",
    "number",
    "warn",
]

_LAZY = {"WithHead": "zoo.backbones", "feature_dim": "zoo.backbones", "classifier_param_names": "zoo.backbones",
         "Dataset": "zoo.data", "Split": "zoo.data", "array_split": "zoo.data", "file_split": "zoo.data",
         "cache_dir": "zoo.data"}


def __getattr__(name: str):
    """The lazily imported names, on first use (``from zoo.api import WithHead`` imports torch then)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'zoo.api' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
