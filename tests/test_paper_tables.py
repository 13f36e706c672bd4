"""The paper-table path: every comparison row is a `selection=` option, the experiment files declare their sweeps,
the sweep summary keys rows by every arm-defining setting (shared evaluations counted once), and W&B gets sortable
summary metrics with no stage hyperparameter at the top of the run config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from wandb_records import records as _wandb_records

from elfs.config import to_typed
from elfs.errors import ConfigError
from elfs.run import run
from elfs.tables.aggregate import aggregate, collect, format_latex, summarise

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
QUICK = ["+experiment=digits_quick", "logger=none"]
PAPER_TABLES = ["paper_cifar10", "paper_cifar100", "paper_beta_ablation", "paper_encoder_ablation",
                "paper_temi_vs_kmeans"]  # fmt: skip


# ------------------------------------------------------------------------------------------- experiment files


@pytest.mark.parametrize("exp", PAPER_TABLES)
def test_every_paper_table_declares_its_sweep(exp, tmp_path):
    """Each table is one command: its experiment file composes and carries hydra.sweeper.params whose every value
    composes and validates as a job override."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        paths = [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}"]
        cfg = compose("config", overrides=[f"experiment={exp}", *paths], return_hydra_config=True)
        params = OmegaConf.to_container(cfg.hydra.sweeper.params)
        assert params, f"{exp} declares no sweep"
        assert cfg.selection.score == "aum_prob_sum" and cfg.evaluate.test_every > 0  # the paper's score and metric
        parser = OverridesParser.create()
        for key, values in params.items():
            for value in parser.parse_override(f"{key}={values}").sweep_string_iterator():
                job = compose("config", overrides=[f"experiment={exp}", f"{key}={value}", *paths])
                conf = to_typed(job)
                conf.validate()
    GlobalHydra.instance().clear()
    if exp in ("paper_cifar10", "paper_cifar100"):
        methods = set(params["selection"].split(","))
        assert methods == {"elfs", "zcore", "ccs", "random", "prototypicality", "d2", "supervised_ccs"}
        assert set(str(params["selection.budget"]).split(",")) == {"0.7", "0.5", "0.3", "0.2", "0.1"}


def test_paper_experiments_share_one_beta_grid_reaching_one_minus_budget(compose_cfg):
    grids = set()
    for i, exp in enumerate(["cifar10_dino", "cifar100_dino", "cifar10_swav", "stl10_dino", "imagenet_dino"]):
        conf = to_typed(compose_cfg([f"+experiment={exp}"], sub=str(i)))
        grids.add(tuple(conf.selection.beta_grid))
        assert max(conf.selection.beta_grid) >= 1 - min(conf.selection.budgets) - 1e-9
    assert len(grids) == 1


def test_ground_truth_needs_the_explicit_opt_in(compose_cfg):
    """No default selection reads labels; only selection=supervised_ccs (labels=ground_truth) does."""
    for i, option in enumerate(p.stem for p in (CONF / "selection").glob("*.yaml")):
        conf = to_typed(compose_cfg([f"selection={option}"], sub=str(i)))
        assert conf.selection.uses_ground_truth == (option == "supervised_ccs"), option


def test_fixed_beta_skips_only_the_budgets_it_leaves_no_room_for(compose_cfg):
    conf = to_typed(compose_cfg(["selection.beta=0.6", "selection.budget=[0.1,0.3,0.5]"]))
    conf.validate()
    assert conf.selection.feasible_budgets() == [0.1, 0.3]


def test_supervised_reference_on_unlabelled_data_is_refused(tmp_path, compose_cfg):
    from elfs.pipeline import prepare_data

    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    for i in range(24):  # at least elfs-select's minimum (20), so the label check is the one that speaks
        Image.fromarray(np.full((8, 8, 3), i * 10, np.uint8)).save(folder / f"{i}.png")
    conf = to_typed(
        compose_cfg(
            ["dataset=folder", f"dataset.path={folder}", "selection=supervised_ccs", "cluster.num_clusters=2"],
            sub="c",
        )
    )
    with pytest.raises(ConfigError, match="selection.labels=ground_truth"):
        prepare_data(conf)


