"""Real torchrun processes on CPU (gloo): N x B follows 1 x N*B, other N resume, restarted workers continue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

COMMON = ["--data", "digits", "--shots", "15", "--no-pretrained", "--img-size", "32", "--aug", "light", "--lr", "0.05",
          "--seed", "3", "--quiet"]


def zoo(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs)


def weights(run_dir: Path) -> dict:
    from zoo.rundir import LAST, load_checkpoint

    return load_checkpoint(run_dir / LAST)["model"]


def assert_close(a: dict, b: dict, atol: float) -> float:
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())
    assert worst <= atol, f"largest difference {worst:.2e} > {atol:.0e}"
    for k in a:
        if not a[k].is_floating_point():
            assert torch.equal(a[k], b[k]), k
    return worst


def test_two_processes_follow_one_with_the_same_global_batch(tmp_path):
    # A model without BatchNorm: PyTorch's SyncBatchNorm, which would make BN nets agree too, needs GPUs.
    backbone, extra = "test_vit", ["--model-arg", "img_size=32"]
    one, two = tmp_path / "one", tmp_path / "two"
    a = zoo("finetune", backbone, *COMMON, "--epochs", "2", "--batch-size", "64", *extra, "--out", one)
    assert a.returncode == 0, a.stderr
    b = zoo("finetune", backbone, *COMMON, "--epochs", "2", "--batch-size", "32", *extra, "--nproc-per-node", "2", "--out", two)
    assert b.returncode == 0, b.stderr + b.stdout
    # Float sums in another order (two partial gradients, then all-reduce) differ in the last bits only.
    worst = assert_close(weights(one), weights(two), atol=1e-4)
    print(f"largest weight difference, 1 x 64 against 2 x 32: {worst:.2e}")
    m1 = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in m2] == [1, 2]
    for r1, r2 in zip(m1, m2, strict=False):  # metrics reduced over both processes: the whole validation split counted once
        assert r1["val_top1"] == pytest.approx(r2["val_top1"], abs=0.02)
        assert r1["train_loss"] == pytest.approx(r2["train_loss"], rel=1e-3)
    # Rank 0 alone wrote the run directory: one complete timm folder, no stray files.
    assert {p.name for p in two.iterdir()} >= {"model.safetensors", "config.json", "README.md", "run_config.yaml"}
    assert not list(two.rglob("*.tmp"))


def test_a_checkpoint_from_two_processes_resumes_with_one(tmp_path):
    out = tmp_path / "run"
    first = zoo("finetune", "test_resnet", *COMMON, "--epochs", "1", "--batch-size", "16", "--nproc-per-node", "2", "--out", out)
    assert first.returncode == 0, first.stderr
    state = torch.load(out / "checkpoints/last.pt", weights_only=True)
    assert state["world"] == 2 and state["global_batch"] == 32
    again = zoo("finetune", "--resume", out, "--epochs", "3", "--quiet")
    assert again.returncode == 0, again.stderr
    history = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert history == [1, 2, 3]
    assert torch.load(out / "checkpoints/last.pt", weights_only=True)["world"] == 1


def test_zoo_runs_under_torchrun_directly(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "zoo", "finetune",
           "test_resnet", *COMMON, "--epochs", "1", "--batch-size", "16", "--out", str(out), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout[done.stdout.index("{"):])  # one summary: rank 0's
    assert done.stdout.count('"run_dir"') == 1 and summary["epoch"] == 1
    assert (out / "model.safetensors").is_file()


def _workers(run_dir: Path) -> list[int]:
    """PIDs of the torchrun workers training ``run_dir`` (their command is ``zoo finetune --resume DIR``)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = [c.decode(errors="replace") for c in cmd]
        if "--resume" in text and str(run_dir) in text and not any("torch.distributed.run" in c for c in text):
            pids.append(int(proc.name))
    return pids


def test_a_killed_worker_is_restarted_and_the_run_continues(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "zoo", "finetune", "test_resnet", *COMMON, "--epochs", "30", "--batch-size", "16",
                             "--nproc-per-node", "2", "--max-restarts", "1", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints/last.pt").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint appeared"
            time.sleep(0.1)
        victims = _workers(out)
        assert len(victims) == 2, victims
        os.kill(victims[-1], signal.SIGKILL)
        _stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "exitcode: -9" in stderr  # torchrun saw the killed worker (and restarted the group: the run finished)
    assert "another process of this run stopped" in stderr  # the survivor's one line, not a traceback
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 31))  # each epoch once: the restarted workers continued, not restarted from zero
    assert (out / "model.safetensors").is_file()
