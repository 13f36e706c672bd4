"""What a DDP training step sends between ranks, counted on two real gloo processes: in the steady state (no epoch
end in the window) a step of the classifier makes the gradient all-reduce (DDP's buckets) and the global batch
norm's all-reduces (two a layer forward, two backward) and nothing else: no buffer sync from rank 0 (the recorder's
state is not a synced buffer and BatchNorm is synced), no SIGTERM broadcast, no host sync. With ``record=True`` the
recorder's gather (indices, logits, targets: three all_gathers) is the one addition."""

from __future__ import annotations

import os
import socket
import traceback
from collections import Counter

import lightning as L
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

COLLECTIVES = (
    "all_reduce",
    "broadcast",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "broadcast_object_list",
    "barrier",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "gather",
    "scatter",
    "_broadcast_coalesced",
)
HOST_SYNCS = ("item", "__float__", "__int__", "__bool__", "cpu", "tolist", "numpy")
FIRST, LAST = 2, 14  # 16 steps in the epoch: the window holds neither its start nor its end


class TrafficCounter(L.Callback):
    """Counts collectives (by name and calling file) and host syncs from the start of step FIRST to that of LAST;
    the gradient all-reduce runs in DDP's C++ reducer, so a comm hook counts its buckets."""

    def __init__(self) -> None:
        self.collectives: Counter = Counter()
        self.syncs: list[str] = []
        self.buckets = 0
        self.steps = 0
        self._saved: dict = {}
        self._on = False

    def on_train_start(self, trainer, pl_module) -> None:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        counter = self

        def hook(state, bucket):
            if counter._on:
                counter.buckets += 1
            return allreduce_hook(state, bucket)

        trainer.strategy.model.register_comm_hook(None, hook)

    def _install(self) -> None:
        counter = self
        self._on = True
        for name in COLLECTIVES:
            orig = getattr(dist, name)
            self._saved[("dist", name)] = orig

            def wrapped(*a, _orig=orig, _name=name, **k):
                where = traceback.extract_stack()[-2]
                counter.collectives[(_name, os.path.basename(where.filename))] += 1
                return _orig(*a, **k)

            setattr(dist, name, wrapped)
        for name in HOST_SYNCS:
            orig = getattr(torch.Tensor, name)
            self._saved[("tensor", name)] = orig

            def synced(t, *a, _orig=orig, _name=name, **k):
                stack = traceback.extract_stack()[:-1]
                frame = stack[-1]
                path = frame.filename.replace("\\", "/")
                writing_logs = any(f.name == "log_metrics" and "logger_connector" in f.filename for f in stack)
                if "/torch/" not in path and not path.endswith("elfs/training/recorder.py") and not writing_logs:
                    counter.syncs.append(f"Tensor.{_name} at {frame.filename}:{frame.lineno}")
                return _orig(t, *a, **k)

            setattr(torch.Tensor, name, synced)

    def _remove(self) -> None:
        self._on = False
        for (where, name), orig in self._saved.items():
            setattr(dist if where == "dist" else torch.Tensor, name, orig)
        self._saved.clear()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == LAST:
            self._remove()
        if step == FIRST:
            self._install()
        if FIRST <= step < LAST:
            self.steps += 1

    def on_train_end(self, trainer, pl_module) -> None:
        self._remove()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._remove()


def _train(rank: int, record: bool) -> dict:
    from sklearn.datasets import load_digits

    from elfs.config import ClassifierTrainingConfig, DynamicsConfig
    from elfs.dynamics import ImageFacts, train_classifier
    from elfs.infra.runtime import Runtime
    from elfs.models.global_batchnorm import GlobalBatchNorm, GlobalBatchNormSync

    d = load_digits()
    x = np.clip(d.images[:256] * 16, 0, 255).astype(np.uint8)[..., None]
    cls = DynamicsConfig if record else ClassifierTrainingConfig
    cfg = cls(model="small_cnn", width=4, batch_size=16, lr=0.05, momentum=0.9, device_data=True)
    counter = TrafficCounter()
    layers: list[int] = []

    class CountLayers(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            layers.append(sum(isinstance(m, GlobalBatchNorm) for m in pl_module.modules()))

    kw = dict(
        accelerator="cpu",
        devices=2,
        strategy="ddp",  # as the pipeline's trainer settings name it under DDP (elfs/stages/context.py)
        plugins=[GlobalBatchNormSync()],
        precision="32-true",
        deterministic=False,
        callbacks=[counter, CountLayers()],
    )
    images = ImageFacts(crop_padding=1, hflip=True, mean=[0.3], std=[0.35])
    res = train_classifier(
        x, d.target[:256], np.arange(256), cfg, num_classes=10, steps=16, seed=0, images=images,
        record=record, runtime=Runtime(trainer_kwargs=kw),
    )  # fmt: skip
    assert res.steps == 16 and counter.steps == LAST - FIRST
    return {
        "collectives": dict(counter.collectives),
        "syncs": counter.syncs[:20],
        "buckets": counter.buckets,
        "steps": counter.steps,
        "bn_layers": layers[0],
    }


def _worker(rank: int, port: int, out) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", NODE_RANK="0")
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        out[rank] = {record: _train(rank, record) for record in (False, True)}
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_ddp_step_sends_the_gradients_and_the_batch_norm_sums_only() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(port, out), nprocs=2, join=True)
        results = dict(out)
    for rank in (0, 1):
        for record in (False, True):
            r = results[rank][record]
            steps = r["steps"]
            assert r["syncs"] == [], r["syncs"]
            assert 1 <= r["buckets"] / steps <= 2, r  # the gradient all-reduce: DDP's bucket(s), once a step
            allowed = {("all_reduce", "global_batchnorm.py"): 4 * r["bn_layers"] * steps}
            allowed[("all_reduce", "default_hooks.py")] = r["buckets"]  # the counting hook's own all-reduce
            if record:  # the recorder's gather of (indices, logits, targets)
                gathers = {k: v for k, v in r["collectives"].items() if k[0].startswith("all_gather")}
                assert sum(gathers.values()) == 3 * steps, r
                allowed.update(gathers)
            assert r["bn_layers"] >= 1
            assert r["collectives"] == allowed, f"rank {rank}, record={record}: {r['collectives']} != {allowed}"
