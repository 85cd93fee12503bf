"""Backbone names -> specs. Nothing is downloaded or built here.

Sources merge in this order, later ones overriding earlier ones by name:
  1. what plugins register through ``zoo_register_backbones``: first the built-in plugin
     ``zoo.builtins.backbones`` (the packaged ``registry.yaml``), then installed plugins; between
     plugins the first registration wins, so a plugin cannot silently replace a packaged name
  2. the user file ``$XDG_CONFIG_HOME/zoo/registry.yaml`` (default ``~/.config/zoo/registry.yaml``)
  3. each file in ``ZOO_REGISTRY`` (separated by ``os.pathsep``), in order

``resolve(name)`` tries: an explicit prefix (``timm:``, ``hf-hub:``, ``local-dir:``) > a
registry name > a path to a model folder > any timm model name > an error naming the closest matches.

A plugin may also register ``package:DISTRIBUTION`` with ``folder=CALLABLE``: weights shipped inside an
installed Python package, turned into a model folder by the callable when the backbone is built.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from zoo.errors import NotFoundError, UsageError, ZooError, closest
from zoo.rundir import CONFIG, WEIGHTS, atomic_write_text

SCHEMA_VERSION = 1
PREFIXES = ("timm:", "hf-hub:", "local-dir:")
METADATA_KEYS = ("description", "family", "params_m", "input_size", "license", "pretrain", "top1", "tags")


@dataclass(frozen=True)
class BackboneSpec:
    """Where a backbone comes from, plus what the registry knows about it."""

    name: str  # what the user asked for
    kind: str  # "timm" | "hf-hub" | "local-dir" | "package"
    target: str  # timm model name, Hub repo id, absolute folder path, or distribution name
    revision: str | None = None  # a Hub revision; for "package", the installed version (None: not installed)
    meta: dict = field(default_factory=dict, compare=False)
    origin: str = ""  # the registry file or plugin that named it; "" for direct sources
    folder: Callable[[], Path] | None = field(default=None, compare=False, repr=False)  # "package": makes the model folder

    @property
    def source(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        return f"{self.kind}:{self.target}{rev}"

    @property
    def timm_name(self) -> str:
        """The string ``timm.create_model`` takes for this spec (a "package" spec: see backbones.model_folder)."""
        if self.kind == "timm":
            return self.target
        return self.source


def package_spec(name: str, source: str, folder, *, meta=None, origin="") -> BackboneSpec:
    """A plugin's ``package:DISTRIBUTION`` backbone; ``folder()`` makes its model folder when it is built."""
    from importlib import metadata

    dist = source.removeprefix("package:")
    if not source.startswith("package:") or not re.match(r"^[A-Za-z0-9][\w.-]*$", dist):
        raise UsageError(f"'{source}' for {name!r}: a backbone registered with folder= needs the source package:DISTRIBUTION")
    if not callable(folder):
        raise UsageError(f"folder= for {name!r} must be a callable that returns a model folder")
    try:
        version = metadata.version(dist)
    except metadata.PackageNotFoundError:
        version = None  # listed anyway: building it says which package to install
    return BackboneSpec(name, "package", dist, version, dict(meta or {}), origin, folder)


def parse_source(source: str, *, name: str | None = None, base: Path | None = None, meta=None, origin="") -> BackboneSpec:
    """Turn ``timm:X`` / ``hf-hub:ORG/REPO[@REV]`` / ``local-dir:PATH`` into a spec."""
    meta = dict(meta or {})
    kind, sep, rest = source.partition(":")
    if not sep or f"{kind}:" not in PREFIXES or not rest:
        raise UsageError(
            f"unknown source '{source}'{f' for {name!r}' if name else ''}: "
            f"use one of {', '.join(p + '...' for p in PREFIXES)}"
        )
    revision = None
    if kind == "hf-hub":
        rest, _, revision = rest.partition("@")
        revision = revision or None
        if not re.match(r"^[\w.-]+/[\w.-]+$", rest):
            raise UsageError(f"'{source}' is not a Hub repo id: use hf-hub:ORG/NAME[@REVISION]")
    elif kind == "local-dir":
        path = Path(rest).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        rest = str(path.resolve())
    return BackboneSpec(name or source, kind, rest, revision, meta, origin)


