"""Built-in heads. A head factory takes the timm model and the class count and returns the
model to train: ``linear`` keeps timm's own classifier (so plain timm loads the result);
other heads wrap the pooled features in a :class:`zoo.api.WithHead`. Written against the
plugin API, as a plugin's would be."""

from __future__ import annotations

from zoo.api import hookimpl, number


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

    from zoo.api import WithHead, feature_dim

    hidden = number(hidden, "head 'mlp': hidden", whole=True, positive=True)
    dropout = number(dropout, "head 'mlp': dropout", at_least=0, below=1)
    model.reset_classifier(0)
    head = nn.Sequential(nn.Linear(feature_dim(model), hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))
    return WithHead(model, head)
