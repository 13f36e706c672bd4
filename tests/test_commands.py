"""What users type works as typed: sweeps from an empty folder with no hydra.sweep.dir, plan=true before the
spend, a failed job that does not sink the sweep, one-line errors, --version, the label-free sweeper objective."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from elfs.cli.main import objective
from elfs.infra.overrides import is_multirun, user_overrides, wants_plan
from elfs.plan import format_total, plan_command

BIN = Path(sys.executable).parent
PAPER_TABLES = {"paper_cifar10": 210, "paper_cifar100": 210, "paper_beta_ablation": None,
                "paper_encoder_ablation": None, "paper_temi_vs_kmeans": None}  # fmt: skip


def elfs(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """The `elfs` console script exactly as typed, in ``cwd``, with only the caller's environment (+ ``env``)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ELFS_")}
    return subprocess.run([str(BIN / "elfs"), *args], cwd=cwd, env={**clean, **env}, capture_output=True,
                          text=True, timeout=900)  # fmt: skip


def test_plus_experiment_and_the_overlays():
    assert user_overrides(["-m", "+experiment=x", "+debug=smoke", "++experiment=y", "a=1"], env={}) == [
        "-m", "experiment=x", "debug=smoke", "++experiment=y", "a=1"]  # fmt: skip
    assert user_overrides(["a=1"], env={"ELFS_SMOKE": "1", "ELFS_PLAN": "1"}) == ["a=1", "debug=smoke", "plan=true"]
    assert user_overrides(["debug=none_of_mine"], env={"ELFS_SMOKE": "1"}) == ["debug=none_of_mine"]
    assert wants_plan(["plan=true"]) and wants_plan(["plan=True"]) and not wants_plan(["plan=false", "x=plan=true"])
    assert is_multirun(["-m"]) and is_multirun(["--multirun"]) and not is_multirun(["x=-m"])


def test_objective_is_the_beta_search_validation_accuracy():
    rows = [{"beta": 0.2, "beta_curve": {"betas": [0.0, 0.2], "val_acc": [0.5, 0.7]}},
            {"beta": 0.0, "beta_curve": {"betas": [0.0, 0.2], "val_acc": [0.9, 0.1]}}]  # fmt: skip
    assert objective({"results": rows}, "beta_search/val_acc") == pytest.approx(0.8)
    assert objective({"results": [{"beta": 0.1}]}, "beta_search/val_acc") is None  # fixed beta: nothing searched
    assert objective({"results": rows}, "none") is None


def test_plan_total_line_format():
    line = format_total([{"proxy": (1, 3.6e7)}, {"evaluations": (2, 0.0)}], 10_000.0, False)
    assert line == "plan: 2 jobs, 3 trainings, ~1.0 device-hours at 10,000 img/s (assumed)"


def test_plan_counts_concurrency_and_prints_the_floor():
    """Hand-computed: 3.6e7 proxy images at 10,000 img/s = 1 h; 7.2e7 evaluation images run 2 at a time with a
    measured gain of 2 = 1 h more; 3.6e18 FLOPs at an A100's 312 TFLOP/s = 3.2 h of floor."""
    from elfs.plan import Rates

    new = [{"proxy": (1, 3.6e7, 1.8e18), "evaluations@2": (4, 7.2e7, 1.8e18)}]
    rates = Rates(10_000.0, 2.0, "NVIDIA A100-SXM4-80GB", "gpu_check.json")
    line = format_total(new, 10_000.0, True, rates)
    assert line == (
        "plan: 1 jobs, 5 trainings, ~2.0 device-hours at 10,000 img/s (measured), concurrent evaluations x2.00 "
        "(measured) | floor ~3.2 h: 3.6e+18 training FLOPs at 312 TFLOP/s bf16 (NVIDIA A100-SXM4-80GB), estimate "
        "1x the floor"
    )
    assert "no gain assumed for concurrency" in format_total(new, 10_000.0, False)


