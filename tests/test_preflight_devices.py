"""Refusals that a CPU-only run cannot reach on its own: checks that depend on the devices a GPU box would show
(torch.cuda is patched for the count only; the checks themselves run for real), and knn=auto without faiss."""

from __future__ import annotations

import sys

import pytest

from elfs.config import to_typed
from elfs.errors import ConfigError
from elfs.method.knn import resolve_backend
from elfs.preflight import check_processes


def _gpus(monkeypatch, n: int) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


def test_knn_auto_needs_no_faiss_where_it_uses_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    _gpus(monkeypatch, 1)
    assert resolve_backend("auto") == "torch"
    _gpus(monkeypatch, 0)
    assert resolve_backend("auto") == "faiss"  # the CPU path is faiss, decided without importing it


def test_devices_minus_one_checks_the_batch_split_before_any_work(compose_cfg, monkeypatch):
    conf = to_typed(compose_cfg(["trainer=ddp", "trainer.devices=-1", "trainer.accelerator=gpu",
                                 "dynamics.batch_size=66"]))  # fmt: skip
    conf.validate()  # -1 is not a count: the schema cannot check it
    _gpus(monkeypatch, 4)
    with pytest.raises(ConfigError, match=r"dynamics.batch_size=66 is the global batch.* = 4 processes"):
        check_processes(conf)
    _gpus(monkeypatch, 3)  # 66 splits over 3; cluster/evaluate defaults must too, or name themselves
    try:
        check_processes(conf)
    except ConfigError as e:
        assert "dynamics" not in str(e)


def test_compile_with_syncbatchnorm_under_ddp_is_refused(compose_cfg):
    conf = to_typed(compose_cfg(["trainer=ddp", "trainer.devices=2", "evaluate.compile=true"], sub="a"))
    with pytest.raises(ConfigError, match="evaluate.compile=true with trainer.sync_batchnorm=true"):
        check_processes(conf)
    ok = ["trainer=ddp", "trainer.devices=2", "evaluate.compile=true", "trainer.sync_batchnorm=false"]
    check_processes(to_typed(compose_cfg(ok, sub="b")))
    check_processes(to_typed(compose_cfg(["evaluate.compile=true"], sub="c")))  # one process: nothing to sync
