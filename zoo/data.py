"""Datasets, splits and the decoded-image cache the trainer reads from.

A dataset plugin returns a :class:`Dataset`: ordered class names and one or more
:class:`Split` objects (``train`` and optionally ``val``/``validation``/``test``).
Images are decoded once, resized and center-cropped to the backbone's input size, and
kept as one uint8 tensor; normalization and augmentation run on whole batches.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.config import AUGMENTATIONS as AUGMENTATIONS  # the kinds augment() knows, stated with the settings
from zoo.errors import STOP_SIGNALS, UsageError, ZooError

EVAL_SPLITS = ("val", "validation", "test")


@dataclass
class Split:
    """The images of one split: ``load(i)`` returns a PIL image, ``labels[i]`` its class index."""

    labels: np.ndarray
    load: Callable[[int], object]
    describe: Callable[[int], str] = str  # names item i in messages (a path, or an index)
    fingerprint: str = ""  # changes whenever the images or labels change

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int]) -> Split:
        idx = np.asarray(indices, dtype=np.int64)
        digest = hashlib.sha256(self.fingerprint.encode() + idx.tobytes()).hexdigest()[:16]
        return Split(self.labels[idx], lambda i: self.load(int(idx[i])), lambda i: self.describe(int(idx[i])), digest)


@dataclass
class Dataset:
    """What a dataset plugin returns."""

    name: str
    classes: list[str]
    splits: dict[str, Split]
    meta: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256("\0".join(self.classes).encode())
        for name in sorted(self.splits):
            h.update(f"{name}:{self.splits[name].fingerprint}".encode())
        return h.hexdigest()[:16]


def array_split(images: np.ndarray, labels: np.ndarray, tag: str) -> Split:
    """A split over in-memory uint8 images (N,H,W) or (N,H,W,C). ``tag`` names the arrays in messages
    (image i is ``tag[i]``, e.g. a file that fails to decode) and is part of the split's fingerprint."""
    from PIL import Image

    labels = np.asarray(labels, dtype=np.int64)
    digest = hashlib.sha256(tag.encode() + images.tobytes() + labels.tobytes()).hexdigest()[:16]
    return Split(labels, lambda i: Image.fromarray(images[i]), lambda i: f"{tag}[{i}]", digest)


def file_split(paths: Sequence[Path], labels: Sequence[int]) -> Split:
    """A split over image files; the fingerprint covers names, sizes and modification times."""
    from PIL import Image

    paths = list(paths)
    h = hashlib.sha256()
    for p, y in zip(paths, labels, strict=False):
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0{y}\n".encode())
    return Split(np.asarray(labels, dtype=np.int64), lambda i: Image.open(paths[i]), lambda i: str(paths[i]), h.hexdigest()[:16])


# -- opening a data spec ---------------------------------------------------------------
def parse_spec(spec: str) -> tuple[str, str | None]:
    """``name[:arg]``; a bare folder means ``imagefolder:``, a bare file with an extension a dataset
    claims (``.csv``, a plugin's ``.npz``) means that dataset."""
    from zoo.plugins import _NAME, get_plugins, lookup

    datasets = get_plugins().collect("datasets")
    name, sep, arg = spec.partition(":")
    if sep and name in datasets:
        return name, arg or None
    if spec in datasets:
        return spec, None
    path = Path(spec).expanduser()
    if sep and len(name) > 1 and _NAME.match(name) and not path.exists():  # "nzp:x.npz": a misspelt dataset name
        lookup("datasets", name)  # raises with suggestions
    claimed = get_plugins().extensions()
    ext = max((e for e in claimed if spec.lower().endswith(e)), key=len, default=None)
    if ext is not None:
        return claimed[ext], spec
    if path.is_dir():
        return "imagefolder", spec
    if path.exists():
        kinds = ", ".join(sorted(claimed))
        raise UsageError(f"data '{spec}' is neither an image folder nor a file of a type a dataset reads ({kinds}): "
                         f"give one of those, or NAME[:ARG] (see 'zoo list datasets')")
    if os.sep in spec or spec.startswith("."):
        raise UsageError(f"data '{spec}' does not exist: give a folder with one subfolder of images per class, "
                         "a .csv file, or a dataset name (zoo list datasets; digits works offline)")
    lookup("datasets", name)  # raises with suggestions
    raise AssertionError("unreachable")


