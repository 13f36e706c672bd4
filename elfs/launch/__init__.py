"""Starting the ranks of a multi-process run (``trainer=ddp``): one process per device runs the WHOLE pipeline
(SPMD), as torchrun, srun and the submitit launcher run a script.

A :func:`session` opens the process group once per run, before the first stage, so every stage can agree on what
to do: rank 0 decides cache hits and misses and alone computes, writes and logs what needs no training (the
embeddings, the kNN graph, the reports), the others wait and read its results; stages that train (TEMI, the
proxy, beta-search candidates, evaluations) run on every rank under Lightning DDP, whose Trainers find the group
already open. Launched from a plain ``python -m elfs.train`` (no cluster launcher around it), the session starts
the other local ranks itself: ``python -m elfs.cli.rank <config.json>`` (elfs/cli/rank.py) runs the same,
fully resolved job without Hydra, so only rank 0 writes the run folder. A watchdog stops every rank when one dies.

This layer sits below the job (elfs/run.py opens a session; a rank's entry point runs ``elfs.run.run``); the rank
primitives it opens the way for are elfs/infra/distributed.py. The artifact cache must sit on a filesystem every
rank sees.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from elfs.infra import distributed

log = logging.getLogger(__name__)

#: the environment a launcher gives each rank (torchrun / Lightning's conventions); restored after a session
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "RANK", "OMP_NUM_THREADS")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _watch(children: list[subprocess.Popen], done: threading.Event) -> None:
    """Rank 0's watchdog: a rank that dies would leave the others blocked in a collective, so stop them all."""
    while not done.wait(1.0):
        for r, p in enumerate(children, start=1):
            code = p.poll()
            if code not in (None, 0):
                print(f"elfs: DDP rank {r} exited with code {code}; stopping every rank", file=sys.stderr, flush=True)
                for q in children:
                    if q.poll() is None:
                        q.kill()
                os._exit(code if code > 0 else 1)  # a rank's bad-input exit (2) stays the run's


@contextlib.contextmanager
def session(trainer: Any, resolved: dict) -> Iterator[int]:
    """Open the process group for one run when ``trainer`` (a TrainerConfig) asks for several processes; yield
    the world size. ``resolved`` is the run's fully resolved config, which ranks started here run."""
    world = distributed.planned_processes(trainer.devices, trainer.accelerator, trainer.num_nodes)
    if world <= 1:
        yield 1
        return
    with _restored_environment():
        yield from _ranks(trainer, resolved, world)


@contextlib.contextmanager
def _restored_environment() -> Iterator[None]:
    """Leave the launch variables, the thread count and the (absent) process group as they were: the next job of
    a sweep starts, and numbers, its ranks afresh."""
    import torch
    import torch.distributed as dist

    saved_env = {k: os.environ.get(k) for k in _LAUNCH_ENV}
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        torch.set_num_threads(threads)


def _ranks(trainer: Any, resolved: dict, world: int) -> Iterator[int]:
    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy

    children: list[subprocess.Popen] = []
    done = threading.Event()
    tmp = None
    if not distributed.launched_externally():  # (preflight refused num_nodes > 1 here: the other nodes need a launcher)
        import json

        tmp = tempfile.mkdtemp(prefix="elfs-ddp-")
        cfg_file = Path(tmp) / "config.json"  # JSON is YAML: the worker reads it with OmegaConf
        cfg_file.write_text(json.dumps(resolved))
        local = world
        os.environ.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(local), NODE_RANK="0", RANK="0"
        )
        os.environ["LOCAL_RANK"] = "0"
        for r in range(1, local):
            env = {**os.environ, "LOCAL_RANK": str(r), "RANK": str(r)}
            cmd = [sys.executable, "-m", "elfs.cli.rank", str(cfg_file)]
            children.append(subprocess.Popen(cmd, env=env))
        threading.Thread(target=_watch, args=(children, done), daemon=True, name="elfs-ddp-watch").start()
        log.info("DDP: started %d more local rank(s) for this run", local - 1)
    strategy = DDPStrategy(timeout=datetime.timedelta(minutes=float(trainer.ddp_timeout_min)))
    fabric = Fabric(
        accelerator=trainer.accelerator, devices=trainer.devices, num_nodes=trainer.num_nodes, strategy=strategy
    )
    try:
        fabric.launch()  # no new process (the environment says we are a rank): opens the process group
        distributed.use_fabric(fabric)
        yield fabric.world_size
        distributed.barrier()  # every rank finished the run
    except BaseException:
        for p in children:  # they would wait for rank 0 in their next collective until the timeout
            if p.poll() is None:
                p.kill()
        raise
    finally:
        done.set()
        distributed.use_fabric(None)
        for p in children:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
