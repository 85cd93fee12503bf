"""Pytest fixtures for plugin authors: test an installed plugin through zoo's real plugin loading.

In a plugin's ``tests/conftest.py``::

    from zoo.testing import plugin_fixtures

    globals().update(plugin_fixtures("zoo-myheads", "myheads"))  # distribution name, entry-point name

gives every test a private zoo configuration and cache with only that plugin loaded, stops the
session with one line when the plugin is not installed, and adds a ``cli`` fixture that runs
``zoo ...`` in a subprocess, as a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


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
        """``cli(*args, expect=0)`` runs zoo in a subprocess; a different exit code fails the test."""

        def run(*args, expect: int = 0) -> subprocess.CompletedProcess:
            proc = subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True,
                                  env=dict(os.environ), timeout=600)
            assert proc.returncode == expect, f"zoo {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            return proc

        return run

    return {"plugin_installed": plugin_installed, "isolated": isolated, "cli": cli}
