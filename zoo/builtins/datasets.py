"""Built-in datasets: image folders, CSV files, Fashion-MNIST, scikit-learn's digits, synthetic."""

from __future__ import annotations

import csv
import gzip
import io
import os
from pathlib import Path

import numpy as np

from zoo.errors import UsageError, ZooError
from zoo.hookspecs import hookimpl

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SPLIT_DIRS = {"train": "train", "val": "val", "validation": "val", "test": "test"}


@hookimpl
def zoo_register_datasets(register):
    register("imagefolder", imagefolder, description="imagefolder:PATH - one subfolder per class (train/ and val/ or test/ used when present)")
    register("csv", csv_dataset, extensions=[".csv"],
             description="csv:FILE or FILE.csv - columns image (path inside the CSV's folder) and label; optional split column")
    register("fashion-mnist", fashion_mnist, description=f"fashion-mnist[:DIR] - Fashion-MNIST IDX files (default {FASHION_MNIST_DIR})")
    register("digits", digits, description="digits - scikit-learn's 1,797 real 8x8 handwritten digits")
    register("synthetic", synthetic, description="synthetic[:N] - tiny deterministic colour/shape images for tests (N per class)")


def check_class_names(names: list[str], where: str) -> None:
    """Refuse two class names that look the same (Unicode NFC/NFD forms of one word)."""
    import unicodedata

    seen: dict[str, str] = {}
    for name in names:
        key = unicodedata.normalize("NFC", name)
        if key in seen:
            raise UsageError(f"{where}: class names {seen[key]!a} and {name!a} differ only in Unicode normalization; "
                             f"rename one so that each class has one name")
        seen[key] = name


# -- image folders -----------------------------------------------------------------------
def _walk_files(root: Path) -> list[Path]:
    """Every non-hidden file below root (a folder's files, then its subfolders), following symlinks but never looping."""
    seen, files = set(), []

    def visit(folder: str) -> None:
        real = os.path.realpath(folder)
        if real in seen:
            return
        seen.add(real)
        try:
            with os.scandir(folder) as it:  # entries know their type: no stat per regular file
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError:  # an unreadable folder is skipped, as os.walk does
            return
        files.extend(Path(e.path) for e in entries if e.is_file())
        for e in entries:
            if e.is_dir():
                visit(e.path)

    visit(str(root))
    return files


def _class_folder(root: Path, classes: list[str] | None = None):
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    check_class_names(found, str(root))
    training = classes is None  # the folder that names the classes (val/ and test/ take train/'s)
    classes = classes or found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise UsageError(f"{root} has class folders not in the training classes: {', '.join(unknown[:5])}")
    paths, labels, empty = [], [], []
    for label, name in enumerate(classes):
        folder = root / name
        files = _walk_files(folder) if folder.is_dir() else []
        paths += files
        labels += [label] * len(files)
        if not files:
            empty.append(folder)
    if not paths:
        raise UsageError(f"no images found in {root}: expected one subfolder per class, e.g. {root}/cats/1.jpg")
    if empty and training:  # a class no image teaches would only ever be a wrong answer
        raise UsageError(f"class folder {empty[0]} has no images: a class without images cannot be learned; "
                         f"add images or remove the folder")
    return classes, paths, labels


