"""The packaged registry.yaml, registered through the same hook plugins use."""

from zoo.hookspecs import hookimpl


@hookimpl
def zoo_register_backbones(register):
    from zoo.registry import load_registry_file, packaged_registry

    for name, spec in load_registry_file(packaged_registry()).items():
        meta = dict(spec.meta)
        register(name, spec.source, description=meta.pop("description", ""), **meta)
