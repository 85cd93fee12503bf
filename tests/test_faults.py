"""Faults: SIGKILL at random moments, then --resume, ends bit-identical; a failing write stops cleanly."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import alive, forked_workers, interrupt

from zoo import forkserver, hookimpl
from zoo.rundir import BEST, LAST, METRICS, RUN_CONFIG

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
    forkserver.run(command(ref), check=True, capture_output=True, timeout=300)
    duration = time.monotonic() - start

    seed = int(os.environ.get("ZOO_KILL_SEED", random.SystemRandom().randrange(2**32)))
    print(f"kill points drawn with ZOO_KILL_SEED={seed}; the uninterrupted run took {duration:.1f}s")  # shown when the test fails: rerun with it
    rng = random.Random(seed)
    out = tmp_path / "killed"
    kills, span = 0, duration  # span: how long an attempt runs, the whole run until one attempt has finished it
    for attempt in range(20):
        if kills == 5:
            break
        # Before run_config.yaml exists there is nothing to resume: the user runs the same command again.
        # After the run has finished, --resume writes its outputs again: a kill there must not harm them either.
        cmd = resume_command(out) if (out / RUN_CONFIG).exists() else command(out)
        with open(tmp_path / "stderr", "w+") as err:
            proc = forkserver.start(cmd, stdout=subprocess.DEVNULL, stderr=err)
        delay = rng.uniform(0.05, 0.6 * span)
        started = time.monotonic()
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            print(f"attempt {attempt}: killed after {delay:.2f}s")
            continue
        assert proc.returncode == 0, (tmp_path / "stderr").read_text()
        # The run is finished: the next attempts only write its outputs again, so kill within that shorter span
        # (drawn from the whole run's, most of them would end before their kill and use up the attempts).
        span = time.monotonic() - started
        print(f"attempt {attempt}: finished the run in {span:.2f}s")
    assert kills == 5
    finish = forkserver.run(resume_command(out) if (out / RUN_CONFIG).exists() else command(out), capture_output=True, text=True,
                            timeout=300)
    assert finish.returncode == 0, finish.stderr
    for name in ("model.safetensors", BEST, LAST):
        a, b = tensors(ref / name), tensors(out / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{name} differs from the uninterrupted run"
    assert metrics(out) == metrics(ref)  # every epoch exactly once, with the same numbers
    assert not list(out.rglob("*.tmp"))


def test_a_failing_write_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path):
    out = tmp_path / "run"
    args = ["test_resnet", "--data", "digits", "--shots", "10", "--no-pretrained", "--img-size", "32", "--batch-size", "16",
            "--aug", "none", "--quiet", "--out", str(out)]
    forkserver.run([sys.executable, "-m", "zoo", "finetune", *args, "--epochs", "1"], check=True, capture_output=True, timeout=300)
    good = (out / LAST).read_bytes()
    # Files may not grow past 64 KB: run_config.yaml and metrics.jsonl fit, a checkpoint does not (like a full disk).
    failed = forkserver.run([*resume_command(out), "--epochs", "2"], capture_output=True, text=True, timeout=300,
                            file_size_limit=64 * 1024)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot write ") and "File too large" in lines[0], failed.stderr
    assert (out / LAST).read_bytes() == good  # the last good checkpoint is intact
    assert not list(out.rglob("*.tmp"))
    again = forkserver.run([*resume_command(out), "--epochs", "2"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert [r["epoch"] for r in metrics(out)] == [1, 2]


# -- a full disk at each file a run writes ------------------------------------------------------------
# A ViT this small (model.safetensors 15 KB, last.pt 60 KB) lets a file-size limit fall between any two files.
TINY_VIT = ["test_vit", "--data", "synthetic:4", "--no-pretrained", "--img-size", "32", "--batch-size", "8", "--aug", "none",
            "--model-arg", "embed_dim=4", "--model-arg", "depth=1", "--model-arg", "num_heads=1", "--model-arg", "img_size=32",
            "--quiet"]


def _zoo(*args, limit: int | None = None) -> subprocess.CompletedProcess:
    return forkserver.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True, timeout=300,
                          file_size_limit=limit)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished four-epoch run of the tiny ViT."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    done = _zoo("finetune", *TINY_VIT, "--epochs", "4", "--out", out)
    assert done.returncode == 0, done.stderr
    return out


def _one_line(done: subprocess.CompletedProcess) -> str:
    """The one error line; a full disk may also stop zoo's image cache, which is at most a warning before it."""
    assert "Traceback" not in done.stderr, done.stderr
    *warnings, line = done.stderr.strip().splitlines()
    assert all(w.startswith("zoo: warning: cannot write ") and "going on without the cache" in w for w in warnings), done.stderr
    assert line.startswith("Error: "), done.stderr
    return line


