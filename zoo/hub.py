"""The only module that talks to huggingface_hub: publish runs, download models, one-line errors.

A push is one commit made from a temporary folder that holds exactly what is uploaded:
model.safetensors, config.json, the README.md model card (generated for the repo, so its usage
says ``hf-hub:ORG/NAME``), run_config.yaml, metrics.jsonl, the PNG plots and, on request, the
checkpoints. Files the repo already holds unchanged are skipped by huggingface_hub, so pushing
an unchanged run makes no commit. A card on the Hub that was edited by hand (its zoo marker is
missing or does not match) is kept unless the caller asks to overwrite it.

Only regular files inside the run directory are staged, and no link is ever followed: a link (to a
file or a folder), a FIFO or a device file is refused when zoo needs it (model.safetensors,
config.json, the best checkpoint) and skipped with a warning otherwise. The card is rendered from
the staged folder, so it too sees only what is uploaded.

Tokens come from HF_TOKEN or the Hub login (huggingface_hub reads them); zoo never writes,
prints or logs them: errors, warnings, huggingface_hub's log lines and the staged text files
(card, config, metrics) are redacted (zoo.redact) before anything is cut or written.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zoo.errors import UsageError, ZooError, command
from zoo.redact import redact

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
RUN_FILES = ("model.safetensors", "config.json", "run_config.yaml", "metrics.jsonl")
NEEDED = ("config.json", "model.safetensors")  # refused when not regular files; anything else is skipped
TEXT_FILES = ("config.json", "run_config.yaml", "metrics.jsonl", "README.md")  # redacted when staged
ONLY_REGULAR = "zoo uploads only regular files inside the run directory and follows no link"
RETRY_WAITS = (1.0, 2.0, 4.0)  # seconds before each retry of a transient failure (5xx, 429, network)
RETRY_STATUS = (408, 429, 500, 502, 503, 504)


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


def ready_offline() -> str:
    """What to use instead when the Hub cannot be reached: the registry backbones whose weights are here."""
    from zoo.registry import get_registry

    try:
        names = [r["name"] for r in get_registry().rows() if r["offline"]]
    except ZooError:  # e.g. a broken registry file: the download's own error is the one to report
        return "zoo list --offline shows the backbones ready offline"
    shown_names = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return f"backbones ready offline: {shown_names} (zoo list --offline)" if names else "no backbone is ready offline here"


def not_cached(subject: str, *, backbone: bool = False, also: str = "") -> str:
    """``subject`` is not in the cache and the Hub is off or unreachable: what to do, in one line.

    ``backbone``: name the backbones that work offline; ``also``: one more way out, e.g. ", or use --no-pretrained".
    """
    from huggingface_hub import constants

    if unreachable() and not constants.HF_HUB_OFFLINE:
        what, fix = f"cannot reach the Hub at {constants.ENDPOINT}", "connect to the network (or set HF_ENDPOINT) and run again to fill the cache"
    else:
        what, fix = "offline mode (HF_HUB_OFFLINE=1) and it is not in the cache", "run once with the network (without HF_HUB_OFFLINE) to fill the cache"
    return f"{subject}: {what}; {ready_offline()}, or {fix}{also}" if backbone else f"{subject}: {what}; {fix}"


# -- downloads ----------------------------------------------------------------------------
def download_model(repo: str, *, backbone: bool = False) -> Path:
    """Download (or find in the cache) a model repo's config.json and model.safetensors.

    ``backbone``: it is used as a backbone, so a failure offline names the backbones that work offline.
    """
    from huggingface_hub import snapshot_download

    _quiet()
    repo_id, revision = _split(repo)
    try:
        with offline_unless_reachable():
            return Path(snapshot_download(repo_id, revision=revision, allow_patterns=["config.json", "model.safetensors"]))
    except Exception as exc:
        raise hub_error(exc, repo, backbone=backbone) from None


def download_file(repo: str, filename: str, *, backbone: bool = False) -> Path:
    from huggingface_hub import hf_hub_download

    _quiet()
    repo_id, revision = _split(repo)
    try:
        with offline_unless_reachable():
            return Path(hf_hub_download(repo_id, filename, revision=revision))
    except Exception as exc:
        raise hub_error(exc, repo, backbone=backbone) from None


# -- push ---------------------------------------------------------------------------------
def push(run_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
         commit_message: str | None = None, with_checkpoints: bool = False, overwrite_card: bool = False,
         dry_run: str | Path | None = None) -> dict:
    """Publish a run directory to the Hub repo ``repo_id`` as one commit; see the module docstring.

    Returns ``repo_id``, ``repo_url``, ``revision``, ``commit`` (the new commit's sha, or None when
    nothing changed), ``head`` (the branch's commit after the push), ``files`` (what the folder held),
    ``notes`` (one-line remarks, e.g. a kept hand-edited card) and ``dry_run`` (the folder written).
    With ``dry_run``, the folder is written there and nothing is uploaded.
    """
    run_dir = Path(run_dir)
    repo_id = parse_repo_id(repo_id)
    _check_run(run_dir, with_checkpoints)
    retry = retry_command(run_dir, repo_id, private=private, revision=revision, commit_message=commit_message,
                          with_checkpoints=with_checkpoints, overwrite_card=overwrite_card)
    message = commit_message or f"Upload {run_dir.resolve().name} with zoo"
    if dry_run is not None:
        folder = _empty_folder(Path(dry_run), run_dir)
        notes = stage_run(run_dir, folder, repo_id, with_checkpoints=with_checkpoints, link=False)
        return {"repo_id": repo_id, "repo_url": None, "revision": revision or "main", "commit": None, "head": None,
                "files": _files(folder), "notes": [*notes, f"dry run: wrote {folder}, uploaded nothing"],
                "dry_run": str(folder)}
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        folder = Path(tmp) / "upload"
        try:
            notes = stage_run(run_dir, folder, repo_id, with_checkpoints=with_checkpoints, link=True)
        except OSError as exc:
            raise ZooError(f"cannot prepare the upload of {run_dir}: {exc.strerror or exc}; nothing was pushed") from None
        return _publish(folder, repo_id, private=private, revision=revision, commit_message=message,
                        overwrite_card=overwrite_card, notes=notes, retry=retry)


def push_best(trainer, repo_id: str, *, private: bool = False, revision: str | None = None) -> dict:
    """Publish the best checkpoint so far of a running fine-tune (``--hub-strategy best``).

    The folder holds checkpoints/best.safetensors as model.safetensors, the config.json and card the
    finished run would have with the best metrics so far, run_config.yaml and metrics.jsonl; staged
    like :func:`push` (regular files only, text redacted). Skipped entries are warned about.
    """
    import json

    from zoo import cards, rundir
    from zoo.plugins import warn

    repo_id = parse_repo_id(repo_id)
    run_dir = Path(trainer.run_dir)
    best = trainer.best or {}
    metrics = dict(best.get("metrics") or {}, epoch=best.get("epoch"), eval_split=trainer.eval_split)
    _need(run_dir, rundir.BEST)
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        folder = Path(tmp) / "upload"
        folder.mkdir()
        notes: list[str] = []
        _take(run_dir, rundir.BEST, folder, notes, link=True, dest="model.safetensors")
        config = cards.config_dict(trainer, metrics)
        _write_text(folder / "config.json", json.dumps(config, indent=2), "config.json", notes)
        for name in (rundir.RUN_CONFIG, rundir.METRICS):
            _take(run_dir, name, folder, notes, link=False)
        card = cards.card_for_run(folder, repo_id=repo_id, config=config, plots=[])
        _write_text(folder / "README.md", card, "README.md", notes)
        for note in notes:
            warn(note.removeprefix("warning: "))
        top1 = metrics.get("top1")
        message = f"Best checkpoint so far (epoch {best.get('epoch')}{f', top-1 {top1:.4f}' if top1 is not None else ''}) with zoo"
        with _no_progress_bars():  # the fine-tune's own progress display owns the terminal
            return _publish(folder, repo_id, private=private, revision=revision, commit_message=message,
                            overwrite_card=False, notes=[], retry=None)


@contextlib.contextmanager
def _no_progress_bars():
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


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


def retry_command(run_dir: Path, repo_id: str, *, private=False, revision=None, commit_message=None,
                  with_checkpoints=False, overwrite_card=False) -> str:
    """The exact ``zoo push`` command that repeats a push."""
    args = ["zoo", "push", str(run_dir), repo_id]
    if private:
        args.append("--private")
    if revision:
        args += ["--revision", revision]
    if commit_message:
        args += ["--commit-message", commit_message]
    if with_checkpoints:
        args.append("--with-checkpoints")
    if overwrite_card:
        args.append("--overwrite-card")
    return shlex.join(args)


def _check_run(run_dir: Path, with_checkpoints: bool) -> None:
    if not run_dir.is_dir():  # the run directory itself may be a link: the user named it
        raise UsageError(f"{run_dir} is not a directory: give a zoo run directory")
    for name in NEEDED:
        if not os.path.lexists(run_dir / name):
            hint = (f"is the run finished? resume it with: {command('zoo', 'finetune', '--resume', run_dir)}" if (run_dir / "run_config.yaml").is_file()
                    else "give a zoo run directory")
            raise UsageError(f"{run_dir} has no {name}: {hint}")
        _need(run_dir, name)
    checkpoints = run_dir / "checkpoints"
    if with_checkpoints and not (checkpoints.is_symlink() or checkpoints.is_dir()):  # a link is skipped with a warning
        raise UsageError(f"{run_dir} has no checkpoints/ folder to push: leave out --with-checkpoints")


def _kind(run_dir: Path, name: str) -> str | None:
    """None for a regular file ``run_dir/name``, else what it is; no link is followed, in ``name``'s folders either."""
    parts = Path(name).parts
    for depth in range(1, len(parts)):
        folder = "/".join(parts[:depth])
        if os.path.islink(run_dir / folder):
            return f"reached through the symbolic link {folder}"
    try:
        mode = os.lstat(run_dir / name).st_mode
    except FileNotFoundError:
        return "missing"
    if stat.S_ISREG(mode):
        return None
    for test, kind in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device file"), (stat.S_ISBLK, "a device file")):
        if test(mode):
            return kind
    return "not a regular file"


def _need(run_dir: Path, name: str) -> None:
    """Refuse a file zoo must upload unless it is a regular file inside the run directory."""
    kind = _kind(run_dir, name)
    if kind is not None:
        raise UsageError(f"{run_dir / name} is {kind}: {ONLY_REGULAR}; put the file itself there")


def _empty_folder(folder: Path, run_dir: Path) -> Path:
    folder = folder.expanduser()
    if folder.resolve() == run_dir.resolve() or run_dir.resolve() in folder.resolve().parents:
        raise UsageError(f"--dry-run {folder}: choose a folder outside the run directory")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"--dry-run {folder}: exists and is not an empty folder; choose a new one")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _open_regular(src: Path) -> int:
    """A file descriptor for ``src``, which must be a regular file reached through no link at its end."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # NONBLOCK: a FIFO must not hang the push
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{src} is not a regular file")
    return fd


def _place(src: Path, dst: Path, *, link: bool) -> None:
    """Hard link when allowed (no copy of big weights), else copy; never through a link. Never touches ``src``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:
            pass
        else:
            if stat.S_ISREG(os.lstat(dst).st_mode):  # src may have become a link since it was checked
                return
            dst.unlink()
    with open(_open_regular(src), "rb") as f, open(dst, "xb") as out:
        shutil.copyfileobj(f, out)


