"""Meta-tests: every hook is exercised by a test and documented with its exact signature; plugins use the plugin API only."""

import ast
import inspect
import re
from pathlib import Path

import pytest

from zoo import hookspecs

HOOKS = [name for name, fn in vars(hookspecs).items() if name.startswith("zoo_") and callable(fn)]
ROOT = Path(__file__).resolve().parents[1]


def _documented_hooks() -> dict[str, str]:
    """hook name -> the signature its heading shows, from the "## The hooks" section of docs/plugins.md."""
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = text[text.index("\n## The hooks\n"):]
    section = section[:section.index("\n## ", 1)]
    return dict(re.findall(r"^### `(zoo_\w+)(\([^)]*\))`$", section, re.M))


def test_the_documented_hooks_are_the_hookspecs():
    assert len(HOOKS) >= 8
    assert sorted(_documented_hooks()) == sorted(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook):
    signature = f"({', '.join(inspect.signature(getattr(hookspecs, hook)).parameters)})"
    assert _documented_hooks().get(hook) == signature, f"docs/plugins.md: ### `{hook}{signature}`"


def _hookimpls(path: Path):
    """The names of the functions and methods in a file that are marked with @hookimpl (or @zoo.hookimpl)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            marks = [d.func if isinstance(d, ast.Call) else d for d in node.decorator_list]
            if any((isinstance(d, ast.Name) and d.id == "hookimpl") or (isinstance(d, ast.Attribute) and d.attr == "hookimpl")
                   for d in marks):
                yield node.name, [a.arg for a in node.args.args if a.arg != "self"]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring_and_a_test(hook):
    assert getattr(hookspecs, hook).__doc__, hook
    spec = list(inspect.signature(getattr(hookspecs, hook)).parameters)
    impls = [args for p in (ROOT / "tests").rglob("*.py") for name, args in _hookimpls(p) if name == hook]
    assert impls, f"no test or test plugin implements {hook} with @hookimpl"
    assert all(set(args) <= set(spec) for args in impls), impls


PLUGIN_API = {"zoo", "zoo.api", "zoo.testing"}


def _zoo_imports(path: Path):
    """(line, module) for every import of a zoo module in a file, those inside functions too."""
    import pkgutil

    import zoo

    submodules = {m.name for m in pkgutil.iter_modules(zoo.__path__)}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "zoo")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "zoo":
            yield node.lineno, node.module
            if node.module == "zoo":  # from zoo import backbones: a module too
                yield from ((node.lineno, f"zoo.{a.name}") for a in node.names if a.name in submodules)


def test_plugins_import_only_the_plugin_api():
    """First-party plugins (and the test plugins) import only zoo, zoo.api and zoo.testing: the rest may move."""
    files = [p for p in sorted((ROOT / "plugins").rglob("*.py")) + sorted((ROOT / "tests" / "plugins").rglob("*.py"))
             if "build" not in p.relative_to(ROOT).parts]  # pip's in-tree build copies are not sources
    assert len(files) >= 15
    bad = [f"{path.relative_to(ROOT)}:{line}: {module}" for path in files for line, module in _zoo_imports(path)
           if module not in PLUGIN_API]
    assert not bad, bad


def test_zoos_core_does_not_import_the_plugin_api():
    """zoo.api sits on top: only plugins (the built-ins in zoo/builtins too) import it, so it adds no import loop."""
    core = [p for p in sorted((ROOT / "zoo").glob("*.py")) if p.name != "api.py"]
    assert len(core) >= 20
    users = [f"{path.name}:{line}" for path in core for line, module in _zoo_imports(path) if module == "zoo.api"]
    assert not users, users


def test_the_plugin_import_check_catches_every_form(tmp_path):
    sample = tmp_path / "p.py"
    sample.write_text("import zoo.registry\nfrom zoo import backbones, hookimpl\nfrom zoo.api import WithHead\n"
                      "def f():\n    from zoo.data import Dataset\n    import zoo.api, zoo\n")
    assert [m for _, m in _zoo_imports(sample) if m not in PLUGIN_API] == ["zoo.registry", "zoo.backbones", "zoo.data"]


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


def _all_commands():
    """Every command, the ones plugins add (built-ins included) too: list_commands loads them."""
    import click

    from zoo.cli import cli

    def walk(group, ctx, prefix):
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            sub = command.make_context(name, [], parent=ctx, resilient_parsing=True)
            yield f"{prefix} {name}", command, sub
            if isinstance(command, click.Group):
                yield from walk(command, sub, f"{prefix} {name}")

    yield from walk(cli, cli.make_context("zoo", [], resilient_parsing=True), "zoo")


def test_every_option_has_help_and_shows_its_default():
    """One style: help says what an option does, click adds '[default: ...]'; no option hides its default."""
    import enum

    import click

    from zoo.trainer import FinetuneConfig

    fields = {f.name for f in __import__("dataclasses").fields(FinetuneConfig)} - {"backbone", "data"}
    bad = []
    for path, command, ctx in _all_commands():
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden or param.name in ("help", "version"):
                continue
            name = f"{path} {param.opts[-1]}"
            if not (param.help or "").strip():
                bad.append(f"{name}: no help")
            if "default" in (param.help or "").lower():
                bad.append(f"{name}: a hand-written default in its help")
            default = param.get_default(ctx, call=False)
            unset = default in (None, ()) or isinstance(default, enum.Enum)  # click's UNSET sentinel is an Enum member
            has_default = not unset and not (param.is_flag and not param.secondary_opts and not default)
            shown_default = "[default: " in (param.get_help_record(ctx) or ("", ""))[1]
            if (has_default or (path == "zoo finetune" and param.name in fields)) and not shown_default:
                bad.append(f"{name}: its default is not shown")
    assert not bad, bad


def test_finetune_defaults_are_the_configs():
    """What --help shows is what a run gets: the CLI's defaults are FinetuneConfig's."""
    import dataclasses

    import click

    from zoo.cli import cli
    from zoo.trainer import FinetuneConfig

    defaults = {f.name: f.default for f in dataclasses.fields(FinetuneConfig) if f.default is not dataclasses.MISSING}
    options = {p.name: p for p in cli.commands["finetune"].params if isinstance(p, click.Option)}
    wrong = {k: (options[k].default, v) for k, v in defaults.items() if k in options and v is not None and options[k].default != v}
    assert not wrong, wrong
    assert len([k for k, v in defaults.items() if k in options and v is not None]) >= 16
    from zoo.recipe import TRIGGERS

    for k in (*TRIGGERS, "aug"):  # left to the default recipe: --help says so, and what applies without it
        assert defaults[k] is None and "default recipe" in options[k].show_default, k
    compare = {p.name: p.default for p in cli.commands["compare"].params}
    assert (compare["val_split"], compare["seed"]) == (defaults["val_split"], defaults["seed"])  # the same split as finetune


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


def test_the_finetune_option_tables_are_the_schemas():
    """docs/cli.md's tables of zoo finetune's settings are zoo.config.markdown_table(), between its two markers."""
    import re

    from zoo import config

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- settings: generated [^\n]*-->\n(.*?)<!-- end of settings -->\n", text, re.S)
    assert block, "docs/cli.md has lost the markers of the generated settings tables"
    assert block.group(1) == config.markdown_table(), (
        "docs/cli.md differs from the settings schema: write zoo.config.markdown_table() between its markers")


def test_every_setting_with_a_flag_is_an_option_of_finetune_and_in_the_table():
    """The schema makes the options: each setting with a flag is one, with the schema's help and default."""
    import click

    from zoo import config
    from zoo.cli import cli

    options = {p.name: p for p in cli.commands["finetune"].params if isinstance(p, click.Option)}
    table = config.markdown_table()
    for name, s in config.SETTINGS.items():
        if s.flag == "":
            assert name not in options, name
            continue
        assert options[name].help == s.help and config.flag_of(name) in options[name].opts, name
        assert f"`{config.option_label(name)}`" in table.replace("\\|", "|"), name


