"""Plugin distributions: what a saved model needs (``--from-model``) and new skeletons (``plugins new``)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from zoo.errors import UsageError, ZooError, shown


def model_config(model: str):
    """config.json of a run directory, a ``local-dir:`` folder or an ``hf-hub:`` repo (only that file is fetched),
    parsed (any JSON value: ``recorded`` takes only what is shaped like plugin records)."""
    from zoo.rundir import RunDir

    if model.startswith("hf-hub:"):
        from zoo import hub

        folder = hub.download_file(model.removeprefix("hf-hub:"), RunDir.CONFIG).parent
    else:
        folder = Path(model.removeprefix("local-dir:")).expanduser()
    return RunDir(folder).read_json()


def recorded(model: str) -> list[dict]:
    """The third-party plugins a model records (name, version, entry point, what it provides); parts that are
    not shaped like records are left out (what goes to pip is checked by ``pinned``)."""
    config = model_config(model)
    section = config.get("zoo") if isinstance(config, dict) else None
    plugins = section.get("plugins") if isinstance(section, dict) else None
    return [p for p in plugins if isinstance(p, dict) and p.get("name") and not p.get("builtin")] if isinstance(plugins, list) else []


def provides(plugin: dict) -> list:
    """What a record says its plugin provides (heads, freeze policies, datasets)."""
    names = plugin.get("provides")
    return names if isinstance(names, list) else []


def needed(plugin: dict) -> bool:
    """Whether loading the model needs the plugin (its head); older records say nothing: assume so."""
    return plugin.get("needed_to_load", True)


def pinned(plugin: dict, where: str = "the model") -> str:
    """``name==version`` for a plugin record: the only form zoo hands pip or prints in an install hint.

    Records come from a model's config.json, which anyone can write. A name that is not a bare
    distribution name (a URL, ``name @ file:...``, extras, markers, spaces, a leading ``-`` that pip
    would read as an option) or a version that is not a PEP 440 version is refused.
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version

    name, version = plugin.get("name"), plugin.get("version")
    try:
        req = Requirement(name) if isinstance(name, str) else None
        if req and req.name == name and not (req.url or req.extras or req.specifier or req.marker) and isinstance(version, str):
            return f"{name}=={Version(version)}"
    except (InvalidRequirement, InvalidVersion):
        pass
    raise ZooError(f"{where} records a plugin zoo will not install: name {shown(repr(name))}, version {shown(repr(version))} "
                   f"is not a plain distribution name and PEP 440 version (install the plugin yourself if you trust it)")


def installed(plugin: dict) -> str | None:
    """The installed version of a recorded plugin (a valid record: see ``pinned``), or None when it is not installed as a zoo plugin."""
    try:
        dist = metadata.distribution(plugin["name"])
    except metadata.PackageNotFoundError:
        return None
    return dist.version if any(ep.group == "zoo" for ep in dist.entry_points) else None


# -- first-party plugins from a source checkout ----------------------------------------------------
FIRST_PARTY = ("zoo-heads", "zoo-peft", "zoo-hf-datasets", "zoo-tensorboard", "zoo-efficientnet-lite")


def checkout_folder(name: str, version: str | None = None) -> Path | None:
    """The ``plugins/NAME`` folder of the source checkout zoo runs from, for a first-party plugin
    (exact names only), or None: zoo is installed from a package, or (given ``version``) the folder
    holds another version. The first-party plugins are not on the package index."""
    if name not in FIRST_PARTY:
        return None
    folder = Path(__file__).resolve().parent.parent / "plugins" / name
    project = _pyproject(folder).get("project", {})
    if project.get("name") != name or (version is not None and not _same_version(project.get("version"), version)):
        return None
    return folder


def _same_version(a, b) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(str(a)) == Version(str(b))
    except InvalidVersion:
        return False


