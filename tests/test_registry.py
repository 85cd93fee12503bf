import json
import re

import pytest
import yaml
from conftest import alias_bomb

from zoo import forkserver
from zoo.errors import NotFoundError, UsageError, ZooError
from zoo.registry import get_registry, load_registry_file, packaged_registry, parse_source, resolve


def test_packaged_registry_is_curated():
    data = yaml.safe_load(packaged_registry().read_text())
    assert data["schema"] == 1
    entries = data["backbones"]
    assert 15 <= len(entries) <= 25
    for name, entry in entries.items():
        for key in ("source", "description", "family", "params_m", "input_size", "license", "pretrain", "tags"):
            assert key in entry, (name, key)
        assert entry["source"].startswith(("timm:", "hf-hub:", "local-dir:"))
    families = {e["family"] for e in entries.values()}
    assert {"resnet", "convnext", "vit"} <= families


def test_resolution_order(tmp_path, monkeypatch):
    assert resolve("resnet18").source == "timm:resnet18.a1_in1k"  # registry name
    assert resolve("resnet50").kind == "hf-hub"
    spec = resolve("convnext_nano.in12k_ft_in1k")  # any timm name
    assert (spec.kind, spec.target) == ("timm", "convnext_nano.in12k_ft_in1k")
    assert resolve("hf-hub:me/model@v1").revision == "v1"  # explicit prefix
    assert resolve("timm:resnet18").target == "resnet18"  # prefix beats the registry name
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    assert resolve(str(tmp_path / "m")).kind == "local-dir"  # a path


def test_unknown_name_suggests_close_matches():
    with pytest.raises(NotFoundError, match=r"Did you mean: .*convnext-tiny"):
        resolve("convnext-tiyn")


def test_user_registry_overrides_packaged(tmp_path, monkeypatch):
    user = tmp_path / "config" / "zoo" / "registry.yaml"
    user.parent.mkdir(parents=True)
    user.write_text("schema: 1\nbackbones:\n  resnet18:\n    source: timm:resnet18.tv_in1k\n  mine:\n    source: local-dir:models/mine\n")
    extra = tmp_path / "extra.yaml"
    extra.write_text("schema: 1\nbackbones:\n  mine:\n    source: timm:test_vit\n    description: from ZOO_REGISTRY\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert resolve("resnet18").target == "resnet18.tv_in1k"
    assert resolve("mine").target == str((user.parent / "models/mine").resolve())  # relative to the file
    monkeypatch.setenv("ZOO_REGISTRY", str(extra))
    from zoo import registry

    registry.reset()
    assert resolve("mine").source == "timm:test_vit"  # ZOO_REGISTRY is applied last


def test_malformed_registry_names_file_and_line(tmp_path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: 1\nbackbones:\n  a:\n    source: timm:x\n    tags: [unclosed\n")
    with pytest.raises(UsageError, match=r"bad.yaml:\d+"):
        load_registry_file(bad)
    bad.write_text("schema: 1\nbackbones:\n  ok:\n    source: timm:resnet18\n  weird:\n    source: ftp://x\n")
    with pytest.raises(UsageError, match=r"bad.yaml:5: unknown source 'ftp://x'"):
        load_registry_file(bad)
    bad.write_text("schema: 7\nbackbones: {}\n")
    with pytest.raises(UsageError, match="schema 7"):
        load_registry_file(bad)
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "missing.yaml"))
    with pytest.raises(ZooError, match=r"missing\.yaml does not exist"):
        get_registry()


def test_parse_source_rejects_bad_hub_ids():
    with pytest.raises(UsageError, match="not a Hub repo id"):
        parse_source("hf-hub:no-slash")


def test_list_wildcards_and_natural_sort(run):
    result = run("list", "backbones", "resnet*", "--json")
    names = [r["name"] for r in json.loads(result.output)]
    assert names == ["resnet18", "resnet50"]
    result = run("list", "backbones", "convnext", "--json")  # a bare word matches anywhere
    assert {r["name"] for r in json.loads(result.output)} == {"convnext-atto", "convnext-tiny", "convnext-base"}


def test_list_all_includes_timm_models_and_is_cached(run, tmp_path, monkeypatch):
    from importlib.metadata import version

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))  # empty: the first listing asks timm
    result = run("list", "backbones", "test_resnet*", "--all", "--json")
    rows = json.loads(result.output)
    assert any(r["name"] == "test_resnet.r160_in1k" and r["provider"] == "timm" for r in rows)
    cache = tmp_path / "cache" / f"timm-{version('timm')}-pretrained.json"
    assert "test_resnet.r160_in1k" in json.loads(cache.read_text())
    # The next listing reads the cache file, not timm: a name only the file holds is listed.
    cache.write_text(json.dumps(["test_resnet.only_in_the_cache"]))
    result = run("list", "backbones", "test_resnet*", "--all", "--json")
    names = {r["name"] for r in json.loads(result.output) if r["provider"] == "timm"}
    assert names == {"test_resnet.only_in_the_cache"}
    for damaged in ('{"not": "a list"}', "[1, 2]", "[\"test_resnet"):  # the wrong shape, or cut short: listed again
        cache.write_text(damaged)
        result = run("list", "backbones", "test_resnet*", "--all", "--json")
        assert result.exit_code == 0 and "test_resnet.r160_in1k" in result.output, result.stderr
        assert "test_resnet.r160_in1k" in json.loads(cache.read_text())  # and stored again


