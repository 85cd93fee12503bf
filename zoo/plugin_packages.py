"""Plugin distributions: what a saved model needs (``--from-model``) and new skeletons (``plugins new``)."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

from zoo.errors import UsageError


def model_config(model: str) -> dict:
    """config.json of a run directory, a ``local-dir:`` folder or an ``hf-hub:`` repo (only that file is fetched)."""
    if model.startswith("hf-hub:"):
        from zoo import hub

        path = hub.download_file(model.removeprefix("hf-hub:"), "config.json")
    else:
        path = Path(model.removeprefix("local-dir:")).expanduser() / "config.json"
        if not path.is_file():
            raise UsageError(f"{path.parent} is not a model folder: it has no config.json")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    return cfg if isinstance(cfg, dict) else {}


def recorded(model: str) -> list[dict]:
    """The third-party plugins a model records (name, version, entry point, what it provides).

    A record becomes a pip requirement, so its name must be a bare project name and its version a
    plain version: anything else (``evil @ https://...``, ``>=0``) would make pip fetch what the
    model's author chose, and is refused.
    """
    from packaging.version import InvalidVersion, Version

    plugins = (model_config(model).get("zoo") or {}).get("plugins") or []
    records = [p for p in plugins if isinstance(p, dict) and p.get("name") and not p.get("builtin")]
    for p in records:
        try:
            ok = bool(PROJECT.match(str(p["name"]))) and (p.get("version") is None or Version(str(p["version"])) is not None)
        except InvalidVersion:
            ok = False
        if not ok:
            raise UsageError(f"{model}: its config.json records a plugin as {requirement(p)!r}, which is not a "
                             f"project name and version: install the plugins it needs by name")
    return records


PROJECT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")  # PEP 508 names, nothing more


def needed(plugin: dict) -> bool:
    """Whether loading the model needs the plugin (its head); older records say nothing: assume so."""
    return plugin.get("needed_to_load", True)


def installed(plugin: dict) -> str | None:
    """The installed version of a recorded plugin, or None when it is not installed as a zoo plugin."""
    try:
        dist = metadata.distribution(plugin["name"])
    except metadata.PackageNotFoundError:
        return None
    return dist.version if any(ep.group == "zoo" for ep in dist.entry_points) else None


def requirement(plugin: dict) -> str:
    """A pip requirement for the recorded version (any version when none was recorded)."""
    return f"{plugin['name']}=={plugin['version']}" if plugin.get("version") else plugin["name"]


# -- zoo plugins new ----------------------------------------------------------------------------
NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def new_plugin(name: str, parent: Path) -> Path:
    """Write a working plugin skeleton: pyproject, entry point, one head, a README and a test (with zoo.testing)."""
    if not NAME.match(name):
        raise UsageError(f"plugin name '{name}' must be lowercase letters, digits and single dashes, e.g. zoo-myheads")
    folder = Path(parent) / name
    if folder.exists():
        raise UsageError(f"{folder} already exists: choose another name or --dir")
    module = name.replace("-", "_")
    head = f"{name.removeprefix('zoo-')}-linear"
    files = {
        "pyproject.toml": PYPROJECT.format(name=name, module=module, entry=name.removeprefix("zoo-")),
        f"{module}.py": MODULE.format(name=name, head=head),
        "README.md": README.format(name=name, head=head, module=module),
        "tests/conftest.py": CONFTEST.format(name=name, entry=name.removeprefix("zoo-")),
        f"tests/test_{module}.py": TEST.format(module=module, head=head),
    }
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


PYPROJECT = '''[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "0.1.0"
description = "A zoo plugin."
requires-python = ">=3.10"
# zoo is the host and is already installed: it is not listed, so pip never fetches another "zoo".
dependencies = []

[project.optional-dependencies]
test = ["pytest"]

[project.entry-points.zoo]
{entry} = "{module}"

[tool.setuptools]
py-modules = ["{module}"]
'''

MODULE = '''"""{name}: a zoo plugin. Each function marked @hookimpl implements one of zoo's hooks."""

from zoo import hookimpl


@hookimpl
def zoo_register_heads(register):
    register("{head}", dropout_linear_head, description="dropout, then a linear classifier; option p=0.2")


def dropout_linear_head(model, num_classes, p=0.2):
    """Head factory: the timm model, the number of classes, then the --head-opt options."""
    from torch import nn  # heavy imports belong inside factories: zoo list stays fast

    from zoo import UsageError
    from zoo.backbones import WithHead

    if not 0 <= float(p) < 1:
        raise UsageError(f"head option p must be in [0, 1), got {{p}}")
    model.reset_classifier(0)  # the timm model now returns pooled features
    return WithHead(model, nn.Sequential(nn.Dropout(float(p)), nn.Linear(model.num_features, num_classes)))
'''

README = '''# {name}

A zoo plugin that adds the head `{head}` (dropout, then a linear classifier).

```bash
zoo plugins install ./{name}
zoo list heads
zoo finetune test_resnet --data digits --no-pretrained --img-size 32 --epochs 1 --head {head} --head-opt p=0.1
python -m pytest {name}/tests
```

Edit `{module}.py` to add heads, freeze policies, datasets, commands or trainer events: see
zoo's docs/plugins.md for every hook.
'''

CONFTEST = '''"""A private zoo configuration and cache for each test, with only this plugin loaded."""

from zoo.testing import plugin_fixtures

globals().update(plugin_fixtures("{name}", "{entry}"))
'''

TEST = '''"""Runs against the installed plugin, through zoo's real plugin loading."""

import zoo
from zoo.plugins import get_plugins


def test_head_is_registered():
    assert "{head}" in get_plugins().collect("heads")


def test_head_trains_and_the_run_loads(tmp_path):
    result = zoo.finetune("test_resnet", data="synthetic:4", head="{head}", head_opts={{"p": 0.1}}, pretrained=False,
                          img_size=32, epochs=1, batch_size=8, out=tmp_path / "run")
    assert (result.run_dir / "model.safetensors").is_file()
    model, transform, classes = zoo.load(result.run_dir)
    assert len(classes) == 4
'''