# -- the layers -----------------------------------------------------------------------------------
def import_graph(folder: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, counting every import (top level or inside a function).
    Imports of the package itself (its public face, which re-exports) are not design edges."""
    import ast

    modules = {}
    for path in folder.rglob("*.py"):
        parts = (package, *path.relative_to(folder).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def owner(name: str) -> str | None:  # "zoo.rundir.RunDir" -> "zoo.rundir"
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        base = module if path.name == "__init__.py" else module.rpartition(".")[0]
        graph[module] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                parts = base.split(".")[: len(base.split(".")) - node.level + 1] if node.level else []
                source = ".".join([*parts, *([node.module] if node.module else [])])
                names = [source, *(f"{source}.{a.name}" for a in node.names)]
            else:
                continue
            graph[module] |= {m for m in map(owner, names) if m and m not in (module, package)}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_zoo_has_no_import_cycle():
    assert import_cycles(import_graph(ROOT / "zoo", "zoo")) == []


def test_the_cycle_check_sees_an_import_inside_a_function(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import f\n")  # the package face: not a design edge
    (pkg / "a.py").write_text("def f():\n    from pkg.sub import b\n    return b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from ..c import C\n")
    (pkg / "c.py").write_text("import pkg\nclass C:\n    def m(self):\n        from pkg import a\n")
    (pkg / "d.py").write_text("from pkg import c\n")  # imports into the cycle, is not part of it
    assert import_cycles(import_graph(pkg, "pkg")) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_every_zoo_module_is_in_a_layer_of_the_contract():
    """The import-linter contract (make lint) checks only the modules its layers name: a new module must join one."""
    import tomllib

    contract = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"][0]
    named = {m.strip() for layer in contract["layers"] for m in layer.split("|")}
    modules = import_graph(ROOT / "zoo", "zoo")
    outside = sorted(m for m in modules if m != "zoo" and not any(m == n or m.startswith(n + ".") for n in named))
    assert not outside, f"not in any layer of [tool.importlinter]: {outside}"
