"""Meta-tests: every hook is exercised by a test and documented with its exact signature."""

import inspect
from pathlib import Path

import pytest

from zoo import hookspecs

HOOKS = [name for name, fn in vars(hookspecs).items() if name.startswith("zoo_") and callable(fn)]
ROOT = Path(__file__).resolve().parents[1]


def test_hook_list_is_what_the_docs_promise():
    assert set(HOOKS) == {"zoo_register_backbones", "zoo_register_heads", "zoo_register_freeze_policies", "zoo_register_datasets",
                          "zoo_register_commands", "zoo_on_train_start", "zoo_on_epoch_end", "zoo_on_train_end"}


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring_and_a_test(hook):
    assert getattr(hookspecs, hook).__doc__, hook
    tests = [p for p in (ROOT / "tests").rglob("*.py") if p.name != "test_meta.py"]
    assert any(f"def {hook}(" in p.read_text() for p in tests), f"no test or test plugin implements {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    signature = f"{hook}({', '.join(inspect.signature(getattr(hookspecs, hook)).parameters)})"
    assert signature in (ROOT / "docs" / "plugins.md").read_text(), signature
