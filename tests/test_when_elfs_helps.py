"""The diagnostic "when does ELFS help?": labels of a controlled accuracy (ground truth with a growing part replaced
by the clustering's labels), its plan, and its whole sweep as typed at debug=smoke size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elfs.method.mixed_labels import aligned_to_classes, mixed_labels
from elfs.tables.aggregate import crossing

BIN = Path(sys.executable).parent


def test_clusters_are_renamed_as_their_matched_classes():
    truth = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    pred = np.array([5, 5, 7, 7, 7, 9, 9, 9])  # 5 -> 0, 7 -> 1, 9 -> 2 by the best one-to-one matching
    assert aligned_to_classes(pred, truth).tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    extra = np.array([1, 1, 1, 2, 2, 2, 3, 4])  # more clusters than classes: 4 has no match, goes to its majority
    assert aligned_to_classes(extra, truth).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]


def test_mixed_labels_have_the_accuracy_asked_for():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, 1000)
    pred = np.where(rng.random(1000) < 0.6, truth, rng.integers(0, 5, 1000))  # ~68 % right after alignment
    base = float(np.mean(aligned_to_classes(pred, truth) == truth))
    for keep in (0.0, 0.25, 0.5, 1.0):
        values, acc = mixed_labels(pred, truth, keep, seed=3)
        assert acc == pytest.approx(float(np.mean(values == truth)))
        assert acc == pytest.approx(keep + (1 - keep) * base, abs=0.03)  # the kept part is right, the rest as before
    assert mixed_labels(pred, truth, 1.0, seed=3)[1] == 1.0
    assert mixed_labels(pred, truth, 0.0, seed=3)[1] == pytest.approx(base)


def test_the_crossing_is_interpolated_where_the_difference_turns_positive():
    assert crossing([(50.0, -4.0), (70.0, -1.0), (90.0, 3.0)]) == pytest.approx(75.0)
    assert crossing([(50.0, -4.0), (90.0, -1.0)]) is None


def _elfs(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ELFS_")}
    clean.update(WANDB_MODE="disabled", OMP_NUM_THREADS="1", **env)
    return subprocess.run([str(BIN / "elfs"), *args], cwd=cwd, env=clean, capture_output=True, text=True, timeout=900)


def test_the_diagnostic_plans_both_regimes_and_five_accuracies(tmp_path):
    p = _elfs(["-m", "experiment=when_elfs_helps", "plan=true"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "plan: 10 jobs" in p.stdout, p.stdout[-2000:]
    assert "+regime=cnn" in p.stdout and "+regime=mlp" in p.stdout and "selection.mixed_replaced=0.75" in p.stdout


@pytest.mark.slow
def test_the_diagnostic_sweep_as_typed_writes_its_curve(tmp_path):
    """`elfs -m experiment=when_elfs_helps` at debug=smoke size (two of its five accuracies, for CI's time)."""
    p = _elfs(["-m", "experiment=when_elfs_helps", "selection.mixed_replaced=0.0,1.0", "logger=none"], tmp_path,
              ELFS_SMOKE="1")  # fmt: skip
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    (md,) = tmp_path.glob("outputs/multiruns/*/*/when_elfs_helps.md")
    assert (md.parent / "when_elfs_helps.png").is_file()
    text = md.read_text()
    assert text.startswith("DIAGNOSTIC (reads ground truth)") and "| mlp |" in text and "| small_cnn |" in text
    rows = [line for line in text.splitlines() if line.startswith("| mlp") or line.startswith("| small_cnn")]
    assert len(rows) == 4
    accs = {(r.split("|")[1].strip(), r.split("|")[3].strip()): float(r.split("|")[4]) for r in rows}
    assert accs[("mlp", "0.0")] == 100.0 and accs[("small_cnn", "0.0")] == 100.0
    assert accs[("mlp", "1.0")] < 100.0
    (res,) = [json.loads(f.read_text()) for f in md.parent.glob("0_*/results.json")]
    arm = res["results"][0]["methods"]["diagnostic_double_end"]
    assert arm["uses_ground_truth"] is True and arm["labels"] == "mixed"
    assert res["clustering"]["mixed_labels"] == {"replaced": 0.0, "accuracy": 1.0}
