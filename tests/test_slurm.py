"""SLURM as a cluster user meets it: sweeps submitted to a real single-node cluster (Debian's slurmctld, slurmd and
munge, started by .ci/tools/slurm.sh) through the documented `+launcher=slurm_cpu` line, and DDP refused at once,
with how to launch it, where a SLURM job step could never start its other ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: a batch step's environment as sbatch gives it (measured on SLURM 22.05): SLURM_NTASKS, no SLURM_STEP_ID
BATCH_STEP = {"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "wrap", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
              "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NNODES": "1"}  # fmt: skip
DDP = ["+experiment=digits_quick", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "logger=none"]


def _elfs(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    """The `elfs` console script, from ``cwd``."""
    elfs = Path(sys.executable).with_name("elfs")
    cmd = [str(elfs)] if elfs.exists() else [sys.executable, "-m", "elfs.train"]
    return subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_ddp_inside_a_slurm_job_but_outside_srun_is_refused_at_once(tmp_path):
    """`elfs trainer=ddp trainer.devices=2` typed in a batch script (one task, no srun): Lightning would start no
    other rank and wait for it; elfs stops before loading anything, in one line saying how to launch it."""
    env = {**os.environ, "WANDB_MODE": "disabled", **BATCH_STEP}
    p = _elfs(DDP, tmp_path, env, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "outside srun" in lines[0] and "srun --ntasks-per-node=2" in lines[0] and "+launcher=slurm_ddp" in lines[0]
    assert not list(tmp_path.glob("outputs/runs/*/*")) and not (tmp_path / ".cache").exists()
    # srun with fewer tasks than processes: the same refusal, naming the count
    step = {**env, "SLURM_STEP_ID": "0", "SLURM_STEPID": "0"}
    p = _elfs(DDP, tmp_path, step, timeout=120)
    assert p.returncode == 2 and "SLURM_NTASKS=1" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
