"""Publishing a run to the Hub: a folder staged from the run directory, then one commit (zoo.hub).

The folder holds exactly what is uploaded: model.safetensors, config.json, the README.md model
card (generated for the repo, so its usage says ``hf-hub:ORG/NAME``), run_config.yaml,
metrics.jsonl, the PNG plots and, on request, the checkpoints. Files the repo already holds
unchanged are skipped by huggingface_hub, so pushing an unchanged run makes no commit. A card on
the Hub that was edited by hand (its zoo marker is missing or does not match) is kept unless the
caller asks to overwrite it.

Only regular files inside the run directory are staged, and no link is ever followed: a link (to a
file or a folder), a FIFO or a device file is refused when zoo needs it (model.safetensors,
config.json, the best checkpoint) and skipped with a warning otherwise. The card is rendered from
the staged folder, so it too sees only what is uploaded. The staged text files (card, config,
run config, metrics) are redacted (zoo.redact): a token in them is blanked out, with a warning.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import tempfile
from pathlib import Path

from zoo import cards, hub
from zoo.errors import UsageError, ZooError, command
from zoo.redact import redact
from zoo.rundir import TEXT_FILES, RunDir

RUN_FILES = (RunDir.WEIGHTS, RunDir.CONFIG, RunDir.RUN_CONFIG, RunDir.METRICS)
NEEDED = (RunDir.CONFIG, RunDir.WEIGHTS)  # refused when not regular files; anything else is skipped
ONLY_REGULAR = "zoo uploads only regular files inside the run directory and follows no link"


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
    repo_id = hub.parse_repo_id(repo_id)
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
    from zoo.plugins import warn

    repo_id = hub.parse_repo_id(repo_id)
    run_dir = Path(trainer.run_dir)
    best = trainer.best or {}
    metrics = dict(best.get("metrics") or {}, epoch=best.get("epoch"), eval_split=trainer.eval_split)
    _need(run_dir, RunDir.BEST)
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as tmp:
        folder = Path(tmp) / "upload"
        folder.mkdir()
        notes: list[str] = []
        _take(run_dir, RunDir.BEST, folder, notes, link=True, dest=RunDir.WEIGHTS)
        config = cards.config_dict(trainer, metrics)
        _write_text(folder / RunDir.CONFIG, json.dumps(config, indent=2), RunDir.CONFIG, notes)
        for name in (RunDir.RUN_CONFIG, RunDir.METRICS):
            _take(run_dir, name, folder, notes, link=False)
        card = cards.card_for_run(folder, repo_id=repo_id, config=config, plots=[])
        _write_text(folder / RunDir.CARD, card, RunDir.CARD, notes)
        for note in notes:
            warn(note.removeprefix("warning: "))
        top1 = metrics.get("top1")
        message = f"Best checkpoint so far (epoch {best.get('epoch')}{f', top-1 {top1:.4f}' if top1 is not None else ''}) with zoo"
        with hub.no_progress_bars():  # the fine-tune's own progress display owns the terminal
            return _publish(folder, repo_id, private=private, revision=revision, commit_message=message,
                            overwrite_card=False, notes=[], retry=None)


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
            hint = (f"is the run finished? resume it with: {command('zoo', 'finetune', '--resume', run_dir)}" if (run_dir / RunDir.RUN_CONFIG).is_file()
                    else "give a zoo run directory")
            raise UsageError(f"{run_dir} has no {name}: {hint}")
        _need(run_dir, name)
    checkpoints = run_dir / RunDir.CHECKPOINTS
    if with_checkpoints and not (checkpoints.is_symlink() or checkpoints.is_dir()):  # a link is skipped with a warning
        raise UsageError(f"{run_dir} has no {RunDir.CHECKPOINTS}/ folder to push: leave out --with-checkpoints")


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
    notes: list[str] = []
    folder.mkdir(parents=True, exist_ok=True)
    for name in [*RUN_FILES, *sorted(p.name for p in run_dir.glob("*.png"))]:
        _take(run_dir, name, folder, notes, link=link)
    if with_checkpoints:
        _take(run_dir, RunDir.CHECKPOINTS, folder, notes, link=link, walk=True)
    readme = folder / RunDir.CARD
    if _take(run_dir, RunDir.CARD, folder, notes, link=False) and not cards.is_generated(readme.read_text(encoding="utf-8")):
        # The user edited the card in the run directory: publish their text, not a regenerated one.
        notes.append(f"{RunDir.CARD} in {run_dir} was edited by hand: uploading it as it is (not regenerated)")
    else:
        # Rendered from the staged folder: the card shows only what is uploaded.
        _write_text(readme, cards.card_for_run(folder, repo_id=repo_id), RunDir.CARD, notes)
    return notes


def _publish(folder: Path, repo_id: str, *, private: bool, revision: str | None, commit_message: str,
             overwrite_card: bool, notes: list[str], retry: str | None) -> dict:
    """Create the repo if needed and commit ``folder`` to it as one commit (unchanged files skipped)."""
    upload = hub.Upload(repo_id, private=private, revision=revision, retry=retry)
    if private and not upload.private:
        notes.append(f"{repo_id} already exists and is public: --private applies only to new repos (change it in the repo settings)")
    card = folder / RunDir.CARD
    if card.is_file() and RunDir.CARD in upload.files and not overwrite_card:
        online = upload.read(RunDir.CARD)
        if online != card.read_text(encoding="utf-8") and not cards.is_generated(online):
            card.unlink()
            notes.append(f"{RunDir.CARD} on {repo_id} was edited by hand: kept it, uploaded everything else (--overwrite-card replaces it)")
    files = _files(folder)
    commit = upload.commit(folder, files, commit_message)
    changed = commit.oid != upload.head
    if not changed:
        notes.append(f"nothing changed: {repo_id} already holds this run")
    return {"repo_id": repo_id, "repo_url": redact(str(upload.url)), "revision": revision or "main",
            "commit": commit.oid if changed else None, "commit_url": redact(commit.commit_url) if changed else None,
            "head": commit.oid, "files": files, "notes": notes, "dry_run": None}