@pytest.mark.slow
@pytest.mark.parametrize("name, epochs, limit", [
    (METRICS, 5, lambda run: max((run / METRICS).stat().st_size, (run / RUN_CONFIG).stat().st_size) + 50),  # the next line
    (LAST, 5, lambda run: 30_000),  # between best.safetensors and last.pt: torch.save's own write fails
    ("model.safetensors", 4, lambda run: 8_000),  # a finished run, resumed: it exports again
    ("loss.png", 4, lambda run: 20_000),  # the weights fit, the first plot does not
], ids=["metrics.jsonl", "last.pt", "model.safetensors", "loss.png"])
def test_a_full_disk_at_any_file_stops_with_one_line_keeps_the_file_and_resume_works(tmp_path, tiny_run, name, epochs, limit):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    failed = _zoo("finetune", "--resume", run, "--epochs", epochs, "--quiet", limit=limit(run))
    assert failed.returncode == 1
    line = _one_line(failed)
    assert line.startswith(f"Error: cannot write {run / name}: disk full or file too large: File too large;"), line
    assert (run / name).read_bytes() == before[Path(name)]  # the previous version is intact
    assert (run / LAST).read_bytes() == before[Path(LAST)]
    assert not list(run.rglob("*.tmp")) and not (run / ".lock").exists()
    again = _zoo("finetune", "--resume", run, "--epochs", epochs, "--quiet")
    assert again.returncode == 0, again.stderr
    assert [r["epoch"] for r in metrics(run)] == list(range(1, epochs + 1))
    assert (run / "README.md").is_file()


# -- a run that fails before its first checkpoint leaves its --out reusable -------------------------
class _FailingPolicy:
    """Everything trains, but exporting the weights fails: at the first best checkpoint, after run_config.yaml exists."""

    @hookimpl
    def zoo_register_freeze_policies(self, register):
        from zoo.freeze import GroupSetting

        class Broken:
            def settings(self, epoch, n_groups):
                return [GroupSetting(True, 1.0)] * n_groups

            def export(self, model):
                raise ValueError("cannot merge the adapters")

        register("broken-export", Broken)


class _FailingHead:
    """A head whose forward raises: a bug, shown with its traceback, in the first step."""

    @hookimpl
    def zoo_register_heads(self, register):
        def broken(model, num_classes):
            def fail(module, args, output):
                raise RuntimeError("shape mismatch in the plugin head")

            model.register_forward_hook(fail)
            return model

        register("broken", broken)


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing_and_the_same_out_runs_again(tmp_path, run):
    from zoo.plugins import get_plugins

    get_plugins().add(_FailingPolicy(), "zoo-failing-policy")
    get_plugins().add(_FailingHead(), "zoo-failing-head")
    out = tmp_path / "run"
    base = ["finetune", "test_resnet", "--data", "synthetic:4", "--no-pretrained", "--img-size", "32", "--epochs", "1",
            "--batch-size", "8", "--aug", "none", "--quiet", "--out", out]
    failed = run(*base, "--freeze", "broken-export")
    assert failed.exit_code == 1
    assert failed.stderr.strip() == ("Error: freeze policy 'broken-export' (plugin 'zoo-failing-policy') failed in export(): "
                                     "ValueError: cannot merge the adapters")
    assert not out.exists()
    with pytest.raises(RuntimeError, match="shape mismatch in the plugin head"):
        run(*base, "--head", "broken")
    assert not out.exists()
    out.mkdir()  # a folder the user made stays, empty
    failed = run(*base, "--lr", "1e30")
    assert failed.exit_code == 1 and failed.stderr.startswith("Error: training diverged at epoch 1, step ")
    assert list(out.iterdir()) == []
    done = run(*base)
    assert done.exit_code == 0, done.stderr
    assert (out / "model.safetensors").is_file() and not (out / ".lock").exists()


