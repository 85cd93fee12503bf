"""Real torchrun processes on CPU (gloo): N x B follows 1 x N*B, other N resume, restarted workers continue."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import interrupt

from zoo import forkserver

pytestmark = pytest.mark.slow

COMMON = ["--data", "digits", "--shots", "15", "--no-pretrained", "--img-size", "32", "--aug", "light", "--lr", "0.05",
          "--seed", "3", "--quiet"]


def zoo(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return forkserver.run([sys.executable, "-m", "zoo", *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs)


def _start(args: list, log: Path, **kwargs) -> forkserver.Process:
    """``zoo ARGS`` in the background, its stderr written to the file ``log`` (the path kept as ``proc.log``)."""
    with open(log, "w") as err:
        proc = forkserver.start([sys.executable, "-m", "zoo", *map(str, args)], stdout=subprocess.DEVNULL, stderr=err, **kwargs)
    proc.log = log
    return proc


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


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory) -> tuple[Path, Path]:
    """The same run on one process (batch 64) and on two (2 x 32), 2 epochs each; tests copy them to change them."""
    # A model without BatchNorm: PyTorch's SyncBatchNorm, which would make BN nets agree too, needs GPUs.
    backbone, extra = "test_vit", ["--model-arg", "img_size=32"]
    one, two = tmp_path_factory.mktemp("one") / "run", tmp_path_factory.mktemp("two") / "run"
    a = zoo("finetune", backbone, *COMMON, "--epochs", "2", "--batch-size", "64", *extra, "--out", one)
    assert a.returncode == 0, a.stderr
    b = zoo("finetune", backbone, *COMMON, "--epochs", "2", "--batch-size", "32", *extra, "--nproc-per-node", "2", "--out", two)
    assert b.returncode == 0, b.stderr + b.stdout
    return one, two


def test_two_processes_follow_one_with_the_same_global_batch(one_and_two):
    one, two = one_and_two
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


def test_a_checkpoint_from_two_processes_resumes_with_one(one_and_two, tmp_path):
    out = shutil.copytree(one_and_two[1], tmp_path / "run")
    state = torch.load(out / "checkpoints/last.pt", weights_only=True)
    assert state["world"] == 2 and state["global_batch"] == 64
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
        if "--resume" in text and str(run_dir) in text and "--nproc-per-node" not in text:  # (that is the launcher)
            pids.append(int(proc.name))
    return pids


def test_a_killed_worker_is_restarted_and_the_run_continues(tmp_path):
    out = tmp_path / "run"
    # The kill comes within 0.1 s of the first checkpoint; 11 epochs more take about 2 s (0.17 s each), the restart 4.
    proc = _start(["finetune", "test_resnet", *COMMON, "--epochs", "12", "--batch-size", "16", "--nproc-per-node", "2",
                   "--max-restarts", "1", "--out", out], tmp_path / "stderr")
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints/last.pt").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "no checkpoint appeared"
            time.sleep(0.1)
        victims = _workers(out)
        assert len(victims) == 2, victims
        os.kill(victims[-1], signal.SIGKILL)
        proc.wait(timeout=300)
        stderr = (tmp_path / "stderr").read_text()
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "exitcode: -9" in stderr  # torchrun saw the killed worker (and restarted the group: the run finished)
    # The survivor's one line, not a traceback: the lost peer's, or none when torchrun's SIGTERM reached it first
    # (while it wrote its plots after the checkpoint, say: no collective there to fail; an interruption is the
    # launcher's to report, and the run went on).
    errors = [ln for ln in stderr.splitlines() if ln.startswith("Error:")]
    assert all("another process of this run stopped" in ln for ln in errors) and len(errors) <= 1, stderr
    assert "Traceback" not in stderr, stderr
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 13))  # each epoch once: the restarted workers continued, not restarted from zero
    assert (out / "model.safetensors").is_file()



@pytest.mark.parametrize("sig, group", [(signal.SIGTERM, False), (signal.SIGINT, True)], ids=["SIGTERM-to-zoo", "Ctrl-C"])
def test_a_signal_to_zoo_stops_every_process_with_one_line_and_resume_continues(tmp_path, sig, group):
    """SIGTERM to zoo alone (as a scheduler sends it), or SIGINT to its process group (Ctrl-C): torchrun's agent runs
    in zoo's process, passes the signal to the workers, they checkpoint and stop, and zoo prints one line."""
    out, workers = tmp_path / "run", []

    def training() -> bool:  # in both workers; the workers seen last are those the signal must stop
        workers[:] = _workers(out)
        return (out / "metrics.jsonl").exists() and len(workers) == 2

    code, stderr, _, _ = interrupt([sys.executable, "-m", "zoo", "finetune", "test_resnet", *COMMON, "--epochs", "30",
                                    "--batch-size", "16", "--nproc-per-node", "2", "--out", str(out)], tmp_path / "stderr",
                                   when=training, sig=sig, group=group)
    assert code == 130, stderr
    assert [ln for ln in stderr.splitlines() if ln.startswith("Error:")] == [
        f"Error: interrupted; resume with: zoo finetune --resume {out} --nproc-per-node 2"], stderr
    assert "Traceback" not in stderr, stderr
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "workers outlived zoo"
    done = len((out / "metrics.jsonl").read_text().splitlines())
    assert done < 30
    again = zoo("finetune", "--resume", out, "--nproc-per-node", "2", "--epochs", done + 1)
    assert again.returncode == 0, again.stderr
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, done + 2))  # the checkpoint the signal wrote: no epoch lost or repeated


