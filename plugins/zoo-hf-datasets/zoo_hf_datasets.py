"""zoo-hf-datasets: image-classification data through Hugging Face ``datasets``.

Specs (``--data``), each optionally followed by ``?key=value&key=value``:

* ``hf:ID`` - a dataset on the Hugging Face Hub (or a local folder laid out like one);
  extra keys ``config=NAME`` and ``revision=REV``.
* ``hf-parquet:PATH`` - a .parquet file, a glob, or a folder of them.
* ``hf-arrow:PATH`` - an .arrow file, a folder of them, or a folder written by ``save_to_disk``.
* ``hf-imagefolder:PATH`` - datasets' "imagefolder" builder: class subfolders, optionally under
  train/, validation/ and test/ (or labels from a metadata.csv).

Keys for all: ``image=COLUMN`` and ``label=COLUMN`` (default: the column with the ``Image``
feature or named image/img/..., and the ``ClassLabel`` column or one named label/labels/...),
and ``train=SPLIT``, ``val=SPLIT``, ``test=SPLIT`` to pick the source's splits (default: train;
validation, valid, val or dev; test). Rows without a label (None, or -1 in a ClassLabel) are left out.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from zoo.api import UsageError, ZooError, hookimpl, natural_key

COMMON_KEYS = ("image", "label", "train", "val", "test")
HUB_KEYS = ("config", "revision")
IMAGE_COLUMNS = ("image", "img", "images", "picture", "pixel_values", "file", "path")
LABEL_COLUMNS = ("label", "labels", "fine_label", "class", "target", "category")
VAL_SPLITS = ("validation", "valid", "val", "dev")


@hookimpl
def zoo_register_datasets(register):
    options = "?image=COL&label=COL&train=SPLIT&val=SPLIT&test=SPLIT"
    register("hf", hub, description=f"hf:ID[{options}&config=NAME&revision=REV] - a Hugging Face Hub dataset")
    register("hf-parquet", parquet, description=f"hf-parquet:PATH[{options}] - parquet file(s) read with Hugging Face datasets")
    register("hf-arrow", arrow, description=f"hf-arrow:PATH[{options}] - arrow file(s) or a save_to_disk folder")
    register("hf-imagefolder", imagefolder,
             description=f"hf-imagefolder:PATH[{options}] - Hugging Face datasets' imagefolder builder")


def parse(kind: str, arg: str | None, extra: tuple[str, ...] = ()) -> tuple[str, dict]:
    """``TARGET?key=value&...`` -> (TARGET, options); unknown keys are refused."""
    what = "ID" if kind == "hf" else "PATH"
    if not arg:
        raise UsageError(f"{kind} needs a {'dataset id' if kind == 'hf' else 'path'}: {kind}:{what}[?image=COL&label=COL]")
    target, _, query = arg.partition("?")
    allowed = COMMON_KEYS + extra
    options = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not value:
            raise UsageError(f"{kind}: expected key=value after '?', got '{part}'")
        if key not in allowed:
            raise UsageError(f"{kind}: unknown option '{key}' (use {', '.join(allowed)})")
        options[key] = value
    if not target:
        raise UsageError(f"{kind}: nothing before '?': {kind}:{what}?...")
    return target, options


def hub(arg: str | None):
    target, options = parse("hf", arg, HUB_KEYS)
    import datasets

    source = _load(target, datasets.load_dataset, target, name=options.get("config"), revision=options.get("revision"))
    return convert(f"hf:{arg}", source, options)


def parquet(arg: str | None):
    return _builder("hf-parquet", "parquet", arg)


def imagefolder(arg: str | None):
    return _builder("hf-imagefolder", "imagefolder", arg)


def arrow(arg: str | None):
    target, options = parse("hf-arrow", arg)
    path = Path(target).expanduser()
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        import datasets

        return convert(f"hf-arrow:{arg}", _load(target, datasets.load_from_disk, str(path)), options)
    return _builder("hf-arrow", "arrow", arg)


def _builder(kind: str, builder: str, arg: str | None):
    """A local file, glob or folder read by one of datasets' packaged builders."""
    target, options = parse(kind, arg)
    path = Path(target).expanduser()
    import datasets

    if path.is_dir():  # splits from the file or folder names (train/, validation/, test-*.parquet, ...)
        source = _load(target, datasets.load_dataset, builder, data_dir=str(path))
    elif path.is_file() or any(c in target for c in "*["):  # one file or a glob: one "train" split
        source = _load(target, datasets.load_dataset, builder, data_files=str(path))
    else:
        raise UsageError(f"{kind}: {path} does not exist")
    return convert(f"{kind}:{arg}", source, options)


def _load(target: str, loader, *args, **kwargs):
    """Run a datasets loader; its many exception types become one line."""
    try:
        loaded = loader(*args, **kwargs)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ZooError(f"cannot load '{target}' with Hugging Face datasets: {text}") from None
    import datasets

    return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})


