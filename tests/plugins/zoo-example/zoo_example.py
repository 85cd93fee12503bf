"""zoo-example: a small, real zoo plugin (used by zoo's end-to-end tests).

It adds
  * a head ``example-cosine``: a cosine classifier on the backbone's pooled features,
  * a backbone ``example-net`` (timm's tiny ``test_resnet.r160_in1k``),
  * a dataset ``npz`` that claims the ``.npz`` extension (``--data x.npz``): arrays ``images`` (N,H,W[,C]
    uint8), ``labels`` (N ints) and optional ``classes`` (names),
  * a command ``zoo example-hello``,
  * an epoch-end hook that appends one JSON line per epoch to the file named by ZOO_EXAMPLE_LOG.

Registration stays cheap: torch and numpy are imported inside the factories only.
"""

from __future__ import annotations

import json
import os

from zoo import hookimpl


@hookimpl
def zoo_register_heads(register):
    register("example-cosine", cosine_head, description="cosine classifier on the pooled features; option scale=10.0")


def cosine_head(model, num_classes: int, scale: float = 10.0):
    """The timm model without its classifier, followed by a cosine classifier."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from zoo.api import WithHead

    class CosineClassifier(nn.Module):
        """logits = scale * cos(features, class weights)."""

        def __init__(self, in_features: int, out_features: int, scale: float):
            super().__init__()
            self.in_features, self.out_features, self.scale = in_features, out_features, float(scale)
            self.weight = nn.Parameter(torch.empty(out_features, in_features))
            nn.init.normal_(self.weight, std=0.01)

        def forward(self, x):
            return self.scale * F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1))

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale}"

    model.reset_classifier(0)
    return WithHead(model, CosineClassifier(model.num_features, int(num_classes), float(scale)))


@hookimpl
def zoo_register_backbones(register):
    register(
        "example-net",
        "timm:test_resnet.r160_in1k",
        description="timm's tiny test ResNet (from the zoo-example plugin)",
        family="resnet",
        params_m=0.5,
        input_size=160,
        license="apache-2.0",
        pretrain="imagenet-1k",
        tags=["test"],
    )


@hookimpl
def zoo_register_datasets(register):
    register("npz", npz_dataset, extensions=[".npz"], description="npz:FILE or FILE.npz - arrays images, labels, optional classes")


def npz_dataset(arg=None):
    """A numpy .npz file as a zoo dataset with one 'train' split (zoo holds out the validation part)."""
    import numpy as np

    from zoo.api import Dataset, UsageError, array_split

    if not arg:
        raise UsageError("npz needs a file: --data npz:FILE or --data FILE.npz")
    try:
        with np.load(arg, allow_pickle=False) as f:
            images, labels = f["images"], f["labels"]
            classes = [str(c) for c in f["classes"]] if "classes" in f else [str(i) for i in range(int(labels.max()) + 1)]
    except (OSError, KeyError, ValueError) as exc:
        raise UsageError(f"{arg} is not an npz file with arrays 'images' and 'labels': {exc}") from None
    return Dataset("npz", classes, {"train": array_split(images, labels, tag=arg)})


@hookimpl
def zoo_register_commands(cli):
    import click

    @cli.command("example-hello")
    def example_hello():
        """Say hello (a command added by the zoo-example plugin)."""
        click.echo("hello from zoo-example")


@hookimpl
def zoo_on_epoch_end(trainer, epoch, metrics):
    path = os.environ.get("ZOO_EXAMPLE_LOG")
    if not path:
        return
    line = json.dumps({"epoch": epoch, "metrics": metrics}, default=str)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
