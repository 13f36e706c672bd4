"""What W&B shows of a sweep, read back from the offline run files record by record with wandb's own schema
(tests/wandb_records.py): one summary key per budget in percent, as the tables print it; the beta search's and
every evaluation's curves, one panel per budget and arm with its own x axis, also when a rerun finds every stage in
the cache; the sweep's summary table as a wandb.Table in a run of job_type `summary`; and the README's command that
syncs an offline sweep, run against the real `wandb sync` (dry run)."""

from __future__ import annotations

import csv
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from wandb_records import curve, read_run

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "+experiment=digits_quick", "debug=smoke", "selection.budget=[0.3,0.5]", "evaluate.steps=6"]


def _run_file(folder: Path) -> Path:
    (run_file,) = (folder / "wandb").glob("offline-run-*/run-*.wandb")
    return run_file


def _sweep_once(work: Path, elfs_cli) -> Path:
    before = set(work.glob("outputs/multiruns/*/*"))
    p = elfs_cli(SWEEP, cwd=work, env_extra={"WANDB_MODE": "offline", "WANDB_DIR": str(work / "wandb_default")})
    assert p.returncode == 0, p.stderr[-3000:]
    (sweep,) = set(work.glob("outputs/multiruns/*/*")) - before
    return sweep


def _job_view(job: Path) -> tuple[dict, dict]:
    """(results.json, what W&B shows of the job's run) of one job folder."""
    return json.loads((job / "results.json").read_text()), read_run(_run_file(job))


def _curves(run: dict, results: dict) -> dict[str, list[tuple[float, float]]]:
    """Every panel the job's results call for, with its points: the beta search per budget, each arm's evaluation
    (training loss and test accuracy) per budget; each panel's x axis is its own metric."""
    out = {}
    for row in results["results"]:
        b = f"{row['budget']:g}"
        if row.get("beta_curve"):
            assert run["metrics"][f"beta_search/{b}/val_acc"] == f"beta_search/{b}/beta"
            out[f"beta_search/{b}/val_acc"] = curve(run, f"beta_search/{b}/val_acc", f"beta_search/{b}/beta")
        for arm in row["methods"]:
            panel = f"evaluate/{b}/{arm}"
            for name in ("train_loss", "test_acc"):
                assert run["metrics"][f"{panel}/{name}"] == f"{panel}/step"
                out[f"{panel}/{name}"] = curve(run, f"{panel}/{name}", f"{panel}/step")
    return out


@pytest.mark.slow
def test_what_wandb_shows_of_a_sweep_and_of_its_cached_rerun(tmp_path, elfs_cli):
    pytest.importorskip("wandb")
    work = tmp_path / "empty"
    work.mkdir()
    first = _sweep_once(work, elfs_cli)
    (job,) = [d for d in first.iterdir() if d.is_dir() and d.name[0].isdigit()]
    results, run = _job_view(job)
    assert run["run"].job_type == "train" and run["run"].display_name == job.name

    # one summary key per budget, in percent as the tables print it (the job's own arm); beta as the tables show it
    s = run["summary"]
    arm = results["selection"]["arm"]
    assert [r["budget"] for r in results["results"]] == [0.3, 0.5]
    for row in results["results"]:
        b = f"{row['budget']:g}"
        assert s[f"acc/{b}"] == pytest.approx(100 * row["methods"][arm]["acc_mean"])
        assert s[f"beta/{b}"] == row["beta"]
        for other, m in row["methods"].items():
            assert s[f"acc/{other}/{b}"] == pytest.approx(100 * m["acc_mean"])
    assert s["acc"] == s["acc/0.3"] and s["beta"] == s["beta/0.3"]

    # curves: the beta search's validation accuracy by beta, and each evaluation's loss and test accuracy by step
    curves = _curves(run, results)
    assert len(curves) == 2 + 2 * 2 * len(results["results"][0]["methods"])
    for row in results["results"]:
        b = f"{row['budget']:g}"
        search = curves[f"beta_search/{b}/val_acc"]
        bc = row["beta_curve"]
        assert search == [
            (pytest.approx(x), pytest.approx(100 * y)) for x, y in zip(bc["betas"], bc["val_acc"], strict=True)
        ]
        for a, m in row["methods"].items():
            test = curves[f"evaluate/{b}/{a}/test_acc"]
            assert [x for x, _ in test] == list(range(1, 7))  # debug=smoke tests every step; 6 steps here
            assert test[-1][1] == pytest.approx(100 * m["acc_mean"])  # the last test is the final model's
            loss = curves[f"evaluate/{b}/{a}/train_loss"]
            assert loss and loss[-1][0] == 6 and all(v > 0 for _, v in loss)

    # the sweep's summary: one more run of the group, job_type summary, the summary table as a wandb.Table
    summary = read_run(_run_file(first))
    assert summary["run"].job_type == "summary" and summary["run"].run_group == run["run"].run_group
    (row,) = [r for r in summary["history"] if "summary_table" in r]
    table_meta = row["summary_table"]
    rows = list(csv.DictReader((first / "summary.csv").read_text().splitlines()))
    assert table_meta["_type"] == "table-file" and table_meta["nrows"] == len(rows)
    (table_file,) = (_run_file(first).parent / "files").glob(f"{table_meta['path']}")
    table = json.loads(table_file.read_text())
    assert table["columns"] == list(rows[0])
    acc = table["columns"].index("acc_mean")
    assert [r[acc] for r in table["data"]] == [pytest.approx(100 * float(r["acc_mean"])) for r in rows]

    # the same sweep again: every stage from the cache, and W&B still shows every curve, from the cache entries
    second = _sweep_once(work, elfs_cli)
    (job2,) = [d for d in second.iterdir() if d.is_dir() and d.name[0].isdigit()]
    results2, run2 = _job_view(job2)
    events = results2["cache"]
    assert events and all(e["cached"] for e in events), [e for e in events if not e["cached"]]
    assert _curves(run2, results2) == curves
    assert not (work / "wandb_default").exists()  # W&B wrote into the run folders only

    # the README's one command that syncs an offline sweep, against the real wandb CLI (a dry run: no network)
    readme = (ROOT / "README.md").read_text()
    (command,) = re.findall(r"`(wandb sync [^`]+)`", readme)
    words = shlex.split(command)
    runs = sorted(str(p.parent) for p in first.glob("**/offline-run-*/run-*.wandb"))
    assert len(runs) == 2  # the job's run and the summary's
    shell = command.replace("<sweep>", shlex.quote(str(first)))
    wandb_bin = Path(sys.executable).with_name("wandb")
    p = subprocess.run(
        ["bash", "-c", f"PATH={shlex.quote(str(wandb_bin.parent))}:$PATH {shell} --dry-run"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(tmp_path), "WANDB_MODE": "offline", "PATH": "/usr/bin:/bin"},
    )
    assert p.returncode == 0 and words[:2] == ["wandb", "sync"], p.stdout + p.stderr
    for r in runs:
        assert Path(r).name in p.stdout + p.stderr, p.stdout + p.stderr