def _write_text(dst: Path, text: str, name: str, notes: list[str]) -> None:
    clean = redact(text)
    if clean != text:
        notes.append(f"warning: {name} held a token: uploading it with the token blanked out (***)")
    dst.write_text(clean, encoding="utf-8")


def _take(run_dir: Path, name: str, folder: Path, notes: list[str], *, link: bool, dest: str | None = None,
          walk: bool = False) -> bool:
    """Stage ``run_dir/name`` as ``folder/dest`` if it is a regular file (text files redacted), or with ``walk``
    the regular files of the folder ``name``; note anything else (a link, a FIFO...) as not uploaded.

    Hidden entries are left out silently (temporary files of atomic writes).
    """
    src, kind = run_dir / name, _kind(run_dir, name)
    if kind == "missing" or Path(name).name.startswith("."):
        return False
    if kind == "a folder" and walk:
        for entry in sorted(os.listdir(src)):
            _take(run_dir, f"{name}/{entry}", folder, notes, link=link, walk=True)
        return True
    if kind is not None:
        notes.append(f"warning: not uploading {name}: it is {kind} ({ONLY_REGULAR})")
        return False
    dst = folder / (dest or name)
    if Path(name).name in TEXT_FILES:
        with open(_open_regular(src), "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        dst.parent.mkdir(parents=True, exist_ok=True)
        _write_text(dst, text, name, notes)
    else:
        _place(src, dst, link=link)
    return True


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def stage_run(run_dir: Path, folder: Path, repo_id: str, *, with_checkpoints: bool = False, link: bool = True) -> list[str]:
    """Fill ``folder`` with what a push of ``run_dir`` uploads; returns one-line notes (see the module docstring)."""
    from zoo import cards

    notes: list[str] = []
    folder.mkdir(parents=True, exist_ok=True)
    for name in [*RUN_FILES, *sorted(p.name for p in run_dir.glob("*.png"))]:
        _take(run_dir, name, folder, notes, link=link)
    if with_checkpoints:
        _take(run_dir, "checkpoints", folder, notes, link=link, walk=True)
    readme = folder / "README.md"
    if _take(run_dir, "README.md", folder, notes, link=False) and not cards.is_generated(readme.read_text(encoding="utf-8")):
        # The user edited the card in the run directory: publish their text, not a regenerated one.
        notes.append(f"README.md in {run_dir} was edited by hand: uploading it as it is (not regenerated)")
    else:
        # Rendered from the staged folder: the card shows only what is uploaded.
        _write_text(readme, cards.card_for_run(folder, repo_id=repo_id), "README.md", notes)
    return notes


def _publish(folder: Path, repo_id: str, *, private: bool, revision: str | None, commit_message: str,
             overwrite_card: bool, notes: list[str], retry: str | None) -> dict:
    """Create the repo if needed and commit ``folder`` to it as one commit (unchanged files skipped)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from zoo import cards

    _quiet()
    api = HfApi()
    try:
        url = _with_retry(lambda: api.create_repo(repo_id, private=private, exist_ok=True))
        info = _with_retry(lambda: _branch_info(api, repo_id, revision))
        if private and not info.private:
            notes.append(f"{repo_id} already exists and is public: --private applies only to new repos (change it in the repo settings)")
        remote = {s.rfilename for s in info.siblings or []}
        card = folder / "README.md"
        if card.is_file() and "README.md" in remote and not overwrite_card:
            online = _with_retry(lambda: _read_remote(repo_id, "README.md", info.sha))
            if online != card.read_text(encoding="utf-8") and not cards.is_generated(online):
                card.unlink()
                notes.append(f"README.md on {repo_id} was edited by hand: kept it, uploaded everything else (--overwrite-card replaces it)")
        files = _files(folder)

        def commit_folder():
            # Fresh operations on every attempt: each retry asks the Hub again which files it already
            # holds, so a commit whose answer was lost is not made twice.
            operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files]
            # create_commit rather than upload_folder: upload_folder may split a slow upload into several commits.
            return api.create_commit(repo_id, operations=operations, commit_message=commit_message, revision=revision)

        commit = _with_retry(commit_folder)
    except ZooError:
        raise
    except Exception as exc:
        raise hub_error(exc, repo_id, push=True, retry=retry) from None
    changed = commit.oid != info.sha
    if not changed:
        notes.append(f"nothing changed: {repo_id} already holds this run")
    return {"repo_id": repo_id, "repo_url": redact(str(url)), "revision": revision or "main",
            "commit": commit.oid if changed else None, "commit_url": redact(commit.commit_url) if changed else None,
            "head": commit.oid, "files": files, "notes": notes, "dry_run": None}


def _branch_info(api, repo_id: str, revision: str | None):
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        return api.model_info(repo_id, revision=revision)
    except RevisionNotFoundError:
        if not revision:
            raise
        api.create_branch(repo_id, branch=revision, exist_ok=True)  # push to a new branch
        return api.model_info(repo_id, revision=revision)


def _read_remote(repo_id: str, filename: str, revision: str) -> str:
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id, filename, revision=revision)).read_text(encoding="utf-8", errors="replace")


def _transient(exc: Exception) -> bool:
    """A failure worth retrying: a 5xx/429/408 answer, a timeout or a network error."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return status in RETRY_STATUS
    kinds: list[type] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):
        try:
            mod = __import__(module)
            kinds += [mod.TimeoutException, mod.NetworkError, mod.RemoteProtocolError]
        except (ImportError, AttributeError):
            pass
    return isinstance(exc, tuple(kinds))


