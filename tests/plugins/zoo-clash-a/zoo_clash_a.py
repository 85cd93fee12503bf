"""zoo-clash-a: registers the head ``twin`` (timm's classifier, logits doubled).

Building it appends "a" to the file named by ZOO_CLASH_LOG: the tests see whose code ran.
"""

import os

from zoo import hookimpl


@hookimpl
def zoo_register_heads(register):
    register("twin", twin, description="zoo-clash-a's twin: timm's classifier, logits doubled")


def twin(model, num_classes: int):
    from torch import nn

    from zoo.api import WithHead, feature_dim

    if os.environ.get("ZOO_CLASH_LOG"):
        with open(os.environ["ZOO_CLASH_LOG"], "a") as f:
            f.write("a\n")

    class Doubled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    model.reset_classifier(0)
    return WithHead(model, Doubled(feature_dim(model), num_classes))
