"""Long-lived training workers: one spawned process per slot of ``evaluate.concurrent``, spread over the visible
GPUs and kept for the whole run, so a call pays neither a process start (imports, a CUDA context) nor
``torch.compile``'s first compile again, and two workers never time-slice one GPU while another sits idle.

Each call sends its data to a worker once (before that worker's first job of the call), then deals the jobs to
whichever worker is free; results come back in the order of the jobs. A job that raises re-raises here, with the
worker's traceback; a worker that dies is named with its exit code. Either way the pool is closed and the next call
starts a fresh one.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from elfs.infra.distributed import on_cuda


class WorkerError(RuntimeError):
    """A training worker failed: its job raised (the worker's traceback is the cause) or the process died."""


def _serve(conn: Connection, threads: int, visible: str | None) -> None:
    """A worker's loop: ("data", obj) replaces its data; ("job", i, fn, args) answers ("ok", i, fn(data, *args)) or
    ("error", i, exception, traceback); ("stop",) or a closed pipe ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    if visible is not None:  # before torch touches CUDA: this worker's GPU is its cuda:0
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    import torch

    torch.set_num_threads(threads)
    data: Any = None
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        if msg[0] == "data":
            data = msg[1]
            continue
        _, i, fn, args = msg
        try:
            reply = ("ok", i, fn(data, *args))
        except BaseException as exc:  # noqa: BLE001 - sent back to the caller, which re-raises it
            reply = ("error", i, exc, traceback.format_exc())
        try:
            conn.send(reply)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result or exception: say what it was
            conn.send(("error", i, WorkerError(f"the result of job {i} could not be sent back: {exc!r}"), ""))


class TrainingWorkers:
    """``k`` worker processes (spawned: a CUDA context cannot be forked) with ``threads`` CPU threads each; worker i
    sees only ``gpus[i % len(gpus)]`` when ``gpus`` is given (CUDA_VISIBLE_DEVICES entries)."""

    def __init__(self, k: int, threads: int, gpus: Sequence[str] = ()) -> None:
        if k < 1:
            raise ValueError(f"k={k!r} workers: need at least 1")
        self.k, self.threads, self.gpus = int(k), int(threads), tuple(gpus)
        ctx = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for i in range(self.k):
            here, there = ctx.Pipe()
            gpu = self.gpus[i % len(self.gpus)] if self.gpus else None
            proc = ctx.Process(target=_serve, args=(there, self.threads, gpu), daemon=True, name=f"elfs-worker-{i}")
            proc.start()
            there.close()
            self._conns.append(here)
            self._procs.append(proc)
        self.closed = False

    def matches(self, k: int, threads: int, gpus: Sequence[str]) -> bool:
        """Whether this pool serves a call asking for ``k`` slots of ``threads`` threads on ``gpus``, alive."""
        same = (self.k, self.threads, self.gpus) == (int(k), int(threads), tuple(gpus))
        return same and not self.closed and all(p.is_alive() for p in self._procs)

    def map(self, fn: Callable[..., Any], jobs: Sequence[tuple], data: Any) -> list[Any]:
        """``[fn(data, *args) for args in jobs]``, each job on the next free worker; ``fn`` must be picklable (a
        module-level function)."""
        if self.closed:
            raise WorkerError("the training workers were closed")
        results: list[Any] = [None] * len(jobs)
        todo = deque(enumerate(jobs))
        running: dict[int, int] = {}  # worker -> job
        try:
            for w in range(min(self.k, len(jobs))):
                self._conns[w].send(("data", data))
                self._give(w, todo, fn, running)
            while running:
                for conn in wait([self._conns[w] for w in running]):
                    w = self._conns.index(conn)
                    try:
                        reply = conn.recv()
                    except (EOFError, OSError):
                        self._procs[w].join(timeout=5)
                        raise WorkerError(
                            f"training worker {w} (pid {self._procs[w].pid}) exited with code "
                            f"{self._procs[w].exitcode} during job {running[w]} of {len(jobs)}"
                        ) from None
                    if reply[0] == "error":
                        _, i, exc, tb = reply
                        raise exc from WorkerError(f"job {i} failed in training worker {w}:\n{tb}")
                    results[reply[1]] = reply[2]
                    del running[w]
                    self._give(w, todo, fn, running)
        except BaseException:
            self.close(now=True)  # workers mid-job or holding a failed state: the next call starts fresh ones
            raise
        return results

    def _give(self, w: int, todo: deque, fn: Callable[..., Any], running: dict[int, int]) -> None:
        if todo:
            i, args = todo.popleft()
            self._conns[w].send(("job", i, fn, tuple(args)))
            running[w] = i

    def close(self, now: bool = False) -> None:
        """Stop the workers: ask them to finish (``now``: terminate them mid-job)."""
        if self.closed:
            return
        self.closed = True
        for conn, proc in zip(self._conns, self._procs, strict=True):
            if not now:
                try:
                    conn.send(("stop",))
                except (OSError, ValueError):
                    pass
            else:
                proc.terminate()
        for conn, proc in zip(self._conns, self._procs, strict=True):
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()


_POOL: TrainingWorkers | None = None


def training_workers(k: int, threads: int, gpus: Sequence[str] = ()) -> TrainingWorkers:
    """The process's pool of ``k`` workers, started on first use and reused by every later call that asks for the
    same slots (a sweep's jobs in one process included); a different request replaces it."""
    global _POOL
    if _POOL is None or not _POOL.matches(k, threads, gpus):
        if _POOL is not None:
            _POOL.close()
        _POOL = TrainingWorkers(k, threads, gpus)
    return _POOL


def close_training_workers() -> None:
    """Stop the process's pool, if any (at exit, and when a run wants its CPU threads back)."""
    global _POOL
    if _POOL is not None:
        _POOL.close()
        _POOL = None


def visible_gpus(accelerator: str) -> list[str]:
    """The GPUs a training on ``accelerator`` may use, as CUDA_VISIBLE_DEVICES entries; none on a CPU-only run."""
    if not on_cuda(accelerator):
        return []
    import torch

    n = torch.cuda.device_count()
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:n] if listed else [str(i) for i in range(n)]


atexit.register(close_training_workers)

__all__ = ["TrainingWorkers", "WorkerError", "close_training_workers", "training_workers", "visible_gpus"]
