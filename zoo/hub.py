"""The only module that talks to huggingface_hub."""

from __future__ import annotations

from pathlib import Path

from zoo.errors import ZooError


def _quiet() -> None:
    """huggingface_hub logs retries as warnings; zoo reports one line of its own instead."""
    from huggingface_hub.utils import logging

    logging.set_verbosity_error()


def _split(repo: str) -> tuple[str, str | None]:
    repo_id, _, revision = repo.partition("@")
    return repo_id, revision or None


def download_model(repo: str) -> Path:
    """Download (or find in the cache) a model repo's config.json and model.safetensors."""
    from huggingface_hub import snapshot_download

    _quiet()
    repo_id, revision = _split(repo)
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=["config.json", "model.safetensors"]))
    except Exception as exc:  # noqa: BLE001 - mapped to one line below
        raise hub_error(exc, repo) from None


def download_file(repo: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    _quiet()
    repo_id, revision = _split(repo)
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except Exception as exc:  # noqa: BLE001
        raise hub_error(exc, repo) from None


def hub_error(exc: Exception, repo: str) -> ZooError:
    """One line that says what went wrong with a Hub call and what to do; never the token."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):
        return ZooError(f"hf-hub:{repo} is gated: accept its terms on the Hub and log in (hf auth login or HF_TOKEN)")
    if isinstance(exc, RepositoryNotFoundError):
        return ZooError(f"hf-hub:{repo} does not exist or is private: check the name, or log in (HF_TOKEN) if it is private")
    if isinstance(exc, RevisionNotFoundError):
        return ZooError(f"hf-hub:{repo}: no such revision; check the part after '@'")
    # LocalEntryNotFoundError subclasses EntryNotFoundError: it means "not cached, Hub not reachable".
    if isinstance(exc, LocalEntryNotFoundError) or "offline" in str(exc).lower() or isinstance(exc, (ConnectionError, OSError)):
        where = "offline mode (HF_HUB_OFFLINE=1) and it is not in the cache" if constants.HF_HUB_OFFLINE else f"cannot reach the Hub at {constants.ENDPOINT}"
        return ZooError(f"hf-hub:{repo}: {where}; connect to the network (or set HF_ENDPOINT) and run again to fill the cache")
    if isinstance(exc, EntryNotFoundError):
        return ZooError(f"hf-hub:{repo} has no such file: is it a zoo or timm model repo?")
    return ZooError(f"hf-hub:{repo}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
