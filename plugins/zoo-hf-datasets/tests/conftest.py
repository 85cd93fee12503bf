"""Tests run against the installed plugin, through zoo's real plugin loading, in a private config/cache."""

import pytest

from zoo.testing import plugin_fixtures

globals().update(plugin_fixtures("zoo-hf-datasets", "hf-datasets"))


@pytest.fixture(scope="session", autouse=True)
def offline_datasets_cache(tmp_path_factory):
    """A private datasets cache, offline: set before anything imports datasets (it reads them once)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-datasets-cache")))
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield
