"""Many processes, one run: torch.distributed under torchrun, never a home-made launcher.

``zoo finetune --nproc-per-node N`` runs torchrun's agent (``torch.distributed.run``) in its own
process, and the agent starts the workers. Each worker reads torchrun's environment (RANK,
WORLD_SIZE, LOCAL_RANK), joins a process group (gloo on CPU, NCCL on CUDA) and trains its share
of every global batch in DistributedDataParallel.
Rank 0 alone writes the run directory and talks to the Hub.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from zoo.errors import STOP_SIGNALS, UsageError


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
    """This process's place in the job, from torchrun's variables (one process without them).

    With ``--node-rank`` (ZOO_NODE_RANK, set by zoo's launcher) the ranks follow the node ranks, so
    node 0 holds rank 0 after every rendezvous: torchrun's c10d rendezvous orders the nodes by
    host name and process id, and rank 0 must stay on the machine that has the run directory.
    """
    try:
        ctx = Context(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))
        node = os.environ.get("ZOO_NODE_RANK")
        if node is None or not ctx.enabled:
            return ctx
        rank = int(node) * int(os.environ["LOCAL_WORLD_SIZE"]) + ctx.local_rank
    except (ValueError, KeyError):
        raise UsageError("RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be whole numbers (they are set by torchrun)") from None
    if rank >= ctx.world:
        raise UsageError(f"--node-rank {node} x --nproc-per-node {os.environ['LOCAL_WORLD_SIZE']} does not fit in {ctx.world} "
                         "processes: give every node the same --nproc-per-node and its own --node-rank below --nnodes")
    return Context(rank, ctx.world, ctx.local_rank)


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
            # Our own client of torchrun's store: ranks may be renumbered (ZOO_NODE_RANK), so torch's
            # env:// set-up, which starts the store on *its* rank 0, cannot be used.
            agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), ctx.world, timeout=timeout,
                                  is_master=not agent_store and os.environ.get("RANK") == "0")
            if agent_store and restart_count():
                # torchrun keeps its store across restarts: the dead workers' addresses would still be
                # in it, so each attempt's process group uses keys of its own. (zoo's multi-node launcher
                # turns the shared store off: a node started again would count its restarts from 0.)
                store = dist.PrefixStore(f"zoo/attempt-{restart_count()}", store)
            if os.environ.get("ZOO_NODE_RANK") is not None and store.add(f"zoo/rank-{ctx.rank}", 1) > 1:
                raise UsageError(f"two nodes were started with --node-rank {os.environ['ZOO_NODE_RANK']}: give each its own")
            dist.init_process_group(backend, store=store, rank=ctx.rank, world_size=ctx.world, timeout=timeout)
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


# The agent's exit codes: the other nodes did not come; the rendezvous went; Ctrl-C, SIGTERM or SIGHUP stopped the run.
RENDEZVOUS_TIMEOUT, RENDEZVOUS_LOST, INTERRUPTED = 3, 4, 130


def rendezvous_timeout() -> float:
    """Seconds a node waits for the others (ZOO_RDZV_TIMEOUT; torchrun's 600 by default), at the start and at each restart."""
    text = os.environ.get("ZOO_RDZV_TIMEOUT", "600")
    try:
        value = float(text)
    except ValueError:
        value = 0
    if not 0 < value < 1e9:
        raise UsageError(f"ZOO_RDZV_TIMEOUT must be a number of seconds above 0, got '{text}'")
    return value


def keep_alive() -> int:
    """Seconds between a node's heartbeats to the rendezvous (ZOO_RDZV_KEEP_ALIVE; torchrun's 5 by default). A node
    silent for 3 of them counts as gone: only then can a replacement join the others (15 s after a loss by default)."""
    text = os.environ.get("ZOO_RDZV_KEEP_ALIVE", "5")
    if not (text.isdigit() and 1 <= int(text) <= 3600):  # torchrun reads it as a whole number
        raise UsageError(f"ZOO_RDZV_KEEP_ALIVE must be a whole number of seconds from 1 to 3600, got '{text}'")
    return int(text)


def check_launch(*, nproc_per_node: int, nnodes: int, node_rank: int | None, rdzv_endpoint: str | None, max_restarts: int) -> None:
    """The launch settings are usable (checked before anything is written or started)."""
    from zoo.config import Launch

    Launch(nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint,
           max_restarts=max_restarts).validate()
    if nnodes > 1:
        rendezvous_timeout()
        keep_alive()


def launch(worker_args: list[str], *, nproc_per_node: int, nnodes: int = 1, node_rank: int | None = None,
           rdzv_endpoint: str | None = None, max_restarts: int = 0) -> int:
    """Run ``zoo <worker_args>`` under torchrun's agent, in this process; returns the agent's exit code
    (0, 1 when a worker failed, or RENDEZVOUS_TIMEOUT, RENDEZVOUS_LOST, INTERRUPTED).

    In this process, not a ``python -m torch.distributed.run`` of its own: Ctrl-C, SIGTERM and SIGHUP
    sent to zoo reach the agent, which passes them to its workers (they checkpoint and stop), and
    one interpreter fewer starts. The settings are the caller's to check first (``check_launch``)."""
    saved = dict(os.environ)  # what the agent and its workers get is set here, and undone afterwards
    # torchrun sets OMP_NUM_THREADS=1 with a warning; split the cores between workers instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc_per_node)))
    os.environ.setdefault("LOGLEVEL", "WARNING")
    argv = ["--nproc-per-node", str(nproc_per_node), "--nnodes", str(nnodes), "--max-restarts", str(max_restarts)]
    if rdzv_endpoint:
        # One rendezvous per endpoint: the id is the same on every node, whatever its --out.
        argv += ["--rdzv-backend", "c10d", "--rdzv-endpoint", rdzv_endpoint, "--rdzv-id", "zoo",
                 "--rdzv-conf", f"join_timeout={rendezvous_timeout():g},keep_alive_interval={keep_alive()}"]
        # A fresh store for each rendezvous round: a node started again joins the others' next round.
        os.environ["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
        if node_rank is not None:  # (torchrun's own --node-rank is for its static rendezvous only)
            os.environ["ZOO_NODE_RANK"] = str(node_rank)
    else:
        argv += ["--standalone"]
    os.environ["ZOO_LAUNCHED"] = "1"  # for the workers: an interruption is this process's one line to print, not theirs
    try:
        return _agent([*argv, "-m", "zoo", *worker_args])
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _agent(argv: list[str]) -> int:
    """torchrun's ``main``, with its failures as exit codes instead of tracebacks."""
    import signal

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError, RendezvousTimeoutError
    from torch.distributed.run import main

    # While its workers run, the agent turns these signals into SignalException, sends them on to the
    # workers and waits for them; zoo's own handlers come back afterwards.
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        main(argv)
    except RendezvousTimeoutError:
        return RENDEZVOUS_TIMEOUT
    except RendezvousError:
        return RENDEZVOUS_LOST  # the agent that held the rendezvous (on the --rdzv-endpoint machine) stopped
    except ChildFailedError:
        return 1  # torchrun has logged which worker failed, and how
    except (SignalException, KeyboardInterrupt):  # (KeyboardInterrupt: a signal before the workers started)
        return INTERRUPTED
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 0
