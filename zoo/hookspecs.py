"""Every hook zoo calls. Plugins implement them with ``@zoo.hookimpl``.

Registration hooks receive a ``register`` callback so that zoo owns collection, name
clashes and error attribution. Registration must stay cheap: register names and
factories; import torch or timm inside the factories.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("zoo")
hookimpl = pluggy.HookimplMarker("zoo")


@hookspec
def zoo_register_backbones(register):
    """Add named backbones: ``register(name, source, **metadata)``."""


@hookspec
def zoo_register_heads(register):
    """Add classification heads: ``register(name, factory, description=...)``."""


@hookspec
def zoo_register_freeze_policies(register):
    """Add freeze policies: ``register(name, factory, description=...)``."""


@hookspec
def zoo_register_datasets(register):
    """Add dataset sources: ``register(name, factory, description=...)``."""


@hookspec
def zoo_register_commands(cli):
    """Add CLI commands to the ``zoo`` click group."""


@hookspec
def zoo_on_train_start(trainer, config):
    """Called once before the first training step (also after a resume)."""


@hookspec
def zoo_on_epoch_end(trainer, epoch, metrics):
    """Called after each epoch's evaluation; ``epoch`` counts from 1, as in metrics.jsonl."""


@hookspec
def zoo_on_train_end(trainer, run_dir, metrics):
    """Called once when training ends, after the run directory is complete."""
