import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import FAST, make_image_folder
from safetensors.torch import load_file

import zoo
from zoo import backbones, forkserver, freeze
from zoo.errors import UsageError, ZooError
from zoo.registry import resolve
from zoo.trainer import Interrupted, Reporter


def _initial(num_classes=4, **kw):
    return backbones.create(resolve("test_resnet"), num_classes=num_classes, pretrained=False, seed=0, **kw).state_dict()


def _groups_of(model_state, head="linear"):
    model = backbones.create(resolve("test_resnet"), num_classes=4, pretrained=False, seed=0, head=head)
    return freeze.param_groups(model)


def test_head_only_keeps_backbone_and_batchnorm_bit_identical(tmp_path):
    zoo.finetune(data="synthetic", out=tmp_path / "r", freeze="head-only", **FAST)
    before, after = _initial(), load_file(tmp_path / "r" / "model.safetensors")
    assert set(before) == set(after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # running_mean/var and num_batches_tracked untouched too
    assert any("running_mean" in k for k in before)


def test_last_n_changes_exactly_the_groups_it_names(tmp_path):
    zoo.finetune(data="synthetic", out=tmp_path / "r", freeze="last-n", freeze_opts={"n": 1}, **FAST)
    before, after = _initial(), load_file(tmp_path / "r" / "model.safetensors")
    groups = _groups_of(before)
    trained = {g.name for g in groups[-2:]}
    for g in groups:
        moved = any(not torch.equal(before[p], after[p]) for p in g.params)
        assert moved == (g.name in trained), g.name
        buffers = [f"{n}.running_mean" for n in g.norms]
        assert not buffers or all(torch.equal(before[b], after[b]) for b in buffers) == (g.name not in trained), g.name


class StopAt(Reporter):
    """Interrupts the trainer after a given batch of a given epoch (as Ctrl-C would)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)

    def on_batch(self, trainer, n, loss):
        if (trainer.epoch, trainer.batch) == self.at:
            trainer.interrupted = True


@pytest.mark.parametrize("stop", [(0, 3), (1, 0)], ids=["mid-epoch", "after-epoch-1"])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, stop):
    opts = dict(FAST, epochs=3, aug="default", head="mlp", head_opts={"dropout": 0.3}, warmup_epochs=1, ema_decay=0.9)
    full = zoo.finetune(data="synthetic", out=tmp_path / "full", **opts)
    reporter = StopAt(*stop)
    if not stop[1]:  # interrupt right after an epoch's checkpoint
        reporter.on_epoch_end = lambda trainer, epoch, metrics: setattr(trainer, "interrupted", epoch == stop[0])
    with pytest.raises(Interrupted, match=f"resume with: zoo finetune --resume {tmp_path / 'part'}"):
        zoo.finetune(data="synthetic", out=tmp_path / "part", reporter=reporter, **opts)
    assert not (tmp_path / "part" / "model.safetensors").exists()
    from zoo import plugins

    plugins.reset()
    resumed = zoo.finetune(resume=tmp_path / "part")
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "part" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics["top1"] == full.metrics["top1"]
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_run_directory_is_a_timm_model_folder(tmp_path):
    import timm

    result = zoo.finetune(data="synthetic", out=tmp_path / "r", **FAST)
    run = result.run_dir
    for name in ("model.safetensors", "config.json", "README.md", "run_config.yaml", "metrics.jsonl", "loss.png",
                 "accuracy.png", "confusion.png", "checkpoints/last.pt", "checkpoints/best.safetensors"):
        assert (run / name).is_file(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["architecture"] == "test_resnet" and cfg["num_classes"] == 4
    assert cfg["label_names"] == ["red-square", "green-disc", "blue-bar", "white-cross"]
    assert cfg["pretrained_cfg"]["input_size"] == [3, 32, 32]
    z = cfg["zoo"]
    assert z["head"]["name"] == "linear" and z["freeze"]["name"] == "none" and z["seed"] == 0
    assert z["dataset"]["fingerprint"] and z["versions"]["torch"] and z["versions"]["timm"]
    card = (run / "README.md").read_text()
    assert "library_name: timm" in card and "pipeline_tag: image-classification" in card and "red-square" in card

    # plain timm, zoo.load and zoo predict agree exactly
    plain = timm.create_model(f"local-dir:{run}", pretrained=True).eval()
    model, transform, classes = zoo.load(run)
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 30, 3), dtype=np.uint8))
    img.save(tmp_path / "x.png")
    x = transform(img)[None]
    with torch.inference_mode():
        assert torch.equal(plain(x), model(x))
        probs = model(x).softmax(1)[0]
    pred = zoo.predict(run, [tmp_path / "x.png"], top_k=2)[0]["predictions"]
    assert pred[0]["label"] == classes[int(probs.argmax())]
    assert pred[0]["score"] == pytest.approx(float(probs.max()), abs=1e-6)


def test_mlp_head_run_loads_in_zoo(tmp_path, run):
    zoo.finetune(data="synthetic", out=tmp_path / "r", head="mlp", head_opts={"hidden": 32}, **FAST)
    model, _, _classes = zoo.load(tmp_path / "r")
    assert isinstance(model, backbones.WithHead) and model.head[0].out_features == 32
    result = run("evaluate", tmp_path / "r", "--data", "synthetic", "--json")
    assert json.loads(result.output)["images"] == 24


def test_rerun_from_run_config_gives_the_same_weights(tmp_path, run):
    zoo.finetune(data="synthetic", out=tmp_path / "a", **FAST)
    result = run("finetune", "--config", tmp_path / "a" / "run_config.yaml", "--out", tmp_path / "b", "--quiet")
    assert result.exit_code == 0, result.stderr
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_trainer_events_fire_with_documented_arguments(tmp_path):
    seen = []

    class Plugin:
        @zoo.hookimpl
        def zoo_on_train_start(self, trainer, config):
            seen.append(("start", config.epochs))

        @zoo.hookimpl
        def zoo_on_epoch_end(self, trainer, epoch, metrics):
            seen.append(("epoch", epoch, "val_top1" in metrics))

        @zoo.hookimpl
        def zoo_on_train_end(self, trainer, run_dir, metrics):
            seen.append(("end", run_dir.name, "top1" in metrics))

    from zoo.plugins import get_plugins

    get_plugins().add(Plugin(), "events")
    zoo.finetune(data="synthetic", out=tmp_path / "r", **FAST)
    assert seen == [("start", 2), ("epoch", 1, True), ("epoch", 2, True), ("end", "r", True)]


def test_image_modes_are_converted(tmp_path):
    from PIL import Image

    from zoo.data import to_rgb

    rgb = Image.new("RGB", (4, 4), (10, 200, 30))
    cases = {"L": rgb.convert("L"), "P": rgb.convert("P"), "RGBA": rgb.convert("RGBA"), "CMYK": rgb.convert("CMYK"),
             "LA": rgb.convert("LA"), "I;16": Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))}
    for mode, img in cases.items():
        out = to_rgb(img)
        assert out.mode == "RGB" and out.size == (4, 4), mode
    assert to_rgb(cases["I;16"]).getpixel((0, 0)) == (255, 255, 255)
    transparent = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)  # composited on white

    # A folder mixing every mode trains end to end.
    root = tmp_path / "mixed"
    for c, colour in enumerate([(200, 20, 20), (20, 20, 200)]):
        (root / f"class{c}").mkdir(parents=True)
        for i, (mode, ext) in enumerate([("L", "png"), ("P", "png"), ("RGBA", "png"), ("CMYK", "jpg"), ("RGB", "bmp"), ("RGB", "jpg")]):
            Image.new("RGB", (12, 10), colour).convert(mode).save(root / f"class{c}" / f"{i}.{ext}")
    result = zoo.finetune(data=str(root), out=tmp_path / "r", val_split=0.34, **dict(FAST, batch_size=4))
    assert result.metrics["images"] == 4


def test_grayscale_images_resize_in_one_channel_to_the_same_bytes():
    """Preprocess keeps "L" images one channel through the resize; the pixels equal converting to RGB first."""
    from PIL import Image

    from zoo.data import Preprocess, open_dataset, to_rgb

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)) for h, w in ((28, 28), (300, 170), (9, 40))]
    if Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").exists():  # real photos of clothes
        test = open_dataset("fashion-mnist").splits["test"]
        images += [test.load(i) for i in range(0, 1000, 50)]
    for pre in (Preprocess(32, 0.95), Preprocess(24, 1.0, "bilinear"), Preprocess(64, 0.875, "nearest"), Preprocess(7)):
        for img in images:
            assert img.mode == "L"
            expected = Preprocess.__call__(pre, to_rgb(img))  # the RGB path
            assert np.array_equal(pre(img), expected), (pre, img.size)


def peak_rss_mb(code: str) -> tuple[int, str]:
    """Run ``code`` in a fresh Python; its peak resident memory in MB, and what it printed."""
    import subprocess
    import sys

    wrapper = "import resource, subprocess, sys\n" \
        "subprocess.run([sys.executable, '-c', sys.argv[1]], check=True)\n" \
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"  # this child's, and only its
    done = subprocess.run([sys.executable, "-c", wrapper, code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    *printed, peak = done.stdout.splitlines()
    return int(peak), "\n".join(printed)


def test_image_decode_memory_is_bounded_by_the_target_size(tmp_path):
    """A 1 x 2,000,000 PNG, a 6,000 x 6,000 JPEG and an image past the pixel budget: tens of MB, not gigabytes.

    (The strip used to take 5.5 GB to resize for a 32-pixel model: it was resized to 36 x 72,000,000 before the crop.)
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (1, 2_000_000, 3), dtype=np.uint8)).save(tmp_path / "strip.png")
    Image.fromarray(rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)).resize((6000, 6000)).save(tmp_path / "big.jpg", quality=90)
    Image.new("L", (10_000, 9_000)).save(tmp_path / "bomb.png")  # 90M pixels: over Image.MAX_IMAGE_PIXELS, under Pillow's own error
    code = ("from pathlib import Path\nfrom PIL import Image\nfrom zoo.data import Preprocess, UnreadableImage, read_pixels\n"
            f"for name in ('strip.png', 'big.jpg', 'bomb.png'):\n"
            f"    try:\n        print(name, read_pixels(lambda: Image.open(Path({str(tmp_path)!r}) / name), Preprocess(32)).shape)\n"
            f"    except UnreadableImage as exc:\n        print(name, exc)\n")
    peak, printed = peak_rss_mb(code)
    baseline, _ = peak_rss_mb("from PIL import Image\nimport zoo.data")
    assert printed.splitlines()[:2] == ["strip.png (3, 32, 32)", "big.jpg (3, 32, 32)"]
    assert printed.splitlines()[2] == ("bomb.png image too large (Pillow's decompression-bomb limit): "
                                       "10000 x 9000 pixels, more than the 89,478,485 zoo decodes")
    assert peak - baseline < 100, (peak, baseline)  # the strip alone is 6 MB of RGB; the JPEG decodes at 1/8 size


