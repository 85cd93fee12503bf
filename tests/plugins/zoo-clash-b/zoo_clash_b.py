"""zoo-clash-b: registers the head ``twin`` too (a hidden layer), and asks pluggy to call it last.

trylast puts it first in pluggy's list of implementations; zoo's order (built-ins, then entry-point
names) must still decide, so zoo-clash-a's ``twin`` wins the clash. Building it appends "b" to the
file named by ZOO_CLASH_LOG.
"""

import os

from zoo import hookimpl


@hookimpl(trylast=True)
def zoo_register_heads(register):
    register("twin", twin, description="zoo-clash-b's twin: a hidden layer of 8")


def twin(model, num_classes: int):
    from torch import nn

    from zoo.api import WithHead, feature_dim

    if os.environ.get("ZOO_CLASH_LOG"):
        with open(os.environ["ZOO_CLASH_LOG"], "a") as f:
            f.write("b\n")
    model.reset_classifier(0)
    return WithHead(model, nn.Sequential(nn.Linear(feature_dim(model), 8), nn.ReLU(), nn.Linear(8, num_classes)))