def test_a_full_disk_at_the_first_checkpoint_leaves_nothing_and_the_same_out_runs_again(tmp_path):
    out = tmp_path / "run"
    failed = _zoo("finetune", *TINY_VIT, "--epochs", "1", "--out", out, limit=8_000)  # best.safetensors is 15 KB
    assert failed.returncode == 1
    assert _one_line(failed).startswith(f"Error: cannot write {out / BEST}: disk full or file too large:")
    assert not out.exists()
    done = _zoo("finetune", *TINY_VIT, "--epochs", "1", "--out", out)
    assert done.returncode == 0, done.stderr


# -- divergence ----------------------------------------------------------------------------------------------
class _Poison:
    """Makes one value of the model (or its EMA) nan after the first epoch, as a buggy plugin could."""

    def __init__(self, where: str):
        self.where = where

    @hookimpl
    def zoo_on_epoch_end(self, trainer, epoch, metrics):
        import torch

        if epoch == 1:
            model = trainer.ema.module if self.where == "ema" else trainer.model
            tensor = next(t for n, t in model.state_dict().items() if (self.where == "buffer") == ("running_var" in n))
            tensor[(0,) * tensor.dim()] = torch.nan


@pytest.mark.parametrize("where", ["weight", "buffer", "ema"])
def test_nan_weights_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, run, where):
    from zoo.plugins import get_plugins, reset

    out = tmp_path / "run"
    args = ["test_resnet", "--data", "synthetic:4", "--no-pretrained", "--img-size", "32", "--epochs", "3", "--batch-size", "8",
            "--aug", "none", "--ema-decay", "0.5", "--quiet"]
    get_plugins().add(_Poison(where), "zoo-poison")
    failed = run("finetune", *args, "--out", out)
    assert failed.exit_code == 1
    what = "loss" if where == "weight" else "weights"  # a nan weight shows in the next loss; a nan statistic only in the weights
    assert failed.stderr.strip() == (f"Error: training diverged at epoch 2, step {1 if what == 'loss' else 2} of 2: the {what} "
                                     f"became nan or inf; start again with a lower --lr (this run's is 0.05), or add --clip-grad 1.0 "
                                     f"or --warmup-epochs 1; the last good checkpoint stays in {out / LAST}")
    assert [r["epoch"] for r in metrics(out)] == [1]
    assert not (out / "model.safetensors").exists()
    assert all(torch.isfinite(t).all() for t in tensors(out / LAST).values())
    assert all(torch.isfinite(t).all() for t in tensors(out / BEST).values())
    reset()  # without the plugin, the run resumes from its last good checkpoint
    done = run("finetune", "--resume", out, "--quiet")
    assert done.exit_code == 0, done.stderr
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3]