@pytest.mark.slow
def test_a_strip_and_an_oversized_image_train_predict_and_skip_in_bounded_memory(tmp_path, run):
    """Through the CLI: the strip trains and predicts, the oversized image is skipped with a warning; zoo predict on the
    strip takes no more memory than on a small image."""
    from PIL import Image

    root = make_image_folder(tmp_path / "imgs", per_class=4)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (1, 2_000_000, 3), dtype=np.uint8)).save(root / "cat" / "strip.png")
    Image.new("L", (10_000, 9_000)).save(root / "dog" / "big.png")
    result = run("finetune", "test_resnet", "--data", root, "--no-pretrained", "--img-size", "32", "--epochs", "1",
                 "--batch-size", "4", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.stderr
    assert "skipped 1 unreadable train file(s)" in result.stderr and "big.png" in result.stderr
    peaks = {}
    for name in ("strip.png", "0.png"):
        peaks[name], printed = peak_rss_mb(f"from zoo.cli import cli\ncli(['predict', {str(tmp_path / 'r')!r}, "
                                           f"{str(root / 'cat' / name)!r}], standalone_mode=False)")
        assert "cat" in printed, printed
    assert peaks["strip.png"] - peaks["0.png"] < 100, peaks  # it used to be 5.5 GB more


def test_image_files_of_every_kind_decode_or_are_skipped_by_name(tmp_path):
    """Modes, EXIF rotation and wrong extensions decode; truncated, empty and non-image files are skipped, each named."""
    from PIL import Image

    from zoo.data import Preprocess, decode, file_split

    top_red = Image.new("RGB", (40, 40), (0, 0, 255))
    top_red.paste((255, 0, 0), (0, 0, 40, 20))
    files = {}

    def save(name, img, **kw):
        img.save(tmp_path / name, **kw)
        files[name] = tmp_path / name

    save("rgb.jpg", top_red, quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned a quarter left: a viewer turns it right again, red on top
    save("rotated.jpg", top_red.transpose(Image.Transpose.ROTATE_90), quality=95, exif=exif)
    save("png-named.jpg", top_red, format="PNG")
    save("cmyk.jpg", top_red.convert("CMYK"), quality=95)
    save("palette.png", top_red.convert("P"))
    save("grey-alpha.png", top_red.convert("LA"))
    save("sixteen-bit.png", Image.fromarray(np.array(top_red.convert("L"), dtype=np.uint16) * 257))
    (tmp_path / "truncated.jpg").write_bytes(files["rgb.jpg"].read_bytes()[:300])
    (tmp_path / "truncated.png").write_bytes(files["palette.png"].read_bytes()[:-30])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    bad = ["truncated.jpg", "truncated.png", "empty.png", "notes.png"]
    paths = list(files.values()) + [tmp_path / b for b in bad]
    decoded = decode(file_split(paths, [0] * len(paths)), Preprocess(16, 1.0))
    assert decoded.skipped == [str(tmp_path / b) for b in bad]
    for name, pixels in zip(files, decoded.images.numpy().astype(int), strict=True):
        top, bottom = pixels[:, :6].reshape(3, -1).mean(1), pixels[:, -6:].reshape(3, -1).mean(1)
        if name in ("grey-alpha.png", "sixteen-bit.png"):  # grey: red is the lighter grey (76), blue the darker (29)
            assert np.ptp(top) < 2 and np.ptp(bottom) < 2 and top[0] > bottom[0] + 30, (name, top, bottom)
        else:  # red above blue: the right way up
            assert top[0] > 200 > 50 > top[2] and bottom[2] > 200 > 50 > bottom[0], (name, top, bottom)


def test_corrupt_files_are_skipped_or_fail_with_strict(tmp_path, run):
    root = make_image_folder(tmp_path / "data")
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "dog" / "notes.txt").write_text("not an image")
    result = run("finetune", "test_resnet", "--data", root, "--no-pretrained", "--img-size", "32", "--epochs", "1",
                 "--batch-size", "4", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.stderr
    assert "skipped 2 unreadable" in result.stderr and "broken.png" in result.stderr
    result = run("finetune", "test_resnet", "--data", root, "--no-pretrained", "--img-size", "32", "--epochs", "1",
                 "--batch-size", "4", "--out", tmp_path / "s", "--strict")
    assert result.exit_code == 1 and "cannot read image" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "s" / "model.safetensors").exists()


def test_train_val_folders_and_csv(tmp_path):
    root = tmp_path / "split"
    make_image_folder(root / "train", per_class=5)
    make_image_folder(root / "val", per_class=2)
    from zoo.data import open_dataset, train_val

    ds = open_dataset(str(root))
    train, val, name = train_val(ds, val_split=0.1, seed=0)
    assert (len(train), len(val), name) == (10, 4, "val")

    flat = make_image_folder(tmp_path / "flat", per_class=10)
    rows = ["image,label,split"] + [f"{p.relative_to(flat)},{p.parent.name},{'val' if p.stem in '01' else 'train'}"
                                    for p in sorted(flat.rglob("*.png"))]
    (flat / "labels.csv").write_text("\n".join(rows) + "\n")
    ds = open_dataset(str(flat / "labels.csv"))
    assert ds.classes == ["cat", "dog"] and len(ds.splits["val"]) == 4 and len(ds.splits["train"]) == 16

    # stratified split without val folder: every class represented, seeded
    ds = open_dataset(str(flat))
    _t1, v1, _ = train_val(ds, val_split=0.2, seed=3)
    _t2, v2, _ = train_val(ds, val_split=0.2, seed=3)
    assert np.array_equal(v1.labels, v2.labels) and sorted(np.bincount(v1.labels)) == [2, 2]


def test_digits_are_load_digits_read_without_importing_scikit_learn():
    """zoo reads scikit-learn's digits file itself (importing scikit-learn costs a process a second): the same
    images, 0..16 scaled to 0..255, and labels as load_digits(), and the fingerprint the decode cache keys on."""
    import sys

    from sklearn.datasets import load_digits

    from zoo.data import array_split, open_dataset

    split = open_dataset("digits").splits["train"]
    bunch = load_digits()
    expected = array_split(np.clip(bunch.images * (255.0 / 16.0) + 0.5, 0, 255).astype(np.uint8), bunch.target, "digits")
    assert split.fingerprint == expected.fingerprint and np.array_equal(split.labels, bunch.target)
    assert np.array_equal(np.asarray(split.load(1796)), np.asarray(expected.load(1796)))
    code = "import sys; from zoo.data import open_dataset; n = len(open_dataset('digits').splits['train']); print(n, 'sklearn' in sys.modules)"
    done = forkserver.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1797", "False"], done.stderr


def test_csv_paths_may_not_escape_its_folder(tmp_path):
    make_image_folder(tmp_path / "outside")
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "x.csv").write_text("image,label\n../outside/cat/0.png,cat\n../outside/dog/0.png,dog\n")
    from zoo.data import open_dataset

    with pytest.raises(UsageError, match=r"x.csv:2: image path '../outside/cat/0.png' leaves the CSV's folder"):
        open_dataset(str(inner / "x.csv"))


