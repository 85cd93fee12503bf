"""zoo-broken: a plugin whose import fails. zoo must skip it with a one-line warning."""

from zoo import hookimpl

raise RuntimeError("boom at import")


@hookimpl
def zoo_register_heads(register):  # never reached
    register("broken-head", lambda model, num_classes: model)
