"""The plugin manager: built-ins first, then installed plugins (entry-point group ``zoo``).

Every hook implementation is called on its own, so a plugin that fails at import or
raises inside a hook is reported by name, in one line, and skipped; the rest keeps working.

Environment:
  ZOO_LOAD_PLUGINS  comma-separated plugin names to load; empty loads none; unset loads all.
  ZOO_TRACE_HOOKS   when set, print every hook call and the plugin answering it to stderr.

Name clashes, for plugin names and for what plugins register: the first registration wins, and
the loser is named in a warning. Built-ins register first, then installed plugins in alphabetical
order of their entry-point names; that order, not pluggy's tryfirst/trylast, decides. Loading a
saved model does not go by that order: its head comes from the plugin the model records as its
provider (:func:`recorded_provider`).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from zoo import hookspecs
from zoo.errors import shown

DEFAULT_PLUGINS = (
    "zoo.builtins.backbones",
    "zoo.builtins.heads",
    "zoo.builtins.freeze",
    "zoo.builtins.datasets",
)
_OLD_BUILTIN_NAMES = {m.replace("zoo.builtins.", "zoo."): m for m in DEFAULT_PLUGINS}  # zoo.heads -> zoo.builtins.heads
ENTRY_POINT_GROUP = "zoo"
KINDS = {
    "backbones": "zoo_register_backbones",
    "heads": "zoo_register_heads",
    "freeze": "zoo_register_freeze_policies",
    "datasets": "zoo_register_datasets",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class Entry:
    """One registered thing: a head, a freeze policy, a dataset or a backbone."""

    name: str
    obj: Any  # a factory (heads, freeze, datasets) or a source string (backbones)
    plugin: str
    description: str = ""
    meta: dict = field(default_factory=dict)


@dataclass
class PluginInfo:
    name: str
    version: str | None = None
    distribution: str | None = None
    builtin: bool = False
    hooks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def warn(message: str) -> None:
    """One line on stderr, tokens redacted and unprintable characters escaped; never a traceback (unless ZOO_DEBUG is set)."""
    from zoo.redact import redact

    message = " ".join(redact(message).split())  # one line, whatever the exception text held
    print(f"zoo: warning: {shown(message)}", file=sys.stderr)
    if os.environ.get("ZOO_DEBUG"):
        import traceback

        print(redact(traceback.format_exc()), end="", file=sys.stderr)


class Plugins:
    """Loads plugins once and collects what they register, kind by kind."""

    def __init__(self, *, load_installed: bool | None = None):
        self.pm = pluggy.PluginManager("zoo")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self._collected: dict[str, dict[str, Entry]] = {}
        self._claims: dict[str, dict[str, list[Entry]]] = {}  # kind -> name -> every registration, the winner first
        self.generation = 0  # counts changes to the set: what is built from it (zoo.registry) is built again
        self.trace = bool(os.environ.get("ZOO_TRACE_HOOKS"))
        for module_name in DEFAULT_PLUGINS:
            # Named as their modules: the plugin zoo.builtins.freeze is not the module zoo.freeze.
            self._register(module_name, importlib.import_module(module_name), PluginInfo(module_name, builtin=True))
        if load_installed is not False:
            self._load_entry_points()

    # -- loading -----------------------------------------------------------------
    def _load_entry_points(self) -> None:
        wanted = os.environ.get("ZOO_LOAD_PLUGINS")
        allowed = None if wanted is None else {w.strip() for w in wanted.split(",") if w.strip()}
        eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
        seen: dict[str, str | None] = {name: "zoo" for name in [*self.info, *_OLD_BUILTIN_NAMES]}  # nor a built-in's name
        for ep in eps:
            dist = getattr(ep, "dist", None)
            dist_name = dist.name if dist else None
            if ep.name in seen:
                if seen[ep.name] != dist_name:  # not merely the same distribution seen twice on sys.path
                    warn(f"plugin name '{ep.name}' is used by both '{seen[ep.name]}' and '{dist_name}'; loading '{seen[ep.name]}'")
                continue
            seen[ep.name] = dist_name
            if allowed is not None and ep.name not in allowed and dist_name not in allowed:
                continue
            info = PluginInfo(ep.name, version=dist.version if dist else None, distribution=dist_name)
            try:
                module = ep.load()
            except Exception as exc:
                self._fail(info, f"failed to load: {type(exc).__name__}: {exc}")
                self.info[ep.name] = info
                continue
            self._register(ep.name, module, info)

    def add(self, plugin: Any, name: str) -> None:
        """Register a plugin object in-process (tests, notebooks); forgets what was collected."""
        self._register(name, plugin, PluginInfo(name))
        self._collected.clear()
        self.generation += 1

    def _register(self, name: str, module: Any, info: PluginInfo) -> None:
        try:
            self.pm.register(module, name=name)
        except Exception as exc:
            self._fail(info, f"failed to register: {exc}")
        else:
            callers = self.pm.get_hookcallers(module) or []
            for hook in callers:
                if not hook.has_spec():  # pluggy accepts unknown zoo_* names silently; a typo should not be
                    self._fail(info, f"implements unknown hook '{hook.name}'", skipped="that function is never called; see docs/plugins.md")
            info.hooks = sorted(hook.name for hook in callers if hook.has_spec())
        self.info[name] = info

    def _fail(self, info: PluginInfo, message: str, *, skipped: str = "skipped") -> None:
        from zoo.redact import redact

        message = redact(message)  # shown again by 'zoo plugins list' and 'zoo doctor'
        info.errors.append(message)
        warn(f"plugin '{info.name}' {message} ({skipped})")

    # -- calling -------------------------------------------------------------------
    def call(self, hook_name: str, **kwargs) -> None:
        """Call every implementation of a hook, built-ins first; a failure skips that plugin."""
        for impl in self._impls(hook_name):
            self.call_one(impl, hook_name, **kwargs)

    def _impls(self, hook_name: str) -> list:
        """A hook's implementations in registration order (built-ins, then by entry-point name), whatever
        tryfirst/trylast they ask pluggy for: the order decides name clashes, so a plugin cannot choose it."""
        order = {name: i for i, name in enumerate(self.info)}
        return sorted(self.pm.hook.__dict__[hook_name].get_hookimpls(), key=lambda impl: order.get(impl.plugin_name, len(order)))

    def collect(self, kind: str) -> dict[str, Entry]:
        """Everything registered of one kind (backbones, heads, freeze, datasets), by name."""
        if kind in self._collected:
            return self._collected[kind]
        entries: dict[str, Entry] = {}
        claims: dict[str, list[Entry]] = {}
        extensions: dict[str, Entry] = {}  # datasets: the file extensions they claim (".csv")
        current = {"plugin": ""}

        def register(name, obj=None, /, *, description: str = "", **meta) -> None:
            plugin = current["plugin"]
            obj = obj if obj is not None else meta.pop("factory" if kind != "backbones" else "source", None)
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValueError(f"invalid {kind} name {name!r}")
            if kind == "backbones":
                if not isinstance(obj, str):
                    raise ValueError(f"backbone {name!r} needs a source string, got {type(obj).__name__}")
            elif not callable(obj):
                raise ValueError(f"{kind} {name!r} needs a factory, got {type(obj).__name__}")
            if kind == "datasets" and "extensions" in meta:
                meta["extensions"] = _extensions(name, meta["extensions"])
            entry = Entry(name, obj, plugin, str(description or ""), meta)
            claims.setdefault(name, []).append(entry)
            if name in entries:
                warn(
                    f"{kind} '{name}' is registered by both '{entries[name].plugin}' and '{plugin}'; "
                    f"using '{entries[name].plugin}' (the first registration wins)"
                )
                return
            entries[name] = entry
            self.info[plugin].__dict__.setdefault("registered", []).append(f"{kind}:{name}")
            for ext in entry.meta.get("extensions", ()):
                if ext in extensions:
                    warn(f"file extension '{ext}' is claimed by datasets '{extensions[ext].name}' ('{extensions[ext].plugin}') "
                         f"and '{name}' ('{plugin}'); using '{extensions[ext].name}' (the first registration wins)")
                else:
                    extensions[ext] = entry

        for impl in self._impls(KINDS[kind]):
            current["plugin"] = impl.plugin_name
            self.call_one(impl, KINDS[kind], register=register)
        self._collected[kind], self._claims[kind] = entries, claims
        if kind == "datasets":
            self._extensions = {ext: e.name for ext, e in extensions.items()}
        return entries

    def extensions(self) -> dict[str, str]:
        """The file extensions datasets claim (lower case, with the dot), each with the dataset that claims it."""
        self.collect("datasets")
        return self._extensions

    def claims(self, kind: str, name: str) -> list[Entry]:
        """Every registration of ``name``: the one in use first, then those it shadows."""
        self.collect(kind)
        return self._claims[kind].get(name, [])

    def label(self, plugin: str) -> str:
        """A plugin as users know it: its distribution name (the entry point's, for built-ins)."""
        info = self.info.get(plugin)
        return info.distribution if info and info.distribution else plugin

    def call_one(self, impl, hook_name: str, **kwargs) -> Any:
        if self.trace:
            print(f"zoo: hook {hook_name} -> {impl.plugin_name}", file=sys.stderr)
        try:
            return impl.function(**{a: kwargs[a] for a in impl.argnames})
        except Exception as exc:
            self._fail(self.info[impl.plugin_name], f"raised in {hook_name}: {type(exc).__name__}: {exc}")
            return None


_plugins: Plugins | None = None


def get_plugins() -> Plugins:
    """The process-wide plugin set, loaded on first use."""
    global _plugins
    if _plugins is None:
        _plugins = Plugins()
    return _plugins


def reset() -> None:
    """Forget loaded plugins (tests, and after `zoo plugins install`)."""
    global _plugins
    _plugins = None


def lookup(kind: str, name: str) -> Entry:
    """One registered entry, or a NotFoundError that suggests close names."""
    from zoo.errors import NotFoundError, closest

    entries = get_plugins().collect(kind)
    if name not in entries:
        label = LABELS[kind]
        raise NotFoundError(
            f"unknown {label} '{name}'.{closest(name, entries)} Run 'zoo list {kind}' to see them all."
        )
    return entries[name]


LABELS = {"freeze": "freeze policy", "heads": "head", "datasets": "dataset", "backbones": "backbone"}


def build(kind: str, name: str, *args, **kwargs) -> Any:
    """Call a registered factory; its failures become one-line errors naming the plugin."""
    return build_entry(kind, lookup(kind, name), *args, **kwargs)


def build_entry(kind: str, entry: Entry, *args, **kwargs) -> Any:
    """Call one registration's factory (see :func:`build`)."""
    from zoo.errors import UsageError, ZooError

    name = entry.name
    try:
        result = entry.obj(*args, **kwargs)
    except ZooError:
        raise
    except TypeError as exc:  # almost always a bad option name or value
        raise UsageError(f"{LABELS[kind]} '{name}': {exc}") from None
    except Exception as exc:
        raise ZooError(f"{LABELS[kind]} '{name}' (plugin '{entry.plugin}') failed: {type(exc).__name__}: {exc}") from None
    expected = _expected_result(kind, result)
    if expected:
        raise ZooError(f"{LABELS[kind]} '{name}' (plugin '{entry.plugin}') returned {type(result).__name__}, not {expected}")
    return Guarded(result, f"{LABELS[kind]} '{name}' (plugin '{entry.plugin}')") if kind == "freeze" else result


def _extensions(name: str, value) -> tuple[str, ...]:
    """A dataset's claimed file extensions, checked: a list of strings such as ".npz" (kept in lower case)."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and re.fullmatch(r"(\.[A-Za-z0-9_-]+)+", v) for v in value):
        raise ValueError(f"dataset {name!r}: extensions must be a list such as ['.npz'], got {value!r}")
    return tuple(v.lower() for v in value)


class Guarded:
    """A plugin's object (a freeze policy) whose methods, called later during training, fail in one line
    naming the plugin, as its factory does. Attributes it lacks are missing here too (hasattr works)."""

    def __init__(self, obj: Any, label: str):
        import inspect

        self._obj, self._label = obj, label
        # Its methods are also set on this object: isinstance() against a runtime Protocol
        # (zoo.freeze.FreezePolicy) looks attributes up statically from Python 3.12 on, past __getattr__.
        for attr in dir(obj):
            raw = inspect.getattr_static(obj, attr, None)  # no property runs here
            if not attr.startswith("_") and (callable(raw) or isinstance(raw, (staticmethod, classmethod))):
                setattr(self, attr, self._guard(attr, getattr(obj, attr)))

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._obj, attr)
        return self._guard(attr, value) if callable(value) else value

    def _guard(self, attr: str, value: Callable) -> Callable:
        def call(*args, **kwargs):
            from zoo.errors import ZooError

            try:
                return value(*args, **kwargs)
            except ZooError:
                raise
            except Exception as exc:
                raise ZooError(f"{self._label} failed in {attr}(): {type(exc).__name__}: {exc}") from None

        return call


def _expected_result(kind: str, result: Any) -> str | None:
    """What a factory of this kind must return, when ``result`` is not that (garbage from a plugin)."""
    if kind == "heads":
        import torch

        return None if isinstance(result, torch.nn.Module) else "a torch.nn.Module"
    if kind == "freeze":
        return None if callable(getattr(result, "settings", None)) else "a policy with a settings() method"
    return None


def recorded_provider(kind: str, name: str, records: list, where: str) -> Entry:
    """The registration of ``name`` from the plugin a saved model records as its provider.

    ``records`` is the "plugins" list of the model's config.json (name = distribution, entry_point,
    provides). The recorded plugin is used even when another plugin's registration of the name
    wins the clash; when it is not installed, or the model does not say which of several installed
    plugins it means, loading is refused in one line naming both: never another plugin's code.
    """
    from packaging.utils import canonicalize_name

    from zoo.errors import ZooError
    from zoo.plugin_packages import install_hint, provides

    plugins = get_plugins()
    claims = plugins.claims(kind, name)
    named = [r for r in records if isinstance(r, dict) and name in provides(r)]  # a list, never a substring of a string

    def same(entry: Entry, record: dict) -> bool:
        info = plugins.info[entry.plugin]
        recorded = record.get("entry_point", record.get("name"))
        if record.get("builtin") and recorded in _OLD_BUILTIN_NAMES:  # a run saved before the built-ins had their module names
            recorded = _OLD_BUILTIN_NAMES[recorded]
        if recorded != entry.plugin or bool(record.get("builtin")) != info.builtin:
            return False
        return info.builtin or canonicalize_name(str(record.get("name"))) == canonicalize_name(info.distribution or entry.plugin)

    matches = [e for e in claims if any(same(e, r) for r in named)]
    if matches and (len(named) == 1 or len(claims) == 1):
        return matches[0]
    if not named and len(claims) == 1:  # a model that records no provider (e.g. a plain timm folder)
        return claims[0]
    label = LABELS[kind]
    if not claims:
        raise ZooError(f"{where} uses the {label} {name!r}, which no installed plugin provides: run: "
                       f"{install_hint(named[0] if named else None)}")
    if len(named) == 1:
        raise ZooError(f"{where} was trained with the {label} '{name}' of plugin {str(named[0].get('name'))!r}, but here "
                       f"'{plugins.label(claims[0].plugin)}' provides it: run: {install_hint(named[0])}, "
                       f"or uninstall '{plugins.label(claims[0].plugin)}'")
    which = [str(r.get("name")) for r in named] or [plugins.label(e.plugin) for e in claims]
    raise ZooError(f"{where} does not say which plugin's {label} '{name}' it was trained with ('{which[0]}' or "
                   f"'{which[1]}'): uninstall the wrong one or select one with ZOO_LOAD_PLUGINS")


def fire(event: str, **kwargs) -> None:
    """Fire a trainer event (zoo_on_*) on every plugin; failures are reported and skipped."""
    get_plugins().call(event, **kwargs)