def imagefolder(arg: str | None):
    from zoo.data import Dataset, file_split

    if not arg:
        raise UsageError("imagefolder needs a path: imagefolder:PATH")
    root = Path(arg).expanduser()
    if not root.exists():
        raise UsageError(f"image folder {root} does not exist")
    present = {name: root / name for name in SPLIT_DIRS if (root / name).is_dir()}
    subdirs = {d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")}
    if "train" in present and (len(present) > 1 or subdirs <= set(SPLIT_DIRS)):
        classes, paths, labels = _class_folder(present.pop("train"))
        splits = {"train": file_split(paths, labels)}
        for name, folder in present.items():
            _, p, y = _class_folder(folder, classes)
            splits[name] = file_split(p, y)
    else:
        classes, paths, labels = _class_folder(root)
        splits = {"train": file_split(paths, labels)}
    return Dataset(f"imagefolder:{root}", classes, splits)


# -- CSV -------------------------------------------------------------------------------
IMAGE_COLUMNS = ("image", "path", "file", "filename", "filepath")
LABEL_COLUMNS = ("label", "class", "target", "category")


def csv_dataset(arg: str | None):
    from zoo.data import Dataset, file_split

    if not arg:
        raise UsageError("csv needs a file: csv:FILE")
    path = Path(arg).expanduser()
    if not path.is_file():
        raise UsageError(f"CSV file {path} does not exist")
    base = path.parent.resolve()
    reader = csv.DictReader(io.StringIO(_csv_text(path), newline=""))
    try:
        header = [h.strip().lower() for h in reader.fieldnames or []]
        image_col = next((reader.fieldnames[header.index(c)] for c in IMAGE_COLUMNS if c in header), None)
        label_col = next((reader.fieldnames[header.index(c)] for c in LABEL_COLUMNS if c in header), None)
        split_col = reader.fieldnames[header.index("split")] if "split" in header else None
        if not image_col or not label_col:
            raise UsageError(f"{path}: needs a header with an image column ({'/'.join(IMAGE_COLUMNS)}) and a label column ({'/'.join(LABEL_COLUMNS)})")
        rows = []
        for row in reader:
            line = reader.line_num  # a quoted value may span lines: the row's last one
            rel, label = (row.get(image_col) or "").strip(), (row.get(label_col) or "").strip()
            if not rel or not label:
                raise UsageError(f"{path}:{line}: empty image path or label")
            full = (base / rel).resolve()
            if not full.is_relative_to(base):
                raise UsageError(f"{path}:{line}: image path '{rel}' leaves the CSV's folder, which is not allowed")
            split = (row.get(split_col) or "train").strip().lower() if split_col else "train"
            if split not in SPLIT_DIRS:
                raise UsageError(f"{path}:{line}: unknown split '{split}' (use train, val or test)")
            rows.append((full, label, SPLIT_DIRS[split], line))
    except csv.Error as exc:  # a value over csv's size limit (128 KiB)
        raise UsageError(f"{path}:{reader.reader.line_num}: not a readable CSV row ({exc})") from None
    if not rows:
        raise UsageError(f"{path}: no rows")
    from zoo.registry import natural_key

    # The classes are the training labels: a label seen only in val/test has no images to learn from.
    classes = sorted({label for _, label, s, _ in rows if s == "train"}, key=natural_key)
    check_class_names(classes, str(path))
    stray = sorted({label for _, label, _, _ in rows if label not in classes}, key=natural_key)
    if stray:
        raise UsageError(f"{path}: label(s) {', '.join(repr(c) for c in stray[:5])} appear only in val/test rows, "
                         f"not among the training labels")
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for name in dict.fromkeys(s for _, _, s, _ in rows):
        chosen = [(p, index[label]) for p, label, s, _ in rows if s == name]
        missing = next(((p, line) for p, _, s, line in rows if s == name and not p.is_file()), None)
        if missing:
            raise UsageError(f"{path}:{missing[1]}: image {missing[0]} {'is not a file' if missing[0].exists() else 'does not exist'}")
        splits[name] = file_split([p for p, _ in chosen], [y for _, y in chosen])
    if "train" not in splits:
        raise UsageError(f"{path}: no rows in the train split")
    return Dataset(f"csv:{path}", classes, splits)


def _csv_text(path: Path) -> str:
    """The CSV file as text: UTF-8 (a BOM is dropped), no NUL bytes, not empty; errors name the line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read CSV file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8") from None
    nul = text.find("\0")
    if nul >= 0:  # a binary file, or UTF-16
        line = text.count("\n", 0, nul) + 1
        raise UsageError(f"{path}:{line}: a NUL byte: is it a text file? save it as UTF-8")
    if not text.strip():
        raise UsageError(f"{path} is empty: it needs a header line, e.g. image,label")
    return text


# -- Fashion-MNIST ---------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ZooError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ZooError(f"{path} is truncated: expected {int(np.prod(shape))} bytes of data, found {body.size}")
    return body.reshape(shape)


def fashion_mnist(arg: str | None):
    from zoo.data import Dataset, array_split

    root = Path(arg or os.environ.get("ZOO_FASHION_MNIST") or FASHION_MNIST_DIR).expanduser()

    def find(stem: str) -> Path:
        for name in (f"{stem}.gz", stem):
            if (root / name).is_file():
                return root / name
        raise UsageError(
            f"Fashion-MNIST not found in {root} (missing {stem}[.gz]): install it with "
            f"'apt-get install dataset-fashion-mnist' or pass fashion-mnist:DIR"
        )

    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = read_idx(find(f"{prefix}-images-idx3-ubyte")), read_idx(find(f"{prefix}-labels-idx1-ubyte"))
        if len(images) != len(labels):
            raise ZooError(f"Fashion-MNIST in {root}: {len(images)} {split} images but {len(labels)} labels")
        splits[split] = array_split(images, labels, f"fashion-mnist/{split}")
    return Dataset("fashion-mnist", list(FASHION_MNIST_CLASSES), splits)


# -- scikit-learn digits -------------------------------------------------------------------
def digits(arg: str | None):
    from importlib.util import find_spec

    from zoo.data import Dataset, array_split

    sklearn = find_spec("sklearn")  # where scikit-learn is, without importing it
    if sklearn is None:
        raise ZooError("the digits dataset needs scikit-learn: pip install scikit-learn")
    # scikit-learn's copy of the data, read as its load_digits() reads it: importing scikit-learn would cost
    # each process a second (and each torchrun worker); load_digits() if a release has moved the file.
    path = Path(sklearn.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        table = np.loadtxt(path, delimiter=",")
        pixels, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels, labels = bunch.images, bunch.target
    images = np.clip(pixels * (255.0 / 16.0) + 0.5, 0, 255).astype(np.uint8)  # 0..16 -> 0..255
    return Dataset("digits", [str(c) for c in range(10)], {"train": array_split(images, labels, "digits")})


# -- synthetic -------------------------------------------------------------------------------
SYNTHETIC_CLASSES = ["red-square", "green-disc", "blue-bar", "white-cross"]


def synthetic(arg: str | None):
    """Tiny, deterministic, learnable: each class is a coloured shape on noise (32x32 RGB)."""
    from zoo.data import Dataset, array_split

    try:
        per_class = int(arg) if arg else 24
    except ValueError:
        raise UsageError(f"synthetic:N takes a number of images per class, got '{arg}'") from None
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    shapes = [
        (abs(yy - 16) < 8) & (abs(xx - 16) < 8),
        (yy - 16) ** 2 + (xx - 16) ** 2 < 64,
        abs(xx - 16) < 3,
        (abs(xx - 16) < 3) | (abs(yy - 16) < 3),
    ]
    colours = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 230, 230)]
    images, labels = [], []
    for label, (mask, colour) in enumerate(zip(shapes, colours, strict=False)):
        for _ in range(per_class * 5 // 4):  # a quarter more, held out as the test split
            img = rng.integers(0, 90, size=(32, 32, 3), dtype=np.uint8)
            shift = rng.integers(-4, 5, size=2)
            img[np.roll(mask, tuple(shift), axis=(0, 1))] = colour
            images.append(img)
            labels.append(label)
    images, labels = np.stack(images), np.array(labels)
    test = np.zeros(len(labels), dtype=bool)
    for label in range(len(SYNTHETIC_CLASSES)):
        test[np.flatnonzero(labels == label)[per_class:]] = True
    return Dataset(
        f"synthetic:{per_class}",
        list(SYNTHETIC_CLASSES),
        {"train": array_split(images[~test], labels[~test], "synthetic/train"), "test": array_split(images[test], labels[test], "synthetic/test")},
    )