def test_symlink_loops_do_not_hang(tmp_path):
    root = make_image_folder(tmp_path / "d")
    (root / "cat" / "loop").symlink_to(root / "cat")
    from zoo.data import open_dataset

    assert len(open_dataset(str(root)).splits["train"]) == 12


def test_damaged_weights_and_configs_are_refused(tmp_path, run):
    zoo.finetune(data="synthetic", out=tmp_path / "r", **FAST)
    src = tmp_path / "r"
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img)

    import shutil

    truncated = tmp_path / "truncated"
    shutil.copytree(src, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    result = run("predict", truncated, img)
    assert result.exit_code == 1 and "damaged or not a safetensors file" in result.stderr

    pickled = tmp_path / "pickled"
    shutil.copytree(src, pickled)
    (pickled / "model.safetensors").write_bytes(pickle.dumps({"fc.weight": [1.0]}))
    result = run("predict", pickled, img)
    assert result.exit_code == 1 and "not a safetensors file" in result.stderr

    mismatched = tmp_path / "mismatched"
    shutil.copytree(src, mismatched)
    cfg = json.loads((mismatched / "config.json").read_text())
    cfg["num_classes"], cfg["label_names"] = 7, [f"c{i}" for i in range(7)]  # consistent, but not the weights' shape
    (mismatched / "config.json").write_text(json.dumps(cfg))
    result = run("predict", mismatched, img)
    assert result.exit_code == 1 and "do not match its config.json" in result.stderr

    checkpoint = src / "checkpoints" / "last.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(ZooError, match="damaged or not a zoo checkpoint"):
        zoo.finetune("", data="", resume=src)


def test_resume_refuses_different_data(tmp_path):
    opts = dict(FAST, epochs=2)
    with pytest.raises(Interrupted):
        zoo.finetune(data="synthetic", out=tmp_path / "r", reporter=StopAt(0, 2), **opts)
    cfg = tmp_path / "r" / "run_config.yaml"
    cfg.write_text(cfg.read_text().replace("data: synthetic", "data: synthetic:30"))
    with pytest.raises(UsageError, match="data changed since the checkpoint"):
        zoo.finetune("", data="", resume=tmp_path / "r")


def test_output_folder_is_never_shared(tmp_path):
    from zoo.rundir import RunLock

    zoo.finetune(data="synthetic", out=tmp_path / "r", **FAST)
    with pytest.raises(UsageError, match="already holds a run"):
        zoo.finetune(data="synthetic", out=tmp_path / "r", **FAST)
    with RunLock(tmp_path / "busy"):
        with pytest.raises(ZooError, match="another zoo run is writing"):
            zoo.finetune(data="synthetic", out=tmp_path / "busy", **FAST)


def test_nothing_trainable_is_refused(tmp_path):
    class Plugin:
        @zoo.hookimpl
        def zoo_register_freeze_policies(self, register):
            from zoo.builtins.freeze import Policy

            register("everything-frozen", lambda: Policy(lambda epoch, n: [(False, 0.0)] * n))

    from zoo.plugins import get_plugins

    get_plugins().add(Plugin(), "frozen")
    with pytest.raises(UsageError, match="leaves nothing to train"):
        zoo.finetune(data="synthetic", out=tmp_path / "r", freeze="everything-frozen", **FAST)


def test_early_stopping_with_patience(tmp_path):
    class Plateau(Reporter):
        def on_epoch_end(self, trainer, epoch, metrics):
            trainer.best = {"score": 2.0, "epoch": 1, "metrics": trainer.best["metrics"]}  # nothing can beat it

    result = zoo.finetune(data="synthetic", out=tmp_path / "r", patience=2, reporter=Plateau(), **dict(FAST, epochs=10))
    assert len(result.history) == 3  # epoch 1 sets the best; epochs 2 and 3 fail to improve; stop


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_finishes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "r"
    cmd = [sys.executable, "-m", "zoo", "finetune", "test_resnet", "--data", "synthetic:200", "--no-pretrained", "--img-size", "32",
           "--epochs", "50", "--batch-size", "16", "--out", str(out)]
    with open(tmp_path / "stderr", "w") as log:
        proc = forkserver.start(cmd, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    err = (tmp_path / "stderr").read_text()
    assert proc.returncode == 130, err
    assert f"resume with: zoo finetune --resume {out}" in err and "Traceback" not in err
    assert (out / "checkpoints" / "last.pt").is_file() and not (out / "model.safetensors").exists()
    done = forkserver.run([sys.executable, "-m", "zoo", "finetune", "--resume", str(out), "--epochs", "3", "--quiet"],
                          capture_output=True, text=True, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").is_file()


def test_plugin_should_stop_ends_training_and_completes_the_run(tmp_path):
    class Plugin:
        @zoo.hookimpl
        def zoo_on_epoch_end(self, trainer, epoch, metrics):
            trainer.should_stop = epoch >= 1

    from zoo.plugins import get_plugins

    get_plugins().add(Plugin(), "stopper")
    result = zoo.finetune(data="synthetic", out=tmp_path / "r", **dict(FAST, epochs=5))
    assert len(result.history) == 1 and (tmp_path / "r" / "model.safetensors").is_file()


def test_plugin_factory_failures_are_one_line_errors(tmp_path, run):
    class Plugin:
        @zoo.hookimpl
        def zoo_register_heads(self, register):
            register("exploding", lambda model, num_classes: 1 / 0)

    from zoo.plugins import get_plugins

    get_plugins().add(Plugin(), "exploder")
    with pytest.raises(ZooError, match=r"head 'exploding' \(plugin 'exploder'\) failed: ZeroDivisionError"):
        zoo.finetune(data="synthetic", out=tmp_path / "r", head="exploding", **FAST)


def test_resume_refuses_changed_options(tmp_path, run):
    with pytest.raises(Interrupted):
        zoo.finetune(data="synthetic", out=tmp_path / "r", reporter=StopAt(0, 2), **FAST)
    result = run("finetune", "--resume", tmp_path / "r", "--lr", "0.5")
    assert result.exit_code == 2 and "only --epochs, --device and --patience may change (remove --lr)" in result.stderr
    with pytest.raises(UsageError, match=r"may change \(remove backbone, --lr\)$"):
        zoo.finetune("resnet18", resume=tmp_path / "r", lr=0.5)
    with pytest.raises(UsageError, match=r"^epochs must be a positive whole number, got 0$"):
        zoo.finetune(resume=tmp_path / "r", epochs=0)


def test_folder_with_only_a_train_subfolder(tmp_path):
    from zoo.data import open_dataset

    make_image_folder(tmp_path / "d" / "train")
    ds = open_dataset(str(tmp_path / "d"))
    assert ds.classes == ["cat", "dog"] and list(ds.splits) == ["train"]


def test_run_files_get_the_users_usual_permissions(tmp_path):
    import os

    zoo.finetune(data="synthetic", out=tmp_path / "r", **dict(FAST, epochs=1))
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "r" / "config.json").stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.cuda
@pytest.mark.parametrize("aug", ["none", "default"])
def test_cuda_bf16_channels_last_run_matches_the_contract(tmp_path, aug):
    """On CUDA the decoded images live on the GPU; batches are gathered and augmented there."""
    from zoo.trainer import FinetuneConfig, Trainer

    trainer = Trainer(FinetuneConfig(**dict(FAST, data="synthetic", device="cuda", epochs=3, aug=aug)), out=tmp_path / "r")
    result = trainer.fit()
    assert trainer.train_data.images.is_cuda and trainer.val_data.images.is_cuda
    _model, _transform, classes = zoo.load(tmp_path / "r")  # loads on CPU from safetensors
    assert result.metrics["top1"] > 0.5 and len(classes) == 4
    assert "device: cuda" in (tmp_path / "r" / "run_config.yaml").read_text()


def test_unicode_class_names_are_kept_as_given(tmp_path, run):
    classes = ("café", "猫", "two words")
    make_image_folder(tmp_path / "imgs", classes=classes, per_class=4)
    out = tmp_path / "run"
    result = run("finetune", "test_resnet", "--data", tmp_path / "imgs", "--no-pretrained", "--img-size", "32", "--epochs", "1",
                 "--batch-size", "8", "--aug", "none", "--val-split", "0", "--quiet", "--out", out)
    assert result.exit_code == 0, result.stderr
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert cfg["label_names"] == sorted(classes)
    assert "猫" in (out / "README.md").read_text(encoding="utf-8")
    predicted = json.loads(run("predict", out, tmp_path / "imgs" / "猫" / "0.png", "--json").stdout)
    assert {p["label"] for p in predicted[0]["predictions"]} == set(classes)


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_feature_cache_gives_the_same_weights_as_the_uncached_path(tmp_path, head):
    """Head-only, no augmentation: the frozen backbone runs once per image; in float32 the metrics and
    the weights are equal to float32 rounding (with --amp auto a CPU with bf16 units runs the frozen pass in bf16:
    bench/features.py measures what that changes).

    Not bit for bit: the cached pass sees the images in other batches than training does, and a kernel may round an
    image's features differently in a batch of another size. With two threads the weights here were bit-identical;
    with one (OMP_NUM_THREADS=1, as `make test` gives each of its processes) they differed by up to 1.5e-8, and a
    training loss in its eighth digit."""
    from safetensors.torch import load_file

    from zoo.trainer import FinetuneConfig, Trainer

    def train(cache: bool):
        cfg = FinetuneConfig(backbone="test_resnet", data="digits", shots=10, pretrained=False, img_size=32, epochs=3, batch_size=16,
                             aug="none", freeze="head-only", head=head, seed=4, feature_cache=cache, amp="off")
        trainer = Trainer(cfg, out=tmp_path / f"{head}-{cache}")
        result = trainer.fit()
        return trainer, load_file(result.run_dir / "model.safetensors"), result.history

    cached, w1, h1 = train(True)
    plain, w2, h2 = train(False)
    assert cached.cache is not None and plain.cache is None
    assert w1.keys() == w2.keys()
    for k in w1:  # a wrong or misplaced feature moves a weight by far more than 1e-6
        torch.testing.assert_close(w1[k], w2[k], rtol=0, atol=1e-6, msg=k)
    strip = lambda h: [{k: v for k, v in r.items() if k != "images_per_s"} for r in h]  # noqa: E731
    for r1, r2 in zip(strip(h1), strip(h2), strict=True):  # one image more or less right moves a top-1 by 1/179
        assert r1 == pytest.approx(r2, rel=1e-6, abs=0)


def test_features_are_kept_on_disk_reused_exactly_and_a_damaged_entry_is_recomputed(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "features"
    opts = dict(FAST, data="digits", shots=10, freeze="head-only")
    weights = lambda name: load_file(zoo.finetune(out=tmp_path / name, **opts).run_dir / "model.safetensors")  # noqa: E731
    same = lambda a, b: a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731

    first = weights("a")
    entries = sorted(folder.glob("*.safetensors"))
    assert len(entries) == 2  # train and val
    assert not list(folder.glob(".*")), "a temporary file was left behind"  # written atomically
    assert same(weights("b"), first) and sorted(folder.glob("*.safetensors")) == entries

    # The entries are what a later run reads: zeros planted in them train another head.
    for e in entries:
        save_file({"features": torch.zeros_like(load_file(e)["features"])}, e)
    assert not torch.equal(weights("c")["fc.weight"], first["fc.weight"])
    for e in entries:
        e.write_bytes(b"damaged")
    assert same(weights("d"), first)  # recomputed and stored again
    assert len(load_file(entries[0])["features"]) > 0

    opts.update(img_size=24)  # another transform: new train and val entries
    weights("e")
    assert len(list(folder.glob("*.safetensors"))) == 4
    opts.update(shots=12)  # other training images (the held-out ones stay): a new train entry
    weights("f")
    assert len(list(folder.glob("*.safetensors"))) == 5
    monkeypatch.setenv("ZOO_FEATURE_CACHE", "0")
    opts.update(shots=13)
    weights("g")
    assert len(list(folder.glob("*.safetensors"))) == 5  # in memory only


def _damage(entry, how: str) -> None:
    """Spoil one cache entry the way a crash, a disk or a stranger might."""
    import os

    from safetensors.torch import save_file

    if how == "truncated":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif how == "garbage":
        entry.write_bytes(os.urandom(4096))
    else:
        t = load_file(entry)
        if how == "wrong-dtype":  # uint8 pixels as floats, int64 labels as int32, float features as float64
            t = {k: v.double() if v.is_floating_point() else v.float() if v.dtype == torch.uint8 else v.int() for k, v in t.items()}
        elif how == "wrong-shape":  # one pixel column or one feature fewer
            t = {k: v[..., :-1].contiguous() if v.ndim > 1 else v for k, v in t.items()}
        elif how == "poisoned":  # labels shifted by one image, features not numbers
            t = {k: v.roll(1) if k == "labels" else torch.full_like(v, float("nan")) if k == "features" else v for k, v in t.items()}
        save_file(t, entry)


@pytest.mark.slow
def test_cache_entries_of_the_wrong_shape_are_rebuilt_not_trained_on(tmp_path, monkeypatch):
    """Decoded-image and feature entries truncated, garbage, of another dtype or shape, or poisoned: each run trains
    exactly as on a fresh cache, and leaves the entries right again."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    opts = dict(FAST, data="digits", shots=10, freeze="head-only", epochs=1)
    weights = lambda name: load_file(zoo.finetune(out=tmp_path / name, **opts).run_dir / "model.safetensors")  # noqa: E731
    first = weights("first")
    entries = sorted((tmp_path / "cache").glob("*/*.safetensors"))
    assert sorted({e.parent.name for e in entries}) == ["decoded", "features"] and len(entries) == 4  # train and val of each
    good = {e: {k: (v.shape, v.dtype) for k, v in load_file(e).items()} for e in entries}
    for how in ("truncated", "garbage", "wrong-dtype", "wrong-shape", "poisoned"):
        for e in entries:
            _damage(e, how)
        again = weights(how)
        assert again.keys() == first.keys() and all(torch.equal(again[k], first[k]) for k in first), how
        assert {e: {k: (v.shape, v.dtype) for k, v in load_file(e).items()} for e in entries} == good, how  # rebuilt


def test_an_unwritable_cache_is_one_warning_and_never_breaks_a_command(tmp_path, monkeypatch, run):
    """ZOO_CACHE naming a file (no folder can be made there, even by root): zoo list works, a fine-tune trains without
    the cache and says so once."""
    (tmp_path / "cache").write_text("a file, not a folder")
    for i, cache in enumerate((tmp_path / "cache", tmp_path / "cache" / "inside")):
        monkeypatch.setenv("ZOO_CACHE", str(cache))
        listed = run("list", "backbones", "resnet1*", "--all")
        assert listed.exit_code == 0 and "resnet18" in listed.stdout, listed.stderr
        result = run("finetune", "test_resnet", "--data", "synthetic:6", "--freeze", "head-only", "--no-pretrained", "--img-size", "32",
                     "--epochs", "1", "--batch-size", "8", "--aug", "none", "--out", tmp_path / f"run{i}")
        assert result.exit_code == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("zoo: warning:")]
        assert len(warnings) == 1 and "going on without the cache (set ZOO_CACHE to a folder you can write)" in warnings[0], warnings
        assert (tmp_path / f"run{i}" / "model.safetensors").is_file()
        from zoo import data

        data._UNWRITABLE.clear()  # the next command is a new process


def test_long_work_is_announced_only_when_it_runs(tmp_path, monkeypatch, run):
    """Decoding and the frozen-feature pass print a line when they run; a run served by the caches prints neither."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    args = ["finetune", "zoo-fmnist-resnet", "--data", "digits", "--shots", "10", "--img-size", "32", "--epochs", "1",
            "--freeze", "head-only", "--aug", "none"]
    first = run(*args, "--out", tmp_path / "a")
    assert first.exit_code == 0, first.stderr
    assert "decoding 100 train images at 32x32 ..." in first.stderr
    assert "frozen features of 100 train images: once, not every epoch ..." in first.stderr
    assert "frozen features of 179 train[0.1 held out] images" in first.stderr
    again = run(*args, "--out", tmp_path / "b")
    assert again.exit_code == 0, again.stderr
    assert "decoding" not in again.stderr and "frozen features" not in again.stderr
    assert "fine-tuning" in again.stderr


def test_feature_key_changes_with_any_weight_bit_or_module_setting():
    from zoo import features

    model = backbones.create(resolve("test_resnet"), num_classes=4, pretrained=False, seed=0)
    part = features.split(model)
    base = features.digest(part)
    assert features.digest(features.split(backbones.create(resolve("test_resnet"), num_classes=4, pretrained=False, seed=0))) == base
    with torch.no_grad():
        model.fc.weight.add_(1)  # the head is not part of the features
    assert features.digest(part) == base
    with torch.no_grad():
        w = model.conv1[0].weight if isinstance(model.conv1, torch.nn.Sequential) else model.conv1.weight
        w.view(-1)[0] = torch.nextafter(w.view(-1)[0], torch.tensor(1.0))  # one bit
    assert features.digest(part) != base
    model = backbones.create(resolve("test_resnet"), num_classes=4, pretrained=False, seed=0)
    model.global_pool.flatten = torch.nn.Identity()  # a changed submodule
    assert features.digest(features.split(model)) != base
    other = backbones.create(resolve("test_resnet"), num_classes=4, pretrained=False, seed=0)
    next(m for m in other.modules() if isinstance(m, torch.nn.BatchNorm2d)).eps = 1e-3  # a changed setting
    assert features.digest(features.split(other)) != base


def test_compare_and_a_linear_probe_share_the_feature_cache(tmp_path, monkeypatch):
    """zoo compare's features are exactly those head-only fine-tuning computes: the probe reuses them."""
    from zoo.compare import compare

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    compare(["zoo-fmnist-resnet"], data_spec="digits", shots=10, img_size=32, val_split=0.2, seed=0)
    entries = sorted((tmp_path / "cache" / "features").glob("*.safetensors"))
    assert len(entries) == 2
    opts = dict(backbone="zoo-fmnist-resnet", data="digits", shots=10, img_size=32, val_split=0.2, seed=0, epochs=2, aug="none",
                freeze="head-only")
    reused = load_file(zoo.finetune(out=tmp_path / "a", **opts).run_dir / "model.safetensors")
    assert sorted((tmp_path / "cache" / "features").glob("*.safetensors")) == entries  # nothing new computed
    monkeypatch.setenv("ZOO_FEATURE_CACHE", "0")
    own = load_file(zoo.finetune(out=tmp_path / "b", **opts).run_dir / "model.safetensors")
    assert all(torch.equal(reused[k], own[k]) for k in own)


def test_compare_sees_the_images_as_the_default_recipe_and_its_probe_reuses_them(tmp_path, monkeypatch):
    """Without --img-size, compare probes at the recipe's size and crop: a default fine-tune computes nothing new."""
    from zoo.compare import compare

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    compare(["zoo-fmnist-resnet"], data_spec="digits", shots=10, val_split=0.2, seed=0)
    entries = sorted((tmp_path / "cache" / "features").glob("*.safetensors"))
    assert len(entries) == 2
    result = zoo.finetune("zoo-fmnist-resnet", data="digits", shots=10, val_split=0.2, seed=0, out=tmp_path / "run")
    recipe = yaml.safe_load((result.run_dir / "run_config.yaml").read_text())["recipe"]
    assert (recipe["name"], recipe["img_size"], recipe["crop_pct"]) == ("linear-probe", 32, 1.0)  # 8 px digits, upscaled whole
    assert sorted((tmp_path / "cache" / "features").glob("*.safetensors")) == entries  # nothing new computed


def test_freeze_bn_keeps_the_backbone_batchnorm_statistics_while_everything_trains(tmp_path):
    """--freeze-bn: the pretrained running statistics stay exactly; weights (BatchNorm's scale included) still train."""
    shipped = load_file(Path(zoo.__file__).parent.parent / "models" / "zoo-fmnist-resnet" / "model.safetensors")
    opts = dict(data="digits", shots=5, img_size=32, epochs=1, freeze="none", lr=0.05, aug="none")
    kept = load_file(zoo.finetune("zoo-fmnist-resnet", freeze_bn=True, out=tmp_path / "kept", **opts).run_dir / "model.safetensors")
    moved = load_file(zoo.finetune("zoo-fmnist-resnet", out=tmp_path / "moved", **opts).run_dir / "model.safetensors")
    stats = [k for k in shipped if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in shipped if k.endswith("weight") and not k.startswith("fc.")]
    assert len(stats) > 10 and all(torch.equal(kept[k], shipped[k].to(kept[k].dtype)) for k in stats)
    assert all(not torch.equal(moved[k], shipped[k].to(moved[k].dtype)) for k in stats)  # without it they follow the batches
    assert all(not torch.equal(kept[k], shipped[k].to(kept[k].dtype)) for k in weights)


def test_without_batch_size_fewer_images_than_64_train_as_one_batch(tmp_path):
    """The default batch size fits the data (1 image per class: 10 images); a given size that does not is refused."""
    result = zoo.finetune("test_resnet", data="digits", shots=1, pretrained=False, img_size=32, epochs=2, out=tmp_path / "run")
    assert yaml.safe_load((result.run_dir / "run_config.yaml").read_text())["batch_size"] == 10
    assert len(result.history) == 2
    with pytest.raises(UsageError, match="--batch-size 64 is larger than the 10 training images: use at most 10"):
        zoo.finetune("test_resnet", data="digits", shots=1, pretrained=False, img_size=32, epochs=1, batch_size=64,
                     out=tmp_path / "given")


def test_compare_probes_models_without_a_single_classifier_module(tmp_path, monkeypatch):
    """Distilled ViTs have two heads: compare still probes their pooled features, cached like the others."""
    import timm
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf

    from zoo.compare import compare

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    model = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=10, img_size=32, patch_size=8, depth=2)
    (tmp_path / "deit").mkdir()
    save_file(model.state_dict(), tmp_path / "deit" / "model.safetensors")
    save_config_for_hf(model, str(tmp_path / "deit" / "config.json"), data_config={"input_size": (3, 32, 32)})
    first = compare([f"local-dir:{tmp_path / 'deit'}"], data_spec="digits", shots=3, img_size=32)
    again = compare([f"local-dir:{tmp_path / 'deit'}"], data_spec="digits", shots=3, img_size=32)
    assert first[0].feature_dim == 192 and first[0].top1 == again[0].top1
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 2


@pytest.mark.parametrize("change, kept", [({"aug": "light"}, {"val"}), ({"model_args": {"drop_rate": 0.2}}, {"val"}),
                                          ({"freeze": "none"}, None), ({"freeze": "last-n"}, None), ({"ema_decay": 0.9}, None)],
                         ids=["aug", "dropout", "full", "last-n", "ema"])
def test_feature_cache_stays_off_where_it_would_change_the_result(tmp_path, change, kept):
    """Augmentation and dropout change the training images' features, not the evaluation images' (eval mode, no augmentation)."""
    from zoo.trainer import FinetuneConfig, Trainer

    options = dict(backbone="test_resnet", data="synthetic:4", pretrained=False, img_size=32, epochs=1, batch_size=8, aug="none",
                   freeze="head-only") | change
    trainer = Trainer(FinetuneConfig(**options), out=tmp_path / "run")
    trainer.fit()
    assert (trainer.cache is None if kept is None else set(trainer.cache) - {"split"} == kept)


def test_frozen_backbone_sees_the_evaluation_images_once_not_every_epoch(tmp_path):
    """Head-only with augmentation: the backbone runs on the training images every epoch, on the held-out images once
    (counted by a forward hook on the stem); the evaluation is the same as running the whole model every epoch."""
    from zoo.plugins import get_plugins

    seen = []

    class Count:
        @zoo.hookimpl
        def zoo_on_train_start(self, trainer, config):
            stem = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
            stem.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))

    get_plugins().add(Count(), "count")
    opts = dict(backbone="test_resnet", data="synthetic:8", pretrained=False, img_size=32, epochs=3, batch_size=8, aug="light",
                freeze="head-only", amp="off", seed=0)
    cached = zoo.finetune(out=tmp_path / "cached", **opts)
    n_train, n_val = 32, 8  # synthetic:8 holds out a quarter more per class as its test split
    assert cached.metrics["images"] == n_val
    assert sum(seen) == 3 * n_train  # the evaluation images' features came from the cache, computed before training
    seen.clear()
    uncached = zoo.finetune(out=tmp_path / "uncached", feature_cache=False, **opts)
    assert sum(seen) == 3 * (n_train + n_val)
    assert [r["val_top1"] for r in cached.history] == [r["val_top1"] for r in uncached.history]
    assert [r["val_loss"] for r in cached.history] == pytest.approx([r["val_loss"] for r in uncached.history], rel=1e-5)


