"""The only module that talks to huggingface_hub: downloads, repos and commits, retries, one-line errors.

It knows nothing of zoo's files: callers name what to fetch or upload (zoo.rundir owns the names,
zoo.publish stages a run). Transient failures (the status codes and network errors that
huggingface_hub's own ``http_backoff`` retries) are retried with backoff; anything else becomes one line
that says what to do. Tokens come from HF_TOKEN or the Hub login (huggingface_hub reads them); zoo never
writes, prints or logs them: errors, warnings and huggingface_hub's log lines are redacted (zoo.redact).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zoo.errors import UsageError, ZooError
from zoo.redact import redact

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
RETRIES = 3  # of a transient failure, after waits that double from http_backoff's base wait
RETRY_AFTER_MAX = 60  # seconds: the longest a server's Retry-After makes zoo wait before its next try


def _quiet() -> None:
    """huggingface_hub logs retries as warnings; zoo reports one line of its own instead.

    What it still logs (errors) and the Python warnings it issues are redacted on their way out.
    """
    import logging as std
    import warnings

    from huggingface_hub.utils import logging

    logging.set_verbosity_error()
    for handler in std.getLogger("huggingface_hub").handlers:
        if not any(isinstance(f, _Redact) for f in handler.filters):
            handler.addFilter(_Redact())
    if not getattr(warnings.showwarning, "redacts", False):
        show = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            show(redact(str(message)), category, filename, lineno, file, line)

        showwarning.redacts = True
        warnings.showwarning = showwarning


class _Redact:
    """A logging filter that redacts a record's message and exception text (it drops nothing)."""

    def filter(self, record) -> bool:
        import logging as std

        try:
            text = record.getMessage()
        except Exception:
            text = f"{record.msg} {record.args}"
        record.msg, record.args = redact(text), None
        if record.exc_info:
            record.exc_text, record.exc_info = redact(std.Formatter().formatException(record.exc_info)), None
        return True


def _split(repo: str) -> tuple[str, str | None]:
    repo_id, _, revision = repo.partition("@")
    return repo_id, revision or None


def parse_repo_id(repo: str) -> str:
    """``ORG/NAME`` (an ``hf-hub:`` prefix is accepted); anything else is a usage error."""
    repo_id = str(repo).removeprefix("hf-hub:")
    if not REPO_ID.match(repo_id) or ".." in repo_id:
        raise UsageError(f"'{repo}' is not a Hub repo id: give it as ORG/NAME (your user name or an organization)")
    return repo_id


# -- reachability ----------------------------------------------------------------------------
_probe: tuple[float, bool] | None = None  # (when, whether the Hub answered): asked again after PROBE_TTL seconds
PROBE_TTL = 60.0


def unreachable() -> bool:
    """Whether the last probe found the Hub unreachable (see ``offline_unless_reachable``)."""
    return _probe is not None and not _probe[1]


@contextlib.contextmanager
def offline_unless_reachable(timeout: float = 2.0):
    """Inside, huggingface_hub is in offline mode when the Hub endpoint (or the proxy in front of it) does not
    accept a connection: files in the cache still load, and a missing one fails at once instead of after
    a minute of retries. The probe's answer is kept for a minute; the user's own HF_HUB_OFFLINE is left alone."""
    global _probe
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        yield
        return
    if _probe is None or time.monotonic() - _probe[0] > PROBE_TTL:
        _probe = (time.monotonic(), _connects(constants.ENDPOINT, timeout))
    if _probe[1]:
        yield
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


def _connects(url: str, timeout: float) -> bool:
    """A TCP connect to the URL's host (or its proxy), name lookup included, within ``timeout`` seconds."""
    import socket
    import threading
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and host and not urllib.request.proxy_bypass(host):
        via = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = via.hostname, via.port or (443 if via.scheme == "https" else 80)
    done: list[bool] = []

    def attempt():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            done.append(True)
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=attempt, daemon=True)  # a name lookup has no timeout of its own
    thread.start()
    thread.join(timeout)
    return bool(done)


def not_cached(subject: str, *, alternatives: Callable[[], str] | None = None, also: str = "") -> str:
    """``subject`` is not in the cache and the Hub is off or unreachable: what to do, in one line.

    ``alternatives``: says what works offline instead (e.g. zoo.registry.ready_offline for a backbone);
    ``also``: one more way out, e.g. ", or use --no-pretrained".
    """
    from huggingface_hub import constants

    if unreachable() and not constants.HF_HUB_OFFLINE:
        what, fix = f"cannot reach the Hub at {constants.ENDPOINT}", "connect to the network (or set HF_ENDPOINT) and run again to fill the cache"
    else:
        what, fix = "offline mode (HF_HUB_OFFLINE=1) and it is not in the cache", "run once with the network (without HF_HUB_OFFLINE) to fill the cache"
    return f"{subject}: {what}; {alternatives()}, or {fix}{also}" if alternatives else f"{subject}: {what}; {fix}"