# -- two nodes on one machine: two torchrun agents meeting at a c10d rendezvous on 127.0.0.1 ----------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(rank: int, port: int, *args, out: Path) -> forkserver.Process:
    """``zoo finetune`` on "machine" ``rank`` of two; each has a --out of its own (storage not shared)."""
    return _start(["finetune", *args, "--nnodes", "2", "--node-rank", rank, "--nproc-per-node", "1",
                   "--rdzv-endpoint", f"127.0.0.1:{port}", "--out", out], out.with_name(f"{out.name}-node{rank}-{time.monotonic_ns()}.stderr"),
                  env={**os.environ, "OMP_NUM_THREADS": "1", "ZOO_RDZV_TIMEOUT": "120", "ZOO_RDZV_KEEP_ALIVE": "1"})


def _finish(*procs: forkserver.Process, timeout: float = 300) -> list[tuple[int, str]]:
    try:
        return [(p.wait(timeout=timeout), p.log.read_text()) for p in procs]
    finally:
        for p in procs:
            p.kill()


def test_two_nodes_follow_one_process_with_the_same_global_batch(tmp_path):
    backbone, extra = "test_vit", ["--model-arg", "img_size=32"]  # no BatchNorm (see above)
    args = [backbone, *COMMON, "--epochs", "1", *extra]
    port, node0, node1 = _free_port(), tmp_path / "node0", tmp_path / "node1"
    started = time.monotonic()
    (code0, err0), (code1, err1) = _finish(_node(0, port, *args, "--batch-size", "32", out=node0),
                                           _node(1, port, *args, "--batch-size", "32", out=node1))
    print(f"two nodes: {time.monotonic() - started:.1f} s")
    assert code0 == 0 and code1 == 0, err0 + err1
    assert "node 1 of 2: waiting for all nodes to join at 127.0.0.1" in err1
    assert not node1.exists()  # rank 0 alone wrote: node 1's own --out stays unused
    one = zoo("finetune", *args, "--batch-size", "64", "--out", tmp_path / "one")
    assert one.returncode == 0, one.stderr
    worst = assert_close(weights(tmp_path / "one"), weights(node0), atol=1e-4)
    print(f"largest weight difference, 1 x 64 against 2 nodes x 32: {worst:.2e}")
    assert torch.load(node0 / "checkpoints/last.pt", weights_only=True)["world"] == 2


def _wait_for_port(port: int, proc: subprocess.Popen) -> None:
    import socket

    deadline = time.monotonic() + 120
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline and proc.poll() is None, "the rendezvous never opened"
        time.sleep(0.1)


