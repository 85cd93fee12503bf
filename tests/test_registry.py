import json

import pytest
import yaml

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
    with pytest.raises(ZooError, match="missing.yaml does not exist"):
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


def test_list_all_includes_timm_models_and_is_cached(run, tmp_path):
    result = run("list", "backbones", "test_resnet*", "--all", "--json")
    rows = json.loads(result.output)
    assert any(r["name"] == "test_resnet.r160_in1k" and r["provider"] == "timm" for r in rows)
    from zoo.registry import timm_pretrained_names

    assert timm_pretrained_names()  # now read back from the per-version cache file
