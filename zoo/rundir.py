"""The run directory: every file in it, read and written here and nowhere else.

Layout (a timm model folder at the root):
  model.safetensors, config.json (timm keys + a "zoo" section), README.md (model card),
  run_config.yaml, metrics.jsonl, loss.png / accuracy.png / confusion.png,
  checkpoints/last.pt (full training state), checkpoints/best.safetensors, .lock (while a run writes).

Writes are atomic (a temporary file renamed into place). A model's config.json is data anyone can
write: :meth:`RunDir.read_config` parses it and checks all of it (the rules are in zoo.model_config),
so a damaged or hostile file fails there, in one line that names the file and the field. Weights are
safetensors, never a pickle.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path

from zoo import config as settings
from zoo.errors import UsageError, ZooError, command, shown
from zoo.model_config import PRETRAINED_CFG_DATA, check_config

CONFIG = "config.json"
RUN_CONFIG = "run_config.yaml"
WEIGHTS = "model.safetensors"
METRICS = "metrics.jsonl"
CARD = "README.md"
CHECKPOINTS = "checkpoints"
LAST = f"{CHECKPOINTS}/last.pt"
BEST = f"{CHECKPOINTS}/best.safetensors"
PLOTS = ("loss.png", "accuracy.png", "confusion.png")
LOCK = ".lock"
TEXT_FILES = (CONFIG, RUN_CONFIG, METRICS, CARD)  # what a push redacts (zoo.publish)
MAX_CONFIG_BYTES = 32 << 20  # a config.json with the labels of 100,000 classes is far smaller


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to ``path``; rename it into place only on success."""
    path, tmp = Path(path), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the bytes reach the disk before the rename makes them visible
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the user's usual mode
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):  # disk full, read-only folder, file size limit, ...
            full = " disk full or file too large:" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
            raise ZooError(f"cannot write {path}:{full} {exc.strerror or exc}; its previous version, if any, is intact") from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def append_line(path: Path, record: dict) -> None:
    """Append one JSON line, rewriting the file atomically (metrics files stay small)."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    atomic_write_text(path, old + json.dumps(record) + "\n")


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    atomic_write_text(Path(run_dir) / METRICS, "".join(json.dumps(record) + "\n" for record in history))


def holds_run(run_dir: Path) -> bool:
    """True when the folder has anything but the lock and leftovers of interrupted writes."""
    run_dir = Path(run_dir)
    return run_dir.is_dir() and any(not p.name.startswith(".") for p in run_dir.iterdir())


def refuse_existing_run(run_dir: Path) -> None:
    """A new run needs a folder that holds no run."""
    if holds_run(run_dir):
        raise UsageError(f"{run_dir} already holds a run: use {command('--resume', run_dir)} or another --out")


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete the temporary files of writes a killed run never finished (called under the lock)."""
    for folder in (Path(run_dir), Path(run_dir) / CHECKPOINTS):
        for tmp in folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class RunLock:
    """An exclusive lock on a run directory (``filelock``): two runs never write into the same folder.

    The lock file goes when the lock is released, and so do the folders the lock created (the run
    folder, and ``runs/`` above a default one) that hold nothing else: a run stopped before it
    wrote anything leaves no trace.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.lock = None

    def __enter__(self):
        from filelock import FileLock, Timeout

        folder = self.path.parent.absolute()
        self.created = [p for p in (folder, *folder.parents) if not p.is_dir()]  # deepest first
        folder.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(self.path, timeout=0)
        try:
            self.lock.acquire()
        except Timeout:
            raise ZooError(f"another zoo run is writing to {self.path.parent}: wait for it or choose another --out") from None
        return self

    def __exit__(self, *exc):
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still locked: whoever opens the path next makes (and locks) a new file
            for folder in self.created:
                folder.rmdir()  # only when empty: the first that is not ends it
        self.lock.release()


def save_weights(path: Path, state: dict, metadata: dict | None = None) -> None:
    from safetensors.torch import save

    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    blob = save(state, metadata=metadata or {"format": "pt"})
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)  # Python's writes report a full disk as OSError; safetensors' own would not


def read_weights(path: Path) -> dict:
    """A safetensors state dict. Never unpickles: a pickle offered as weights is refused."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ZooError(f"{path.parent} has no {WEIGHTS} (zoo reads weights only as safetensors)")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ZooError(f"{path} is damaged or not a safetensors file ({str(exc).splitlines()[0]}); re-download or re-export it") from None