def _tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(proc.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def test_a_lost_node_is_started_again_and_the_run_continues_from_rank_0s_checkpoint(tmp_path):
    # ZOO_RDZV_KEEP_ALIVE=1 (see _node): the rendezvous drops the lost node after 3 s without its heartbeat, not 15 s,
    # and the new node 1 joins then.
    # One --out for both, as on a shared file system: node 1 neither refuses it nor locks it.
    args = ["test_resnet", *COMMON, "--epochs", "6", "--batch-size", "16", "--max-restarts", "1"]
    port, run = _free_port(), tmp_path / "run"
    first = _node(0, port, *args, out=run)
    _wait_for_port(port, first)  # node 0's agent holds the rendezvous, as the machine named by --rdzv-endpoint does
    lost = _node(1, port, *args, out=run)
    started = time.monotonic()
    try:
        while not (run / "checkpoints/last.pt").exists():
            assert time.monotonic() < started + 240 and first.poll() is None and lost.poll() is None, "no checkpoint appeared"
            time.sleep(0.1)
        for pid in _tree(lost.pid):  # the whole machine goes: launcher, torchrun agent and worker
            os.kill(pid, signal.SIGKILL)
        lost.wait()
        again = _node(1, port, *args, out=run)  # what a scheduler does: the same command on a new machine
        (code0, err0), (code1, err1) = _finish(first, again)
    finally:
        first.kill()
        lost.kill()
    print(f"from the first checkpoint to the end: {time.monotonic() - started:.1f} s")
    assert code0 == 0 and code1 == 0, err0 + err1
    assert "another process of this run stopped" in err0  # rank 0's one line when node 1 went, then torchrun restarted it
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, 7))  # each epoch once: the new node got rank 0's checkpoint, nothing started over
    assert (run / "model.safetensors").is_file() and not (run / ".lock").exists()


def test_a_node_whose_peers_never_come_stops_with_one_line(tmp_path):
    started = time.monotonic()
    alone = zoo("finetune", "test_resnet", *COMMON, "--epochs", "1", "--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint",
                f"127.0.0.1:{_free_port()}", "--out", tmp_path / "run", env={**os.environ, "ZOO_RDZV_TIMEOUT": "3"})
    assert alone.returncode == 1
    assert alone.stderr.splitlines() == [
        f"zoo: node 0 of 2: waiting for all nodes to join at {alone.args[-3]} (at most 3 s, ZOO_RDZV_TIMEOUT)",
        f"Error: not all 2 nodes joined at {alone.args[-3]} within 3 s: start the same command on every node (see ZOO_RDZV_TIMEOUT)"]
    assert not (tmp_path / "run").exists()
    print(f"gave up after {time.monotonic() - started:.1f} s")


@pytest.mark.parametrize(("args", "env", "line"), [
    (["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "127.0.0.1:9"], {}, "--node-rank must be below --nnodes (2), got 2"),
    (["--nnodes", "2"], {}, "--nnodes > 1 needs --rdzv-endpoint HOST:PORT (a machine every node can reach)"),
    (["--nnodes", "2", "--rdzv-endpoint", "127.0.0.1:9"], {"ZOO_RDZV_TIMEOUT": "soon"},
     "ZOO_RDZV_TIMEOUT must be a number of seconds above 0, got 'soon'"),
    (["--nnodes", "2", "--rdzv-endpoint", "127.0.0.1:9"], {"ZOO_RDZV_KEEP_ALIVE": "0.5"},
     "ZOO_RDZV_KEEP_ALIVE must be a whole number of seconds from 1 to 3600, got '0.5'"),
    (["--nproc-per-node", "2", "--max-restarts", "-1"], {}, "--max-restarts must be a whole number from 0 to 1000, got -1"),
])
def test_bad_launch_settings_are_one_line_before_anything_is_written(tmp_path, args, env, line):
    done = zoo("finetune", "test_resnet", *COMMON, "--out", tmp_path / "run", *args, env={**os.environ, **env})
    assert done.returncode == 2 and done.stderr.splitlines() == [f"Error: {line}"]
    assert not (tmp_path / "run").exists()
