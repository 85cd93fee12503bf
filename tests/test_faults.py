"""Faults: SIGKILL at random moments, then --resume, ends bit-identical; a failing write stops cleanly."""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from zoo.runs import BEST, LAST, METRICS, RUN_CONFIG

ARGS = ["test_resnet", "--data", "digits", "--shots", "20", "--no-pretrained", "--img-size", "32", "--epochs", "4",
        "--batch-size", "16", "--aug", "default", "--ema-decay", "0.9", "--save-every", "3", "--seed", "5", "--quiet"]


def command(out: Path) -> list[str]:
    return [sys.executable, "-m", "zoo", "finetune", *ARGS, "--out", str(out)]


def resume_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "zoo", "finetune", "--resume", str(out), "--quiet"]


def tensors(path: Path) -> dict:
    if path.suffix == ".pt":
        return torch.load(path, weights_only=True)["model"]
    from safetensors.torch import load_file

    return load_file(path)


def metrics(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "images_per_s"} for line in (out / METRICS).read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_at_five_random_moments_then_resume_is_bit_identical(tmp_path):
    ref = tmp_path / "ref"
    start = time.monotonic()
    subprocess.run(command(ref), check=True, capture_output=True, timeout=300)
    duration = time.monotonic() - start

    seed = int(os.environ.get("ZOO_KILL_SEED", random.SystemRandom().randrange(2**32)))
    print(f"kill points drawn with ZOO_KILL_SEED={seed}; the uninterrupted run took {duration:.1f}s")  # shown when the test fails: rerun with it
    rng = random.Random(seed)
    out = tmp_path / "killed"
    kills = 0
    for attempt in range(20):
        if kills == 5:
            break
        # Before run_config.yaml exists there is nothing to resume: the user runs the same command again.
        # After the run has finished, --resume writes its outputs again: a kill there must not harm them either.
        cmd = resume_command(out) if (out / RUN_CONFIG).exists() else command(out)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        delay = rng.uniform(0.2, 0.6 * duration)  # each attempt pays the start-up again: kill within its first part
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            print(f"attempt {attempt}: killed after {delay:.2f}s")
            continue
        assert proc.returncode == 0, proc.stderr.read().decode()
    assert kills == 5
    finish = subprocess.run(resume_command(out) if (out / RUN_CONFIG).exists() else command(out), capture_output=True, text=True,
                            timeout=300)
    assert finish.returncode == 0, finish.stderr
    for name in ("model.safetensors", BEST, LAST):
        a, b = tensors(ref / name), tensors(out / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} differs from the uninterrupted run"
    assert metrics(out) == metrics(ref)  # every epoch exactly once, with the same numbers
    assert not list(out.rglob("*.tmp"))


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail with EFBIG
    return apply


def test_a_failing_write_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = ["test_resnet", "--data", "digits", "--shots", "10", "--no-pretrained", "--img-size", "32", "--batch-size", "16",
            "--aug", "none", "--quiet", "--out", str(out)]
    subprocess.run([sys.executable, "-m", "zoo", "finetune", *args, "--epochs", "1"], check=True, capture_output=True, timeout=300)
    good = (out / LAST).read_bytes()
    # Files may not grow past 64 KB: run_config.yaml and metrics.jsonl fit, a checkpoint does not (like a full disk).
    failed = subprocess.run(resume_command(out) + ["--epochs", "2"], capture_output=True, text=True, timeout=300,
                            preexec_fn=_limit_file_size(64 * 1024))
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot write ") and "File too large" in lines[0], failed.stderr
    assert (out / LAST).read_bytes() == good  # the last good checkpoint is intact
    assert not list(out.rglob("*.tmp"))
    again = subprocess.run(resume_command(out) + ["--epochs", "2"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert [r["epoch"] for r in metrics(out)] == [1, 2]
