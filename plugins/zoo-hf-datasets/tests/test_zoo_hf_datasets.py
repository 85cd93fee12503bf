"""zoo-hf-datasets: real PNG files, packed into real parquet and arrow files, read through datasets and trained on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.api import UsageError
from zoo.testing import open_dataset

CLASSES = ("cat", "dog", "fox")
FAST = ["--no-pretrained", "--img-size", "32", "--epochs", "1", "--batch-size", "16", "--aug", "none",
        "--device", "cpu", "--quiet", "--json"]


def write_pngs(root: Path, split: str, per_class: int, seed: int) -> list[tuple[Path, str]]:
    """PNG files in root/split/CLASS/: each class a distinct colour with noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for c, name in enumerate(CLASSES):
        (root / split / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, size=(20, 16, 3), dtype=np.uint8)
            pixels[..., c] += 180
            path = root / split / name / f"{i}.png"
            Image.fromarray(pixels).save(path)
            rows.append((path, name))
    return rows


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """The same images as an image folder, a plain pyarrow parquet file, a Hub-style folder and save_to_disk arrow."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("data")
    rows = {"train": write_pngs(root / "folder", "train", 12, 0), "test": write_pngs(root / "folder", "test", 4, 1)}

    # Written with pyarrow alone: no datasets metadata, an image struct {bytes, path} and string labels.
    plain = root / "plain.parquet"
    pq.write_table(pa.table({"img": [{"bytes": p.read_bytes(), "path": p.name} for p, _ in rows["train"]],
                             "name": [c for _, c in rows["train"]]}), plain)

    # Written with datasets: an Image feature and a ClassLabel, train and test splits.
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(CLASSES))})
    splits = datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"image": [{"bytes": p.read_bytes(), "path": None} for p, _ in r],
                                           "label": [CLASSES.index(c) for _, c in r]}, features=features)
        for split, r in rows.items()})
    hub = root / "hub-style"
    for split, ds in splits.items():
        ds.to_parquet(str(hub / "data" / f"{split}-00000-of-00001.parquet"))
    saved = root / "saved"
    splits.save_to_disk(str(saved))
    return {"root": root, "rows": rows, "plain": plain, "hub": hub, "saved": saved}


def specs(files: dict) -> dict[str, str]:
    return {
        "parquet": f"hf-parquet:{files['plain']}?image=img&label=name",
        "hub-folder": f"hf:{files['hub']}",
        "parquet-folder": f"hf-parquet:{files['hub'] / 'data'}",
        "arrow-saved": f"hf-arrow:{files['saved']}",
        "arrow-file": f"hf-arrow:{next((files['saved'] / 'train').glob('*.arrow'))}",
        "imagefolder": f"hf-imagefolder:{files['root'] / 'folder'}",
    }


@pytest.mark.parametrize("kind, split_sizes", [
    ("parquet", {"train": 36}), ("hub-folder", {"train": 36, "test": 12}), ("parquet-folder", {"train": 36, "test": 12}),
    ("arrow-saved", {"train": 36, "test": 12}), ("arrow-file", {"train": 36}), ("imagefolder", {"train": 36, "test": 12}),
])
def test_specs_open_with_classes_splits_and_pixels(files, kind, split_sizes):
    dataset = open_dataset(specs(files)[kind])
    assert dataset.classes == list(CLASSES)
    assert {name: len(split) for name, split in dataset.splits.items()} == split_sizes
    assert dataset.meta["plugin"] == "hf-datasets"
    # Every split's labels and pixels are those of the PNG files (datasets' imagefolder lists files in its own order).
    for name, split in dataset.splits.items():
        expected = sorted((CLASSES.index(c), np.asarray(Image.open(p)).tobytes()) for p, c in files["rows"][name])
        found = sorted((int(split.labels[i]), np.asarray(split.load(i).convert("RGB")).tobytes()) for i in range(len(split)))
        assert found == expected
    assert open_dataset(specs(files)[kind]).fingerprint == dataset.fingerprint  # stable: --resume accepts it


@pytest.mark.parametrize("kind", ["parquet", "hub-folder", "arrow-saved", "imagefolder"])
def test_finetune_one_epoch(cli, files, tmp_path, kind):
    run = tmp_path / kind
    summary = json.loads(cli("finetune", "test_resnet", "--data", specs(files)[kind], *FAST, "--out", run).stdout)
    assert 0.0 <= summary["top1"] <= 1.0
    assert summary["eval_split"] == ("train[0.1 held out]" if kind == "parquet" else "test")
    config = json.loads((run / "config.json").read_text())
    assert config["label_names"] == list(CLASSES)
    spec = config["zoo"]["dataset"]["spec"]  # uploaded with the model: a local path shows only its last part
    given = specs(files)[kind]
    assert spec.split(":")[0] == given.split(":")[0] and str(tmp_path.parent) not in spec
    assert Path(given.split(":", 1)[1].split("?")[0]).name in spec
    assert any(p["name"] == "zoo-hf-datasets" for p in config["zoo"]["plugins"])


def test_changed_data_changes_the_fingerprint(tmp_path, files):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "changing.parquet"
    table = pq.read_table(files["plain"])
    pq.write_table(table, path)
    before = open_dataset(f"hf-parquet:{path}?image=img&label=name").fingerprint
    names = table.column("name").to_pylist()
    pq.write_table(table.set_column(1, "name", pa.array(names[1:] + names[:1])), path)
    assert open_dataset(f"hf-parquet:{path}?image=img&label=name").fingerprint != before


def test_bad_specs_are_usage_errors(files, cli):
    plain = files["plain"]
    cases = {
        f"hf-parquet:{plain}?image=img&colour=red": "unknown option 'colour'",
        f"hf-parquet:{plain}?image=picture": "no column 'picture' (columns: img, name)",
        f"hf-parquet:{plain}?image=img": "cannot tell which column holds the labels (columns: img, name); add ?label=COLUMN",
        f"hf-parquet:{files['root']}/missing.parquet": "does not exist",
        f"hf-arrow:{files['saved']}?val=dev": "no split 'dev' for val; it has train, test",
        "hf-parquet:": "needs a path",
    }
    for spec, message in cases.items():
        with pytest.raises(UsageError, match=re.escape(message)):
            open_dataset(spec)
    proc = cli("finetune", "test_resnet", "--data", f"hf-parquet:{plain}?image=img&label=nope", *FAST, "--dry-run", expect=2)
    assert "no column 'nope'" in proc.stderr and "Traceback" not in proc.stderr