def test_decoded_images_are_cached_on_disk_and_any_change_decodes_again(tmp_path, monkeypatch):
    from PIL import Image
    from safetensors.torch import save_file

    from zoo import data

    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    make_image_folder(tmp_path / "imgs", per_class=4)
    split = data.open_dataset(str(tmp_path / "imgs")).splits["train"]
    pre = data.Preprocess(32)
    first = data.cached_decode(split, pre)
    assert torch.equal(first.images, data.decode(split, pre).images)  # the same bits as decoding
    folder = tmp_path / "cache" / "decoded"
    (entry,) = folder.glob("*.safetensors")
    assert not list(folder.glob(".*")), "a temporary file was left behind"  # written atomically

    # The entry is what a second run reads: plant zeros in it and they come back.
    save_file({"images": torch.zeros_like(first.images), "labels": first.labels}, entry)
    assert data.cached_decode(split, pre).images.sum() == 0
    entry.write_bytes(b"damaged")  # a damaged entry is decoded again and replaced
    assert torch.equal(data.cached_decode(split, pre).images, first.images)
    assert torch.equal(data.cached_decode(split, pre).images, first.images)

    data.cached_decode(split, data.Preprocess(24))  # another input size: another entry
    changed = sorted((tmp_path / "imgs" / "cat").glob("*.png"))[0]
    Image.new("RGB", (20, 16), (1, 2, 3)).save(changed)  # a changed file: a new fingerprint, decoded again
    split2 = data.open_dataset(str(tmp_path / "imgs")).splits["train"]
    redone = data.cached_decode(split2, pre)
    assert len(list(folder.glob("*.safetensors"))) == 3
    assert not torch.equal(redone.images, first.images)
    monkeypatch.setenv("ZOO_DECODE_CACHE", "0")
    data.cached_decode(split, data.Preprocess(16))
    assert len(list(folder.glob("*.safetensors"))) == 3  # off: nothing stored


