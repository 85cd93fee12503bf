"""Files zoo did not write are untrusted: what they say never reaches pip as anything but
``name==version``, never runs when a printed hint is pasted into a shell, and never rewrites the
terminal. Everything runs for real: the CLI in a subprocess, real pip, real bash."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_image_folder, write_plugin_record

from zoo import forkserver

# Class folder names a stranger's dataset or config.json may hold: terminal escapes (retitle the
# window, clear the screen), a bidi override, a C1 control, rich markup, a link and (bad) matplotlib math.
EVIL_CLASSES = ("\x1b[2J", "\x1b]0;evil\x07", "ok\u202e", "[blink]x", "[link=mailto:a@b]y", "c1\x9b", "a$x^$")
EVIL_DIR = "r $(touch pwned) 'q'"  # a run folder whose name runs a command if a hint is pasted unquoted
RAW = ("\x1b", "\x07", "\u202e", "\x9b")  # none of these may reach the terminal


def zoo(*args, cwd=None, **env) -> subprocess.CompletedProcess:
    return forkserver.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200", **env})


def describe(proc) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def bash_words(hint: str, cwd: Path) -> list[str]:
    """The words bash makes of a pasted hint (printf prints each one on a line); nothing in it runs."""
    done = subprocess.run(["bash", "-c", f"printf '%s\\n' {hint}"], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory):
    """A run trained through the CLI on a folder whose class names are terminal escapes and markup, into a
    folder named with ``$(touch pwned)``; one unreadable image is named with an escape too."""
    root = tmp_path_factory.mktemp("evil")
    data = make_image_folder(root / "data", classes=EVIL_CLASSES, per_class=3, size=(16, 16))
    (data / "ok\u202e" / "bad\x1b[2J.png").write_bytes(b"not an image")
    out = root / EVIL_DIR
    proc = zoo("finetune", "test_resnet", "--data", data, "--no-pretrained", "--img-size", "32", "--epochs", "1",
               "--batch-size", "8", "--aug", "none", "--val-split", "0.34", "--out", out, cwd=root)
    assert proc.returncode == 0, describe(proc)
    assert (out / "confusion.png").is_file()
    return {"root": root, "data": data, "run": out, "stdout": proc.stdout, "stderr": proc.stderr}


# -- point 1: --from-model hands pip only name==version ---------------------------------------------
NOT_NAME_EQ_VERSION = {
    "url": {"name": "zoo-cosine @ file:///tmp/evilpkg#x", "version": "0.1.0"},
    "https-url": {"name": "zoo-cosine@https://127.0.0.1:9/evil.whl", "version": "0.1.0"},
    "index-option": {"name": "-ihttp://127.0.0.1:9/simple", "version": "0.1.0"},
    "long-option": {"name": "--index-url=http://127.0.0.1:9/simple", "version": "0.1.0"},
    "requirements-file": {"name": "-r reqs.txt", "version": "0.1.0"},
    "editable": {"name": "-e .", "version": "0.1.0"},
    "space": {"name": "zoo cosine", "version": "0.1.0"},
    "marker": {"name": "zoo-cosine; os_name == 'posix'", "version": "0.1.0"},
    "extras": {"name": "zoo-cosine[evil]", "version": "0.1.0"},
    "specifier": {"name": "zoo-cosine>=0", "version": "0.1.0"},
    "escape": {"name": "zoo-\x1b[2Jcosine", "version": "0.1.0"},
    "not-a-string": {"name": ["zoo-cosine"], "version": "0.1.0"},
    "version-with-marker": {"name": "zoo-cosine", "version": "1.0; os_name==\"posix\""},
    "version-specifier": {"name": "zoo-cosine", "version": ">=0"},
    "version-url": {"name": "zoo-cosine", "version": "1.0 @ file:///tmp/evilpkg"},
    "no-version": {"name": "zoo-cosine"},
    "version-not-a-string": {"name": "zoo-cosine", "version": 1.0},
}


def pip_env(tmp: Path) -> dict:
    """pip, if it runs at all, writes its log to pip.log and installs only into target/ (never this venv)."""
    return {"PIP_LOG": str(tmp / "pip.log"), "PIP_TARGET": str(tmp / "target"), "PIP_NO_INDEX": "1", "PIP_NO_INPUT": "1"}


@pytest.mark.parametrize("case", sorted(NOT_NAME_EQ_VERSION))
def test_a_record_that_is_not_name_eq_version_never_reaches_pip(case, tmp_path):
    record = NOT_NAME_EQ_VERSION[case]
    (tmp_path / "reqs.txt").write_text("zoo-cosine\n")
    write_plugin_record(tmp_path / "model", record)
    proc = zoo("plugins", "install", "--from-model", tmp_path / "model", "-y", cwd=tmp_path, **pip_env(tmp_path))
    assert proc.returncode == 1, describe(proc)
    assert not (tmp_path / "pip.log").exists() and not (tmp_path / "target").exists(), "pip ran"
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, describe(proc)
    line = proc.stderr
    assert line.startswith(f"Error: {tmp_path / 'model'} records a plugin zoo will not install: name ") and "PEP 440" in line
    assert repr(record["name"]) in line and repr(record.get("version")) in line  # names the record ...
    assert not any(c in line for c in RAW)  # ... printably


def test_a_valid_record_reaches_pip_as_name_eq_version(tmp_path):
    """The control for the test above: a good record does run pip (which then finds nothing: no index).
    A record pointing at a package whose build would run code: tests/test_plugins_e2e.py."""
    write_plugin_record(tmp_path / "model", {"name": "Zoo_Not_Here", "version": "1.0.0"})
    proc = zoo("plugins", "install", "--from-model", tmp_path / "model", "-y", cwd=tmp_path, **pip_env(tmp_path))
    assert proc.returncode == 1, describe(proc)
    assert "will install Zoo_Not_Here==1.0.0 (entry point 'cosine', provides cosine)" in proc.stdout
    assert proc.stderr.startswith("Error: pip install failed: ") and "Zoo_Not_Here==1.0.0" in proc.stderr, describe(proc)
    log = (tmp_path / "pip.log").read_text()
    assert "Zoo_Not_Here==1.0.0" in log


@pytest.mark.parametrize("config", [{"zoo": "x"}, {"zoo": {"plugins": {"name": "zoo-x", "version": "1.0"}}},
                                    {"zoo": {"plugins": ["zoo-x==1.0", 3, None]}}, ["not", "a", "mapping"]])
def test_a_config_without_plugin_records_installs_nothing(config, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(config))
    proc = zoo("plugins", "install", "--from-model", tmp_path, "-y", **pip_env(tmp_path))
    assert proc.returncode == 0 and proc.stdout == f"{tmp_path} needs no plugin to load\n", describe(proc)
    assert not (tmp_path / "pip.log").exists()


def test_missing_head_hint_uses_the_same_check(evil_run, tmp_path, run):
    model = tmp_path / "model"
    shutil.copytree(evil_run["run"], model, ignore=shutil.ignore_patterns(".lock", "checkpoints"))
    cfg = json.loads((model / "config.json").read_text())
    cfg["zoo"]["head"] = {"name": "cosine", "options": {}}
    cfg["zoo"]["plugins"] = [{"name": "zoo-cosine @ file:///tmp/evilpkg", "version": "0.1.0", "provides": ["cosine"]}]
    (model / "config.json").write_text(json.dumps(cfg))
    image = evil_run["data"] / "ok\u202e" / "0.png"
    refused = run("predict", model, image)
    assert refused.exit_code == 1
    assert refused.stderr.endswith("run: zoo plugins install <the plugin that provides it>\n"), refused.stderr
    assert "file://" not in refused.stderr
    cfg["zoo"]["plugins"][0]["name"] = "zoo-cosine"
    (model / "config.json").write_text(json.dumps(cfg))
    hinted = run("predict", model, image)
    assert hinted.stderr.endswith("which no installed plugin provides: run: zoo plugins install zoo-cosine==0.1.0\n"), hinted.stderr
    # A first-party plugin of this checkout's version: its bare name, which zoo installs from plugins/ (not on PyPI).
    for version, hint in (("0.1.0", "zoo-heads"), ("9.9.9", "zoo-heads==9.9.9")):
        cfg["zoo"]["plugins"][0].update(name="zoo-heads", version=version)
        (model / "config.json").write_text(json.dumps(cfg))
        hinted = run("predict", model, image)
        assert hinted.stderr.endswith(f"which no installed plugin provides: run: zoo plugins install {hint}\n"), hinted.stderr


# -- point 7: hints are quoted; nothing from a file rewrites the terminal ----------------------------
def test_printed_hints_quote_the_run_folder(evil_run, tmp_path, run):
    run_dir = evil_run["run"]
    hint = re.search(r"^predict with: (.*)$", evil_run["stdout"], re.M).group(1)
    assert bash_words(hint, tmp_path) == ["zoo", "predict", str(run_dir), "IMAGE"]

    again = run("finetune", "test_resnet", "--data", evil_run["data"], "--out", run_dir, "--no-pretrained", "--epochs", "1")
    assert again.exit_code == 2
    hint = re.search(r"already holds a run: use (.*) or another --out$", again.stderr.strip()).group(1)
    assert bash_words(hint, tmp_path) == ["--resume", str(run_dir)]

    unfinished = tmp_path / EVIL_DIR
    unfinished.mkdir()
    (unfinished / "run_config.yaml").write_text("backbone: test_resnet\n")
    pushed = run("push", unfinished, "me/model")
    hint = re.search(r"resume it with: (.*)$", pushed.stderr.strip()).group(1)
    assert bash_words(hint, tmp_path) == ["zoo", "finetune", "--resume", str(unfinished)]

    made = run("plugins", "new", "zoo-x", "--dir", tmp_path / "new $(touch pwned)")
    assert made.exit_code == 0, made.stderr
    install, test = re.search(r"install it with: (.*); then run: (.*)$", made.stdout.strip()).groups()
    folder = str(tmp_path / "new $(touch pwned)" / "zoo-x")
    assert bash_words(install, tmp_path) == ["zoo", "plugins", "install", folder]
    assert bash_words(test, tmp_path) == ["python", "-m", "pytest", f"{folder}/tests"]
    assert not (tmp_path / "pwned").exists()


def test_training_output_shows_names_escaped(evil_run):
    assert not any(c in evil_run["stdout"] + evil_run["stderr"] for c in RAW)
    warning = [ln for ln in evil_run["stderr"].splitlines() if "unreadable" in ln]
    assert len(warning) == 1 and "bad\\x1b[2J.png" in warning[0], evil_run["stderr"]


@pytest.mark.slow
def test_class_names_print_escaped_in_predict_info_and_evaluate(evil_run, tmp_path):
    run_dir, image = evil_run["run"], evil_run["data"] / "ok\u202e" / "0.png"
    escaped = ["\\x1b[2J", "\\x1b]0;evil\\x07", "ok\\u202e", "[blink]x", "[link=mailto:a@b]y", "c1\\x9b", "a$x^$"]
    predicted = zoo("predict", run_dir, image, "--top-k", "7", cwd=tmp_path)
    info = zoo("info", f"local-dir:{run_dir}", cwd=tmp_path)
    evaluated = zoo("evaluate", run_dir, "--data", evil_run["data"], cwd=tmp_path)
    for proc in (predicted, info, evaluated):
        assert proc.returncode == 0, describe(proc)
        assert not any(c in proc.stdout + proc.stderr for c in RAW), describe(proc)
        for name in escaped:  # every name shows, printably, and markup prints as written
            assert name in proc.stdout, (name, proc.stdout)
    assert predicted.stdout.startswith(f"{evil_run['data']}/ok\\u202e/0.png: ")
    # --json keeps the names exactly (JSON escapes them itself)
    labels = {p["label"] for p in json.loads(zoo("predict", run_dir, image, "--top-k", "7", "--json").stdout)[0]["predictions"]}
    assert labels == set(EVIL_CLASSES)
    assert json.loads(zoo("info", f"local-dir:{run_dir}", "--json").stdout)["label_names"] == sorted(EVIL_CLASSES)


def test_error_lines_show_names_from_files_escaped(evil_run, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(evil_run["run"], model, ignore=shutil.ignore_patterns(".lock", "checkpoints"))
    cfg = json.loads((model / "config.json").read_text())
    cfg["architecture"] = "evil\x1b]0;title\x07\x1b[2J"
    (model / "config.json").write_text(json.dumps(cfg))
    proc = zoo("predict", model, evil_run["data"] / "ok\u202e" / "0.png")
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, describe(proc)
    assert "evil\\x1b]0;title\\x07\\x1b[2J" in proc.stderr and not any(c in proc.stderr for c in RAW)


# -- a damaged or hostile config.json fails in one place, in one line naming the file and the field ---
def _set(*path):
    """A change to config.json: set the value at the key path (the last item is the value)."""
    *keys, value = path

    def change(cfg):
        for key in keys[:-1]:
            cfg = cfg[key]
        cfg[keys[-1]] = value
    return change


BAD_CONFIGS = {  # case: (change, the field the error names)
    "crop-pct-zero": (_set("pretrained_cfg", "crop_pct", 0), "pretrained_cfg.crop_pct"),
    "crop-pct-above-one": (_set("pretrained_cfg", "crop_pct", 1.5), "pretrained_cfg.crop_pct"),
    "crop-pct-not-a-number": (_set("pretrained_cfg", "crop_pct", "0.9"), "pretrained_cfg.crop_pct"),
    "mean-two-values": (_set("pretrained_cfg", "mean", [0.5, 0.5]), "pretrained_cfg.mean"),
    "mean-not-numbers": (_set("pretrained_cfg", "mean", ["a", "b", "c"]), "pretrained_cfg.mean"),
    "std-zero": (_set("pretrained_cfg", "std", [0, 0.5, 0.5]), "pretrained_cfg.std"),
    "std-not-a-list": (_set("pretrained_cfg", "std", 0.5), "pretrained_cfg.std"),
    "num-classes-negative": (_set("num_classes", -1), "num_classes"),
    "num-classes-a-string": (_set("num_classes", "4"), "num_classes"),
    "num-classes-absurd": (_set("num_classes", 10**12), "num_classes"),
    "num-classes-a-boolean": (_set("pretrained_cfg", "num_classes", True), "pretrained_cfg.num_classes"),
    "input-size-zero": (_set("pretrained_cfg", "input_size", [3, 0, 0]), "pretrained_cfg.input_size"),
    "input-size-huge": (_set("pretrained_cfg", "input_size", [3, 100000, 100000]), "pretrained_cfg.input_size"),
    "input-size-not-a-list": (_set("pretrained_cfg", "input_size", 224), "pretrained_cfg.input_size"),
    "input-size-four-channels": (_set("pretrained_cfg", "input_size", [4, 32, 32]), "pretrained_cfg.input_size"),
    "interpolation-not-a-name": (_set("pretrained_cfg", "interpolation", ["bicubic"]), "pretrained_cfg.interpolation"),
    "label-names-a-string": (_set("label_names", "cat"), "label_names"),
    "label-names-not-strings": (_set("label_names", [1, 2, 3, 4, 5, 6, 7]), "label_names"),
    "label-names-too-few": (_set("label_names", ["a", "b"]), "label_names"),
    "architecture-a-number": (_set("architecture", 5), "architecture"),
    "pretrained-cfg-a-list": (_set("pretrained_cfg", [1]), "pretrained_cfg"),
    "zoo-section-a-string": (_set("zoo", "x"), "zoo"),
    "zoo-head-a-string": (_set("zoo", "head", "linear"), "zoo.head"),
    "zoo-head-options-a-list": (_set("zoo", "head", {"name": "linear", "options": [1]}), "zoo.head.options"),
    "zoo-plugins-a-mapping": (_set("zoo", "plugins", {"name": "zoo-x"}), "zoo.plugins"),
}
BAD_FILES = {  # case: (the bytes of config.json, what the error says)
    "nested-100000-deep": (b"[" * 100_000 + b"]" * 100_000, "is nested too deeply"),
    "not-utf-8": ('{"architecture": "caf\u00e9"}'.encode("latin-1"), "is not UTF-8 text"),
    "not-json": (b'{"architecture": ', "is not valid JSON"),
    "not-a-mapping": (b"[1, 2]", "is not a timm model config"),
}


def documented_configs() -> dict[str, str]:
    """case name -> message, from the damaged config.json table of docs/bad-inputs.md."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md").read_text(encoding="utf-8")
    section = text.split("### A damaged or hostile `config.json`")[1].split("\n#")[0]
    return dict(re.findall(r"^\|\s*`([a-z0-9-]+)`\s*\|.*\|\s*`(.+)`\s*\|\s*$", section, re.M))


