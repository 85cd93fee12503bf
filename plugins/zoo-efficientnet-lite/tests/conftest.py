"""Tests run against the installed plugin, through zoo's real plugin loading, in a private config/cache."""

from zoo.testing import plugin_fixtures

globals().update(plugin_fixtures("zoo-efficientnet-lite", "efficientnet-lite"))