# -- downloads ----------------------------------------------------------------------------
def download_files(repo: str, filenames: Sequence[str], *, alternatives: Callable[[], str] | None = None) -> Path:
    """The folder (in the cache) holding ``filenames`` of the repo ``ORG/NAME[@REV]``, and nothing else of it.

    ``alternatives``: see :func:`not_cached`.
    """
    from huggingface_hub import snapshot_download

    _quiet()
    repo_id, revision = _split(repo)
    try:
        with offline_unless_reachable():
            return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(filenames)))
    except Exception as exc:
        raise hub_error(exc, repo, alternatives=alternatives) from None


def download_file(repo: str, filename: str, *, alternatives: Callable[[], str] | None = None) -> Path:
    from huggingface_hub import hf_hub_download

    _quiet()
    repo_id, revision = _split(repo)
    try:
        with offline_unless_reachable():
            return Path(hf_hub_download(repo_id, filename, revision=revision))
    except Exception as exc:
        raise hub_error(exc, repo, alternatives=alternatives) from None


# -- repos and commits ----------------------------------------------------------------------
def ensure_repo(repo_id: str, *, private: bool = False) -> str:
    """Create the repo (or find it): checks the login and the name before a long fine-tune starts."""
    from huggingface_hub import HfApi

    _quiet()
    repo_id = parse_repo_id(repo_id)
    try:
        return str(_with_retry(lambda: HfApi().create_repo(repo_id, private=private, exist_ok=True)))
    except Exception as exc:
        err = hub_error(exc, repo_id, push=True)
        raise type(err)(f"{err}; fix that (or leave out --push-to-hub) and run again") from None


class Upload:
    """One upload to a Hub repo branch: the repo is created if needed and the branch read, then
    :meth:`commit` makes one commit. Every call is retried when the failure is transient; any
    other failure is one line that ends with ``retry`` (the command that repeats the upload)."""

    def __init__(self, repo_id: str, *, private: bool = False, revision: str | None = None, retry: str | None = None):
        from huggingface_hub import HfApi

        _quiet()
        self.repo_id, self.revision, self.retry = repo_id, revision, retry
        self.api = HfApi()
        self.url = self._call(lambda: self.api.create_repo(repo_id, private=private, exist_ok=True))
        info = self._call(self._branch_info)
        self.private = bool(info.private)
        self.files = {s.rfilename for s in info.siblings or []}  # what the branch holds
        self.head = info.sha

    def _call(self, call: Callable[[], Any]) -> Any:
        try:
            return _with_retry(call)
        except ZooError:
            raise
        except Exception as exc:
            raise hub_error(exc, self.repo_id, push=True, retry=self.retry) from None

    def _branch_info(self):
        from huggingface_hub.errors import RevisionNotFoundError

        try:
            return self.api.model_info(self.repo_id, revision=self.revision)
        except RevisionNotFoundError:
            if not self.revision:
                raise
            self.api.create_branch(self.repo_id, branch=self.revision, exist_ok=True)  # push to a new branch
            return self.api.model_info(self.repo_id, revision=self.revision)

    def read(self, filename: str) -> str:
        """A text file of the branch as it was when the upload began."""
        from huggingface_hub import hf_hub_download

        return self._call(lambda: Path(hf_hub_download(self.repo_id, filename, revision=self.head))
                          .read_text(encoding="utf-8", errors="replace"))

    def commit(self, folder: Path, files: Sequence[str], message: str):
        """Commit ``files`` (paths relative to ``folder``) as one commit; huggingface_hub skips the unchanged.
        Returns its CommitInfo: ``oid`` equals :attr:`head` when nothing changed."""
        from huggingface_hub import CommitOperationAdd

        def attempt():
            # Fresh operations on every attempt: each retry asks the Hub again which files it already
            # holds, so a commit whose answer was lost is not made twice.
            operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files]
            # create_commit rather than upload_folder: upload_folder may split a slow upload into several commits.
            return self.api.create_commit(self.repo_id, operations=operations, commit_message=message, revision=self.revision)

        return self._call(attempt)


@contextlib.contextmanager
def no_progress_bars():
    """huggingface_hub's progress bars off inside (another display owns the terminal)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


# -- retries --------------------------------------------------------------------------------
def _backoff() -> tuple[tuple[int, ...], tuple[type, ...], float, float]:
    """What huggingface_hub's ``http_backoff`` retries by default (status codes, exception types) and its waits."""
    import inspect

    from huggingface_hub.utils import http_backoff

    params = inspect.signature(http_backoff).parameters
    codes, kinds = params["retry_on_status_codes"].default, params["retry_on_exceptions"].default
    codes = (codes,) if isinstance(codes, int) else tuple(codes)
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return codes, (*kinds, ConnectionError, TimeoutError), params["base_wait_time"].default, params["max_wait_time"].default