def pick_splits(source, options: dict, name: str) -> dict:
    """zoo split name -> source split name."""
    available = list(source)
    chosen = {"train": options.get("train", "train"),
              "val": options.get("val") or next((s for s in VAL_SPLITS if s in source), None),
              "test": options.get("test") or ("test" if "test" in source else None)}
    for role, split in chosen.items():
        if split is not None and split not in source:
            hint = f" (pick one with ?{role}=SPLIT)" if role == "train" and "train" not in options else ""
            raise UsageError(f"{name}: no split '{split}' for {role}; it has {', '.join(available)}{hint}")
    return {role: split for role, split in chosen.items() if split is not None}


def pick_column(features, wanted: str | None, kind: str, names: tuple[str, ...], name: str) -> str:
    import datasets

    columns = list(features)
    if wanted:
        if wanted not in features:
            raise UsageError(f"{name}: no column '{wanted}' (columns: {', '.join(columns)})")
        return wanted
    feature_type = datasets.Image if kind == "image" else datasets.ClassLabel
    found = next((c for c, f in features.items() if isinstance(f, feature_type)), None)
    found = found or next((c for c in names if c in features), None)
    if found is None:
        raise UsageError(f"{name}: cannot tell which column holds the {kind}s (columns: {', '.join(columns)}); "
                         f"add ?{kind}=COLUMN")
    return found


def convert(name: str, source, options: dict):
    """A zoo Dataset from a datasets.DatasetDict."""
    from zoo.api import Dataset

    splits = pick_splits(source, options, name)
    train = source[splits["train"]]
    image_col = pick_column(train.features, options.get("image"), "image", IMAGE_COLUMNS, name)
    label_col = pick_column(train.features, options.get("label"), "label", LABEL_COLUMNS, name)
    classes, index = class_names(train, label_col, name)
    out = {}
    for role, split in splits.items():
        part = source[split]
        for col in (image_col, label_col):
            if col not in part.features:
                raise UsageError(f"{name}: split '{split}' has no column '{col}'")
        labels, rows = [], []
        for row, value in enumerate(part[label_col]):
            if value is None or (value == -1 and isinstance(part.features[label_col], _class_label())):
                continue  # an unlabelled row (e.g. a Hub test split without answers)
            key = value if isinstance(value, str) else int(value)
            if key not in index:
                raise UsageError(f"{name}: split '{split}' has label {value!r}, which the training split lacks")
            labels.append(index[key])
            rows.append(row)
        if rows:
            out[role] = make_split(part, split, image_col, rows, labels)
        elif role == "train":
            raise UsageError(f"{name}: the training split '{split}' has no labelled rows")
    return Dataset(name, classes, out, meta={"columns": {"image": image_col, "label": label_col}, "splits": splits})


def class_names(train, label_col: str, name: str) -> tuple[list[str], dict]:
    """The ordered class names and a map from stored label values to class indices."""
    feature = train.features[label_col]
    if isinstance(feature, _class_label()):
        return list(feature.names), {i: i for i in range(len(feature.names))}
    values = {v for v in train[label_col] if v is not None}
    if not values:
        raise UsageError(f"{name}: column '{label_col}' has no labels")
    if all(isinstance(v, str) for v in values):
        ordered = sorted(values, key=natural_key)
        return ordered, {v: i for i, v in enumerate(ordered)}
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        ordered = sorted(values)
        return [str(v) for v in ordered], {v: i for i, v in enumerate(ordered)}
    raise UsageError(f"{name}: column '{label_col}' must hold class names or whole numbers "
                     f"(found {type(next(iter(values))).__name__}); pick another with ?label=COLUMN")


def make_split(part, split: str, image_col: str, rows: list[int], labels: list[int]):
    """A zoo Split reading one image at a time from the (memory-mapped) arrow table."""
    import numpy as np

    from zoo.api import Split

    images = part.select_columns([image_col])
    # datasets' own fingerprint of the table changes with the data files (or the saved dataset).
    fingerprint = hashlib.sha256(f"{part._fingerprint}\0{split}\0{image_col}\0".encode()
                                 + np.asarray(rows, dtype=np.int64).tobytes()
                                 + np.asarray(labels, dtype=np.int64).tobytes()).hexdigest()[:16]
    return Split(np.asarray(labels, dtype=np.int64), lambda i: to_image(images[rows[i]][image_col]),
                 lambda i: f"{split}[{rows[i]}]", fingerprint)


def to_image(value):
    """A PIL image from what a column holds: a decoded image, {bytes, path}, bytes, a path or pixels."""
    import io

    import numpy as np
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        value = value.get("bytes") or value["path"]
    if isinstance(value, (bytes, bytearray)):
        return Image.open(io.BytesIO(value))
    if isinstance(value, str):
        return Image.open(value)
    if isinstance(value, (list, np.ndarray)):
        pixels = np.asarray(value)
        if pixels.dtype != np.uint8:
            pixels = np.clip(pixels, 0, 255).astype(np.uint8)
        return Image.fromarray(pixels)
    raise ValueError(f"not an image: {type(value).__name__}")  # zoo skips the row (or fails with --strict)


def _class_label():
    import datasets

    return datasets.ClassLabel
