"""Shared fixtures: compose the real Hydra configs (the files in conf/) into tmp folders, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist runs one worker per core (pyproject's addopts): each worker, and the commands it starts, gets one
    # torch/OpenMP thread, since two processes with a thread per core each slow each other several-fold on 2 cores.
    # A test that sets OMP_NUM_THREADS for its own subprocess keeps its value.
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
os.environ["WANDB_MODE"] = os.environ.get("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def compose_config(overrides: list[str], tmp: Path, *, cache: Path | None = None):
    """The composed config exactly as `python -m elfs.train <overrides>` would see it, with paths in tmp."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from elfs.config import register_configs
    from elfs.infra.overrides import user_overrides

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                *user_overrides(overrides, env={}),  # `+experiment=X` as the command line accepts it
                f"paths.root_dir={tmp}",
                f"paths.output_dir={tmp / 'run'}",
                f"paths.cache_dir={cache or (tmp / 'cache')}",
                "progress=false",
            ],
        )
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture
def compose_cfg(tmp_path):
    def _compose(overrides: list[str] | None = None, *, cache: Path | None = None, sub: str = ""):
        d = tmp_path / sub if sub else tmp_path
        d.mkdir(parents=True, exist_ok=True)
        return compose_config(list(overrides or []), d, cache=cache)

    return _compose


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one thread is as fast on a quiet machine and avoids 10-40x OpenMP slowdowns when other
    processes share the 2 cores (measured: 0.8 s vs 28 s for the same TEMI fit). Module-scoped so that cached
    module fixtures and the tests comparing against them run with the same thread count (float sums differ)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def interrupt_at_epoch():
    """A Lightning callback class that raises KeyboardInterrupt when epoch ``n`` starts (a simulated kill)."""
    import lightning as L

    class InterruptAtEpoch(L.Callback):
        def __init__(self, epoch: int) -> None:
            self.epoch = epoch

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if trainer.current_epoch == self.epoch:
                raise KeyboardInterrupt("simulated kill")

    return InterruptAtEpoch


def run_elfs_cli(
    args: list[str], cwd: Path, env_extra: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """`python -m elfs.train ARGS` in a fresh interpreter, as a user types it: W&B off (unless env_extra says
    otherwise), a fixed hash seed; stdout and stderr captured."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "elfs.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def elfs_cli():
    """:func:`run_elfs_cli`, for end-to-end tests of the command line."""
    return run_elfs_cli
