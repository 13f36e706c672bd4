"""The W&B dashboard of a sweep sorts without per-arm columns: every job logs the same headline keys and config
columns, its results.json and scores.npz travel in its artifacts, the sweep's summary is one more W&B run of the
group, and failed jobs are listed in the summary files. Real offline W&B, hand-made results (seconds)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from wandb_records import records as _wandb_records

from elfs.config import LoggerConfig
from elfs.tables.aggregate import AggregateOnMultirunEnd, aggregate, failed_jobs
from elfs.tracking import RunLoggers, coreset_artifacts, headline_metrics, result_columns, sweep_group


def _arm(arm: str, acc: float, *, beta=None, best=None, score=None, backbone=None) -> dict:
    return {
        "arm": arm,
        "method": arm,
        "score": score,
        "backbone": backbone,
        "beta": beta,
        "final_acc": [acc],
        "acc_mean": acc,
        "acc_std": 0.0,
        "best_acc": [best],
        "best_mean": best,
        "seeds": [0],
        "eval_keys": [f"{arm}-{acc}"],
    }


def _results(arm: str = "double_end") -> dict:
    """Two budgets; the job's own arm beside random, as the pipeline writes results.json."""
    rows = []
    for budget, beta, acc in ((0.3, 0.2, 0.8), (0.5, 0.1, 0.9)):
        own = _arm(arm, acc, beta=beta, best=acc + 0.01, score="aum", backbone="efficientnet_lite0")
        rows.append(
            {
                "budget": budget,
                "pruning_rate": round(1 - budget, 6),
                "beta": beta,
                "methods": {arm: own, "random": _arm("random", acc - 0.1)},
            }
        )
    return {
        "dataset": "toy",
        "labelled": True,
        "n_train": 10,
        "backbone": "efficientnet_lite0",
        "selection": {"method": arm, "arm": arm, "score": "aum"},
        "evaluate": {"model": "small_cnn", "steps": 10, "seeds": [0], "test_every": 0},
        "results": rows,
        "full_data": None,
    }


def _write_job(job: Path, results: dict) -> None:
    job.mkdir(parents=True)
    (job / "results.json").write_text(json.dumps(results))
    np.savez(job / "scores.npz", aum=np.arange(10.0))
    arms = [f"{a}_budget{b:g}_seed0" for a in ("double_end", "random") for b in (0.3, 0.5)]
    np.savez(job / "coresets.npz", **{a: np.arange(3) for a in arms})


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B offline with every folder it may write (dir, staging, cache, settings) inside tmp_path."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var, sub in (("WANDB_DIR", "wandb_dir"), ("WANDB_DATA_DIR", "wandb_data"), ("WANDB_CACHE_DIR", "wandb_cache"),
                     ("WANDB_CONFIG_DIR", "wandb_config")):  # fmt: skip
        monkeypatch.setenv(var, str(tmp_path / sub))
    return LoggerConfig(mode="offline")


def _read(run_file: Path) -> dict:
    """The run record, config keys and values, summary, history keys and artifacts of one offline .wandb file."""
    out = {"config": {}, "summary": {}, "history": {}, "artifacts": {}, "run": None}
    for r in _wandb_records(run_file):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
            out["config"] |= {u.key: json.loads(u.value_json) for u in r.run.config.update}
        elif kind == "config":
            out["config"] |= {u.key: json.loads(u.value_json) for u in r.config.update}
        elif kind == "summary":
            out["summary"] |= {u.key: json.loads(u.value_json) for u in r.summary.update}
        elif kind == "history":
            for u in r.history.item:  # a media value is logged as nested keys: (name, field) -> value
                name = u.key or u.nested_key[0]
                out["history"].setdefault(name, {}).update({"/".join(u.nested_key[1:]): json.loads(u.value_json)})
        elif kind == "artifact" and r.artifact.type == "coreset":  # not the run's table artifacts
            out["artifacts"][r.artifact.name] = {e.path for e in r.artifact.manifest.contents}
    return out


def _run_file(folder: Path) -> Path:
    """The one offline run file below ``folder``, complete: W&B's service (a separate process that outlives
    finish()) is shut down first, so that it has flushed the file."""
    import wandb

    wandb.teardown()
    (run_file,) = (folder / "wandb").glob("offline-run-*/run-*.wandb")
    return run_file


def test_headline_keys_and_columns_are_the_jobs_own_arm_at_its_first_budget():
    res = _results("supervised_ccs")
    assert headline_metrics(res) == {
        "acc": 80.0,  # percent, as every table prints it
        "best_acc": pytest.approx(81.0),
        "beta": 0.2,
        "acc/0.3": 80.0,
        "best_acc/0.3": pytest.approx(81.0),
        "beta/0.3": 0.2,
        "acc/0.5": 90.0,
        "best_acc/0.5": pytest.approx(91.0),
        "beta/0.5": 0.1,
    }
    cols = result_columns(res)
    assert cols == {"method": "supervised_ccs", "score": "aum", "budget": 0.3, "encoder": "efficientnet_lite0"}
    unlabelled = {**res, "labelled": False, "results": [{"budget": 0.5, "beta": 0.1, "methods": {}}]}
    assert headline_metrics(unlabelled) == {"beta": 0.1, "beta/0.5": 0.1}
    assert result_columns(unlabelled)["budget"] == 0.5
    assert headline_metrics({**res, "results": []}) == {}


