"""Checking the options a user gives a head or a freeze policy (``--head-opt``, ``--freeze-opt``).

The values arrive parsed as YAML (``n=2`` is an int, ``scale=big`` a string) or as Python values
from the API. A bad one is a :class:`~zoo.errors.UsageError` whose message starts with ``what``,
the option as the user knows it: ``"freeze option n"``, ``"head 'cosine': scale"``.
"""

from __future__ import annotations

import math

from zoo.errors import UsageError


def number(value, what: str, *, whole: bool = False, positive: bool = False, at_least: float | None = None,
           below: float | None = None) -> float | int:
    """``value`` as a float (an int with ``whole``), checked: ``positive`` (> 0), ``at_least`` (>=) and
    ``below`` (<). Numeric strings count; booleans, NaN and infinities do not."""
    kind = "a whole number" if whole else "a number"
    try:
        if isinstance(value, bool):  # YAML's true/false: never meant as 1/0
            raise ValueError
        number = float(value)
        if not math.isfinite(number) or (whole and number != int(number)):
            raise ValueError
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be {kind}, got {value!r}") from None
    if positive and number <= 0:
        raise UsageError(f"{what} must be positive, got {value!r}")
    if at_least is not None and below is not None and not at_least <= number < below:
        raise UsageError(f"{what} must be in [{at_least:g}, {below:g}), got {value!r}")
    if at_least is not None and number < at_least:
        raise UsageError(f"{what} must be at least {at_least:g}, got {value!r}")
    if below is not None and number >= below:
        raise UsageError(f"{what} must be below {below:g}, got {value!r}")
    return int(number) if whole else number


def flag(value, what: str) -> bool:
    """``value`` as a bool: YAML's true/false (``learn_scale=true``) or a Python bool, nothing else."""
    if not isinstance(value, bool):
        raise UsageError(f"{what} must be true or false, got {value!r}")
    return value