def test_crop_pct_is_used_for_training_and_saved_for_prediction(tmp_path):
    from zoo import data
    from zoo.trainer import FinetuneConfig, Trainer

    trainer = Trainer(FinetuneConfig(**dict(FAST, data="digits", shots=5, epochs=1, crop_pct=1.0)), out=tmp_path / "r")
    trainer.fit()
    assert trainer.pre == data.Preprocess(32, 1.0, trainer.pre.interpolation)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["pretrained_cfg"]["crop_pct"] == 1.0
    assert backbones.load(tmp_path / "r").preprocess.crop_pct == 1.0  # zoo predict crops as training did
    with pytest.raises(UsageError, match=r"crop_pct must be a number in \(0, 1\], got 1.5"):
        FinetuneConfig(**dict(FAST, data="digits", crop_pct=1.5)).validate()


def test_decoding_in_worker_processes_gives_the_same_bits(tmp_path, monkeypatch):
    """Work worth a quarter second goes to forked workers: same pixels, same skips, same --strict error."""
    import os

    from PIL import Image

    from zoo import data

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: zoo decodes in-process")
    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        for i in range(150):
            Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"c{c}" / f"{i:04d}.png")
    (tmp_path / "imgs" / "c1" / "0100.png").write_bytes(b"\x89PNG cut short")
    split = data.open_dataset(str(tmp_path / "imgs")).splits["train"]
    pre = data.Preprocess(8, 1.0, "bilinear")
    assert data._workers() >= 2
    monkeypatch.setattr(data, "POOL_MIN_SECONDS", 0.0)  # these tiny images would not be worth it
    import multiprocessing

    forks = []
    real_process = multiprocessing.context.ForkContext.Process
    monkeypatch.setattr(multiprocessing.context.ForkContext, "Process", lambda self, *a, **k: forks.append(k) or real_process(*a, **k))
    seen = []
    pooled = data.decode(split, pre, progress=seen.append)
    assert len(forks) >= 2, "the workers were not used"
    assert not multiprocessing.active_children()  # every worker reaped
    assert sum(seen) == len(split)
    monkeypatch.setattr(data, "_workers", lambda: 0)
    inline = data.decode(split, pre)
    assert torch.equal(pooled.images, inline.images) and torch.equal(pooled.labels, inline.labels)
    assert pooled.skipped == inline.skipped == [str(tmp_path / "imgs" / "c1" / "0100.png")]
    assert len(pooled.labels) == len(split) - 1
    monkeypatch.setattr(data, "_workers", lambda: 2)
    with pytest.raises(ZooError, match=r"cannot read image .*0100\.png"):
        data.decode(split, pre, strict=True)