def model_folder(path, classes=("a", "b", "c")):
    """A real timm model folder: test_resnet's config.json and model.safetensors."""
    import timm
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf

    model = timm.create_model("test_resnet", num_classes=len(classes))
    path.mkdir(parents=True)
    save_file(model.state_dict(), path / "model.safetensors")
    save_config_for_hf(model, str(path / "config.json"), model_config={"label_names": list(classes)})
    return model


def test_a_package_backbone_is_made_only_when_built(run, tmp_path):
    """A plugin's ``package:DIST`` backbone: listed from the package's metadata, its folder made on first build."""
    from importlib import metadata

    import torch

    import zoo
    from zoo import backbones
    from zoo.hookspecs import hookimpl
    from zoo.plugins import get_plugins

    saved, calls = model_folder(tmp_path / "made"), []

    def make():
        calls.append("made")
        return tmp_path / "made"

    def broken():
        raise RuntimeError("boom")

    class Packages:
        @hookimpl
        def zoo_register_backbones(self, register):
            register("pkg-net", "package:pyyaml", folder=make, description="test_resnet from a package", license="mit")
            register("gone-net", "package:no-such-distribution-for-zoo", folder=make)
            register("broken-net", "package:pyyaml", folder=broken)
            register("not-a-package-net", "timm:test_resnet", folder=make)
            register("uncallable-net", "package:pyyaml", folder="/some/folder")

    get_plugins().add(Packages(), "pkgs")
    listed = run("list", "backbones", "*-net", "--json")
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {"pkg-net", "gone-net", "broken-net"}
    assert (rows["pkg-net"]["source"], rows["pkg-net"]["offline"]) == (f"package:pyyaml@{metadata.version('pyyaml')}", True)
    assert (rows["gone-net"]["source"], rows["gone-net"]["offline"]) == ("package:no-such-distribution-for-zoo", False)
    err = listed.stderr
    assert "'not-a-package-net': a backbone registered with folder= needs the source package:DISTRIBUTION (skipped)" in err
    assert "folder= for 'uncallable-net' must be a callable that returns a model folder (skipped)" in err
    assert calls == []  # listing and resolving build nothing
    spec = resolve("pkg-net")
    assert (spec.kind, spec.target, spec.revision, calls) == ("package", "pyyaml", metadata.version("pyyaml"), [])

    model = backbones.create(spec, num_classes=3, classes=["a", "b", "c"])
    assert calls == ["made"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values(), strict=False))
    assert zoo.load("pkg-net")[2] == ["a", "b", "c"]  # a registered model folder loads with its own classes
    with pytest.raises(ZooError, match=r"^backbone 'broken-net' \(plugin 'pkgs'\) could not provide its weights: RuntimeError: boom$"):
        backbones.create(resolve("broken-net"), num_classes=3)


def test_list_marks_what_runs_offline(run, tmp_path, monkeypatch):
    model_folder(tmp_path / "full")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")  # no weights
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"backbones": {
        "full-dir": {"source": f"local-dir:{tmp_path / 'full'}"},
        "half-dir": {"source": f"local-dir:{tmp_path / 'half'}"},
        "gone-dir": {"source": f"local-dir:{tmp_path / 'gone'}"},
        "hub-model": {"source": "hf-hub:nobody-zoo-test/nothing"},
        "timm-untagged": {"source": "timm:test_resnet"},  # which weights is timm's choice: never claimed
    }}))
    monkeypatch.setenv("ZOO_REGISTRY", str(extra))
    rows = {r["name"]: r["offline"] for r in json.loads(run("list", "backbones", "--json").stdout)}
    assert rows["zoo-fmnist-resnet"] is True  # shipped with zoo
    assert {k: rows[k] for k in ("full-dir", "half-dir", "gone-dir", "hub-model", "timm-untagged")} == {
        "full-dir": True, "half-dir": False, "gone-dir": False, "hub-model": False, "timm-untagged": False}

    only = [r["name"] for r in json.loads(run("list", "backbones", "--offline", "--json").stdout)]
    assert {"full-dir", "zoo-fmnist-resnet"} <= set(only) and all(rows[n] for n in only)
    assert [r["name"] for r in json.loads(run("list", "--offline", "--json").stdout)["backbones"]] == only
    text = run("list", "backbones", "dir", "--offline").stdout
    assert "offline yes: the weights are on this machine" in " ".join(text.split())
    refused = run("list", "heads", "--offline")
    assert refused.exit_code == 2 and "use 'zoo list backbones --offline'" in refused.stderr


