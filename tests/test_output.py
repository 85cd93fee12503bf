"""What people read: tables that never split a name or a path, at any width or piped; the plots; zoo info of a run."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import sys
import termios
from pathlib import Path

import pytest

from zoo import forkserver

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RUN = "a-run-directory-with-a-rather-long-name-for-narrow-terminals"


def _env(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return {**env, "ZOO_LOAD_PLUGINS": "", "ZOO_CACHE": str(tmp / "cache"), "XDG_CONFIG_HOME": str(tmp / "config"), **extra}


def on_terminal(args, cwd: Path, columns: int, timeout=300) -> str:
    """Run ``zoo ARGS`` on a real pseudo-terminal ``columns`` wide; returns what it showed, colours removed."""
    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    with open(side, "r+b", buffering=0) as terminal:
        proc = forkserver.start([sys.executable, "-m", "zoo", *map(str, args)], stdin=terminal, stdout=terminal, stderr=terminal,
                                cwd=cwd, env=_env(cwd, COLUMNS=str(columns), TERM="xterm"))
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert proc.wait(timeout=timeout) == 0, b"".join(chunks).decode(errors="replace")
    return ANSI.sub("", b"".join(chunks).decode()).replace("\r\n", "\n")


def piped(args, cwd: Path, **env) -> str:
    proc = forkserver.run([sys.executable, "-m", "zoo", *map(str, args)], cwd=cwd, env=_env(cwd, **env),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _words(text: str) -> set[str]:
    """Every whole word in table output (box characters and spaces separate words)."""
    return set(re.split(r"[\s│┃║|]+", text))


def test_list_keeps_every_name_whole_at_80_and_40_columns_and_piped(tmp_path):
    names = {kind: [r["name"] for r in rows] for kind, rows in json.loads(piped(["list", "--json"], tmp_path)).items()}
    sources = [r["source"] for r in json.loads(piped(["list", "backbones", "--json"], tmp_path))]
    assert sum(map(len, names.values())) > 30
    wide = piped(["list"], tmp_path, COLUMNS="40")  # piped: no width limit, whatever COLUMNS says
    assert {n for rows in names.values() for n in rows} | set(sources) <= _words(wide)
    for line in wide.splitlines():
        if any(line.startswith(c) for c in "│"):
            assert line.count("│") >= 4  # every row is one line: nothing wrapped
    for columns in (80, 40):
        shown = on_terminal(["list"], tmp_path, columns)
        missing = {n for rows in names.values() for n in rows} - _words(shown)
        assert not missing, (columns, missing, shown)
        assert max(map(len, shown.splitlines())) <= columns  # it fits: less important columns went
    at_80 = on_terminal(["list", "backbones"], tmp_path, 80)
    assert "params (M)" in at_80 and "license" in at_80 and "pretrained on" not in at_80


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real fine-tune, its summary shown on a 40-column terminal."""
    tmp = tmp_path_factory.mktemp("out")
    out = tmp / "runs" / RUN
    shown = on_terminal(["finetune", "test_resnet", "--data", "synthetic", "--no-pretrained", "--img-size", "32", "--epochs", "3",
                         "--batch-size", "16", "--aug", "none", "--out", out], tmp, 40)
    return out, shown


@pytest.mark.slow
def test_finetune_summary_keeps_the_run_path_whole_on_a_narrow_terminal(run_dir):
    out, shown = run_dir
    assert f"done: {out}\n" in shown
    assert f"predict with: zoo predict {out} IMAGE" in shown
    assert "top1" in shown and "eval_split" in shown


@pytest.mark.slow
def test_plots_name_the_run_and_say_what_they_show(run_dir):
    from PIL import Image

    out, _ = run_dir
    config = json.loads((out / "config.json").read_text())
    metrics = config["zoo"]["metrics"]
    for name, what in (("loss.png", "loss"), ("accuracy.png", "top-1 accuracy")):
        assert Image.open(out / name).text["Title"] == f"{RUN}\n{what}"
    assert Image.open(out / "confusion.png").text["Title"] == f"{RUN}\nconfusion on the test split, top-1 {metrics['top1']:.3f}"