def requirement(spec: str) -> str:
    """What pip gets for a requirement: a first-party plugin's name, bare or ``name==version`` (that of the
    checkout's folder), becomes that folder; anything else is passed on as given."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(spec)
    except InvalidRequirement:
        return spec
    pins = [s.version for s in req.specifier if s.operator == "=="]
    if req.url or req.extras or req.marker or len(pins) != len(req.specifier) or len(pins) > 1 or spec.strip() != str(req):
        return spec
    folder = checkout_folder(req.name, pins[0] if pins else None)
    return str(folder) if folder else spec


def _pyproject(folder: Path) -> dict:
    """A folder's pyproject.toml, parsed; {} when it has none or it is not TOML."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    try:
        return tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def builds_here(spec: str) -> bool:
    """Whether ``spec`` is a local source folder whose build requirements ([build-system] requires: setuptools>=64
    for the first-party plugins and ``plugins new`` skeletons) this environment already meets, so that pip can
    build it with them instead of fetching a build environment from an index (which needs a network)."""
    from packaging.requirements import InvalidRequirement, Requirement

    system = _pyproject(Path(spec)).get("build-system") if Path(spec).is_dir() else None
    requires = system.get("requires") if isinstance(system, dict) else None
    if not isinstance(requires, list):
        return False  # no pyproject.toml, or one that leaves its build requirements to pip's defaults
    for text in requires:
        try:
            req = Requirement(text)
            if req.marker and not req.marker.evaluate():
                continue
            if req.url or req.extras or not req.specifier.contains(metadata.version(req.name), prereleases=True):
                return False
        except (InvalidRequirement, TypeError, metadata.PackageNotFoundError):
            return False
    return True


def install_hint(plugin: dict | None) -> str:
    """What to run to get a missing plugin a model records (a quoted, checked ``name==version``; the
    bare name of a first-party plugin this checkout has: the name zoo resolves to its folder)."""
    from zoo.errors import command

    if plugin is not None:
        try:
            req = pinned(plugin)
            return command("zoo", "plugins", "install", plugin["name"] if requirement(req) != req else req)
        except ZooError:
            pass
    return "zoo plugins install <the plugin that provides it>"


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

MODULE = '''"""{name}: a zoo plugin. Each function marked @hookimpl implements one of zoo's hooks.

It imports from zoo only ``zoo.api``, the plugin API (see zoo's docs/plugins.md).
"""

from zoo.api import hookimpl, number


@hookimpl
def zoo_register_heads(register):
    register("{head}", dropout_linear_head, description="dropout, then a linear classifier; option p=0.2")


def dropout_linear_head(model, num_classes, p=0.2):
    """Head factory: the timm model, the number of classes, then the --head-opt options."""
    from torch import nn  # heavy imports belong inside factories: zoo list stays fast

    from zoo.api import WithHead, feature_dim  # these import torch too

    p = number(p, "head '{head}': p", at_least=0, below=1)  # a bad value is one line, exit code 2
    model.reset_classifier(0)  # the timm model now returns pooled features
    return WithHead(model, nn.Sequential(nn.Dropout(p), nn.Linear(feature_dim(model), num_classes)))
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

import pytest

import zoo
from zoo.testing import build_model, registered


def test_head_is_registered():
    assert "{head}" in registered("heads")


def test_a_bad_option_is_a_usage_error():
    with pytest.raises(zoo.UsageError, match=r"p must be in \\[0, 1\\), got 2"):
        build_model("test_resnet", num_classes=4, head="{head}", head_opts={{"p": 2}}, pretrained=False)


def test_head_trains_and_the_run_loads(tmp_path):
    result = zoo.finetune("test_resnet", data="synthetic:4", head="{head}", head_opts={{"p": 0.1}}, pretrained=False,
                          img_size=32, epochs=1, batch_size=8, out=tmp_path / "run")
    assert (result.run_dir / "model.safetensors").is_file()
    model, transform, classes = zoo.load(result.run_dir)
    assert len(classes) == 4
'''