@pytest.mark.parametrize(
    "model, size, channels, classes",
    [("resnet18_cifar", 32, 3, 10), ("resnet34", 224, 3, 1000), ("small_cnn", 28, 1, 10)],
)
def test_the_plans_flop_count_is_torchs(model, size, channels, classes):
    """The plan's count from the layer shapes (no torch) against torch's FLOP counter on the built network (meta
    device), forward only; ResNet-18 at 32 px is the known 0.56 GMAC."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from elfs.models import build_model
    from elfs.plan import forward_macs

    with torch.device("meta"):
        net = build_model(model, num_classes=classes, in_channels=channels, width=32)
        x = torch.empty(1, channels, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    assert forward_macs(model, size, channels, classes, 32) == counter.get_total_flops() / 2
    if model == "resnet18_cifar":
        assert 0.55e9 < forward_macs(model, size, channels, classes) < 0.57e9


def test_plan_prices_at_the_rates_file_given(tmp_path):
    rates = tmp_path / "gpu_check.json"
    rates.write_text(json.dumps({
        "device": "NVIDIA H100 80GB HBM3",
        "resnet18_32px_batch256": {"status": "ok", "fast": {"images_per_s": 30000.0}, "plain": {"images_per_s": 1.0}},
        "concurrent_evaluations": {"status": "ok", "gpus": 1, "speedup_warm_workers": 1.5},
    }))  # fmt: skip
    p = elfs(["experiment=paper_cifar10", "plan=true", f"plan_rates={rates}"], tmp_path)
    last = p.stdout.strip().splitlines()[-1]
    assert p.returncode == 0 and "at 30,000 img/s (measured), concurrent evaluations x1.50 (measured)" in last, last
    assert "at 989 TFLOP/s bf16 (NVIDIA H100 80GB HBM3)" in last and "x the floor" in last
    p = elfs(["experiment=paper_cifar10", "plan=true", f"plan_rates={tmp_path / 'none.json'}"], tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("elfs: error: plan_rates=") and p.stdout == "", p.stderr


def test_version_and_help(tmp_path):
    from elfs.infra.version import package_version

    p = elfs(["--version"], tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == f"elfs {package_version()}"
    p = elfs(["--help"], tmp_path)
    assert p.returncode == 0 and p.stdout.startswith("elfs: ")
    assert "plan=true" in p.stdout and "debug=smoke" in p.stdout and "debug_mode" not in p.stdout
    assert not (tmp_path / "outputs").exists()


def test_user_error_in_a_run_is_one_line(tmp_path):
    """Raised inside the Hydra task (the data is too small for k), not at composition: still one line, exit 2."""
    p = elfs(["experiment=digits_quick", "knn.k=5000", "logger=none"], tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("elfs: error: ") and "knn.k" in p.stderr, p.stderr
    assert "Error executing job" not in p.stderr


def test_an_experiment_with_a_sweep_run_without_m_says_so(tmp_path):
    p = elfs(["experiment=paper_cifar10", "plan=true"], tmp_path)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1].startswith("plan: 1 jobs"), p.stdout
    p = elfs(["experiment=paper_cifar10", "debug=smoke", "selection.budget=2"], tmp_path)  # fails before work
    said = [ln for ln in (p.stdout + p.stderr).splitlines() if "declares a sweep" in ln]
    assert p.returncode == 2 and len(said) == 1 and "without -m" in said[0], p.stdout + p.stderr


@pytest.mark.slow
@pytest.mark.parametrize("table", sorted(PAPER_TABLES))
def test_every_paper_table_plans_without_data(table, tmp_path, capsys, monkeypatch):
    """`elfs -m experiment=<table> plan=true`: one line per job and the total, no dataset, no weights, no folder."""
    monkeypatch.chdir(tmp_path)
    plan_command(["-m", f"experiment={table}"])
    lines = capsys.readouterr().out.strip().splitlines()
    jobs = [ln for ln in lines if ln.startswith("job ")]
    assert (
        lines[-1].startswith(f"plan: {len(jobs)} jobs, ")
        and "img/s (assumed)" in lines[-1]
        and "x the floor" in lines[-1]
    )
    if PAPER_TABLES[table]:
        assert len(jobs) == PAPER_TABLES[table]
    assert all("stages: " in ln and "N=" in ln for ln in jobs)
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing downloaded


def test_plan_shares_compositions_faithfully(tmp_path, monkeypatch):
    """Jobs that choose the same groups share one composition with their values applied on a copy: the typed
    configs equal those of composing every job from scratch, as the sweep will."""
    from elfs.config import to_typed
    from elfs.plan import job_configs

    monkeypatch.chdir(tmp_path)
    args = ["-m", "experiment=paper_temi_vs_kmeans", "selection.budget=0.1,0.5", "cluster=temi,kmeans"]
    fast, slow = job_configs(args), job_configs(args, compose_each=True)
    assert [o for o, _ in fast] == [o for o, _ in slow] and len(fast) == 2 * 2 * 3
    budgets = set()
    for (_, a), (_, b) in zip(fast, slow, strict=True):
        ta, tb = to_typed(a), to_typed(b)
        assert Path(ta.paths.output_dir).name == Path(tb.paths.output_dir).name  # the job folder; the sweep's
        ta.paths.output_dir = tb.paths.output_dir  # timestamp differs between the two calls
        assert ta == tb
        budgets.add((ta.cluster.method, ta.selection.budget))
    assert budgets == {(m, b) for m in ("temi", "kmeans") for b in (0.1, 0.5)}


@pytest.mark.slow
def test_sweep_as_typed_then_plan_then_a_failed_job(tmp_path):
    """The issue's own command from an empty folder; then its plan finds every stage in the cache; then a sweep
    with one job that fails (k larger than the data) still aggregates the other job and names the failed one."""
    p = elfs(["-m", "+experiment=digits_quick", "selection.budget=0.1,0.3"], tmp_path, WANDB_MODE="disabled")
    assert p.returncode == 0, p.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multiruns").glob("*/*")
    assert sorted(d.name for d in sweep.iterdir() if d.is_dir()) == ["0_selection.budget=0.1", "1_selection.budget=0.3"]
    rows = list(csv.DictReader((sweep / "summary.csv").read_text().splitlines()))
    assert {r["budget"] for r in rows} == {"0.1", "0.3"}

    p = elfs(["-m", "+experiment=digits_quick", "selection.budget=0.1,0.3", "plan=true"], tmp_path)
    lines = p.stdout.strip().splitlines()
    assert p.returncode == 0 and len(lines) == 3, p.stdout + p.stderr
    for ln in lines[:2]:
        assert "(compute)" not in ln and "embed (cached)" in ln and "trainings: none" in ln, ln
    assert lines[2].startswith("plan: 2 jobs, 0 trainings")

    failing = ["-m", "experiment=digits_quick", "selection.budget=0.3", "knn.k=20,5000"]
    p = elfs(failing, tmp_path, WANDB_MODE="disabled")
    errors = [ln for ln in p.stderr.splitlines() if "error" in ln.lower()]  # the other job's progress lines aside
    assert p.returncode == 2 and len(errors) == 1 and p.stderr.splitlines()[-1] == errors[0], p.stderr
    assert "1 job(s) of the sweep failed" in p.stderr and "knn.k=5000" in p.stderr
    second = max((tmp_path / "outputs" / "multiruns").glob("*/*"))
    failed = json.loads((second / "1_knn.k=5000" / "failed.json").read_text())  # named by the swept value
    assert failed["user_error"] and "knn.k" in failed["error"]
    assert (second / "0_knn.k=20" / "results.json").is_file()
    summary = (second / "summary.md").read_text()
    assert "knn.k=5000" in summary and "0.3" in summary


@pytest.mark.parametrize(
    "args, expect",
    [
        (["-m", "experiment=paper_temi_vs_kmeans", "plan=true"], "plan: 30 jobs"),
        (["cluster.head_impl=vmap"], "cluster.head_impl='vmap'"),
        (["selection.score=vibes"], "selection.score='vibes'"),
    ],
)
def test_a_plan_or_a_typo_is_answered_before_torch_and_lightning_load(args, expect, tmp_path):
    """`elfs ... plan=true` and a misspelt choice never import torch or Lightning (7 s here): the names they are
    checked against live in elfs/infra/names.py. The `elfs` entry point, run in-process with these arguments."""
    code = (
        "import sys; from elfs.cli.main import cli; sys.argv = ['elfs', *sys.argv[1:]]\n"
        "try:\n    cli()\nexcept SystemExit:\n    pass\n"
        "print('loaded:', sorted(m for m in ('torch', 'lightning') if m in sys.modules), file=sys.stderr)"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ELFS_")}
    p = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=clean, capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert expect in p.stdout + p.stderr, p.stdout[-2000:] + p.stderr[-2000:]
    assert p.stderr.strip().splitlines()[-1] == "loaded: []", p.stderr[-2000:]