def test_a_job_logs_headline_keys_config_columns_and_its_files(tmp_path, offline_wandb):
    job = tmp_path / "job"
    _write_job(job, _results())
    config = {
        "dataset": {"name": "toy", "max_train": None},
        "selection": {"method": "double_end", "score": "aum", "budget": [0.3, 0.5]},
        "backbone": {"name": "efficientnet_lite0"},
        "seed": 0,
    }
    cfg = LoggerConfig(mode="offline", job_type="train", project="dash")
    loggers = RunLoggers(cfg, job, config=config, run_name="job0", group="elfs/sweep/1")
    loggers.log_results(_results(), [])
    loggers.finish()
    rec = _read(_run_file(job))
    assert rec["run"].job_type == "train" and rec["run"].run_group == "elfs/sweep/1" and rec["run"].project == "dash"
    c = rec["config"]
    assert (c["method"], c["score"], c["budget"], c["encoder"]) == ("double_end", "aum", 0.3, "efficientnet_lite0")
    assert c["dataset"] == {"name": "toy", "max_train": None} and c["seed"] == 0
    s = rec["summary"]
    assert s["acc"] == 80.0 and s["best_acc"] == pytest.approx(81.0) and s["beta"] == 0.2
    assert s["acc/0.5"] == 90.0 and s["beta/0.5"] == 0.1
    assert s["acc/double_end/0.3"] == 80.0 and s["acc/random/0.5"] == pytest.approx(80.0)
    arts = rec["artifacts"]
    assert set(arts) == {"coreset-toy-efficientnet_lite0-double_end", "coreset-toy-any-encoder-random"}
    for files in arts.values():
        assert {"results.json", "scores.npz"} <= files and len(files) == 3
    assert not (tmp_path / "wandb_dir").exists()  # everything under the job's folder


def test_unlabelled_runs_still_ship_their_files(tmp_path):
    job = tmp_path / "job"
    res = {**_results(), "labelled": False, "results": [{"budget": 0.3, "beta": 0.2, "methods": {}}]}
    _write_job(job, res)
    np.savez(job / "coresets.npz", **{"double_end_budget0.3": np.arange(3)})
    ((name, meta, files),) = coreset_artifacts(res, job)
    assert name == "coreset-toy-efficientnet_lite0-double_end" and meta["beta"] == {"0.3": 0.2}
    assert [f.name for f in files][1:] == ["results.json", "scores.npz"]


def _sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "multiruns" / "2025-01-01" / "12-00-00"
    _write_job(sweep / "0_selection.budget=0.3", _results())
    failed = sweep / "1_knn.k=5000"
    failed.mkdir(parents=True)
    record = {"overrides": ["knn.k=5000"], "error": "knn.k=5000 exceeds N", "type": "ConfigError"}
    (failed / "failed.json").write_text(json.dumps(record))
    return sweep


def test_failed_jobs_get_a_final_section_and_the_others_are_aggregated(tmp_path):
    sweep = _sweep(tmp_path)
    summary = aggregate(sweep)
    assert {s["arm"] for s in summary} == {"double_end", "random"}
    (f,) = failed_jobs(sweep)
    assert Path(f["job"]).name == "1_knn.k=5000" and f["type"] == "ConfigError" and f["overrides"] == ["knn.k=5000"]
    md = (sweep / "summary.md").read_text()
    assert md.rstrip().endswith("- `1_knn.k=5000`: knn.k=5000 exceeds N (ConfigError)")
    assert "## Failed jobs (1)" in md
    txt = (sweep / "summary.txt").read_text()
    assert txt.rstrip().splitlines()[-2:] == ["Failed jobs (1):", "  1_knn.k=5000: knn.k=5000 exceeds N (ConfigError)"]

    (sweep / "0_selection.budget=0.3" / "results.json").unlink()  # every job failed: the list, no table
    for f in sweep.glob("summary.*"):
        f.unlink()
    assert aggregate(sweep) == [] and "1_knn.k=5000" in (sweep / "summary.md").read_text()


def _hydra_config(sweep: Path, **logger) -> OmegaConf:
    return OmegaConf.create({"name": "elfs", "hydra": {"sweep": {"dir": str(sweep)}}, "logger": logger})


def test_the_sweep_summary_is_one_wandb_run_of_the_group(tmp_path, offline_wandb, capsys):
    sweep = _sweep(tmp_path)
    AggregateOnMultirunEnd().on_multirun_end(_hydra_config(sweep, name="wandb", project="dash", entity=None))
    assert "sweep summary" in capsys.readouterr().out
    rec = _read(_run_file(sweep))
    assert rec["run"].job_type == "summary" and rec["run"].display_name == "summary"
    assert rec["run"].run_group == sweep_group("elfs", sweep) == "elfs/2025-01-01/12-00-00"
    history = rec["history"]
    rows = list(csv.reader((sweep / "summary.csv").read_text().splitlines()))
    assert history["summary_table"]["_type"] == "table-file" and history["summary_table"]["nrows"] == len(rows) - 1
    assert history["summary_table"]["ncols"] == len(rows[0])
    assert history["summary_plot"]["_type"] == "image-file" and history["failed_jobs"]["nrows"] == 1
    assert rec["summary"]["jobs_failed"] == 1 and rec["summary"]["summary_rows"] == 4
    assert not (tmp_path / "wandb_dir").exists()


@pytest.mark.parametrize("logger", [{"name": "wandb", "mode": "disabled"}, {"name": "csv"}])
def test_no_summary_run_without_wandb(tmp_path, offline_wandb, logger):
    sweep = _sweep(tmp_path)
    AggregateOnMultirunEnd().on_multirun_end(_hydra_config(sweep, **logger))
    assert (sweep / "summary.md").is_file() and not (sweep / "wandb").exists()
