"""Pytest fixtures for plugin authors: test an installed plugin through zoo's real plugin loading.

In a plugin's ``tests/conftest.py``::

    from zoo.testing import plugin_fixtures

    globals().update(plugin_fixtures("zoo-myheads", "myheads"))  # distribution name, entry-point name

gives every test a private zoo configuration and cache with only that plugin loaded, stops the
session with one line when the plugin is not installed, and adds a ``cli`` fixture that runs
``zoo ...`` in a subprocess, as a user would. The functions below reach what a plugin's tests
need of zoo's insides (what is registered, a model or a policy built as zoo builds them), so
that plugins import only ``zoo``, ``zoo.api`` and this module.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from zoo import forkserver


def plugin_fixtures(distribution: str, entry_point: str) -> dict:
    """The fixtures ``plugin_installed`` (session, automatic), ``isolated`` (automatic) and ``cli``."""

    @pytest.fixture(scope="session", autouse=True)
    def plugin_installed():
        from importlib import metadata

        try:
            metadata.distribution(distribution)
        except metadata.PackageNotFoundError:
            pytest.exit(f"{distribution} is not installed in {sys.prefix}: install it with 'zoo plugins install PATH', "
                        f"PATH being its folder (the one with pyproject.toml; '.' from there), then test again", returncode=1)

    @pytest.fixture(autouse=True)
    def isolated(tmp_path_factory, monkeypatch):
        from zoo import plugins

        home = tmp_path_factory.mktemp("home")
        monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
        monkeypatch.setenv("ZOO_CACHE", str(home / "cache"))
        monkeypatch.setenv("ZOO_LOAD_PLUGINS", entry_point)  # this plugin only, whatever else is installed
        plugins.reset()
        yield
        plugins.reset()

    @pytest.fixture
    def cli():
        """``cli(*args, expect=0)`` runs zoo in a subprocess; a different exit code fails the test.

        The subprocess is forked from a server that imported torch once (``zoo.forkserver``), which saves each
        call 3-4 seconds; ``ZOO_TEST_FORK=0`` starts a new interpreter instead."""

        def run(*args, expect: int = 0) -> subprocess.CompletedProcess:
            proc = forkserver.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True, timeout=600)
            assert proc.returncode == expect, f"zoo {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            return proc

        return run

    return {"plugin_installed": plugin_installed, "isolated": isolated, "cli": cli}


def registered(kind: str) -> dict:
    """What the loaded plugins register of a kind (``backbones``, ``heads``, ``freeze``, ``datasets``):
    name -> entry, with ``obj`` (the factory or source), ``plugin`` (who registered it) and ``description``."""
    from zoo.plugins import get_plugins

    return get_plugins().collect(kind)


def add_plugin(obj: Any, name: str) -> None:
    """Register an object or module with ``@hookimpl`` methods in this process (until the next test)."""
    from zoo.plugins import get_plugins

    get_plugins().add(obj, name)


def reload_plugins() -> None:
    """Forget the loaded plugins; the next use loads them again (after changing ``ZOO_LOAD_PLUGINS``)."""
    from zoo import plugins

    plugins.reset()


def build_model(backbone: str, *, num_classes: int, head: str = "linear", head_opts: dict | None = None,
                pretrained: bool = True, model_args: dict | None = None):
    """The model ``zoo finetune`` builds: the backbone (a name or source) with a head, before any freeze policy."""
    from zoo.backbones import create
    from zoo.registry import resolve

    return create(resolve(backbone), num_classes=num_classes, head=head, head_opts=head_opts, pretrained=pretrained,
                  model_args=model_args)


def build_policy(name: str, **options) -> Any:
    """The freeze policy ``--freeze NAME --freeze-opt ...`` gives, with its failures reported as zoo reports them."""
    from zoo.plugins import build

    return build("freeze", name, **options)


def open_dataset(spec: str):
    """The :class:`zoo.api.Dataset` that ``--data SPEC`` opens."""
    from zoo.data import open_dataset as _open

    return _open(spec)
