"""Errors shown to users: one line that says what to do next."""

from __future__ import annotations

import signal

# What a user, a terminal or a scheduler sends to stop zoo (a stopped fine-tune exits 130): the main process
# handles them, never a decoding worker; torchrun's agent passes them on to its workers.
STOP_SIGNALS = tuple(getattr(signal, s) for s in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, s))


class ZooError(Exception):
    """A failure the user can act on. The CLI prints it without a traceback.

    Its message never holds a token: it is redacted here (zoo.redact), so every error is, whatever
    exception or server text it quotes.
    """

    exit_code = 1

    def __init__(self, message: object = "", *args: object) -> None:
        from zoo.redact import redact

        super().__init__(redact(str(message)), *args)


class UsageError(ZooError):
    """Bad input on the command line or in a config (exit code 2)."""

    exit_code = 2


class Interrupted(ZooError):
    """Ctrl-C, SIGTERM or SIGHUP stopped a fine-tune (exit code 130); the message says how to go on."""

    exit_code = 130


class NotFoundError(UsageError):
    """An unknown name: backbone, head, freeze policy, dataset or plugin."""


def closest(name: str, candidates, n: int = 3) -> str:
    """A "did you mean ..." suffix naming the closest candidates, or ''."""
    import difflib

    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""


def shown(text) -> str:
    """``text`` made safe to print on a terminal: every unprintable character (C0 and C1 controls such as
    ESC, CR and BEL, bidi overrides and other format characters, line separators) is written as its
    Python escape (``\\x1b``, ``\\u202e``). Names read from files go through it, so they cannot move the
    cursor, retitle the window or reorder what the terminal shows."""
    text = str(text)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def command(*words) -> str:
    """A command line to paste into a shell, every word quoted (a folder named ``$(...)`` stays a name)."""
    import shlex

    return shown(shlex.join(str(w) for w in words))
