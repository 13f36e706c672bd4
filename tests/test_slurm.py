"""SLURM as a cluster user meets it: sweeps submitted to a real single-node cluster (Debian's slurmctld, slurmd and
munge, started by .ci/tools/slurm.sh) through the documented `+launcher=slurm_cpu` line, and DDP refused at once,
with how to launch it, where a SLURM job step could never start its other ranks."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from external import tool

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


def _documented_line() -> list[str]:
    """The words of experiments/README.md's `+launcher=slurm_cpu` command (its comment left out)."""
    text = (ROOT / "experiments" / "README.md").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("elfs ") and "+launcher=slurm_cpu" in ln]
    return line.split("#")[0].split()


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    """The environment of a user of the cluster that .ci/tools/slurm.sh started (its SLURM_CONF)."""
    dest = tool("slurm")
    conf = dest / "slurm.conf"
    assert conf.is_file(), f"no {conf}"
    return {**os.environ, "SLURM_CONF": str(conf), "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0"}


def _sweep(work: Path, before: set[Path]) -> Path:
    (sweep,) = set(work.glob("outputs/multiruns/*/*")) - before
    return sweep


def _jobs(sweep: Path) -> list[Path]:
    jobs = [d for d in sweep.iterdir() if d.is_dir() and d.name[0].isdigit()]
    return sorted(jobs, key=lambda d: int(d.name.split("_")[0]))


@pytest.mark.slow
def test_the_documented_slurm_sweep_runs_on_a_real_cluster(tmp_path, slurm_env):
    """The documented line from an empty folder: every job runs as a SLURM job and completes, the summary is
    written; the same sweep again, with one more job that fails, recomputes nothing, reports the failed job and
    still writes the others. Then `trainer=ddp` in a batch job outside srun stops at once with its one line."""
    words = _documented_line()
    assert words[:4] == ["elfs", "-m", "+experiment=digits_quick", "+launcher=slurm_cpu"], words
    work = tmp_path / "empty"
    work.mkdir()
    p = _elfs(words[1:], work, slurm_env, timeout=1200)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    sweep = _sweep(work, set())
    jobs = _jobs(sweep)
    budgets = next(w for w in words if w.startswith("selection.budget=")).split("=", 1)[1].split(",")
    assert [j.name for j in jobs] == [f"{i}_selection.budget={b}" for i, b in enumerate(budgets)]
    for job in jobs:
        res = json.loads((job / "results.json").read_text())
        assert [r["budget"] for r in res["results"]] == [float(budgets[jobs.index(job)])]
    # each job ran as a SLURM job: submitit's folder holds one log per job, named by its SLURM job id
    logs = sorted((sweep / ".submitit").glob("*/*_log.out"))
    assert len(logs) == len(jobs), sorted((sweep / ".submitit").rglob("*"))
    assert all(re.fullmatch(r"\d+(_\d+)?", f.parent.name) for f in logs)
    summary = (sweep / "summary.md").read_text()
    assert all(f"| {100 * (1 - float(b)):.0f}%" in summary for b in budgets), summary

    # the same sweep over the same cache, and one job more that fails: nothing recomputed, the failure reported
    again = list(words[1:])
    i = next(k for k, w in enumerate(again) if w.startswith("selection.budget="))
    again[i] += ",1.5"
    before = {sweep}
    p = _elfs(again, work, slurm_env, timeout=1200)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-3000:]
    sweep2 = _sweep(work, before)
    jobs2 = _jobs(sweep2)
    assert len(jobs2) == len(budgets) + 1
    failed = jobs2[-1]
    assert failed.name == f"{len(budgets)}_selection.budget=1.5" and (failed / "failed.json").is_file()
    last = p.stderr.strip().splitlines()[-1]
    assert "1 job(s) of the sweep failed" in last and failed.name in last and "selection.budget" in last, last
    for job in jobs2[:-1]:
        res = json.loads((job / "results.json").read_text())
        events = res["cache"]
        assert events and all(e["cached"] for e in events), [e for e in events if not e["cached"]]
        assert {"embed", "cluster", "dynamics", "beta_search", "evaluate"} <= {e["stage"] for e in events}
    summary2 = (sweep2 / "summary.md").read_text()
    assert all(f"| {100 * (1 - float(b)):.0f}%" in summary2 for b in budgets) and failed.name in summary2

    # trainer=ddp typed in a batch script, outside srun: refused at once, the one line in the job's output
    out = tmp_path / "ddp.out"
    elfs = Path(sys.executable).with_name("elfs")
    script = " ".join([str(elfs), *DDP])
    p = subprocess.run(
        ["sbatch", "--wait", "-n", "1", "-c", "1", "-o", str(out), "-D", str(work), "--wrap", script],
        env=slurm_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 2, p.stderr + (out.read_text() if out.exists() else "")
    lines = out.read_text().strip().splitlines()
    assert len(lines) == 1 and "outside srun" in lines[0] and "srun --ntasks-per-node=2" in lines[0], lines