def test_every_damaged_config_case_is_documented():
    assert sorted(documented_configs()) == sorted([*BAD_CONFIGS, *BAD_FILES])


@pytest.fixture
def damaged(evil_run, tmp_path):
    """A copy of a real run (no checkpoints) whose config.json the test damages."""
    model = tmp_path / "model"
    shutil.copytree(evil_run["run"], model, ignore=shutil.ignore_patterns(".lock", "checkpoints"))
    return model


def _one_line(result, case: str, run: Path):
    """Exit 1, nothing on stdout, and on stderr the one line docs/bad-inputs.md shows for the case."""
    assert result.exit_code == 1 and result.stdout == "", (result.exit_code, result.stdout, result.stderr)
    assert result.stderr == f"Error: {documented_configs()[case].replace('<run>', str(run))}\n"


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_damaged_config_value_is_one_line_naming_the_field(case, damaged, evil_run, run):
    change, field = BAD_CONFIGS[case]
    cfg = json.loads((damaged / "config.json").read_text())
    change(cfg)
    (damaged / "config.json").write_text(json.dumps(cfg))
    image = evil_run["data"] / "ok\u202e" / "0.png"
    for result in (run("predict", damaged, image), run("info", damaged)):
        _one_line(result, case, damaged)
        assert f"{damaged / 'config.json'}: '{field}' " in result.stderr


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_config_json_that_is_not_a_config_is_one_line(case, damaged, evil_run, run):
    raw, says = BAD_FILES[case]
    (damaged / "config.json").write_bytes(raw)
    for result in (run("predict", damaged, evil_run["data"] / "ok\u202e" / "0.png"), run("info", damaged)):
        _one_line(result, case, damaged)
        assert f"{damaged / 'config.json'} {says}" in result.stderr


def test_a_deeply_nested_config_fails_in_one_line_in_a_real_process(damaged, evil_run):
    (damaged / "config.json").write_bytes(b'{"zoo": ' * 100_000 + b"1" + b"}" * 100_000)
    proc = zoo("predict", damaged, evil_run["data"] / "ok\u202e" / "0.png")
    assert proc.returncode == 1 and proc.stdout == "", describe(proc)
    assert proc.stderr == f"Error: {damaged / 'config.json'} is nested too deeply to be a model config\n", describe(proc)