# -- signals while images decode in worker processes, or while frozen features are computed ----------
needs_workers = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU: zoo decodes without worker processes")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """240 real 1024x1024 PNG files in two classes: decoding them takes seconds, in worker processes (at 512x512 zoo's
    decoding, which reduces a PNG before it resizes, took 0.6 s: too short a window to send a signal into)."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    yy, xx = np.mgrid[0:1024, 0:1024]
    for c in range(2):
        (root / f"c{c}").mkdir()
        for i in range(120):
            base = ((xx if c else yy) * 0.2 + i).astype(np.uint8)
            Image.fromarray(np.stack([base, base // 2 + 40 * c, 255 - base], -1)).save(root / f"c{c}" / f"{i:03d}.png")
    return root


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """This test's own cache: what another test decoded or computed spares it no work."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# Training only a head on features computed once: the runs that finish are quick.
RUN = dict(backbone="test_resnet", pretrained=False, img_size=64, batch_size=32, epochs=1, freeze="head-only", aug="none")


def _finetune(photos: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "zoo", "finetune", "test_resnet", "--data", str(photos), "--no-pretrained", "--img-size", "384",
            "--batch-size", "32", "--epochs", "1", "--freeze", "head-only", "--aug", "none", "--out", str(out)]


def _stopped_cleanly(code: int, err: str, seconds: float, workers: list[int], message: str) -> None:
    assert seconds < 10, f"zoo took {seconds:.1f} s to stop"
    assert code == 130, err
    assert err.count("Error: interrupted;") == 1 and message in err, err
    assert "Traceback" not in err, err
    assert not [pid for pid in workers if alive(pid)], "worker processes outlived zoo"


@needs_workers
@pytest.mark.slow
@pytest.mark.parametrize("sig, group", [(signal.SIGTERM, True), (signal.SIGINT, True), (signal.SIGHUP, True), (signal.SIGTERM, False)],
                         ids=["SIGTERM", "SIGINT", "SIGHUP", "SIGTERM-to-zoo-only"])
def test_a_signal_while_workers_decode_stops_at_once_and_leaves_nothing(tmp_path, photos, cache, sig, group):
    out = tmp_path / "run"
    code, err, seconds, workers = interrupt(_finetune(photos, out), tmp_path / "log", when="decoding", sig=sig, group=group,
                                            workers=True)
    assert workers, "no worker processes decoded"
    _stopped_cleanly(code, err, seconds, workers, f"nothing was written to {out} yet: run the same command again")
    assert not out.exists()  # the lock and the folder it made are gone: the same command starts afresh
    assert not list(cache.rglob(".*.tmp"))


@pytest.mark.slow
def test_a_signal_in_the_frozen_feature_pass_stops_at_once_and_the_same_command_runs_again(tmp_path, photos, cache):
    import zoo

    out = tmp_path / "run"
    code, err, seconds, _ = interrupt(_finetune(photos, out), tmp_path / "log", when="frozen features of", sig=signal.SIGINT)
    _stopped_cleanly(code, err, seconds, [], f"nothing was written to {out} yet: run the same command again")
    assert not list(cache.rglob(".*.tmp")) and not list(cache.glob("features/*"))
    zoo.finetune(data=str(photos), out=out, **RUN)  # the same run again: accepted


@needs_workers
@pytest.mark.slow
def test_a_resumed_run_stopped_while_workers_decode_resumes_again(tmp_path, photos, cache):
    import zoo

    out = tmp_path / "run"
    zoo.finetune(data=str(photos), out=out, **RUN)
    resume = [sys.executable, "-m", "zoo", "finetune", "--resume", str(out), "--epochs", "2"]
    code, err, seconds, workers = interrupt(resume, tmp_path / "log", when="decoding", sig=signal.SIGTERM, workers=True,
                                            env={"ZOO_DECODE_CACHE": "0"})
    _stopped_cleanly(code, err, seconds, workers, f"Error: interrupted; resume with: zoo finetune --resume {out}")
    assert [r["epoch"] for r in metrics(out)] == [1]
    again = forkserver.run([*resume, "--quiet"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert [r["epoch"] for r in metrics(out)] == [1, 2]
    assert not list(out.rglob("*.tmp")) and not (out / ".lock").exists()


@needs_workers
@pytest.mark.slow
def test_a_signal_stops_compare_while_it_decodes_or_computes_features(tmp_path, photos, cache):
    cmd = [sys.executable, "-m", "zoo", "compare", "zoo-fmnist-resnet", "--data", str(photos), "--img-size", "384"]
    decoded = lambda: len(list((cache / "decoded").glob("*.safetensors"))) == 2  # noqa: E731 - both splits: features next
    for when, workers in ((lambda: True, True), (decoded, False)):  # decoding, then features
        code, err, seconds, seen = interrupt(cmd, tmp_path / "log", when=when, sig=signal.SIGTERM, workers=workers)
        assert seconds < 10 and code == 1 and err.strip().splitlines()[-1] == "Aborted!", (seconds, code, err)  # as after Ctrl-C
        assert "Traceback" not in err
        assert not [pid for pid in seen if alive(pid)]
        assert not list(cache.rglob(".*.tmp")) and not list((cache / "features").glob("*"))


@needs_workers
@pytest.mark.slow
def test_a_killed_worker_or_a_killed_zoo_leaves_no_process_waiting(tmp_path, photos, cache):
    for victim in ("worker", "zoo"):
        log = tmp_path / f"{victim}.log"
        with open(log, "w") as err:
            proc = forkserver.start(_finetune(photos, tmp_path / victim), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            deadline = time.monotonic() + 180
            while len(workers := forked_workers(proc.pid)) < 2:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.02)
            os.kill(workers[0] if victim == "worker" else proc.pid, signal.SIGKILL)  # out of memory, say
            if victim == "worker":  # zoo says so in one line, at once
                assert proc.wait(timeout=10) == 1
                assert log.read_text().strip().splitlines()[-1].startswith("Error: a decoding worker process died (signal 9"), \
                    log.read_text()
            gone = time.monotonic() + 10  # the orphans' next result finds no reader: they end
            while any(alive(pid) for pid in workers) and time.monotonic() < gone:
                time.sleep(0.05)
            assert not [pid for pid in workers if alive(pid)], f"workers outlived the {victim}"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