def open_dataset(spec: str) -> Dataset:
    """Open a data spec through the dataset plugin that registered its name."""
    from zoo.plugins import build, lookup

    name, arg = parse_spec(spec)
    entry = lookup("datasets", name)
    dataset = build("datasets", name, arg)
    if not isinstance(dataset, Dataset) or "train" not in dataset.splits:
        raise ZooError(f"dataset plugin '{entry.plugin}' returned no 'train' split for '{spec}'")
    if len(dataset.classes) < 2:
        raise UsageError(f"'{spec}' has {len(dataset.classes)} class(es): classification needs at least 2")
    if len(set(dataset.classes)) != len(dataset.classes):
        raise UsageError(f"'{spec}' has duplicate class names: {_dupes(dataset.classes)}")
    dataset.meta.setdefault("plugin", entry.plugin)
    dataset.meta.setdefault("dataset_name", name)
    return dataset


def _dupes(names) -> str:
    from collections import Counter

    return ", ".join(sorted(n for n, k in Counter(names).items() if k > 1))


def train_val(dataset: Dataset, *, val_split: float, seed: int, shots: int | None = None) -> tuple[Split, Split | None, str]:
    """The training split and the evaluation split (the dataset's own, or a stratified cut)."""
    train = dataset.splits["train"]
    eval_name = next((s for s in EVAL_SPLITS if s in dataset.splits), None)
    val = dataset.splits[eval_name] if eval_name else None
    if val is None and val_split > 0:
        train_idx, val_idx = stratified_split(train.labels, val_split, seed)
        train, val, eval_name = train.subset(train_idx), train.subset(val_idx), f"train[{val_split:g} held out]"
    if shots:
        train = train.subset(per_class(train.labels, shots, seed))
    return train, val, eval_name or "none"


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split keeping each class's share; every class keeps at least one training image."""
    if not 0 < fraction < 1:
        raise UsageError(f"--val-split must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = min(round(len(idx) * fraction), len(idx) - 1)
        val.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def per_class(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """A seeded pick of ``shots`` images per class (fewer where a class has fewer)."""
    rng = np.random.default_rng(seed + 1)
    picked = [rng.permutation(np.flatnonzero(labels == c))[:shots] for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


# -- decoding ---------------------------------------------------------------------------
def to_rgb(img):
    """Grayscale, palette, alpha, CMYK and 16-bit images as 8-bit RGB."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


WIDE = 16  # a resized image more than this many crops in area is resized only around its center


@dataclass(frozen=True)
class Preprocess:
    """timm's eval transform: resize the short side to size/crop_pct, center-crop to size.

    Memory follows the target size, not the file: a JPEG is decoded at 1/2, 1/4 or 1/8 of its size
    when that still leaves twice the pixels the resize needs (Pillow's ``draft``), an image of more
    than ``Image.MAX_IMAGE_PIXELS`` pixels is refused before it is decoded, and a very long strip
    (1 x 2,000,000 pixels) is resized only around the crop instead of to millions of pixels.
    """

    size: int
    crop_pct: float = 0.875
    interpolation: str = "bicubic"

    def __call__(self, img) -> np.ndarray:
        from PIL import Image

        scale = max(self.size, int(np.floor(self.size / self.crop_pct)))
        img.draft(None, (2 * scale, 2 * scale))  # JPEG only; a no-op for other formats and decoded images
        w, h = img.size
        if w * h > (Image.MAX_IMAGE_PIXELS or float("inf")):
            raise Image.DecompressionBombError(f"{w} x {h} pixels, more than the {Image.MAX_IMAGE_PIXELS:,} zoo decodes")
        img = upright(img)
        if img.mode != "L":  # grayscale stays one channel until the end: a third of the resizing, the same bytes
            img = to_rgb(img)
        w, h = img.size
        if w <= h:
            nw, nh = scale, max(scale, round(h * scale / w))
        else:
            nw, nh = max(scale, round(w * scale / h)), scale
        resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}.get(
            self.interpolation, Image.BICUBIC
        )
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        if nw * nh <= WIDE * self.size * self.size:
            img = img.resize((nw, nh), resample).crop((left, top, left + self.size, top + self.size))
        else:  # the same crop, read from the source image's matching box (equal up to rounding)
            sx, sy = w / nw, h / nh
            img = img.resize((self.size, self.size), resample, box=(left * sx, top * sy, (left + self.size) * sx, (top + self.size) * sy))
        pixels = np.array(img, dtype=np.uint8)
        return np.repeat(pixels[None], 3, axis=0) if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def upright(img):
    """The image turned as its EXIF orientation says (how a camera held sideways saves a photo)."""
    from PIL import ImageOps

    if img.format is None:  # made in memory (a dataset's arrays): no EXIF to read, and reading costs 10% of a small image
        return img
    try:
        orientation = img.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError):  # a damaged EXIF block: the pixels may still be fine
        return img
    return img if orientation in (1, None) else ImageOps.exif_transpose(img)


class UnreadableImage(Exception):
    """An image file that cannot be decoded, or that is too large to; the message says why."""


def read_pixels(load: Callable[[], object], pre: Preprocess) -> np.ndarray:
    """``pre`` applied to the image ``load()`` opens (a PIL image, closed after); failures raise :class:`UnreadableImage`."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # pre refuses such images, after draft
            with load() as img:  # PIL images close their file on exit
                return pre(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(_reason(exc)) from None


@dataclass
class Decoded:
    images: object  # uint8 tensor (N, 3, H, W)
    labels: object  # int64 tensor (N,)
    skipped: list[str]
    fingerprint: str = ""  # the split's: with the preprocessing, it names these pixels


@dataclass(frozen=True)
class Normalize:
    """uint8 images (C,H,W) or batches (N,C,H,W) -> floats normalized by timm's mean/std, on the device, in the model's memory format.

    Its repr names everything it does, so caches of what a model computes from it can key on it.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: object  # torch.device
    memory_format: object  # torch.memory_format

    def __post_init__(self):
        import torch

        object.__setattr__(self, "_mean", torch.tensor(self.mean, device=self.device).view(3, 1, 1) * 255)
        object.__setattr__(self, "_std", torch.tensor(self.std, device=self.device).view(3, 1, 1) * 255)

    def __call__(self, images):
        x = images.to(self.device, non_blocking=True)
        return ((x.float() - self._mean) / self._std).contiguous(memory_format=self.memory_format)


_JOB: tuple | None = None  # (split, preprocess) of the decode in progress, inherited by forked workers


def _decode_range(bounds: tuple[int, int]) -> tuple[int, np.ndarray, list[tuple[int, str]]]:
    """Decode images start..stop of the current job: their pixels and (index, reason) of each failure."""
    start, stop = bounds
    split, pre = _JOB
    out = np.zeros((stop - start, 3, pre.size, pre.size), dtype=np.uint8)
    failed = []
    for i in range(start, stop):
        try:
            out[i - start] = read_pixels(functools.partial(split.load, i), pre)
        except UnreadableImage as exc:
            failed.append((i, str(exc)))
    return start, out, failed


def _worker(conn, inherited: list) -> None:
    """A decoding worker: decodes each chunk its pipe brings, until the parent kills it or is gone."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # the parent stops the workers
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    for end in inherited:
        end.close()  # the parent's ends: when the parent dies, this worker's pipe ends and so does the worker
    try:
        while True:
            conn.send(_decode_range(conn.recv()))
    except (EOFError, ConnectionError):
        pass  # the parent is gone
    except Exception as exc:
        conn.send(exc)


def _in_workers(chunks: list, workers: int):
    """``map(_decode_range, chunks)`` in forked worker processes, in order.

    Each worker has a pipe of its own and is sent its next chunk when it returns one: no lock is
    shared between processes, so a worker killed at any moment leaves nothing held
    (multiprocessing.Pool's shared queue lock did, and its parent then waited forever). Leaving
    the generator, however it ends (a signal's exception included), kills and reaps the workers.
    """
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("fork")
    procs, conns = {}, []
    try:
        for _ in range(workers):
            mine, theirs = ctx.Pipe()
            conns.append(mine)
            proc = ctx.Process(target=_worker, args=(theirs, list(conns)), daemon=True)
            # Blocked while the worker starts (until it ignores them) and until zoo has it on its list to kill.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                proc.start()
                procs[mine] = proc
            finally:
                theirs.close()
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        todo, done, busy = iter(chunks), {}, dict.fromkeys(conns, 0)

        def give(conn) -> None:
            bounds = next(todo, None)
            if bounds is not None:
                busy[conn] += 1
                with contextlib.suppress(ConnectionError):  # a dead worker: reported below, when its pipe ends
                    conn.send(bounds)

        for conn in conns * 2:  # two chunks each: a worker never waits for its next one
            give(conn)
        for start, _ in chunks:
            while start not in done:
                for conn in wait([c for c in conns if busy[c]]):
                    try:
                        result = conn.recv()
                    except (EOFError, ConnectionError):  # the end of its pipe, or a reset with data unread
                        proc = procs[conn]
                        proc.join()
                        how = f"signal {-proc.exitcode}" if proc.exitcode < 0 else f"exit code {proc.exitcode}"
                        raise ZooError(f"a decoding worker process died ({how}; out of memory?): run the command again") from None
                    if isinstance(result, BaseException):
                        raise result
                    busy[conn] -= 1
                    done[result[0]] = result
                    give(conn)
            yield done.pop(start)
    finally:
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # a second signal must not leave workers behind
        try:
            for proc in procs.values():
                proc.kill()
            for proc in procs.values():
                proc.join()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for conn in conns:
            conn.close()


def _workers() -> int:
    """Worker processes to decode with: one per CPU (at most 8), forked, on Linux; none elsewhere."""
    import multiprocessing

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cpus < 2 or not sys.platform.startswith("linux") or multiprocessing.current_process().daemon:
        return 0
    return min(cpus, 8)


POOL_MIN_SECONDS = 0.25  # decoding work worth starting worker processes for (forking them takes ~40 ms)


def decode(split: Split, pre: Preprocess, *, strict: bool = False, progress: Callable[[int], None] | None = None) -> Decoded:
    """Decode every image once; unreadable files are skipped (or fail with ``strict``).

    The first images are decoded here; when they show that the rest would take a while, forked
    worker processes decode it in chunks (Pillow's per-image Python work holds the GIL, so threads
    would not run in parallel for small images). The pixels are the same either way.
    """
    import time
    from itertools import chain

    import torch

    global _JOB
    n = len(split)
    out = np.empty((n, 3, pre.size, pre.size), dtype=np.uint8)
    keep = np.ones(n, dtype=bool)
    skipped: list[str] = []
    if progress:
        progress(0)
    _JOB = (split, pre)
    try:
        head, started = min(n, 16), time.perf_counter()
        first = _decode_range((0, head))
        rest = n - head
        workers = _workers() if (time.perf_counter() - started) / head * rest > POOL_MIN_SECONDS else 0
        # Chunks: a few per worker, at most 256 images (progress) and 64 MiB (sent back) each.
        size = max(1, min(256, (64 << 20) // (3 * pre.size * pre.size), -(-rest // (4 * max(1, workers)))))
        chunks = [(s, min(s + size, n)) for s in range(head, n, size)]
        results = _in_workers(chunks, workers) if workers else map(_decode_range, chunks)
        with closing(results) if workers else nullcontext():
            for start, pixels, failed in chain([first], results):
                out[start:start + len(pixels)] = pixels
                for i, reason in failed:
                    if strict:
                        raise ZooError(f"cannot read image {split.describe(i)}: {reason} (drop --strict to skip such files)")
                    skipped.append(split.describe(i))
                    keep[i] = False
                if progress:
                    progress(len(pixels))
    finally:
        _JOB = None
    if not keep.any():
        raise ZooError(f"none of the {n} images could be read (first: {skipped[0]})")
    lost = np.setdiff1d(split.labels, split.labels[keep])  # classes whose every image was skipped
    if len(lost):
        first = next(i for i in range(n) if split.labels[i] == lost[0])
        count = int((split.labels == lost[0]).sum())
        raise ZooError(f"none of the {count} image(s) of one class could be read (first: {split.describe(first)}): "
                       f"a class without images cannot be learned; fix the files or remove the class")
    images = torch.from_numpy(out[keep] if not keep.all() else out)
    labels = torch.from_numpy(split.labels[keep])
    return Decoded(images, labels, skipped, split.fingerprint)


def cache_dir() -> Path:
    """zoo's cache folder: $ZOO_CACHE, else ~/.cache/zoo."""
    return Path(os.environ.get("ZOO_CACHE") or Path.home() / ".cache" / "zoo")


def cached_decode(split: Split, pre: Preprocess, *, strict: bool = False, progress: Callable[[int], None] | None = None) -> Decoded:
    """:func:`decode`, kept on disk between runs under ``$ZOO_CACHE/decoded/``.

    The key covers the split's fingerprint (file names, sizes and times, or the bytes of in-memory
    images), the preprocessing and Pillow's version, so any change decodes again. Written
    atomically; an entry that is damaged, or not the shapes, dtypes and labels this split needs, is
    decoded again; ``ZOO_DECODE_CACHE=0`` turns it off.
    """
    import hashlib

    import torch
    from PIL import __version__ as pillow

    path = None
    if split.fingerprint and os.environ.get("ZOO_DECODE_CACHE", "1") != "0":
        key = hashlib.sha256(f"{split.fingerprint}|{pre.size}|{pre.crop_pct}|{pre.interpolation}|{pillow}|2".encode()).hexdigest()[:24]
        path = cache_dir() / "decoded" / f"{key}.safetensors"
        n = len(split)
        stored = read_entry(path, {"images": ((n, 3, pre.size, pre.size), torch.uint8), "labels": ((n,), torch.int64)})
        if stored is not None and np.array_equal(stored["labels"].numpy(), split.labels):
            return Decoded(stored["images"], stored["labels"], [], split.fingerprint)
    decoded = decode(split, pre, strict=strict, progress=progress)
    if path is not None and not decoded.skipped:
        write_entry(path, {"images": decoded.images, "labels": decoded.labels})
    return decoded


CACHE_ENTRY_MAX_BYTES = 1 << 30  # bigger entries are computed again each run, not stored


def read_entry(path: Path, expected: dict[str, tuple]) -> dict | None:
    """A cache entry's tensors, or None when it is missing, damaged, or not exactly the ``expected``
    names, shapes and dtypes (name -> (shape, torch dtype)): the caller computes it again."""
    from safetensors.torch import load_file

    try:
        stored = load_file(path)
    except Exception:  # missing, unreadable, truncated, garbage: safetensors checks its header and sizes
        return None
    if stored.keys() != expected.keys():
        return None
    for name, (shape, dtype) in expected.items():
        if tuple(stored[name].shape) != tuple(shape) or stored[name].dtype != dtype:
            return None
    return stored


def write_entry(path: Path, tensors: dict) -> None:
    """Store a cache entry atomically; one that is too big or cannot be written is not stored (one warning says so)."""
    if sum(t.numel() * t.element_size() for t in tensors.values()) > CACHE_ENTRY_MAX_BYTES:
        return
    from zoo.rundir import save_weights

    try:
        save_weights(path, {k: t.cpu() for k, t in tensors.items()})
    except ZooError as exc:  # a full disk or a read-only cache is not an error for a cache
        if str(cache_dir()) not in _UNWRITABLE:
            _UNWRITABLE.add(str(cache_dir()))
            from zoo.plugins import warn

            warn(f"{str(exc).split('; ')[0]}; going on without the cache (set ZOO_CACHE to a folder you can write)")


_UNWRITABLE: set[str] = set()  # cache folders this process warned about: one warning, not one per entry


def _reason(exc: BaseException) -> str:
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError):
        return f"image too large (Pillow's decompression-bomb limit): {exc}"
    return str(exc) or type(exc).__name__


# -- batch augmentation (on tensors, whole batches) ------------------------------------
def augment(x, kind: str, generator):
    """Augment a uint8/float batch (N,C,H,W); ``kind`` is one of AUGMENTATIONS. ``light``: random shifts; ``default``: + flips and scale."""
    import torch

    if kind == "none":
        return x
    n, _, h, w = x.shape
    dev = x.device  # the draws come from the CPU generator (reproducible anywhere); the work runs where x is
    if kind == "default":
        flip = (torch.rand(n, generator=generator) < 0.5).to(dev)
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        x = _random_resized_crop(x, generator)
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(x.float(), (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
    # Gather shifted windows with one advanced-indexing op rather than a Python loop.
    rows = (dy[:, None] + torch.arange(h, device=dev)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=dev)[None, :])[:, None, None, :]
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=dev)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def _random_resized_crop(x, generator, scale=(0.5, 1.0)):
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    s = torch.empty(n).uniform_(*scale, generator=generator).sqrt()
    cx = torch.rand(n, generator=generator) * (1 - s) * 2 - (1 - s)
    cy = torch.rand(n, generator=generator) * (1 - s) * 2 - (1 - s)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = s, s, cx, cy
    grid = F.affine_grid(theta.to(x.device), (n, x.shape[1], h, w), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
