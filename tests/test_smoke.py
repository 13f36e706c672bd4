"""debug=smoke: every paper experiment's real code path (its backbone architecture with random weights, its proxy
and evaluation networks, batched TEMI heads, every stage) runs on a CPU on synthetic images shaped like its data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elfs.config import to_typed
from elfs.infra.overrides import apply_debug_mode
from elfs.run import run

CONF = Path(__file__).resolve().parents[1] / "conf"
PAPER = ["cifar10_dino", "cifar100_dino", "cifar10_swav", "stl10_dino", "imagenet_dino"]


def test_smoke_is_applied_after_the_experiment(compose_cfg):
    plain = compose_cfg(["+experiment=imagenet_dino"], sub="plain")
    assert plain.selection.search_steps == 20000 and plain.cluster.num_clusters == 1000  # the experiment's, until...
    for i, form in enumerate(["debug=smoke", "+debug=smoke"]):  # debug is a group last in the defaults list
        cfg = compose_cfg(["experiment=imagenet_dino", form], sub=str(i))
        assert cfg.selection.search_steps == 2 and cfg.debug == "smoke"
    conf = to_typed(apply_debug_mode(cfg))
    assert conf.selection.search_steps == 2 and conf.cluster.num_clusters is None and conf.dataset.synthetic == 40
    # ...the architecture and the kind of data stay the experiment's; streamed images decode at the debug size
    assert (conf.backbone.name, conf.dynamics.model, conf.evaluate.model) == ("dino_vitb16", "resnet34", "resnet34")
    assert conf.dataset.name == "imagefolder" and conf.dynamics.image_size == conf.backbone.image_size == 32
    assert conf.trainer.accelerator == "cpu" and conf.cluster.head_impl == "batched"


def test_unknown_debug_mode_is_refused(tmp_path, elfs_cli):
    p = elfs_cli(["debug=fast"], cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert "debug" in p.stderr and "smoke" in p.stderr and not (tmp_path / "outputs").exists()


def test_synthetic_stand_in_has_the_real_shape():
    from elfs.data.synthetic import load_synthetic_like

    ds = load_synthetic_like("cifar100", 160, root="unused")
    assert ds.train.images.shape == (160, 32, 32, 3) and ds.test.images.shape == (40, 32, 32, 3)
    assert ds.num_classes == 40 and np.bincount(ds.truth.train).min() >= 3
    again = load_synthetic_like("cifar100", 160, root="unused")
    np.testing.assert_array_equal(ds.train.images, again.train.images)  # deterministic: stable cache keys


@pytest.mark.slow
@pytest.mark.parametrize("exp", PAPER)
def test_every_paper_experiment_runs_in_smoke_mode(compose_cfg, tmp_path, exp):
    cfg = compose_cfg([f"+experiment={exp}", "debug=smoke", f"dataset.root={tmp_path / 'data'}", "logger=csv"])
    res = run(cfg)
    conf = to_typed(apply_debug_mode(cfg))
    assert res["dataset"].endswith("synthetic") or exp == "imagenet_dino"
    assert res["backbone"] == conf.backbone.name and not res["pretrained"]
    assert {"embed", "knn", "cluster", "dynamics", "beta_search", "evaluate"} <= set(res["stage_seconds"])
    (row,) = res["results"]
    assert row["beta_source"] == "search" and set(row["methods"]) >= {"double_end"}
    assert 0.0 <= row["methods"]["double_end"]["acc_mean"] <= 1.0
    assert row["methods"]["double_end"]["best_mean"] is not None  # the paper metric is tested along the way
    assert res["config"]["cluster"]["head_impl"] == "batched" and res["config"]["debug"] == "smoke"
