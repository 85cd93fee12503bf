"""Reading a YAML file someone else wrote (a registry file, a ``--config`` file), within bounds.

A YAML file is small, but what it says can be huge: aliases let 600 bytes stand for a billion
strings ("billion laughs"), which PyYAML builds as shared objects and anything that walks them (a
listing, JSON, a copy) then expands. Here a file is read only when it is at most ``MAX_BYTES``,
UTF-8, free of control characters, at most ``MAX_DEPTH`` levels deep and at most ``MAX_VALUES``
values with every alias expanded; anything else is one line naming the file (and the line).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import yaml

from zoo.errors import UsageError

MAX_BYTES = 1 << 20  # registries and configs are a few kilobytes
MAX_DEPTH = 100  # levels of nested mappings and lists
MAX_VALUES = 100_000  # scalars, mappings and lists, each alias counted as what it stands for



class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: fast, and it caps nesting itself
    """The safe loader reading ``1e-4`` as a number, as YAML 1.2 and other tools do (YAML 1.1 wants ``1.0e-4``)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def load(path: Path, *, what: str = "YAML file"):
    """The data of the YAML file at ``path``; ``what`` names it in errors (``registry file``, ``--config``)."""
    return construct(compose(path, what=what), path, what=what)


def compose(path: Path, *, what: str = "YAML file") -> yaml.Node | None:
    """The checked node graph of the file (None when it is empty): its marks give line numbers."""
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # opening a FIFO would wait for a writer, reading /dev/zero never ends
            raise UsageError(f"{what} {path} is not a regular file")
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)  # a huge file stops at the cap
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise UsageError(f"{what} {path} is larger than {MAX_BYTES >> 20} MiB: is it the file you meant?")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(f"{what} {path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8") from None
    return _compose(text, path, what)


def loads(text: str, *, what: str, name: str):
    """The data of a short YAML text given on the command line (``--head-opt NAME=TEXT``), within the same bounds."""
    return construct(_compose(text, name, what), name, what=what)


def _compose(text: str, path, what: str) -> yaml.Node | None:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.reader.ReaderError as exc:  # a NUL or another control character: it has a position, no mark
        line = text[: exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise UsageError(f"{what} {path}:{line}: not valid YAML (character #x{char:04x} is not allowed)") from None
    except yaml.YAMLError as exc:
        raise _invalid(exc, path, what) from None
    except RecursionError:  # the pure-Python parser on a file nested deeper than Python's stack
        raise UsageError(f"{what} {path}: nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()
    if node is not None:
        _check_size(node, path, what)
    return node


def construct(node: yaml.Node | None, path: Path, *, what: str = "YAML file"):
    """The Python data of a node from :func:`compose` (safe types only)."""
    if node is None:
        return None
    try:
        return yaml.constructor.SafeConstructor().construct_document(node)
    except yaml.YAMLError as exc:  # an unknown tag, an unhashable key
        raise _invalid(exc, path, what) from None
    except (ValueError, TypeError, OverflowError) as exc:  # an integer of 5,000 digits, a timestamp out of range
        raise UsageError(f"{what} {path}: a value zoo cannot read ({str(exc).split(':')[0]})") from None


def _invalid(exc: yaml.YAMLError, path: Path, what: str) -> UsageError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}" if mark else str(path)
    problem, context = getattr(exc, "problem", None), getattr(exc, "context", None)
    if problem and context and problem.startswith("but "):  # "expected a single document..., but found another"
        problem = f"{context}, {problem}"
    problem = problem or context or str(exc)
    return UsageError(f"{what} {where}: not valid YAML ({problem})")


def _check_size(root: yaml.Node, path: Path, what: str) -> None:
    """Refuse a graph deeper than MAX_DEPTH or larger than MAX_VALUES once its aliases are expanded.

    An alias is the same node object as its anchor, so each node's expanded size and depth are
    computed once (children first, without recursion): linear in the file, however much it expands to.
    """
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels) below and including it
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in done:
            continue
        children = _children(node)
        if children and not children_done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in done)
            continue
        values = 1 + sum(done[id(c)][0] for c in children)
        levels = 1 + max((done[id(c)][1] for c in children), default=0)
        if levels > MAX_DEPTH:
            raise UsageError(f"{what} {path}:{node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
        if values > MAX_VALUES:
            raise UsageError(f"{what} {path}: expands to more than {MAX_VALUES:,} values "
                             f"(aliases that repeat aliases?); write it out plainly")
        done[id(node)] = (values, levels)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []
