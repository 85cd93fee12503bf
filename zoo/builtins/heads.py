"""Built-in heads. A head factory takes the timm model and the class count and returns the
model to train: ``linear`` keeps timm's own classifier (so plain timm loads the result);
other heads wrap the pooled features in a :class:`zoo.backbones.WithHead`."""

from __future__ import annotations

from zoo.hookspecs import hookimpl


@hookimpl
def zoo_register_heads(register):
    register("linear", linear, description="timm's own classifier, re-sized (plain timm loads the result)")
    register("mlp", mlp, description="hidden layer + ReLU + dropout; options: hidden=256, dropout=0.1")


def linear(model, num_classes: int):
    if model.num_classes != num_classes:
        model.reset_classifier(num_classes)
    return model


def mlp(model, num_classes: int, hidden: int = 256, dropout: float = 0.1):
    from torch import nn

    from zoo.backbones import WithHead, feature_dim

    model.reset_classifier(0)
    head = nn.Sequential(
        nn.Linear(feature_dim(model), int(hidden)), nn.ReLU(inplace=True), nn.Dropout(float(dropout)), nn.Linear(int(hidden), num_classes)
    )
    return WithHead(model, head)
