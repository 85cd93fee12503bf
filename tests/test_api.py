"""zoo.api, the plugin API: every name resolves, importing it is cheap, its validators and the
freeze-policy protocol work through zoo's real plugin loading and training."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import FAST

import zoo
import zoo.api
from zoo.api import FreezePolicy, UsageError, flag, number


def test_every_name_in_all_resolves_and_is_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = doc[doc.index("## The plugin API (zoo.api)"):]
    section = section[:section.index("\n## ", 1)]
    for name in zoo.api.__all__:
        assert getattr(zoo.api, name) is not None
        assert f"`{name}" in section, f"{name} is not in the plugin API section of docs/plugins.md"
    with pytest.raises(AttributeError):
        zoo.api.no_such_name  # noqa: B018


def test_importing_the_api_imports_neither_torch_nor_numpy():
    code = "import sys, zoo.api; print(sorted(m for m in ('torch', 'timm', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("value, kwargs, message", [
    ("big", {}, "head 'h': x must be a number, got 'big'"),
    (True, {}, "must be a number, got True"),  # YAML's true is not 1
    (float("nan"), {}, "must be a number, got nan"),
    (2.5, {"whole": True}, "must be a whole number, got 2.5"),
    (0, {"positive": True}, "must be positive, got 0"),
    (0, {"whole": True, "at_least": 1}, "must be at least 1, got 0"),
    (1, {"at_least": 0, "below": 1}, r"must be in \[0, 1\), got 1$"),
    (3, {"below": 3}, "must be below 3, got 3$"),
])
def test_number_refuses_bad_values_in_one_line(value, kwargs, message):
    with pytest.raises(UsageError, match=message):
        number(value, "head 'h': x", **kwargs)


def test_number_and_flag_accept_good_values():
    assert number("3", "x", whole=True, positive=True) == 3 and isinstance(number(3.0, "x", whole=True), int)
    assert number(0.5, "x", at_least=0, below=1) == 0.5
    assert flag(False, "x") is False
    with pytest.raises(UsageError, match="learn_scale must be true or false, got 'yes'"):
        flag("yes", "head 'h': learn_scale")


@pytest.mark.parametrize("options, message", [
    (["--freeze", "last-n", "--freeze-opt", "n=true"], "freeze option n must be a whole number, got True"),
    (["--freeze", "gradual", "--freeze-opt", "decay=-1"], "freeze option decay must be positive, got -1\n"),
    (["--head", "mlp", "--head-opt", "dropout=1"], "head 'mlp': dropout must be in [0, 1), got 1\n"),
    (["--head", "mlp", "--head-opt", "hidden=wide"], "head 'mlp': hidden must be a whole number, got 'wide'"),
])
def test_built_ins_validate_their_options_with_the_api(run, tmp_path, options, message):
    result = run("finetune", "test_resnet", "--data", "synthetic", "--no-pretrained", "--img-size", "32", "--epochs", "1",
                 "--out", tmp_path / "r", *options)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


class Adapter:
    """A real freeze policy with every optional method: only the classifier trains, the calls are recorded."""

    def __init__(self):
        self.calls: list[str] = []
        self.asked: set[str] = set()

    def settings(self, epoch, n_groups):
        return [zoo.api.GroupSetting(trainable=True)] * n_groups

    def prepare(self, model):
        self.calls.append("prepare")
        return model

    def trainable(self, param_name):
        self.asked.add(param_name)
        return param_name.startswith("fc.")

    def export(self, model):
        self.calls.append("export")
        return model.state_dict()


def test_a_policys_optional_methods_are_found_through_the_protocol(tmp_path):
    from zoo import freeze
    from zoo.testing import add_plugin, build_policy

    adapter, trained = Adapter(), {}

    class Plugin:
        @zoo.hookimpl
        def zoo_register_freeze_policies(self, register):
            register("adapter", lambda: adapter)

        @zoo.hookimpl
        def zoo_on_epoch_end(self, trainer):
            trained["names"] = {n for n, p in trainer.model.named_parameters() if p.requires_grad}

    add_plugin(Plugin(), "adapters")
    policy = build_policy("adapter")  # wrapped so that its failures name the plugin; still a FreezePolicy
    assert isinstance(policy, FreezePolicy) and isinstance(policy, freeze.PreparesModel)
    assert isinstance(policy, freeze.FreezesParameters) and isinstance(policy, freeze.ExportsWeights)
    zoo.finetune(data="synthetic", out=tmp_path / "r", freeze="adapter", **dict(FAST, epochs=1))
    assert adapter.calls[0] == "prepare" and "export" in adapter.calls
    assert trained["names"] == {"fc.weight", "fc.bias"}  # trainable() froze the rest of every trainable group
    assert {"conv1.0.weight", "fc.weight"} <= adapter.asked


def test_a_policy_with_settings_only_is_a_freeze_policy_without_the_optional_parts():
    from zoo import freeze
    from zoo.testing import build_policy

    policy = build_policy("head-only")
    assert isinstance(policy, FreezePolicy)
    assert not isinstance(policy, (freeze.PreparesModel, freeze.FreezesParameters, freeze.ExportsWeights))
    assert freeze.prepare(policy, "model") == "model"
