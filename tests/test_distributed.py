"""DDP building blocks with two real gloo processes: the cache decides hits and misses once (rank 0) and hands
every rank rank 0's arrays; ranks that disagree on a coreset stop; GlobalBatchNorm normalises and back-propagates
the global batch exactly as one process does."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from elfs.cache import ArtifactCache
from elfs.models.global_batchnorm import GlobalBatchNorm, GlobalBatchNormSync


def _spawn(fn, *args) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_init_and_run, args=(port, fn, out, *args), nprocs=2, join=True)
        return dict(out)


def _init_and_run(rank: int, port: int, fn, out, *args) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        out[rank] = fn(rank, *args)
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------ the cache


def _cache_worker(rank: int, root: str) -> dict:
    from elfs.infra import distributed

    cache = ArtifactCache(Path(root), code="test")
    calls: list[str] = []

    def trains():  # holds a collective, as a DDP fit does; each rank's own result differs
        calls.append("trains")
        t = torch.ones(1)
        dist.all_reduce(t)
        return {"x": np.full(3, 10.0 * (rank + 1) + float(t))}, {"rank": rank}

    def rank0_only():
        calls.append("rank0_only")
        return {"y": np.arange(4) + 100 * rank}, {}

    a = cache.run("dynamics", {"k": 1}, {}, trains, every_rank=True)
    b = cache.run("embed", {"k": 2}, {}, rank0_only)
    again = cache.run("dynamics", {"k": 1}, {}, trains, every_rank=True)  # a hit everywhere: no collective inside
    disagreement = None
    try:
        distributed.check_same(f"coreset-{rank}", "the test coreset")
    except RuntimeError as e:
        disagreement = str(e)
    distributed.check_same("same", "an agreed value")  # no error when they agree
    return {
        "a": a["x"].tolist(),
        "a_meta_rank": a.meta["rank"],
        "b": b["y"].tolist(),
        "calls": calls,
        "again_cached": again.cached,
        "disagreement": disagreement,
    }


def _both_workers(rank: int, root: str) -> dict:
    return {"cache": _cache_worker(rank, root), "bn": _bn_worker(rank)}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, dict]:
    """One pair of gloo processes (starting them costs seconds) runs the cache and the batch-norm workers."""
    root = tmp_path_factory.mktemp("ddp_cache")
    return root, _spawn(_both_workers, str(root))


def test_cache_decides_once_and_every_rank_gets_rank0s_arrays(two_ranks):
    tmp_path, both = two_ranks
    out = {r: both[r]["cache"] for r in (0, 1)}
    for r in (0, 1):
        assert out[r]["a"] == [12.0] * 3 and out[r]["a_meta_rank"] == 0  # rank 0's arrays, also on rank 1
        assert out[r]["b"] == [0, 1, 2, 3]
        assert out[r]["again_cached"]
        assert "DDP ranks disagree on the test coreset" in out[r]["disagreement"]
    assert out[0]["calls"] == ["trains", "rank0_only"]
    assert out[1]["calls"] == ["trains"]  # the training stage ran on both ranks, the rank-0 stage on rank 0 only
    entries = sorted(p.relative_to(tmp_path).parts[0] for p in tmp_path.glob("*/*") if p.parent.name != ".locks")
    assert entries == ["dynamics", "embed"]  # each written once, no temporary folder left behind


# ---------------------------------------------------------------------------------------- global batch norm


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 6, 6, generator=g) * 3 + 1, torch.randint(0, 3, (8,), generator=g)


def _bn_worker(rank: int) -> dict:
    net = GlobalBatchNormSync().apply(_net())
    assert isinstance(net[1], GlobalBatchNorm)
    x, y = _batch()
    part = slice(4 * rank, 4 * rank + 4)
    out = net(x[part])
    nn.functional.cross_entropy(out, y[part]).backward()
    grads = []
    for p in net.parameters():  # what DDP does: average the ranks' gradients
        dist.all_reduce(p.grad)
        grads.append((p.grad / 2).clone())
    back = GlobalBatchNormSync().revert(net)
    return {
        "out": out.detach(),
        "grads": grads,
        "running": (back[1].running_mean.clone(), back[1].running_var.clone()),
        "reverted": type(back[1]).__name__,
    }


def test_global_batchnorm_equals_one_process_on_the_whole_batch(two_ranks):
    ref = _net()
    x, y = _batch()
    out = ref(x)
    nn.functional.cross_entropy(out, y).backward()
    got = {r: two_ranks[1][r]["bn"] for r in (0, 1)}
    torch.testing.assert_close(torch.cat([got[0]["out"], got[1]["out"]]), out.detach(), rtol=1e-5, atol=1e-6)
    for r in (0, 1):
        for g, p in zip(got[r]["grads"], ref.parameters(), strict=True):
            torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(got[r]["running"][0], ref[1].running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got[r]["running"][1], ref[1].running_var, rtol=1e-5, atol=1e-6)
        assert got[r]["reverted"] == "BatchNorm2d"
    # plain per-rank batch norm would differ: each half's own statistics
    local = _net()[:2](x[:4])
    assert not torch.allclose(local, _net()[:2](x)[:4], atol=1e-3)


def test_global_batchnorm_outside_ddp_is_plain_batchnorm():
    x, _ = _batch()
    ref, net = _net(), GlobalBatchNormSync().apply(_net())
    torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)
    torch.testing.assert_close(net[1].running_var, ref[1].running_var, rtol=0, atol=0)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        GlobalBatchNorm(3)(torch.zeros(3))


# ------------------------------------------------------------------------------------- the whole pipeline


def _job(sweep: Path, num: int) -> Path:
    (job,) = sweep.glob(f"{num}_*")
    return job


def _files(job: Path) -> set[str]:
    return {str(p.relative_to(job)) for p in job.rglob("*") if "wandb" not in p.parts}


@pytest.mark.slow
def test_two_process_pipeline_matches_one_process_and_writes_once(tmp_path, elfs_cli):
    """`-m trainer.devices=2,1,2` with trainer.strategy=ddp on the CPU: a 2-process run, a 1-process run, then the
    2-process run again (every stage a cache hit, decided by rank 0 for both ranks).

    Tolerance (only the order of float reductions differs: the same global batches, augmentation and batch-norm
    statistics, the loss weighted by each rank's share of an uneven last batch): pseudo-labels and kept coresets
    agree on at least 99 % of images, AUM / EL2N within 1e-4 absolute, beta-search accuracies within one
    validation image and test accuracies within 1 % (measured: identical labels, coresets and beta curves, scores
    within 1e-6, test accuracies 1 and 2 images of 359 apart after 60 steps). The outputs, the W&B run and the
    config are written once, by rank 0."""
    sweep = tmp_path / "sweep"
    res = elfs_cli(
        [
            "-m",
            "+experiment=digits_quick",
            "progress=false",
            "trainer.accelerator=cpu",
            "trainer.strategy=ddp",
            # fp32: the tolerances below are for the order of float sums alone; precision=auto trains in bf16 on a
            # CPU with AMX, whose rounding the training amplifies (AUM 0.03 apart)
            "trainer.precision=32-true",
            # NCHW: torch's CPU BatchNorm on channels-last tensors is about 10x less exact than on NCHW ones (forward
            # 3.5e-6 vs 3.9e-7 against fp64; 4 SGD steps of the small CNN move its weights 3e-4 apart), and the
            # 1-process run uses it where the 2-process run's GlobalBatchNorm does its own two-pass sums
            "dynamics.channels_last=false",
            "evaluate.channels_last=false",
            "trainer.devices=2,1,2",
            "paths.cache_dir=" + str(tmp_path) + "/cache_${trainer.devices}",  # 2 and 1 process compute apart
            f"hydra.sweep.dir={sweep}",
            "dataset.max_train=403",  # odd: every training's last batch splits unevenly over the 2 ranks
            "cluster.epochs=5",
            "selection.budget=[0.3]",  # 121 of 403 kept: odd too
        ],
        cwd=tmp_path,
        env_extra={"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    log = (res.stdout + res.stderr).count("DDP: started 1 more local rank(s)")
    assert log == 2  # both 2-process jobs started their second rank afresh
    two, one, hits = (_job(sweep, i) for i in range(3))
    # each rank embedded half of every split; rank 0's gathered artifact equals the 1-process embedding (float16:
    # the ranks' float32 features, equal to 1e-4, may round to neighbouring float16 values, 2^-10 apart relatively)
    (e2,), (e1,) = (list((tmp_path / f"cache_{w}" / "embed").glob("*/arrays.npz")) for w in (2, 1))
    e2, e1 = (
        {**dict(np.load(e)), **{k: np.load(e.with_name(f"{k}.npy")) for k in ("train", "test")}} for e in (e2, e1)
    )
    assert sorted(e2) == sorted(e1) == ["signature", "test", "train"]  # signature: the near-copy thumbnails
    assert e1["train"].dtype == e2["train"].dtype == np.float16
    for k in e1:
        np.testing.assert_allclose(e2[k], e1[k], rtol=2e-3, atol=1e-4, err_msg=k)
    s2, s1 = dict(np.load(two / "scores.npz")), dict(np.load(one / "scores.npz"))
    assert (s2["pseudo_labels"] == s1["pseudo_labels"]).mean() >= 0.99
    for k in ("aum", "aum_prob_sum", "el2n"):
        np.testing.assert_allclose(s2[k], s1[k], rtol=0, atol=1e-4, err_msg=k)
    c2, c1 = dict(np.load(two / "coresets.npz")), dict(np.load(one / "coresets.npz"))
    assert sorted(c2) == sorted(c1)
    for k in c2:
        assert len(np.intersect1d(c2[k], c1[k])) >= 0.99 * len(c1[k]), k
    r2, r1, rh = (__import__("json").loads((j / "results.json").read_text()) for j in (two, one, hits))
    row2, row1 = r2["results"][0], r1["results"][0]
    assert row2["beta"] == row1["beta"]
    n_val = round(0.1 * 403)
    np.testing.assert_allclose(row2["beta_curve"]["val_acc"], row1["beta_curve"]["val_acc"], atol=1.01 / n_val)
    for arm in ("double_end", "random"):
        assert row2["methods"][arm]["n_kept"] % 2 == 1  # an uneven split on 2 ranks
        np.testing.assert_allclose(row2["methods"][arm]["final_acc"], row1["methods"][arm]["final_acc"], atol=0.01)
    # rank 0 alone wrote the run folder: the same files as the 1-process run, one W&B run, nothing of rank 1's
    assert _files(two) == _files(one)
    for job in (two, one, hits):
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1
    # the third job found every stage in the cache (rank 0 decided for both ranks) and got the same results
    assert all(e["cached"] for e in rh["cache"])
    assert rh["results"] == r2["results"]


def test_strategies_that_spawn_per_fit_and_nodes_without_a_launcher_are_refused(compose_cfg):
    from elfs.config import TrainerConfig, to_typed
    from elfs.errors import ConfigError
    from elfs.preflight import check_config

    with pytest.raises(ConfigError, match=r"trainer.strategy='ddp_spawn' starts new processes for every fit"):
        TrainerConfig(strategy="ddp_spawn").validate()
    conf = to_typed(compose_cfg(["trainer.num_nodes=2", "trainer.devices=2", "logger=none"]))
    with pytest.raises(ConfigError, match=r"trainer.num_nodes=2 needs a cluster launcher"):
        check_config(conf, weights=False, devices=False)
