"""``zoo doctor``: what to paste into a bug report. Never prints a token, only whether one is set."""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _folder_size(path: Path) -> int | None:
    if not path.is_dir():
        return None
    total = 0
    for root, _, files in os.walk(path):  # os.walk does not follow symlinked folders: no loops
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def versions() -> dict:
    import torch

    from zoo import __version__

    return {"zoo": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
            **{name: _version(name) for name in ("timm", "huggingface_hub", "safetensors", "pluggy", "click", "rich")}}


def devices() -> dict:
    import torch

    cuda = [{"index": i, "name": torch.cuda.get_device_name(i),
             "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
            for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cuda": cuda,
            "distributed": {"gloo": torch.distributed.is_gloo_available(), "nccl": torch.distributed.is_nccl_available()}}


def plugins() -> list[dict]:
    from zoo.plugins import KINDS, get_plugins

    p = get_plugins()
    for kind in KINDS:
        p.collect(kind)
    return [{"name": i.name, "version": i.version or ("built-in" if i.builtin else None),
             "status": "error" if i.errors else "ok", "errors": i.errors} for i in p.info.values()]


def registry_files() -> list[dict]:
    from zoo.registry import packaged_registry, user_registry_files

    config_file, *env_files = user_registry_files()
    rows = [{"path": str(packaged_registry()), "role": "packaged", "exists": packaged_registry().is_file()},
            {"path": str(config_file), "role": "user ($XDG_CONFIG_HOME/zoo/registry.yaml)", "exists": config_file.is_file()}]
    rows += [{"path": str(p), "role": "ZOO_REGISTRY", "exists": p.is_file()} for p in env_files]
    return rows


def hub(check: bool = True, timeout: float = 3.0) -> dict:
    from huggingface_hub import constants, get_token

    from zoo.redact import redact

    info = {"endpoint": redact(constants.ENDPOINT), "offline": bool(constants.HF_HUB_OFFLINE), "token_set": get_token() is not None}
    if check and not info["offline"]:
        from huggingface_hub.utils import get_session

        start = time.perf_counter()
        try:  # huggingface_hub's own HTTP client: the proxy and certificate settings the real calls use
            response = get_session().get(f"{constants.ENDPOINT}/api/models", params={"limit": 1}, timeout=timeout)
            info["reachable"] = response.status_code < 500
            info["status"] = response.status_code
        except Exception as exc:  # any failure to connect is the answer, not a crash
            info["reachable"], info["error"] = False, redact(f"{type(exc).__name__}: {exc}")[:120]  # redacted, then cut
        info["seconds"] = round(time.perf_counter() - start, 3)
    return info


def caches() -> list[dict]:
    from huggingface_hub import constants

    from zoo.data import cache_dir

    rows = [("zoo", cache_dir()), ("huggingface hub", Path(constants.HF_HUB_CACHE))]
    return [{"name": name, "path": str(path), "bytes": _folder_size(path)} for name, path in rows]


def report(check_hub: bool = True) -> dict:
    return {"versions": versions(), "devices": devices(), "plugins": plugins(), "registry_files": registry_files(),
            "hub": hub(check_hub), "caches": caches(), "executable": sys.executable}