# ---------------------------------------------------------------------------------------------- aggregation


def _result(dataset="cifar10", arms=None, full=None, seeds=(0,)):
    """A minimal results.json as the pipeline writes it."""
    return {
        "dataset": dataset,
        "labelled": True,
        "evaluate": {"model": "resnet18_cifar", "steps": 100, "seeds": list(seeds), "test_every": 10},
        "results": [{"budget": 0.1, "pruning_rate": 0.9, "methods": arms or {}}],
        "full_data": full,
    }


def _arm(arm, key, acc, *, backbone="dino_vitb16", score="aum", labels="pseudo", beta=None, settings=None, best=None):
    return {
        "arm": arm,
        "method": arm.replace("supervised_", ""),
        "score": score,
        "labels": labels,
        "uses_ground_truth": labels == "ground_truth",
        "cluster": "temi" if labels == "pseudo" and score else None,
        "backbone": backbone,
        "beta": beta,
        "settings": settings or {},
        "final_acc": [acc],
        "best_acc": [best],
        "seeds": [0],
        "eval_keys": [key],
    }


def test_aggregation_counts_a_shared_evaluation_once_and_never_merges_arms(tmp_path):
    random_ = _arm("random", "r0", 0.79, backbone=None, score=None, labels=None)
    jobs = {
        "a": _result(arms={"double_end": _arm("double_end", "e1", 0.86, best=0.87), "random": random_}),
        "b": _result(arms={"double_end": _arm("double_end", "e2", 0.84, backbone="swav_resnet50"), "random": random_}),
        "c": _result(arms={"supervised_ccs": _arm("supervised_ccs", "s1", 0.88, labels="ground_truth")}),
        "d": _result(arms={"ccs": _arm("ccs", "c1", 0.80, score="forgetting")}, full=_arm("full", "f", 0.95)),
        "e": _result(arms={"ccs": _arm("ccs", "c2", 0.81, score="aum")}, full=_arm("full", "f", 0.95)),
    }
    for job, res in jobs.items():
        (tmp_path / job).mkdir()
        (tmp_path / job / "results.json").write_text(json.dumps(res))
    rows, dropped = collect(tmp_path)
    assert dropped == 2  # random in job b, full in job e: the same trainings as in jobs a and d
    summary = {(s["arm"], s["backbone"], s["score"]): s for s in summarise(rows)}
    assert set(summary) == {
        ("double_end", "dino_vitb16", "aum"),
        ("double_end", "swav_resnet50", "aum"),
        ("random", None, None),
        ("supervised_ccs", "dino_vitb16", "aum"),
        ("ccs", "dino_vitb16", "forgetting"),
        ("ccs", "dino_vitb16", "aum"),
        ("full", "dino_vitb16", "aum"),
    }
    assert all(s["n"] == 1 for s in summary.values())
    sup = summary[("supervised_ccs", "dino_vitb16", "aum")]
    assert sup["uses_ground_truth"] and sup["labels"] == "ground_truth"
    # the paper's figure values, on the best-of-run metric, beside ours (method.md §9.2: CIFAR-10 at 90 %)
    elfs = summary[("double_end", "dino_vitb16", "aum")]
    assert elfs["paper"] == 86.9 and elfs["delta_vs_paper"] == pytest.approx(87 - 86.9)
    assert summary[("random", None, None)]["paper"] == 79.2 and summary[("full", "dino_vitb16", "aum")]["paper"] == 95.5
    assert summary[("ccs", "dino_vitb16", "aum")]["paper"] is None  # the paper has no CCS-on-pseudo-labels row

    out = aggregate(tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert len(out) == 7 and "supervised_ccs (uses labels)" in md and "2 shared evaluation(s) counted once" in md
    tex = (tmp_path / "summary.tex").read_text()
    assert tex.startswith("\\begin{tabular}") and "supervised\\_ccs" in tex and "\\pm" in tex
    assert (tmp_path / "summary.png").stat().st_size > 5000
    assert len((tmp_path / "summary.csv").read_text().splitlines()) == 1 + 7


def test_aggregation_keeps_a_swept_upstream_setting_apart_and_names_it(tmp_path):
    for i, heads in enumerate((10, 50)):
        arm = _arm("double_end", f"k{i}", 0.8 + i / 100, settings={"cluster.num_heads": heads, "seed": 0})
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps(_result(arms={"double_end": arm})))
    summary = summarise(collect(tmp_path)[0])
    assert sorted(s["varied"] for s in summary) == ["cluster.num_heads=10", "cluster.num_heads=50"]
    assert "varied" in format_latex(summary)


