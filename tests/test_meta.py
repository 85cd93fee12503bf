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


def _commands(group, prefix="zoo"):
    import click

    for name, command in sorted(group.commands.items()):
        yield f"{prefix} {name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix} {name}")


def _section(text: str, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of the same or a higher level."""
    import re

    m = re.search(rf"^(#+) {re.escape(heading)}\n", text, re.M)
    assert m, f"docs/cli.md has no heading '{heading}'"
    rest = text[m.end():]
    end = re.search(rf"^#{{1,{len(m.group(1))}}} ", rest, re.M)
    return rest[:end.start()] if end else rest


def test_every_cli_command_and_option_is_in_the_reference():
    import click

    from zoo.cli import cli

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    missing = []
    for path, command in _commands(cli):
        section = _section(text, path)
        for param in command.params:
            if isinstance(param, click.Option):
                missing += [f"{path} {opt}" for opt in param.opts + param.secondary_opts if opt.startswith("--") and f"`{opt}" not in section
                            and f"/ {opt}" not in section]
    assert not missing, f"options missing from docs/cli.md: {missing}"


def test_docs_site_builds_in_strict_mode(tmp_path):
    """mkdocs --strict: every page is in the nav, and every link and anchor between pages resolves."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "site" / "plugin-tutorial" / "index.html").is_file()


def test_the_command_table_lists_every_command():
    import re

    import click

    from zoo.cli import cli

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    table = _section(text, "The `zoo` command")
    listed = re.findall(r"^\| \[`(zoo [a-z -]+)`\]\(#([a-z-]+)\) \|", table, re.M)
    commands = [path for path, command in _commands(cli) if not isinstance(command, click.Group)]
    assert sorted(path for path, _ in listed) == sorted(commands)
    assert all(anchor == path.replace(" ", "-") for path, anchor in listed), listed
