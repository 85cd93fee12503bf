"""Built-in freeze policies. A policy maps (epoch, number of parameter groups) to one
``GroupSetting`` per group, stem first and the head last (see zoo.freeze). Written against the
plugin API, as a plugin's would be."""

from __future__ import annotations

from zoo.api import GroupSetting, hookimpl, number


@hookimpl
def zoo_register_freeze_policies(register):
    register("none", lambda: Policy(_all), description="everything trains")
    register("head-only", lambda: Policy(_head_only), description="linear probe: backbone frozen, BatchNorm statistics included")
    register("last-n", last_n, description="the last n stage groups and the head train; option n=1")
    register("gradual", gradual, description="head only for k epochs, then all with smaller rates for earlier stages; options k=1, decay=0.5")
    register("layer-decay", layer_decay, description="everything trains, learning rate x decay per group below the head; option decay=0.75")


class Policy:
    """Wraps a function (epoch, n_groups) -> [(trainable, lr_scale), ...]."""

    def __init__(self, fn, **options):
        self.fn, self.options = fn, options

    def settings(self, epoch: int, n_groups: int) -> list[GroupSetting]:
        return [GroupSetting(bool(t), float(s)) for t, s in self.fn(epoch, n_groups)]


def _all(epoch, n):
    return [(True, 1.0)] * n


def _head_only(epoch, n):
    return [(False, 0.0)] * (n - 1) + [(True, 1.0)]


def last_n(n=1):
    n = number(n, "freeze option n", whole=True, positive=True)
    return Policy(lambda epoch, groups: [(i >= groups - 1 - n, float(i >= groups - 1 - n)) for i in range(groups)], n=n)


def _decayed(decay, groups):
    return [(True, decay ** (groups - 1 - i)) for i in range(groups)]


def gradual(k=1, decay=0.5):
    k, decay = number(k, "freeze option k", whole=True, positive=True), number(decay, "freeze option decay", positive=True)
    return Policy(lambda epoch, groups: _head_only(epoch, groups) if epoch < k else _decayed(decay, groups), k=k, decay=decay)


def layer_decay(decay=0.75):
    decay = number(decay, "freeze option decay", positive=True)
    return Policy(lambda epoch, groups: _decayed(decay, groups), decay=decay)
