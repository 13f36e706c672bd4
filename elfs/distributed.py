"""Multi-process runs (``trainer=ddp``): one process per device runs the WHOLE pipeline (SPMD), as torchrun, srun
and the submitit launcher run a script.

A :func:`session` opens the process group once per run, before the first stage, so every stage can agree on what
to do: rank 0 decides cache hits and misses and alone computes, writes and logs what needs no training (the
embeddings, the kNN graph, the reports), the others wait and read its results; stages that train (TEMI, the
proxy, beta-search candidates, evaluations) run on every rank under Lightning DDP, whose Trainers find the group
already open. Launched from a plain ``python -m elfs.train`` (no cluster launcher around it), the session starts
the other local ranks itself: ``python -m elfs.distributed <config.yaml>`` runs the same, fully resolved job
without Hydra, so only rank 0 writes the run folder. Outside a session every helper here is a no-op.

The artifact cache must sit on a filesystem every rank sees (any single node; a shared one across nodes).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: the environment a launcher gives each rank (torchrun / Lightning's conventions); restored after a session
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "RANK", "OMP_NUM_THREADS")
#: strategies that start a process per fit(); the pipeline's ranks live for the whole run instead
SPAWNING_STRATEGIES = ("ddp_spawn", "ddp_fork", "ddp_notebook")

_fabric: Any = None  # the open session's lightning.Fabric (barrier / broadcast on the right device), else None


def planned_processes(devices: Any, accelerator: str = "auto", num_nodes: int = 1) -> int:
    """Processes a Trainer with these settings trains on (devices x nodes), known before it starts: an int or a
    list of devices; "auto" / -1 count the visible accelerators (CUDA devices, else 1 CPU process)."""
    import torch

    if isinstance(devices, (list, tuple)):
        n = len(devices)
    elif isinstance(devices, str) and devices.isdigit():
        n = int(devices)
    elif isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        n = devices
    else:  # "auto" / -1
        gpu = str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        n = torch.cuda.device_count() if gpu else 1
    return max(1, n) * int(num_nodes or 1)


def is_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if is_active() else 1


def is_zero() -> bool:
    """Whether this process writes outputs (rank 0, or the only process)."""
    return rank() == 0


def device_type() -> str:
    """The device type of the open session's ranks ("cuda", "cpu"), "cpu" outside a session."""
    return _fabric.device.type if _fabric is not None else "cpu"


def barrier() -> None:
    if not is_active():
        return
    if _fabric is not None:
        _fabric.barrier()
    else:
        import torch.distributed as dist

        dist.barrier()


def from_zero(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a small picklable value: a decision, a hash)."""
    if not is_active():
        return obj
    if _fabric is not None:
        return _fabric.broadcast(obj, src=0)
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_zero(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on rank 0, in rank order (a picklable value); the other ranks get ``[obj]``."""
    if not is_active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] | None = [None] * world_size() if is_zero() else None
    dist.gather_object(obj, out, dst=0)
    return out if out is not None else [obj]


def check_same(value: str, what: str) -> None:
    """Raise on every rank when the ranks hold different ``value`` s (e.g. the hash of a coreset): training two
    ranks on two different subsets would silently average unrelated gradients."""
    if not is_active():
        return
    import torch.distributed as dist

    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        raise RuntimeError(f"DDP ranks disagree on {what}: {values} (rank order); stopping before training on them")


def launched_externally() -> bool:
    """Whether a cluster launcher (srun / submitit, torchrun, or our own session) started this process as a rank."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    return "LOCAL_RANK" in os.environ or SLURMEnvironment.detect() or TorchElasticEnvironment.detect()


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


def _orphan_guard() -> None:
    """A rank started by rank 0 exits when rank 0 is gone (it would otherwise wait in a collective forever)."""
    parent = os.getppid()

    def check() -> None:
        while True:
            time.sleep(2.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=check, daemon=True, name="elfs-orphan-guard").start()


@contextlib.contextmanager
def session(trainer: Any, resolved: dict) -> Iterator[int]:
    """Open the process group for one run when ``trainer`` (a TrainerConfig) asks for several processes; yield
    the world size. ``resolved`` is the run's fully resolved config, which ranks started here run."""
    world = planned_processes(trainer.devices, trainer.accelerator, trainer.num_nodes)
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
    global _fabric
    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy

    children: list[subprocess.Popen] = []
    done = threading.Event()
    tmp = None
    if not launched_externally():  # (preflight refused num_nodes > 1 here: the other nodes need a launcher)
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
            cmd = [sys.executable, "-m", "elfs.distributed", str(cfg_file)]
            children.append(subprocess.Popen(cmd, env=env))
        threading.Thread(target=_watch, args=(children, done), daemon=True, name="elfs-ddp-watch").start()
        log.info("DDP: started %d more local rank(s) for this run", local - 1)
    strategy = DDPStrategy(timeout=datetime.timedelta(minutes=float(trainer.ddp_timeout_min)))
    fabric = Fabric(
        accelerator=trainer.accelerator, devices=trainer.devices, num_nodes=trainer.num_nodes, strategy=strategy
    )
    try:
        fabric.launch()  # no new process (the environment says we are a rank): opens the process group
        _fabric = fabric
        yield fabric.world_size
        barrier()  # every rank finished the run
    except BaseException:
        for p in children:  # they would wait for rank 0 in their next collective until the timeout
            if p.poll() is None:
                p.kill()
        raise
    finally:
        done.set()
        _fabric = None
        for p in children:
            try:
                p.wait(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def worker_main(argv: list[str]) -> None:
    """Entry of a rank started by rank 0: run the job in ``argv[0]`` (its resolved config) quietly."""
    from omegaconf import OmegaConf

    from elfs.config import ElfsConfig
    from elfs.errors import UserError
    from elfs.train import run

    _orphan_guard()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: rank 0 handles it
    warnings.simplefilter("ignore")  # rank 0 prints the same warnings
    tag = f"rank {os.environ.get('RANK', '?')}"
    logging.basicConfig(level=logging.WARNING, format=f"[{tag}] %(levelname)s %(name)s: %(message)s")
    cfg = OmegaConf.merge(OmegaConf.structured(ElfsConfig), OmegaConf.create(Path(argv[0]).read_text()))
    try:
        run(cfg)
    except UserError as e:  # rank 0 reports the same error to the user; this line says which rank saw it
        print(f"elfs [{tag}]: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    worker_main(sys.argv[1:])