def _transient(exc: Exception) -> bool:
    """A failure worth retrying: one ``http_backoff`` retries (429, 5xx, a timeout, a network error)."""
    codes, kinds, _, _ = _backoff()
    status = _status(exc)
    return status in codes if status is not None else isinstance(exc, kinds)


def _with_retry(call: Callable[[], Any]) -> Any:
    """Call, retrying transient failures RETRIES times with exponential backoff, or after the server's
    Retry-After when it sent one (huggingface_hub retries its own preupload and LFS transfers, reading
    Retry-After too; repo creation and the commit are retried here)."""
    _, _, base, cap = _backoff()
    for attempt in range(RETRIES + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == RETRIES or not _transient(exc):
                raise
            after = _retry_after(exc)
            time.sleep(min(after, RETRY_AFTER_MAX) if after is not None else min(base * 2 ** attempt, cap))


def _retry_after(exc: Exception) -> int | None:
    """The seconds a server's ``Retry-After: N`` asks for (the HTTP-date form is not read, as in huggingface_hub)."""
    value = getattr(getattr(exc, "response", None), "headers", {}).get("retry-after", "").strip()
    return int(value) if value.isdigit() else None


# -- errors -------------------------------------------------------------------------------
def _status(exc: Exception) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def _server_message(exc: Exception) -> str:
    """The server's (or the exception's) message, redacted first, then cut to 200 characters."""
    text = getattr(exc, "server_message", None) or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return " ".join(redact(str(text)).split())[:200]


def hub_error(exc: Exception, repo: str, *, push: bool = False, retry: str | None = None,
              alternatives: Callable[[], str] | None = None) -> ZooError:
    """One line that says what went wrong with a Hub call and what to do; never the token.

    ``push``: the call was part of a push (then a 401/404 means "log in"/"check the name" for
    writing); ``retry``: the command that repeats the push, added to the line; ``alternatives``: see ``not_cached``.
    """
    reason = _reason(exc, repo, push=push, alternatives=alternatives)
    if retry:
        reason += f"; the run directory was not changed; retry with: {retry}"
    return ZooError(" ".join(reason.split()))  # ZooError redacts its message


def _reason(exc: Exception, repo: str, *, push: bool, alternatives: Callable[[], str] | None = None) -> str:
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    subject = f"push to {repo} failed" if push else f"hf-hub:{repo}"
    status = _status(exc)
    login = "log in: hf auth login or set HF_TOKEN"
    if isinstance(exc, GatedRepoError):
        return f"hf-hub:{repo} is gated: accept its terms on the Hub and {login}"
    if status in (401, 403) and (push or not isinstance(exc, RepositoryNotFoundError)):
        need = "a token with write access to it" if push else "a token that can read it"
        return f"{subject}: the Hub refused the credentials (HTTP {status}); {login} ({need})"
    if isinstance(exc, RepositoryNotFoundError):
        if push:
            return f"{subject}: the repo was not found (HTTP {status or 404}); check the name and that you may write to its namespace ({login})"
        return f"hf-hub:{repo} does not exist or is private: check the name, or {login} if it is private"
    if isinstance(exc, RevisionNotFoundError):
        return f"{subject}: no such revision; check the part after '@' (or --revision)"
    # LocalEntryNotFoundError subclasses EntryNotFoundError: it means "not cached, Hub not reachable".
    if isinstance(exc, LocalEntryNotFoundError) or (not isinstance(exc, HfHubHTTPError) and "offline" in str(exc).lower()):
        if constants.HF_HUB_OFFLINE or unreachable():
            return not_cached(f"hf-hub:{repo}", alternatives=alternatives)
        return (f"hf-hub:{repo}: cannot reach the Hub at {constants.ENDPOINT}; connect to the network "
                "(or set HF_ENDPOINT) and run again to fill the cache")
    if isinstance(exc, EntryNotFoundError):
        return f"hf-hub:{repo} has no such file: is it a zoo or timm model repo?"
    if status is not None:
        detail = _server_message(exc)
        if status == 404:
            return f"{subject}: not found on the Hub (HTTP 404: {detail}); check the name and revision"
        if status == 409:
            return f"{subject}: conflict on the Hub (HTTP 409: {detail}); another operation on the repo may be running, wait and try again"
        if status == 412:
            return f"{subject}: the repo changed during the upload (HTTP 412); run again"
        if status == 429:
            return f"{subject}: too many requests (HTTP 429); wait a few minutes and try again"
        if status >= 500:
            return f"{subject}: the Hub had a server error (HTTP {status}: {detail}) and retries did not help; try again later"
        return f"{subject}: the Hub answered HTTP {status}: {detail}"
    if _transient(exc) or isinstance(exc, (ConnectionError, OSError)):
        return f"{subject}: cannot reach the Hub at {constants.ENDPOINT} ({type(exc).__name__}); check the network or HF_ENDPOINT and run again"
    return f"{subject}: {type(exc).__name__}: {_server_message(exc)}"
