"""The names the training loop had when it lived here; ``from zoo.trainer import ...`` keeps working.

The loop itself is zoo.train: build.py (what is trained, shared with --dry-run), loop.py (the
Trainer), events.py (the one observer channel). The settings (FinetuneConfig) are zoo.config's.
"""

from __future__ import annotations

from zoo.config import FinetuneConfig
from zoo.train.build import default_out, pick_device, plan
from zoo.train.events import Reporter
from zoo.train.loop import Diverged, Interrupted, Result, Trainer

__all__ = ["Diverged", "FinetuneConfig", "Interrupted", "Reporter", "Result", "Trainer", "default_out", "pick_device", "plan"]
