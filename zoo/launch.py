"""Start a fine-tuning run's processes under torchrun: the launcher side of zoo.distributed.

One machine: the launcher writes the run directory and its run_config.yaml first, then every
worker runs ``zoo finetune --resume RUN``, so they, and any worker torchrun restarts, read one
configuration and continue from the latest checkpoint.

Several machines: which process becomes rank 0 is known only after the rendezvous, and the other
machines may not see rank 0's folder. So no launcher writes: each one checks the settings and
hands them to its workers in a file of its own; rank 0 alone takes the lock, writes the run
directory and sends its configuration and checkpoint to the others (zoo.trainer).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import click

from zoo import data, distributed, recipe, rundir
from zoo.errors import Interrupted, ZooError, command


def finetune(values: dict, *, resume: Path | None, out: Path | None, hub_args: dict, quiet: bool, as_json: bool,
             nproc_per_node: int, nnodes: int = 1, node_rank: int | None = None, rdzv_endpoint: str | None = None,
             max_restarts: int = 0) -> None:
    """``zoo finetune`` with ``--nproc-per-node``/``--nnodes``: run the workers under torchrun, wait for them."""
    from zoo.config import FinetuneConfig, dump
    from zoo.registry import resolve
    from zoo.trainer import default_out

    distributed.check_launch(nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank, rdzv_endpoint=rdzv_endpoint,
                             max_restarts=max_restarts)
    with contextlib.ExitStack() as stack:
        if resume:
            run_dir = Path(resume)
            rundir.RunDir(run_dir).resumed_config(values)  # only what --resume may change
            args = ["finetune", "--resume", str(run_dir), *(a for k, v in values.items() for a in (f"--{k.replace('_', '-')}", str(v)))]
        else:
            config = FinetuneConfig.from_dict(values)  # checked there
            resolve(config.backbone)  # bad names and data fail here, once, before anything starts
            data.open_dataset(config.data)
            config = recipe.resolve(config)  # the workers resume from this configuration: the recipe is picked once, here
            if config.recipe and not quiet:
                click.echo(recipe.describe(config.recipe), err=True)
            run_dir = Path(out) if out else default_out(config)
            if nnodes == 1:
                with rundir.RunLock(run_dir):
                    rundir.refuse_existing_run(run_dir)
                    rundir.RunDir(run_dir).write_run_config(config)
                args = ["finetune", "--resume", str(run_dir)]
            else:
                if node_rank == 0:  # the run directory is rank 0's: refuse a used one before the others wait for it
                    rundir.refuse_existing_run(run_dir)
                settings = stack.enter_context(tempfile.NamedTemporaryFile("w", prefix="zoo-run-", suffix=".yaml", encoding="utf-8"))
                settings.write(dump(config))
                settings.flush()
                args = ["finetune", "--config", settings.name, "--out", str(run_dir)]
        if hub_args:
            args += ["--push-to-hub", hub_args["push_to_hub"], "--hub-strategy", hub_args["hub_strategy"]]
            args += ["--private"] if hub_args["private"] else []
        args += ["--quiet"] if quiet else []
        args += ["--json"] if as_json else []
        if nnodes > 1:
            timeout = distributed.rendezvous_timeout()
            where = f"node {node_rank} of {nnodes}" if node_rank is not None else f"one of {nnodes} nodes"
            click.echo(f"zoo: {where}: waiting for all nodes to join at {rdzv_endpoint} (at most {timeout:g} s, "
                       f"ZOO_RDZV_TIMEOUT)", err=True)
        code = distributed.launch(args, nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank,
                                  rdzv_endpoint=rdzv_endpoint, max_restarts=max_restarts)
    if code == distributed.RENDEZVOUS_TIMEOUT:
        raise ZooError(f"not all {nnodes} nodes joined at {rdzv_endpoint} within {distributed.rendezvous_timeout():g} s: "
                       "start the same command on every node (see ZOO_RDZV_TIMEOUT)")
    if code:
        if code == distributed.INTERRUPTED:  # Ctrl-C, SIGTERM or SIGHUP: the workers wrote their checkpoint and stopped
            error, stopped, verb = Interrupted, "interrupted", "resume"
        else:
            why = (f"lost the rendezvous at {rdzv_endpoint} (its machine stopped?)" if code == distributed.RENDEZVOUS_LOST
                   else f"torchrun exit code {code}")
            error, stopped, verb = ZooError, f"the distributed run stopped ({why})", "continue it"
        again = ["zoo", "finetune", "--resume", run_dir, "--nproc-per-node", nproc_per_node]
        if nnodes > 1:
            if not rundir.RunDir(run_dir).run_config_path.is_file():  # rank 0's folder is on another machine
                raise error(f"{stopped}; run the same command again while node 0 continues it with --resume")
            again += ["--nnodes", nnodes, "--rdzv-endpoint", rdzv_endpoint] + (["--node-rank", node_rank] if node_rank is not None else [])
        raise error(f"{stopped}; {verb} with: {command(*again)}")