def test_plot_figures(tmp_path):
    """Whole-number epoch ticks, the best epoch marked, counts that contrast with their cells, names kept literal."""
    import numpy as np

    from zoo.rundir import figures, plot

    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_top1": e / 10, "val_top1": e / 12} for e in (1, 2, 3)]
    confusion = np.array([[40, 0, 1], [2, 30, 0], [0, 5, 20]])
    classes = ["$x^2$", "cat\x1b[2J", "dog"]
    figs = figures("my-run $5", history, confusion, classes, best_epoch=2, split="val", top1=0.9)
    for name in ("loss.png", "accuracy.png"):
        ax = figs[name].axes[0]
        figs[name].canvas.draw()
        assert ax.get_title() == f"my-run $5\n{'loss' if name == 'loss.png' else 'top-1 accuracy'}"
        assert not ax.title.get_parse_math()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        best = [line for line in ax.get_lines() if line.get_gid() == "best-epoch"]
        assert len(best) == 1 and list(best[0].get_xdata()) == [2, 2]
        assert "best (saved): epoch 2" in [t.get_text() for t in ax.get_legend().get_texts()]
    ax = figs["confusion.png"].axes[0]
    assert ax.get_title() == "my-run $5\nconfusion on the val split, top-1 0.900"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["$x^2$", "cat\\x1b[2J", "dog"]
    assert not any(t.get_parse_math() for t in ax.get_xticklabels() + ax.get_yticklabels())
    colours = {t.get_text(): t.get_color() for t in ax.texts}
    assert colours["40"] == "white" and colours["30"] == "white" and colours["0"] == "black" and colours["1"] == "black"
    assert figures("r", history, None, classes).keys() == {"loss.png", "accuracy.png"}
    without_best = figures("r", history, None, classes)["loss.png"].axes[0]
    assert not [line for line in without_best.get_lines() if line.get_gid() == "best-epoch"]
    assert plot(tmp_path, history, confusion, classes, best_epoch=2, split="val", top1=0.9) == ["loss.png", "accuracy.png", "confusion.png"]


@pytest.mark.slow
def test_info_of_a_run_shows_classes_head_metrics_and_plugins(run_dir, tmp_path):
    out, _ = run_dir
    data = json.loads(piped(["info", out, "--json"], tmp_path))
    assert data["classes"] == ["red-square", "green-disc", "blue-bar", "white-cross"]
    assert data["head"] == {"name": "linear", "options": {}} and data["freeze"]["name"] == "none"
    assert data["trained_from"] == "timm:test_resnet" and data["data"] == "synthetic:24"
    assert data["metrics"]["eval_split"] == "test" and data["metrics"]["epoch"] in (1, 2, 3) and "top1" in data["metrics"]
    assert data["plugins"] == []  # built-ins only: nothing to install
    text = piped(["info", out], tmp_path)
    assert re.search(r"│ classes\s+│ red-square, green-disc, blue-bar, white-cross\s+│", text)
    assert re.search(r"│ head\s+│ linear\s+│", text) and re.search(r"│ plugins\s+│ none beyond zoo's built-ins\s+│", text)
    assert re.search(rf"│ metrics\s+│ top1 {data['metrics']['top1']:.4f}, .*eval_split test", text)
    assert str(out) in _words(on_terminal(["info", out], tmp_path, 40))  # the path whole on a narrow terminal


@pytest.mark.slow
def test_info_of_a_run_names_the_plugin_it_needs(run_dir, tmp_path):
    """A head from a plugin that is not installed: zoo info says which, and how to get it."""
    import shutil

    from conftest import write_plugin_record

    out, _ = run_dir
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    write_plugin_record(copy, {"name": "zoo-cosine", "version": "1.2.0", "entry_point": "cosine", "provides": ["cosine"],
                               "needed_to_load": True, "builtin": False})
    data = json.loads(piped(["info", copy, "--json"], tmp_path))
    assert data["plugins"] == [{"name": "zoo-cosine", "version": "1.2.0", "provides": ["cosine"], "needed_to_load": True,
                                "installed": None, "install": "zoo plugins install zoo-cosine==1.2.0"}]
    text = piped(["info", copy], tmp_path)
    assert "zoo-cosine 1.2.0 (provides cosine): missing, install with: zoo plugins install zoo-cosine==1.2.0" in text