@pytest.mark.slow
def test_compile_trains_like_eager(tmp_path):
    """--compile runs the training forward through torch.compile; the weights match eager closely, and one graph
    is compiled: the epoch's short last batch runs eagerly instead of compiling a second one. (test_vit with one
    block: a patch embedding, attention, an MLP, layer norms and the head, forward and backward, in 19 C++ kernels;
    cold, 37 CPU-s, against 51 with its six blocks and 58 for test_resnet.)"""
    from safetensors.torch import load_file
    from torch._dynamo.utils import counters

    import zoo

    runs = {}
    counters.clear()
    for compiled in (False, True):
        result = zoo.finetune("test_vit", data="digits", out=tmp_path / str(compiled), shots=10, pretrained=False, img_size=32,
                              model_args={"depth": 1}, epochs=1, batch_size=16, aug="none", seed=2, compile=compiled)
        runs[compiled] = load_file(result.run_dir / "model.safetensors")
    assert counters["frames"]["total"] == 1, dict(counters["frames"])  # (the 84 training images end with a batch of 4)
    assert runs[True].keys() == runs[False].keys()  # checkpoints keep the plain module's names
    worst = max(float((runs[True][k].float() - runs[False][k].float()).abs().max()) for k in runs[True])
    # Inductor fuses and reorders float sums: 6e-8 measured here (test_resnet's convolutions drifted 3.7e-3).
    assert worst < 1e-3, worst


def test_frozen_pass_runs_in_bf16_only_with_amp_auto_on_a_cpu_with_bf16_units():
    from zoo import features

    native = features.cpu_bf16()
    assert features.pass_dtype("cpu", "auto", None) == (torch.bfloat16 if native else None)
    assert features.pass_dtype("cpu", "off", None) is None  # --amp off: float32 everywhere
    assert features.pass_dtype("cpu", "bf16", torch.bfloat16) == torch.bfloat16
    assert features.pass_dtype("cuda", "auto", torch.bfloat16) == torch.bfloat16
