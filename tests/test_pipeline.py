"""End to end: the real pipeline (real backbone weights, faiss, TEMI, Lightning) on tiny real data.

These are the guarantees users rely on: the label firewall, seeded determinism, resume after a kill, and bad input
refused before any work (sweeps that reuse the cache: tests/test_paper_tables.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from elfs.run import run

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["+experiment=digits_quick", "logger=none"]


def _digits_npz(path: Path, permute_labels: bool = False) -> Path:
    from elfs.data import load_dataset

    ds = load_dataset("digits")
    y_tr = ds.truth.train.copy()
    if permute_labels:
        y_tr = np.random.default_rng(123).permutation(y_tr)
    np.savez(path, x_train=ds.train.images, y_train=y_tr, x_test=ds.test.images, y_test=ds.truth.test)
    return path


def _coresets(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "coresets.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.slow
def test_label_firewall_and_determinism(compose_cfg, tmp_path):
    """Shuffled training labels leave every label-free method's coreset bit-for-bit unchanged; the same seed gives
    the same coreset."""
    real = _digits_npz(tmp_path / "real.npz")
    shuffled = _digits_npz(tmp_path / "shuffled.npz", permute_labels=True)
    runs = {}
    for name, path in [("a", real), ("b", real), ("shuffled", shuffled)]:
        every_label_free = ["selection.baselines=[random,ccs,easy,hard,prototypicality,d2,zcore]"]
        every_label_free += ["selection.budget=0.3", "selection.zcore_samples=20000"]
        every_label_free.append("cluster.epochs=10")  # enough for pseudo-labels that differ from the truth
        cfg = compose_cfg(
            [*QUICK, "dataset=npz", f"dataset.path={path}", "dataset.hflip=false", *every_label_free], sub=name
        )
        results = run(cfg)  # each with its own fresh cache: nothing is shared between the three runs
        runs[name] = (results, _coresets(Path(cfg.paths.output_dir)))
    a, b, s = runs["a"][1], runs["b"][1], runs["shuffled"][1]
    assert set(a) == set(b) == set(s)
    assert {k.split("_budget")[0] for k in a} == {
        "double_end",
        "random",
        "ccs",
        "easy",
        "hard",
        "prototypicality",
        "d2",
        "zcore",
    }
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(a[k], s[k])
    # the evaluation, which does use ground truth, sees the difference: on the same (label-free) random coreset it
    # trains on shuffled labels, and tests near chance (10 classes)
    acc = lambda r, m: r["results"][0]["methods"][m]["acc_mean"]  # noqa: E731
    assert acc(runs["a"][0], "double_end") == acc(runs["b"][0], "double_end")
    assert acc(runs["shuffled"][0], "random") < 0.2 < acc(runs["a"][0], "random") - 0.2
    # what the Hydra task hands a sweeper (Optuna, Ax) is label-free: the same with permuted training labels
    from elfs.cli.main import objective

    tuned = [objective(runs[k][0], "beta_search/val_acc") for k in ("a", "shuffled")]
    assert tuned[0] is not None and 0.0 <= tuned[0] <= 1.0 and tuned[0] == tuned[1]


@pytest.mark.slow
def test_cli_runs_pipeline_and_writes_report(tmp_path, elfs_cli):
    out = tmp_path / "run"
    p = elfs_cli([*QUICK, f"hydra.run.dir={out}", f"paths.cache_dir={tmp_path / 'cache'}", "logger=csv"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "pseudo-labels vs ground truth" in p.stdout and "double_end(aum)" in p.stdout and "random" in p.stdout
    # no terminal here (as in a SLURM log): plain progress lines, no carriage-return bar redraws
    assert "\r" not in p.stderr
    assert "embed[efficientnet_lite0]: 1438/1438 (100%)" in p.stderr and "cluster: epoch 30/30" in p.stderr
    text = (out / "results.json").read_text()
    assert "NaN" not in text
    res = json.loads(text)
    assert [r["budget"] for r in res["results"]] == [0.3, 0.5]
    for r in res["results"]:
        assert r["beta_source"] == "search" and r["beta"] in r["beta_curve"]["betas"]
        for m in ("double_end", "random"):
            assert 0.0 <= r["methods"][m]["acc_mean"] <= 1.0
            assert r["methods"][m]["n_kept"] == round(r["budget"] * res["n_train"])
    from elfs.infra.version import code_version

    assert res["code_version"] == code_version() and re.fullmatch(r"[0-9a-f]{40}(-dirty)?", res["git_commit"])
    assert res["config"]["cluster"]["num_heads"] == 4 and (out / "config.yaml").is_file()
    assert (out / "accuracy_vs_pruning.png").stat().st_size > 1000
    assert (out / "beta_curves.png").exists() and (out / ".hydra" / "config.yaml").exists()
    assert any((out / "csv").rglob("metrics.csv"))
    assert set(res["stage_seconds"]) >= {"embed", "knn", "cluster", "dynamics", "beta_search", "evaluate"}


@pytest.mark.slow
def test_killed_run_resumes_from_cache_with_same_result(tmp_path, elfs_cli):
    """SIGKILL during the dynamics stage, rerun: upstream stages come from the cache, dynamics resumes from its
    last epoch checkpoint, and the coreset is identical to an uninterrupted run's."""
    # a fixed beta and no baseline: the beta search and the evaluations are not what this test is about
    args = [*QUICK, "dynamics.epochs=40", "selection.budget=0.3", "selection.beta=0.2", "selection.baselines=[]"]
    args.append("cluster.epochs=10")  # TEMI is not what this test is about either
    ref = tmp_path / "ref"
    p = elfs_cli([*args, f"hydra.run.dir={ref}", f"paths.cache_dir={tmp_path / 'cache_ref'}"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]

    cache = tmp_path / "cache"
    for stage in ("embed", "knn", "cluster"):  # the upstream entries, as a killed run would have left them
        shutil.copytree(tmp_path / "cache_ref" / stage, cache / stage)
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "elfs.train", *args, f"hydra.run.dir={tmp_path / 'killed'}", f"paths.cache_dir={cache}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list((cache / "dynamics").glob(".work-*/last.ckpt")):
        time.sleep(0.02)
    time.sleep(0.3)  # a few epochs into the 40-epoch dynamics stage
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list((cache / "dynamics").glob(".work-*/last.ckpt")), "the run never checkpointed the dynamics stage"
    complete = (
        [d for d in (cache / "dynamics").iterdir() if not d.name.startswith(".")]
        if (cache / "dynamics").exists()
        else []
    )
    assert complete == [], "the kill came too late: dynamics had already finished"

    again = tmp_path / "again"
    p = elfs_cli([*args, f"hydra.run.dir={again}", f"paths.cache_dir={cache}"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((again / "results.json").read_text())
    cached = {e["stage"]: e["cached"] for e in res["cache"]}
    assert cached["embed"] and cached["cluster"] and not cached["dynamics"]
    assert [e["resumed"] for e in res["cache"] if e["stage"] == "dynamics"] == [True]  # from its epoch checkpoint
    a, b = _coresets(ref), _coresets(again)
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not list((cache / "dynamics").glob(".tmp-*")) and not list((cache / "dynamics").glob(".work-*"))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["dataset=npz", "dataset.path=/nonexistent/data.npz"], "/nonexistent/data.npz"),
        (["dataset.name=imagenet22k"], "imagenet22k"),
        (["selection.method=magic"], "magic"),
        (["selection.budget=1.5"], "budget=1.5"),
        (["selection.beta=0.8", "selection.budget=0.5"], "beta=0.8"),
        (["backbone=dino_vits16"], "dino_vits16"),
    ],
)
def test_cli_bad_input_fails_fast_with_one_message(tmp_path, args, needle, elfs_cli):
    t0 = time.time()
    p = elfs_cli(
        [*args, "logger=none", f"hydra.run.dir={tmp_path / 'r'}", f"paths.cache_dir={tmp_path / 'c'}"],
        cwd=tmp_path,
        env_extra={"HF_HUB_OFFLINE": "1"},
    )
    assert p.returncode == 2, (p.stdout[-2000:], p.stderr[-2000:])
    err = p.stderr.strip().splitlines()
    assert err[-1].startswith("elfs: error:") and needle in err[-1]
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "r").exists()  # nothing computed or half-written
    assert time.time() - t0 < 120
