"""zoo-peft: a ``lora`` freeze policy built on the peft library.

LoRA adapters go on the timm backbone's Linear and Conv2d layers (not on the head, which
trains fully); every other backbone weight stays frozen. The published weights
(``model.safetensors``, ``checkpoints/best.safetensors``) have the adapters merged into the
original layers, so plain timm and ``zoo predict`` load them without peft; ``checkpoints/last.pt``
keeps the adapters, so ``--resume`` continues training them.
"""

from __future__ import annotations

import fnmatch
import re

from zoo.api import FreezePolicy, GroupSetting, UsageError, hookimpl, number


@hookimpl
def zoo_register_freeze_policies(register):
    register("lora", LoRA, description="LoRA adapters (peft) on the backbone's Linear/Conv2d layers, base weights frozen, "
                                       "head trains; options r=8, alpha=16, dropout=0.0, target=all, exclude=none")


def _patterns(name: str, value) -> tuple[str, ...]:
    """A comma-separated string or a list of module-name patterns."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, str) and p.strip() for p in items):
        raise UsageError(f"freeze option {name} must be module-name patterns, e.g. {name}=qkv,fc1 or {name}='blocks.*.attn.*'")
    return tuple(p.strip() for p in items)


def _matches(module: str, patterns: tuple[str, ...]) -> bool:
    """A pattern matches a module's full name or a dotted suffix of it, literally (``qkv``) or as a glob (``mlp.fc*``)."""
    return any(fnmatch.fnmatchcase(module, p) or fnmatch.fnmatchcase(module, "*." + p) for p in patterns)


class LoRA(FreezePolicy):
    """The ``lora`` policy: every group trains, but only the adapters and the head have trainable weights."""

    def __init__(self, r=8, alpha=16, dropout=0.0, target=None, exclude=None):
        self.r = number(r, "freeze option r", whole=True, at_least=1)
        self.alpha = number(alpha, "freeze option alpha", positive=True)
        self.dropout = number(dropout, "freeze option dropout", at_least=0, below=1)
        self.target, self.exclude = _patterns("target", target), _patterns("exclude", exclude)
        self.head: set[str] = set()  # the head's parameter names, found by prepare

    def settings(self, epoch, n_groups):
        return [GroupSetting(trainable=True)] * n_groups

    def prepare(self, model):
        """Adds LoRA adapters in place: the model keeps its class and its other parameter names."""
        from peft import LoraConfig, inject_adapter_in_model

        from zoo.api import WithHead, classifier_param_names

        if isinstance(model, WithHead):
            self.head = {n for n, _ in model.named_parameters() if n.startswith("head.")}
            targets = ["backbone." + n for n in self.targets(model.backbone, model)]
        else:
            self.head = classifier_param_names(model)
            targets = self.targets(model, model)
        config = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, bias="none",
                            # exact names: peft matches a list by suffix, which would also catch e.g. layer1.0.conv1 for conv1
                            target_modules="^(?:" + "|".join(map(re.escape, targets)) + ")$")
        return inject_adapter_in_model(config, model)

    def targets(self, backbone, model) -> list[str]:
        """The names (in ``backbone``) of the layers that get adapters; the head's layers never do."""
        from torch import nn

        params = dict(model.named_parameters())
        head_ids = {id(params[n]) for n in self.head}
        found = []
        for name, module in backbone.named_modules():
            if not isinstance(module, (nn.Linear, nn.Conv2d)) or any(id(p) in head_ids for p in module.parameters()):
                continue  # the classifier trains fully
            if isinstance(module, nn.Conv2d) and module.groups != 1:
                continue  # peft cannot merge adapters of grouped (depthwise) convolutions
            if (self.target and not _matches(name, self.target)) or _matches(name, self.exclude):
                continue
            found.append(name)
        if not found:
            which = f"target={','.join(self.target)}" if self.target else "the backbone"
            raise UsageError(f"freeze policy 'lora': no Linear or Conv2d layer in {which} to put adapters on"
                             + (f" (after exclude={','.join(self.exclude)})" if self.exclude else ""))
        return found

    def trainable(self, param_name: str) -> bool:
        return ".lora_" in param_name or param_name in self.head

    def export(self, model) -> dict:
        """The weights for the model as built before prepare: adapters merged, on a copy."""
        import copy

        import torch
        from peft.tuners.tuners_utils import BaseTunerLayer

        with torch.no_grad():
            merged = copy.deepcopy(model)  # the model being trained keeps its adapters
            for name, module in list(merged.named_modules()):
                if isinstance(module, BaseTunerLayer):
                    module.merge(safe_merge=True)  # safe_merge: refuse NaNs instead of publishing them
                    parent, _, child = name.rpartition(".")
                    setattr(merged.get_submodule(parent), child, module.get_base_layer())
            return merged.state_dict()
