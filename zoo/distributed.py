"""Many processes, one run: torch.distributed under torchrun, never a home-made launcher.

``zoo finetune --nproc-per-node N`` re-runs itself through ``torch.distributed.run`` (torchrun);
each worker reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), joins a process group
(gloo on CPU, NCCL on CUDA) and trains its share of every global batch in DistributedDataParallel.
Rank 0 alone writes the run directory and talks to the Hub.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from zoo.errors import UsageError


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def env_context() -> Context:
    """This process's place in the job, from torchrun's variables (one process without them)."""
    try:
        return Context(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (they are set by torchrun)") from None


def restart_count() -> int:
    """How many times torchrun has restarted this job's workers (``--max-restarts``)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def init(device_type: str) -> Context:
    """Join the process group when started by torchrun; a no-op for one process."""
    ctx = env_context()
    if ctx.enabled:
        import torch.distributed as dist

        if not dist.is_initialized():
            backend, timeout = ("nccl" if device_type == "cuda" else "gloo"), timedelta(minutes=30)
            if restart_count() and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
                # torchrun keeps its store across restarts: the dead workers' addresses would still be
                # in it, so each attempt's process group uses keys of its own.
                store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), ctx.world, is_master=False,
                                      timeout=timeout)
                dist.init_process_group(backend, store=dist.PrefixStore(f"zoo/attempt-{restart_count()}", store), rank=ctx.rank,
                                        world_size=ctx.world, timeout=timeout)
            else:
                dist.init_process_group(backend, timeout=timeout)
    return ctx


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_peer_failure(exc: BaseException) -> bool:
    """A collective failed because another process died or hung (not a bug in this one)."""
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, dist.DistBackendError) or "gloo" in text.lower() or "NCCL" in text or "Connection reset" in text


def all_sum(tensor):
    """Sum a tensor over all processes, in place; returns it."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def any_true(flag: bool, device) -> bool:
    """True on every process when it is true on any (stop decisions must be taken together)."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast(obj):
    """Rank 0's object on every process (a resumed checkpoint is read once, on rank 0)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def launch(worker_args: list[str], *, nproc_per_node: int, nnodes: int = 1, node_rank: int | None = None,
           rdzv_endpoint: str | None = None, max_restarts: int = 0, run_id: str = "zoo") -> int:
    """Run ``zoo <worker_args>`` under torchrun; returns torchrun's exit code."""
    if nproc_per_node < 1 or nnodes < 1:
        raise UsageError("--nproc-per-node and --nnodes must be at least 1")
    if max_restarts < 0:
        raise UsageError(f"--max-restarts must be >= 0, got {max_restarts}")
    if nnodes > 1 and not rdzv_endpoint:
        raise UsageError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (a machine every node can reach)")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc_per_node), "--nnodes", str(nnodes),
           "--max-restarts", str(max_restarts)]
    if rdzv_endpoint:
        cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint, "--rdzv-id", run_id]
        if node_rank is not None:
            cmd += ["--node-rank", str(node_rank)]
    else:
        cmd += ["--standalone"]
    cmd += ["-m", "zoo", *worker_args]
    env = dict(os.environ)
    # torchrun sets OMP_NUM_THREADS=1 with a warning; split the cores between workers instead.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc_per_node)))
    env.setdefault("LOGLEVEL", "WARNING")
    proc = subprocess.Popen(cmd, env=env)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue  # torchrun and the workers got the same Ctrl-C: they checkpoint and stop; wait for them


def run_id_for(out: Path) -> str:
    import hashlib

    return "zoo-" + hashlib.sha1(str(Path(out).resolve()).encode()).hexdigest()[:12]