def save_checkpoint(path: Path, state: dict) -> None:
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        writes = _Writes(f)
        try:
            torch.save(state, writes)
        except RuntimeError:
            if writes.error is not None:  # torch reports a failed write (disk full, file size limit) as RuntimeError
                raise writes.error from None
            raise


class _Writes:
    """The file torch.save writes to, keeping the OSError a write raised."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.file.flush()


def load_checkpoint(path: Path) -> dict:
    """Training state, read with ``weights_only=True`` (nothing is unpickled)."""
    import pickle
    import zipfile

    import torch

    if not path.is_file():
        raise ZooError(f"no checkpoint at {path}: nothing to resume")
    if not zipfile.is_zipfile(path):
        raise ZooError(f"checkpoint {path} is damaged or not a zoo checkpoint (not a PyTorch archive); start a new run")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ZooError(f"checkpoint {path} holds objects other than tensors and plain data, which zoo never unpickles; "
                       f"start a new run") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ZooError(f"checkpoint {path} is damaged or not a zoo checkpoint ({str(exc).splitlines()[0][:120]}); start a new run") from None


def plot(run_dir: Path, history: list[dict], confusion, classes: list[str], *, best_epoch: int | None = None,
         split: str | None = None, top1: float | None = None) -> list[str]:
    """loss.png, accuracy.png and confusion.png; returns the file names written (see ``figures``)."""
    written = []
    for name, fig in figures(Path(run_dir).name, history, confusion, classes, best_epoch=best_epoch, split=split,
                             top1=top1).items():
        with atomic_path(run_dir / name) as tmp:
            # The title in the PNG's metadata too: what a plot shows can be checked without looking at it.
            fig.savefig(tmp, format="png", metadata={"Title": fig.axes[0].get_title()})
        written.append(name)
    return written


def figures(run: str, history: list[dict], confusion, classes: list[str], *, best_epoch: int | None = None,
            split: str | None = None, top1: float | None = None) -> dict:
    """The plots of a run as matplotlib Figures, by file name.

    Each title names the run; epochs are whole-number ticks; the best epoch (the saved model)
    is a dashed line; the confusion matrix's title gives the split and accuracy, and each count
    is black or white, whichever contrasts with its cell. Run and class names are data: control
    characters are shown as escapes and "$...$" is not read as math.
    """
    # Figure objects, not pyplot: no global state or GUI backend to change in the user's process.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    run = shown(run)
    out = {}

    def width(title: str, at_least: float) -> float:  # inches: room for the longest title line at 10 pt
        return max(at_least, 0.08 * max(map(len, title.splitlines())) + 0.6)

    epochs = [r["epoch"] for r in history]
    loss_png, accuracy_png, confusion_png = PLOTS
    for name, keys, label in ((loss_png, ("train_loss", "val_loss"), "loss"), (accuracy_png, ("train_top1", "val_top1"), "top-1 accuracy")):
        title = f"{run}\n{label}"
        fig = Figure(figsize=(width(title, 5), 3.5), dpi=100)
        ax = fig.subplots()
        for key in keys:
            values = [r.get(key) for r in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, marker="o", label=key.replace("_", " "))
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.4", linestyle="--", linewidth=1, label=f"best (saved): epoch {best_epoch}",
                       gid="best-epoch")
        ax.set_title(title, fontsize=10, parse_math=False)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out[name] = fig
    if confusion is not None:
        n = len(classes)
        accuracy = f", top-1 {top1:.3f}" if top1 is not None else ""
        title = f"{run}\nconfusion on the {shown(split or 'evaluation')} split{accuracy}"
        fig = Figure(figsize=(width(title, max(4, 0.45 * n + 2)), max(3.5, 0.45 * n + 1.5)), dpi=100)
        ax = fig.subplots()
        image = ax.imshow(confusion, cmap="Blues")
        labels = [shown(c) for c in classes]
        ax.set_xticks(range(n), labels, rotation=90 if n > 6 else 0, fontsize=7, parse_math=False)
        ax.set_yticks(range(n), labels, fontsize=7, parse_math=False)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=10, parse_math=False)
        if n <= 15:
            for i in range(n):
                for j in range(n):
                    r, g, b, _ = image.cmap(image.norm(confusion[i][j]))
                    dark = 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5  # the cell's luminance (Rec. 709 weights)
                    ax.text(j, i, int(confusion[i][j]), ha="center", va="center", fontsize=7, color="white" if dark else "black")
        fig.tight_layout()
        out[confusion_png] = fig
    return out


def read_best(run_dir: Path) -> dict:
    return read_weights(Path(run_dir) / BEST)


class RunDir:
    """A run directory, or any timm model folder (config.json + model.safetensors): the paths of its
    files, and how each is read and written."""

    CONFIG, RUN_CONFIG, WEIGHTS, METRICS, CARD = CONFIG, RUN_CONFIG, WEIGHTS, METRICS, CARD
    CHECKPOINTS, LAST, BEST, PLOTS, LOCK = CHECKPOINTS, LAST, BEST, PLOTS, LOCK

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    config_path = property(lambda self: self.path / CONFIG)
    run_config_path = property(lambda self: self.path / RUN_CONFIG)
    weights_path = property(lambda self: self.path / WEIGHTS)
    metrics_path = property(lambda self: self.path / METRICS)
    card_path = property(lambda self: self.path / CARD)
    last_path = property(lambda self: self.path / LAST)
    best_path = property(lambda self: self.path / BEST)

    # -- config.json ----------------------------------------------------------------------------
    def read_json(self):
        """config.json parsed (any JSON value), or a one-line error: missing, not a file, too big, not UTF-8, not JSON."""
        path = self.config_path
        if not path.exists():
            raise UsageError(f"{self.path} is not a model folder: it has no {CONFIG}")
        if not path.is_file():
            raise ZooError(f"{path} is not a regular file")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ZooError(f"{path} is {path.stat().st_size >> 20} MiB: too large for a model config")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ZooError(f"{path} is not UTF-8 text (byte {exc.start}): it is damaged or not a model config") from None
        except OSError as exc:
            raise ZooError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            return json.loads(text)
        except RecursionError:
            raise ZooError(f"{path} is nested too deeply to be a model config") from None
        except ValueError as exc:
            raise ZooError(f"{path} is not valid JSON: {exc}") from None

    def read_config(self) -> dict:
        """config.json, checked (zoo.model_config.check_config): the one place zoo reads a model's config."""
        return check_config(self.read_json(), self.config_path)

    def timm_config(self, cfg: dict | None = None) -> tuple[str, dict, dict]:
        """(architecture, model_args, pretrained_cfg) for timm, from a checked config.json."""
        cfg = self.read_config() if cfg is None else cfg
        args = {k: v for k, v in (cfg.get("model_args") or {}).items() if k != "num_classes"}
        pcfg = {k: v for k, v in cfg["pretrained_cfg"].items() if k in PRETRAINED_CFG_DATA}
        return cfg["architecture"], args, pcfg

    def write_config(self, cfg: dict) -> None:
        atomic_write_text(self.config_path, json.dumps(cfg, indent=2))

    # -- the other files --------------------------------------------------------------------------
    def read_run_config(self) -> dict:
        """run_config.yaml's settings, checked (zoo.config.load_file); a one-line UsageError naming the file and key."""
        return settings.load_file(self.run_config_path)

    def resumed_config(self, overrides: dict):
        """The run's FinetuneConfig with what ``--resume`` may change changed (zoo.config says what)."""
        if not self.run_config_path.is_file():
            raise UsageError(f"{self.path} is not a zoo run directory (no {RUN_CONFIG}); nothing to resume")
        return settings.FinetuneConfig.from_dict(self.read_run_config()).resumed(overrides)

    def read_run_config_or_none(self) -> dict:
        """run_config.yaml's settings for what is only informational (the card): {} when it is missing or damaged."""
        try:
            return self.read_run_config() if self.run_config_path.is_file() else {}
        except ZooError:
            return {}

    def write_run_config(self, config) -> None:
        """run_config.yaml from a FinetuneConfig (zoo.config.dump: every field, in the schema's order)."""
        atomic_write_text(self.run_config_path, settings.dump(config))

    def read_metrics(self) -> list[dict]:
        return read_metrics(self.path)

    def read_weights(self) -> dict:
        return read_weights(self.weights_path)

    def save_weights(self, state: dict) -> None:
        save_weights(self.weights_path, state)

    def write_card(self, text: str) -> None:
        atomic_write_text(self.card_path, text)

    def plots(self) -> list[str]:
        """The plot files present, zoo's three first (in their order), then any other PNG by name."""
        order = {name: i for i, name in enumerate(PLOTS)}
        return sorted((p.name for p in self.path.glob("*.png") if p.is_file()), key=lambda n: (order.get(n, len(order)), n))
