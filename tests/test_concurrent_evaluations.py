"""evaluate.concurrent: several evaluation trainings (or beta-search candidates) at once, each in its own worker
process on the same device, give exactly the results of training them one by one (and the same cache entries)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from elfs.cache import Artifact, ArtifactCache
from elfs.config import to_typed
from elfs.pipeline import Context, load_data
from elfs.select.beta_search import beta_grid_for
from elfs.stages.beta_search import stage_beta_search
from elfs.stages.evaluate import prefetch_evaluations, stage_evaluate
from elfs.stages.inputs import Labels
from elfs.tracking import RunLoggers


def test_concurrent_evaluations_equal_one_by_one(compose_cfg, tmp_path):
    conf = to_typed(
        compose_cfg(["dataset=digits", "logger=none", "evaluate.width=8", "evaluate.steps=15", "evaluate.concurrent=2"])
    )
    ds = load_data(conf.dataset)
    rng = np.random.default_rng(0)
    jobs = [
        (np.sort(rng.choice(len(ds.train), 300, replace=False)), seed, f"job{i}") for i, seed in enumerate([0, 1, 0])
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same thread count as each of the 2 workers: float sums then match bit for bit
    try:

        def context(name: str) -> Context:
            cache = ArtifactCache(tmp_path / name)
            return Context(cfg=conf, cache=cache, run_dir=tmp_path, loggers=RunLoggers(conf.logger, tmp_path))

        alone = context("one_by_one")
        ref = [stage_evaluate(alone, conf.evaluate, ds, None, kept, seed, label) for kept, seed, label in jobs]
        together = context("concurrent")
        prefetch_evaluations(together, conf.evaluate, ds, None, jobs)
        trained = [e for e in together.cache.events if not e["cached"]]
        assert len(trained) == 3 and all(together.cache.entry("evaluate", e["key"]).exists() for e in trained)
        got = [stage_evaluate(together, conf.evaluate, ds, None, kept, seed, label) for kept, seed, label in jobs]
    finally:
        torch.set_num_threads(threads)
    assert all(g.cached for g in got)  # every one came from the workers
    assert [g.meta["concurrent"] for g in got] == [2, 2, 2]
    for g, r in zip(got, ref, strict=True):
        assert g.key == r.key  # the same cache entry as one by one
        assert float(g["final_acc"]) == float(r["final_acc"])
    assert len({float(r["final_acc"]) for r in ref}) > 1  # the jobs really differ (seed, coreset)


def test_concurrent_beta_search_candidates_equal_one_by_one(compose_cfg, tmp_path):
    conf = to_typed(
        compose_cfg(["+experiment=digits_quick", "logger=none", "evaluate.width=8", "selection.search_steps=10"])
    )
    ds = load_data(conf.dataset)
    free = ds.unlabelled()
    rng = np.random.default_rng(1)
    dyn = Artifact("dynamics", "d" * 16, tmp_path, {"aum": rng.normal(size=len(ds.train))}, {})
    labels = Labels(ds.truth.train, ds.num_classes, "pseudo", {"cluster": "c" * 16})  # any labels will do here
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for k in (1, 2):
            e = dataclasses.replace(conf.evaluate, concurrent=k)
            cache = ArtifactCache(tmp_path / f"k{k}")
            ctx = Context(cfg=conf, cache=cache, run_dir=tmp_path, loggers=RunLoggers(conf.logger, tmp_path))
            betas = beta_grid_for(0.5, conf.selection.beta_grid)
            out[k] = stage_beta_search(ctx, conf.selection, e, free, None, labels, dyn, 0.5, betas)
    finally:
        torch.set_num_threads(threads)
    assert out[1].key == out[2].key and len(out[1]["betas"]) == 2
    np.testing.assert_array_equal(out[2]["val_acc"], out[1]["val_acc"])
    assert float(out[2]["best_beta"]) == float(out[1]["best_beta"])
