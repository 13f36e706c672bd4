"""The long-lived training workers (evaluate.concurrent): started once and reused by later calls, results in the
order of the jobs, a failing job re-raised with the worker's traceback, a dead worker named, and the pool fresh
after either."""

from __future__ import annotations

import os
import signal

import pytest

from elfs.infra.workers import TrainingWorkers, WorkerError, close_training_workers, training_workers, visible_gpus


def pid_and_item(data: list, i: int) -> tuple[int, object]:
    """A job: the worker's pid and ``data[i]`` (an IndexError past the end)."""
    return os.getpid(), data[i]


def die(data: list, code: int) -> None:
    """A job whose worker dies without answering."""
    os.kill(os.getpid(), signal.SIGKILL)


def threads(data: object) -> tuple[int, str | None]:
    import torch

    return torch.get_num_threads(), os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.fixture
def fresh_pool():
    close_training_workers()
    yield
    close_training_workers()


def test_workers_live_across_calls_and_keep_job_order(fresh_pool):
    pool = training_workers(2, 1)
    first = pool.map(pid_and_item, [(i,) for i in range(5)], ["a", "b", "c", "d", "e"])
    assert [item for _, item in first] == ["a", "b", "c", "d", "e"]
    pids = {pid for pid, _ in first}
    assert len(pids) == 2 and os.getpid() not in pids  # both workers took jobs, none ran here
    again = training_workers(2, 1)
    assert again is pool  # the same request: the same processes, nothing started
    second = again.map(pid_and_item, [(1,), (0,)], ["new", "data"])  # a call's data replaces the last call's
    assert [item for _, item in second] == ["data", "new"] and {pid for pid, _ in second} <= pids
    assert training_workers(1, 1) is not pool and pool.closed  # another slot count replaces the pool


def test_a_failing_job_raises_its_error_with_the_worker_traceback(fresh_pool):
    pool = training_workers(2, 1)
    with pytest.raises(IndexError) as e:
        pool.map(pid_and_item, [(0,), (7,), (1,)], ["x", "y"])
    assert "job 1 failed in training worker" in str(e.value.__cause__)
    assert "pid_and_item" in str(e.value.__cause__)  # the worker's traceback names the function that raised
    assert pool.closed
    fresh = training_workers(2, 1)
    assert fresh is not pool and fresh.map(pid_and_item, [(0,)], ["ok"])[0][1] == "ok"


def test_a_dead_worker_is_named_with_its_exit_code(fresh_pool):
    pool = training_workers(1, 1)
    with pytest.raises(WorkerError, match=r"training worker 0 \(pid \d+\) exited with code -9 during job 0 of 1"):
        pool.map(die, [(0,)], None)
    assert pool.closed


def test_each_worker_gets_its_threads_and_its_gpu():
    pool = TrainingWorkers(3, 1, gpus=("5", "7"))
    try:
        got = pool.map(threads, [(), (), ()], None)
    finally:
        pool.close()
    # three jobs on three idle workers: one each, workers 0 and 2 on the first GPU, worker 1 on the second
    assert sorted(got) == [(1, "5"), (1, "5"), (1, "7")]


def test_no_gpus_for_a_cpu_run():
    assert visible_gpus("cpu") == []