# -- registry files ------------------------------------------------------------------
def packaged_registry() -> Path:
    """registry.yaml inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    inside = here / "registry.yaml"
    return inside if inside.exists() else here.parent / "registry.yaml"


def user_registry_files() -> list[Path]:
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    files = [config_home / "zoo" / "registry.yaml"]
    files += [Path(p).expanduser() for p in os.environ.get("ZOO_REGISTRY", "").split(os.pathsep) if p]
    return files


def load_registry_file(path: Path, *, required: bool = True) -> dict[str, BackboneSpec]:
    """Parse and validate one registry file; errors name the file and line."""
    from zoo import yamlfile

    if not path.exists() and not path.is_symlink():
        if required:
            raise ZooError(f"registry file {path} does not exist: fix ZOO_REGISTRY or create the file")
        return {}
    node = yamlfile.compose(path, what="registry file")
    data = yamlfile.construct(node, path, what="registry file")
    if data is None:
        return {}
    lines = _entry_lines(node)
    if not isinstance(data, dict) or not isinstance(data.get("backbones", {}), dict):
        raise UsageError(f"registry file {path}: expected a mapping with 'schema' and 'backbones' (see docs/registry.md)")
    unknown = sorted(str(k) for k in data if k not in ("schema", "backbones"))
    if unknown:
        raise UsageError(f"registry file {path}: unknown top-level key(s) {', '.join(unknown)}: entries go under "
                         f"'backbones:' (see docs/registry.md)")
    schema = data.get("schema", SCHEMA_VERSION)
    if schema != SCHEMA_VERSION:
        raise UsageError(f"registry file {path}: schema {schema!r} is not supported (this zoo reads schema {SCHEMA_VERSION})")
    specs = {}
    for name, entry in (data.get("backbones") or {}).items():
        where = f"{path}:{lines.get(str(name), '?')}"
        if not isinstance(entry, dict) or not isinstance(entry.get("source"), str):
            raise UsageError(f"registry file {where}: backbone '{name}' needs a 'source' (timm:..., hf-hub:... or local-dir:...)")
        try:
            meta = {k: entry[k] for k in METADATA_KEYS if k in entry}
            specs[str(name)] = parse_source(entry["source"], name=str(name), base=path.parent, meta=meta, origin=str(path))
        except UsageError as exc:
            raise UsageError(f"registry file {where}: {exc}") from None
    return specs


def _entry_lines(node) -> dict[str, int]:
    """Line numbers of each backbone entry, for error messages."""
    try:
        for key, value in node.value:
            if key.value == "backbones":
                return {k.value: k.start_mark.line + 1 for k, _ in value.value}
    except (AttributeError, TypeError, ValueError):
        pass
    return {}


class Registry:
    """The merged view of registry files and plugin registrations."""

    def __init__(self, specs: dict[str, BackboneSpec]):
        self.specs = specs

    @classmethod
    def load(cls) -> Registry:
        from zoo.plugins import get_plugins

        specs: dict[str, BackboneSpec] = {}
        for name, entry in get_plugins().collect("backbones").items():
            meta = entry.meta | {"description": entry.description}
            try:
                if "folder" in meta:
                    specs[name] = package_spec(name, entry.obj, meta.pop("folder"), meta=meta, origin=entry.plugin)
                else:
                    specs[name] = parse_source(entry.obj, name=name, meta=meta, origin=entry.plugin)
            except UsageError as exc:
                from zoo.plugins import warn

                warn(f"plugin '{entry.plugin}' registered a bad backbone: {exc} (skipped)")
        config_file, *env_files = user_registry_files()
        specs.update(load_registry_file(config_file, required=False))
        for path in env_files:
            specs.update(load_registry_file(path))
        return cls(specs)

    def resolve(self, name: str) -> BackboneSpec:
        """Explicit prefix > registry name > model folder path > timm model name > error."""
        name = name.strip()
        if name.startswith(PREFIXES):
            return parse_source(name)
        if name in self.specs:
            return self.specs[name]
        if _looks_like_path(name):
            path = Path(name).expanduser()
            if not (path / CONFIG).exists():
                raise UsageError(f"{path} is not a model folder (no {CONFIG}): give a run directory or a timm model folder")
            return parse_source(f"local-dir:{path}", name=name)
        if _is_timm_model(name):
            return BackboneSpec(name, "timm", name)
        suggestions = closest(name, list(self.specs) + _timm_names())
        raise NotFoundError(
            f"unknown backbone '{name}'.{suggestions} Run 'zoo list' or 'zoo list --all', "
            f"or use 'hf-hub:ORG/NAME' for a Hub model."
        )

    def rows(self, pattern: str | None = None) -> list[dict]:
        """Listing rows for the registry entries matching a wildcard pattern."""
        rows = []
        for name, spec in self.specs.items():
            if pattern and not _match(pattern, name, spec.source):
                continue
            rows.append({"name": name, "source": spec.source, **spec.meta, "provider": spec.origin, "offline": offline(spec)})
        return sorted(rows, key=lambda r: natural_key(r["name"]))


def offline(spec: BackboneSpec) -> bool:
    """Whether the spec's pretrained weights are on this machine, so it builds without a network.

    A folder with config.json and model.safetensors (``local-dir:``), an installed package
    (``package:``), or a snapshot with weights in the Hugging Face cache (``hf-hub:``, and ``timm:``
    names with a tag, which timm fetches from ``timm/NAME``). Only file-system checks: no torch, no timm.
    """
    if spec.kind == "local-dir":
        return all((Path(spec.target) / f).is_file() for f in (CONFIG, WEIGHTS))
    if spec.kind == "package":
        return spec.revision is not None  # the installed version
    if spec.kind == "timm":
        return "." in spec.target and _in_hub_cache(f"timm/{spec.target}", None)  # untagged: which weights is timm's choice
    return _in_hub_cache(spec.target, spec.revision)


def _in_hub_cache(repo_id: str, revision: str | None) -> bool:
    folder = _hub_cache() / f"models--{repo_id.replace('/', '--')}"
    if not folder.is_dir():  # the usual answer: one stat
        return False
    revision = revision or "main"
    try:
        commit = revision if re.fullmatch(r"[0-9a-f]{40}", revision) else (folder / "refs" / revision).read_text().strip()
    except OSError:
        return False
    return any((folder / "snapshots" / commit / f).is_file() for f in (WEIGHTS, "pytorch_model.bin"))


def _hub_cache() -> Path:
    from huggingface_hub import constants  # huggingface_hub's rules for HF_HUB_CACHE / HF_HOME / XDG_CACHE_HOME

    return Path(constants.HF_HUB_CACHE)


def _match(pattern: str, *names: str) -> bool:
    pattern = pattern.lower() if any(c in pattern for c in "*?[") else f"*{pattern.lower()}*"
    return any(fnmatch.fnmatchcase(n.lower(), pattern) for n in names)


def natural_key(s: str):
    """Sort 'resnet18' before 'resnet101' (as timm's registry does)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", s.lower())]


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or (os.sep in name and Path(name).exists())


def _is_timm_model(name: str) -> bool:
    import timm
    from timm.models import get_pretrained_cfg

    arch, _, tag = name.partition(".")
    if not timm.is_model(arch):
        return False
    try:
        return not tag or get_pretrained_cfg(name) is not None
    except (RuntimeError, ValueError, KeyError):  # a real architecture with an unknown tag
        return False


def _timm_names() -> list[str]:
    try:
        return timm_pretrained_names()
    except Exception:
        return []


def timm_pretrained_names() -> list[str]:
    """Every pretrained timm model name, cached per timm version (importing timm is slow)."""
    from importlib.metadata import version

    cache = Path(os.environ.get("ZOO_CACHE") or Path.home() / ".cache" / "zoo") / f"timm-{version('timm')}-pretrained.json"
    try:
        names = json.loads(cache.read_text())
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return names
    except (OSError, ValueError):
        pass  # missing, unreadable or damaged: listed again, and stored again below
    import timm

    names = timm.list_pretrained()
    try:
        atomic_write_text(cache, json.dumps(names))
    except ZooError:
        pass  # a read-only cache is no reason to fail a listing: the names are computed again next time
    return names


def timm_rows(pattern: str | None = None) -> list[dict]:
    """Listing rows for every pretrained timm model (``zoo list --all``)."""
    names = [n for n in timm_pretrained_names() if not pattern or _match(pattern, n)]
    return [{"name": n, "source": f"timm:{n}", "provider": "timm", "offline": offline(BackboneSpec(n, "timm", n))}
            for n in sorted(names, key=natural_key)]


_registry: tuple[object, int, Registry] | None = None  # the plugin set it was built from, that set's generation, it


def get_registry() -> Registry:
    """The process-wide registry; built again when the plugin set changes (a new set, or a plugin added to it)."""
    global _registry
    from zoo.plugins import get_plugins

    plugins = get_plugins()
    if _registry is None or _registry[0] is not plugins or _registry[1] != plugins.generation:
        _registry = (plugins, plugins.generation, Registry.load())
    return _registry[2]


def reset() -> None:
    """Forget the registry (its files changed): the next use reads them again."""
    global _registry
    _registry = None


def ready_offline() -> str:
    """What to use instead when the Hub cannot be reached: the registry backbones whose weights are here."""
    try:
        names = [r["name"] for r in get_registry().rows() if r["offline"]]
    except ZooError:  # e.g. a broken registry file: the download's own error is the one to report
        return "zoo list --offline shows the backbones ready offline"
    shown_names = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f"backbones ready offline: {shown_names} (zoo list --offline)" if names else "no backbone is ready offline here"


def resolve(name: str) -> BackboneSpec:
    """Resolve a backbone name to a spec (see the module docstring for the order)."""
    return get_registry().resolve(name)