BAD_YAML = {  # name -> (bytes of the registry file, what the one line says after its path)
    "alias-bomb": (alias_bomb().encode(), r": expands to more than 100,000 values"),
    "aliases-nesting-deep": ("".join(f"l{i}: &l{i} {'[' * 20}{f'*l{i - 1}' if i else 'x'}{']' * 20}\n" for i in range(8)).encode(),
                             r":\d+: nested more than 100 levels deep"),
    "nested-deep": (b"a: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", r":1: not valid YAML \(exceeded maximum nesting depth\)"),
    "latin-1": (b"backbones:\n  x:\n    source: timm:resnet18\n    description: caf\xe9\n", r":4: not UTF-8 \(byte 0xe9\)"),
    "nul-byte": (b"backbones:\n  x:\n    source: timm:resnet18\x00\n", r":3: not valid YAML \(character #x0000 is not allowed\)"),
    "control-character": (b"backbones:\n  x:\n    description: \x1b[2J\n", r":3: not valid YAML \(character #x001b is not allowed\)"),
    "huge": (b"# " + b"x" * (2 << 20) + b"\n", r" is larger than 1 MiB"),
    "python-tag": (b"backbones: !!python/object/apply:os.system [touch PWNED]\n", r":1: not valid YAML \(could not determine a constructor"),
    "two-documents": (b"backbones: {}\n---\nbackbones: {}\n", r":2: not valid YAML \(expected a single document in the stream, but found"),
    "integer-of-5000-digits": (b"backbones:\n  x:\n    source: timm:resnet18\n    params_m: " + b"9" * 5000 + b"\n",
                               r": a value zoo cannot read \(Exceeds the limit \(4300 digits\)"),
}


def zoo_fails_fast(tmp_path, env: dict, args: list, message: str) -> None:
    """``zoo ARGS`` exits 2 within seconds, printing only ``Error: MESSAGE`` (a regular expression)."""
    import os
    import sys
    import time

    started = time.monotonic()
    done = forkserver.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env}, cwd=tmp_path)
    assert time.monotonic() - started < 30, args  # `zoo info` imports torch first: seconds on a busy machine
    assert done.returncode == 2, (args, done.stdout[-500:], done.stderr)
    assert re.fullmatch(f"Error: {message}.*\n", done.stderr), done.stderr


def test_a_registry_fifo_or_device_is_refused_not_waited_on(tmp_path):
    """A FIFO without a writer would block the open forever, /dev/zero would never end: only regular files are read."""
    import os

    os.mkfifo(tmp_path / "fifo.yaml")
    for path in (tmp_path / "fifo.yaml", "/dev/zero"):
        zoo_fails_fast(tmp_path, {"ZOO_REGISTRY": str(path)}, ["list"], f"registry file {re.escape(str(path))} is not a regular file")


@pytest.mark.parametrize("name", sorted(BAD_YAML))
def test_bad_registry_yaml_is_one_line_naming_the_file_and_fast(tmp_path, name):
    """`zoo list` on a ZOO_REGISTRY file that would hang, crash or expand: one line naming the file and line."""
    blob, message = BAD_YAML[name]
    (tmp_path / "reg.yaml").write_bytes(blob)
    zoo_fails_fast(tmp_path, {"ZOO_REGISTRY": str(tmp_path / "reg.yaml")}, ["list"],
                   f"registry file {re.escape(str(tmp_path / 'reg.yaml'))}{message}")
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("name", ["alias-bomb", "latin-1"])
def test_bad_user_registry_yaml_fails_list_and_info_fast(tmp_path, name):
    """The same for the user registry file: `zoo list --json` and `zoo info` end at once too (they used to hang)."""
    blob, message = BAD_YAML[name]
    user = tmp_path / "config" / "zoo" / "registry.yaml"
    user.parent.mkdir(parents=True)
    user.write_bytes(blob)
    for args in (["list", "--json"], ["info", "x"]):
        zoo_fails_fast(tmp_path, {"XDG_CONFIG_HOME": str(tmp_path / "config")}, args, f"registry file {re.escape(str(user))}{message}")


def test_yaml_aliases_within_bounds_still_work(tmp_path, monkeypatch):
    """Anchors and aliases used plainly (shared settings), and a BOM, read as before."""
    extra = tmp_path / "extra.yaml"
    extra.write_text("backbones:\n  a:\n    source: timm:resnet18\n    tags: &t [small, fast]\n  b:\n    source: timm:resnet34\n    tags: *t\n",
                     encoding="utf-8-sig")
    specs = load_registry_file(extra)
    assert specs["a"].meta["tags"] == specs["b"].meta["tags"] == ["small", "fast"]


def test_a_plugin_added_in_process_reaches_a_registry_built_before():
    """zoo.plugins never calls into zoo.registry: the registry sees that the plugin set changed and builds itself again."""
    from zoo import hookimpl
    from zoo.plugins import get_plugins

    class Added:
        @hookimpl
        def zoo_register_backbones(self, register):
            register("added-net", "timm:test_resnet", description="added in-process")

    before = get_registry()
    assert "added-net" not in before.specs
    get_plugins().add(Added(), "added")
    assert resolve("added-net").source == "timm:test_resnet"
    after = get_registry()
    assert after is not before and get_registry() is after  # built again once, then kept until the set changes
