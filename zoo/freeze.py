"""Parameter groups (from timm's ``group_matcher``) and applying a freeze policy to them.

Groups run stem first, head last. A policy gives each group a :class:`GroupSetting` per
epoch; frozen groups stop receiving gradients and their normalization layers stay in
eval mode, so BatchNorm running statistics do not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class GroupSetting:
    """What a freeze policy says about one parameter group for one epoch."""

    trainable: bool
    lr_scale: float = 1.0  # multiplies the learning rate of a trainable group


@runtime_checkable
class FreezePolicy(Protocol):
    """What a freeze-policy factory returns. Only ``settings`` is required; a policy that changes the
    model it trains (adapters such as LoRA) adds the optional methods of :class:`PreparesModel`,
    :class:`FreezesParameters` and :class:`ExportsWeights`, each used only when present."""

    def settings(self, epoch: int, n_groups: int) -> list[GroupSetting]:
        """One setting per parameter group, stem first, the head last; ``epoch`` counts from 0."""
        ...


@runtime_checkable
class PreparesModel(Protocol):
    def prepare(self, model: Any) -> Any:
        """The model to train, built from ``model`` (e.g. with adapters added); called once, before the groups."""
        ...


@runtime_checkable
class FreezesParameters(Protocol):
    def trainable(self, param_name: str) -> bool:
        """False keeps that parameter (a full name from ``model.named_parameters()``) frozen even in a trainable group."""
        ...


@runtime_checkable
class ExportsWeights(Protocol):
    def export(self, model: Any) -> dict:
        """The state dict to publish, for the model as built before ``prepare`` (adapters merged)."""
        ...


@dataclass
class ParamGroup:
    name: str
    params: list[str] = field(default_factory=list)  # parameter names in the model
    norms: list[str] = field(default_factory=list)  # names of normalization modules with running stats
    numel: int = 0


def param_groups(model) -> list[ParamGroup]:
    """The model's stage groups (timm's coarse group_matcher) followed by a 'head' group."""
    from timm.models import group_parameters
    from torch import nn

    from zoo.backbones import WithHead, classifier_param_names

    backbone, prefix = (model.backbone, "backbone.") if isinstance(model, WithHead) else (model, "")
    head = {n for n, _ in model.named_parameters() if n.startswith("head.")} if prefix else classifier_param_names(model)
    try:
        grouped = group_parameters(backbone, backbone.group_matcher(coarse=True))
    except (AttributeError, NotImplementedError):  # architectures without a group matcher: one group
        grouped = {0: [n for n, _ in backbone.named_parameters()]}
    groups = []
    for names in grouped.values():
        names = [prefix + n for n in names if prefix + n not in head]
        if names:
            groups.append(ParamGroup(_label([n.removeprefix(prefix) for n in names], len(groups)), names))
    groups.append(ParamGroup("head", sorted(head, key=list(dict(model.named_parameters())).index)))
    params = dict(model.named_parameters())
    owner = {n: g for g in groups for n in g.params}
    for g in groups:
        g.numel = sum(params[n].numel() for n in g.params)
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            group = _owner_of(name, owner, params)
            if group is not None:
                group.norms.append(name)
    return groups


def _owner_of(module_name: str, owner: dict, params: dict):
    """The group of a module: that of its first parameter, or of its nearest parent's."""
    parts = module_name.split(".")
    while parts:
        prefix = ".".join(parts) + "."
        hit = next((n for n in params if n.startswith(prefix)), None)
        if hit:
            return owner.get(hit)
        parts.pop()
    return None


def _label(names: list[str], index: int) -> str:
    """A readable group name: the longest dotted prefix its parameters share."""
    split = [n.split(".") for n in names]
    common = []
    for parts in zip(*split, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    label = ".".join(common[:-1] if common == split[0] else common)
    if not label or (len(names) > 1 and len({s[0] for s in split}) > 1):
        label = "stem" if index == 0 else f"{split[0][0]}..{split[-1][0]}"
    return label.removeprefix("backbone.")


def apply(model, groups: list[ParamGroup], settings: list[GroupSetting], policy=None, keep_norm_stats: bool = False) -> list:
    """Set requires_grad per group; returns the norm modules that must stay in eval mode: those of frozen
    groups, and with ``keep_norm_stats`` (``--freeze-bn``) every backbone group's (not the new head's).

    A policy with a ``trainable(name) -> bool`` method keeps the parameters it answers False for
    frozen even in trainable groups (LoRA: the base weights stay frozen, the adapters train).
    """
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    allowed = policy.trainable if isinstance(policy, FreezesParameters) else None
    frozen_norms = []
    for i, (group, setting) in enumerate(zip(groups, settings, strict=False)):
        for n in group.params:
            params[n].requires_grad_(setting.trainable and (allowed is None or bool(allowed(n))))
        if norms_frozen(i, len(groups), setting, keep_norm_stats):
            frozen_norms += [modules[n] for n in group.norms]
    return frozen_norms


def norms_frozen(index: int, n_groups: int, setting: GroupSetting, keep_norm_stats: bool) -> bool:
    """Whether group ``index``'s norm layers keep their statistics: when it is frozen, or with
    ``--freeze-bn`` when it is a backbone group (the last group is the new head)."""
    return not setting.trainable or (keep_norm_stats and index < n_groups - 1)


def prepare(policy, model):
    """The model to train: a policy's optional ``prepare(model)`` may change it (e.g. add adapters)."""
    return policy.prepare(model) if isinstance(policy, PreparesModel) else model


def export_state(policy, model) -> dict:
    """The weights to publish: a policy's optional ``export(model)`` returns a state dict for the
    original architecture (adapters merged), so plain timm loads the result."""
    return policy.export(model) if isinstance(policy, ExportsWeights) else model.state_dict()


def train_mode(model, frozen_norms) -> None:
    """model.train(), but frozen normalization layers keep their running statistics."""
    model.train()
    for module in frozen_norms:
        module.eval()


def schedule(policy: FreezePolicy, n_groups: int, epochs: int) -> list[tuple[int, list[GroupSetting]]]:
    """The epochs at which the policy's settings change, with the settings from then on."""
    changes, last = [], None
    for epoch in range(max(1, epochs)):
        settings = policy.settings(epoch, n_groups)
        if settings != last:
            changes.append((epoch, settings))
            last = settings
    return changes