def _with_retry(call: Callable[[], Any], waits: tuple[float, ...] = RETRY_WAITS) -> Any:
    """Call, retrying transient failures with exponential backoff (huggingface_hub retries its own
    preupload and LFS transfers; repo creation and the commit are retried here)."""
    for wait in (*waits, None):
        try:
            return call()
        except Exception as exc:
            if wait is None or not _transient(exc):
                raise
            time.sleep(wait)


# -- errors -------------------------------------------------------------------------------
def _status(exc: Exception) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def _server_message(exc: Exception) -> str:
    """The server's (or the exception's) message, redacted first, then cut to 200 characters."""
    text = getattr(exc, "server_message", None) or (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return " ".join(redact(str(text)).split())[:200]


def hub_error(exc: Exception, repo: str, *, push: bool = False, retry: str | None = None, backbone: bool = False) -> ZooError:
    """One line that says what went wrong with a Hub call and what to do; never the token.

    ``push``: the call was part of a push (then a 401/404 means "log in"/"check the name" for
    writing); ``retry``: the command that repeats the push, added to the line; ``backbone``: see ``not_cached``.
    """
    reason = _reason(exc, repo, push=push, backbone=backbone)
    if retry:
        reason += f"; the run directory was not changed; retry with: {retry}"
    return ZooError(" ".join(reason.split()))  # ZooError redacts its message


def _reason(exc: Exception, repo: str, *, push: bool, backbone: bool = False) -> str:
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
            return not_cached(f"hf-hub:{repo}", backbone=backbone)
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
