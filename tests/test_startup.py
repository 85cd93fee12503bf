"""`zoo list`, `zoo finetune --help` and a refused setting stay cheap: they import neither torch nor timm."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")}
    return {**env, "ZOO_LOAD_PLUGINS": ""}  # built-ins only: a third-party plugin may import what it likes


def test_zoo_list_in_process_imports_neither_torch_nor_timm(tmp_path):
    code = (
        "import sys, zoo.cli\n"
        "from click.testing import CliRunner\n"
        "result = CliRunner().invoke(zoo.cli.cli, ['list'])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'linear' in result.output and 'digits' in result.output, result.output\n"
        "print('torch' in sys.modules, 'timm' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"], proc.stdout


def test_zoo_list_command_imports_neither_torch_nor_timm(tmp_path):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "zoo", "list"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "linear" in proc.stdout
    # -X importtime writes one "import time: self | cumulative | module" line per imported module.
    modules = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "zoo.cli" in modules, "no import timings: is -X importtime supported?"
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, f"`zoo list` imported {heavy[:10]}"


def test_model_commands_import_torch_frozen_out_of_the_collector(tmp_path):
    """finetune/predict/evaluate/compare import torch and timm once, then keep them out of the GC's walks."""
    code = (
        "import gc, sys, zoo.cli\n"
        "zoo.cli._import_torch()\n"
        "assert 'torch' in sys.modules and 'timm' in sys.modules and gc.isenabled()\n"
        "class Cycle: pass\n"
        "c = Cycle(); c.me = c; del c\n"
        "print(gc.get_freeze_count(), gc.collect())\n"  # the collector still frees what the run makes
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    frozen, collected = map(int, proc.stdout.split())
    assert frozen > 100_000 and collected >= 1, proc.stdout


def _heavy_imports(tmp_path, *args) -> tuple[subprocess.CompletedProcess, list[str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "zoo", *map(str, args)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=120)
    modules = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "zoo.config" in modules, "no import timings: is -X importtime supported?"
    return proc, sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_finetune_help_imports_neither_torch_nor_timm(tmp_path):
    proc, heavy = _heavy_imports(tmp_path, "finetune", "--help")
    assert proc.returncode == 0 and "--weight-decay FLOAT" in proc.stdout, proc.stderr[-2000:]
    assert not heavy, f"`zoo finetune --help` imported {heavy[:10]}"


def test_a_refused_setting_imports_neither_torch_nor_timm(tmp_path):
    """Settings are checked before torch loads: a bad value costs a fraction of a second, not torch's import."""
    (tmp_path / "cfg.yaml").write_text("backbone: test_resnet\ndata: synthetic\nweight_decay: abc\n")
    for args in (["--momentum", "-1"], ["--config", "cfg.yaml"]):
        proc, heavy = _heavy_imports(tmp_path, "finetune", "test_resnet", "--data", "synthetic", *args)
        assert proc.returncode == 2 and "Error: " in proc.stderr, proc.stderr[-2000:]
        assert not heavy, f"{args}: imported {heavy[:10]}"


def test_push_of_a_run_imports_neither_torch_nor_timm(tmp_path):
    """Publishing reads files and talks HTTP: the dry run (all of push but the upload) costs no torch import."""
    from conftest import FAST

    import zoo
    from zoo.model_config import ARCHITECTURE_ARGS, _loader_params

    assert not set(ARCHITECTURE_ARGS) & _loader_params()  # what lets push skip importing timm is true of this timm
    run = tmp_path / "run"
    zoo.finetune(data="synthetic", out=run, **{**FAST, "epochs": 1})
    proc, heavy = _heavy_imports(tmp_path, "push", run, "user/x", "--dry-run", tmp_path / "up")
    assert proc.returncode == 0 and (tmp_path / "up" / "model.safetensors").is_file(), proc.stderr[-2000:]
    assert not heavy, f"`zoo push` imported {heavy[:10]}"