def test_aggregate_cli_rebuilds_from_any_set_of_folders(tmp_path):
    for job, key in (("x", "1"), ("y", "2")):
        (tmp_path / job).mkdir()
        res = _result(arms={"random": _arm("random", key, 0.5, backbone=None, score=None, labels=None)})
        (tmp_path / job / "results.json").write_text(json.dumps(res))
    out = tmp_path / "out"
    p = subprocess.run(
        [sys.executable, "-m", "elfs.tables.aggregate", str(tmp_path / "x"), str(tmp_path / "y"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert "50.00 ± 0.00" in p.stdout and (out / "summary.md").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "elfs.tables.aggregate", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "not a folder" in bad.stderr


# ------------------------------------------------------------------------------------ end to end, on digits


@pytest.mark.slow
def test_baselines_and_references_run_and_are_marked(compose_cfg, tmp_path):
    """Prototypicality, D2 and full data beside D2, and the supervised reference on its own: every arm lands in the
    table with its label use marked, and each run computes only the stages its methods need. (That labels change
    no label-free coreset, D2 and prototypicality included, is tests/test_pipeline.py's firewall test.)"""
    base = [*QUICK, "selection.budget=0.3"]
    free = compose_cfg([*base, "selection=d2", "selection.baselines=[prototypicality,random,full]"], sub="real")
    res = run(free)
    assert set(res["artifacts"]) == {"embed", "prototypes"}  # no kNN (D2 builds its own graphs), TEMI or proxy
    sup = run(compose_cfg([*base, "selection=supervised_ccs", "selection.beta_grid=[0.0,0.2]"], sub="sup"))
    assert sup["selection"]["uses_ground_truth"] and set(sup["artifacts"]) == {"dynamics_gt"}  # no clustering

    summary = aggregate([tmp_path / "real", tmp_path / "sup"], tmp_path / "table")
    arms = {s["arm"]: s for s in summary}
    assert set(arms) == {"d2", "prototypicality", "random", "full", "supervised_ccs"}
    assert arms["supervised_ccs"]["uses_ground_truth"] and arms["supervised_ccs"]["labels"] == "ground_truth"
    assert not any(arms[a]["uses_ground_truth"] for a in ("d2", "prototypicality", "random"))
    assert arms["d2"]["backbone"] == "efficientnet_lite0" and arms["random"]["backbone"] is None
    for a in arms.values():
        assert 0.1 < a["acc_mean"] <= 1.0  # better than chance on 10 digit classes
    assert "supervised_ccs (uses labels)" in (tmp_path / "table" / "summary.md").read_text()


@pytest.mark.slow
def test_tiny_sweep_over_two_methods_and_two_scores(tmp_path, elfs_cli):
    """The issue's check: one summary row per (method, score, budget), random and full data counted once; job
    folders and W&B runs named by their overrides, one W&B group, accuracies in the run summary, no stage
    hyperparameter at the top of the run config, one coreset artifact per (dataset, encoder, arm)."""
    sweep = tmp_path / "sweep"
    p = elfs_cli(
        [
            "-m",
            "+experiment=digits_quick",
            "selection=elfs,ccs",
            "selection.score=aum,forgetting",
            "selection.budget=0.3",
            "selection.baselines=[random,full]",
            "cluster.epochs=5",
            "dynamics.epochs=2",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env_extra={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb_default")},
        timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    jobs = sorted(d.name for d in sweep.iterdir() if d.is_dir() and d.name[0].isdigit())  # wandb/: the summary run
    assert jobs[0] == "0_selection.score=aum,selection=elfs"  # the swept values (every override: .hydra/)
    assert len(jobs) == 4
    summary = list(
        __import__("csv").DictReader((sweep / "summary.csv").read_text().splitlines())
    )  # written by the sweep's own callback
    keys = sorted((r["arm"], r["score"], r["budget"]) for r in summary)
    assert keys == sorted(
        [(m, s, "0.3") for m in ("double_end", "ccs") for s in ("aum", "forgetting")]
        + [("random", "", "0.3"), ("full", "", "1.0")]
    )
    assert all(r["n"] == "1" for r in summary)  # random and full: 4 jobs, one training each, counted once
    for f in ("summary.md", "summary.tex", "summary.png"):
        assert (sweep / f).is_file()

    # the jobs share the label-free stages through the cache: computed once, by the first job
    cache = tmp_path / "cache"
    for stage in ("embed", "knn", "cluster", "dynamics"):  # aum and forgetting come from the same proxy run
        assert len([d for d in (cache / stage).iterdir() if not d.name.startswith(".")]) == 1, stage
    for job in jobs[1:]:
        res = json.loads((sweep / job / "results.json").read_text())
        hits = {e["stage"]: e["cached"] for e in res["cache"] if e["stage"] in ("embed", "knn", "cluster", "dynamics")}
        assert hits == {"embed": True, "knn": True, "cluster": True, "dynamics": True}, job
    assert not (tmp_path / "wandb_default").exists()  # W&B writes into each job's folder, nowhere else

    groups, names, ids = set(), set(), set()
    for job in jobs:
        (run_file,) = (sweep / job / "wandb").glob("offline-run-*/run-*.wandb")  # one run per job: finish() works
        ids.add(run_file.parent.name.split("-")[-1])
        config, summary_keys, artifacts = set(), {}, {}
        for r in _wandb_records(run_file):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                groups.add(r.run.run_group)
                names.add(r.run.display_name)
                config |= {u.key for u in r.run.config.update}
            elif kind == "config":
                config |= {u.key for u in r.config.update}
            elif kind == "summary":
                summary_keys.update({u.key: u.value_json for u in r.summary.update})
            elif kind == "artifact" and r.artifact.type == "coreset":
                artifacts[r.artifact.name] = json.loads(r.artifact.metadata)
        top = config - {"_wandb"}
        assert top == {
            "dataset",
            "backbone",
            "knn",
            "cluster",
            "dynamics",
            "selection",
            "evaluate",
            "trainer",
            "logger",
            "paths",
            "seed",
            "name",
            "progress",
            "progress_every_s",
            "debug",
            "plan",
            "plan_rates",
            "optimized_metric",
            "recompute",
            "method",
            "score",
            "budget",
            "encoder",
            "code_version",
            "git_commit",
        }  # fmt: skip  (TEMI's beta / lr, the proxy's lr: none of them up here)
        arm = "double_end" if job.endswith("selection=elfs") else "ccs"
        assert 10.0 <= float(summary_keys[f"acc/{arm}/0.3"]) <= 100.0  # percent, as the tables; above chance
        assert float(summary_keys["acc/0.3"]) == float(summary_keys[f"acc/{arm}/0.3"])  # the job's own arm
        assert "acc/random/0.3" in summary_keys and "acc/full/1" in summary_keys
        meta = artifacts[f"coreset-digits-efficientnet_lite0-{arm}"]
        assert meta["budgets"] == [0.3] and meta["n"] == 1438 and meta["score_hard_end"] in ("low", "high")
        assert artifacts["coreset-digits-any-encoder-random"]["encoder"] is None
    assert len(groups) == 1 and len(names) == 4 and len(ids) == 4
    assert "0_selection.score=aum,selection=elfs" in names  # named as the job's folder
