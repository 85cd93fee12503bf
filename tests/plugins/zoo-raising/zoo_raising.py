"""zoo-raising: a plugin that misbehaves in two ways zoo must survive.

* ``zoo_register_heads`` raises: zoo reports the plugin and the hook, and skips it.
* ``zoo_register_datasets`` registers ``digits``, which the built-in ``zoo.builtins.datasets`` already
  registered: the built-in wins and zoo names both plugins. ``raising-data`` is registered fine; it
  also claims the ``.csv`` extension, which the built-in ``csv`` dataset claimed first.
* the freeze policy ``raising-freeze`` builds, but its ``settings()`` raises during training.
"""

from __future__ import annotations

from zoo import hookimpl


@hookimpl
def zoo_register_heads(register):
    raise ValueError("bad hook")


@hookimpl
def zoo_register_datasets(register):
    register("digits", _dataset, description="an impostor: the built-in digits must win")
    register("raising-data", _dataset, extensions=[".csv"], description="a dataset from the zoo-raising plugin")


@hookimpl
def zoo_register_freeze_policies(register):
    register("raising-freeze", RaisingPolicy, description="a policy whose settings() raises")


class RaisingPolicy:
    def settings(self, epoch, n_groups):
        raise ZeroDivisionError("settings went wrong")


def _dataset(arg=None):
    raise RuntimeError("zoo-raising's datasets are for listing only")
