"""Errors shown to users: one line that says what to do next."""

from __future__ import annotations


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


class NotFoundError(UsageError):
    """An unknown name: backbone, head, freeze policy, dataset or plugin."""


def closest(name: str, candidates, n: int = 3) -> str:
    """A "did you mean ..." suffix naming the closest candidates, or ''."""
    import difflib

    matches = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""
