"""The defaults on small sets (the 300 demo photos of elfs-select's quickstart): TEMI keeps its steps per epoch,
and the beta search validates on enough images; the embedded default (4,000 images) is left as it was."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from omegaconf import OmegaConf

from elfs.cluster.module import temi_batch_size
from elfs.config import ClusterConfig
from elfs.select.beta_search import beta_grid_for, pick_beta, search_beta, split_train_val, validation_size


def test_temi_batch_shrinks_on_a_small_set_to_keep_its_steps_per_epoch():
    cfg = ClusterConfig(batch_size=256, min_steps_per_epoch=15)
    assert temi_batch_size(cfg, 300) == 20  # 300 // 15: 15 steps an epoch, not one batch of 256
    assert temi_batch_size(cfg, 4000) == 256  # 4000 // 15 = 266 > 256: the embedded default is unchanged
    assert temi_batch_size(cfg, 10) == 1
    assert temi_batch_size(ClusterConfig(batch_size=256), 300) == 256  # no floor: one batch of 256 (drop_last)
    assert temi_batch_size(ClusterConfig(batch_size=256), 100) == 100


@pytest.mark.parametrize(
    ("n", "fraction", "floor", "expected"),
    [(300, 0.1, 100, 100), (4000, 0.1, 100, 400), (150, 0.1, 100, 75), (300, 0.1, 0, 30), (45000, 0.1, 100, 4500)],
)
def test_validation_size_is_a_fraction_with_a_floor_of_at_most_half(n, fraction, floor, expected):
    assert validation_size(n, fraction, floor) == expected
    train, val = split_train_val(n, fraction, seed=0, min_val=floor)
    assert val.size == expected and train.size == n - expected
    assert np.intersect1d(train, val).size == 0


def test_folder_defaults_give_temi_15_steps_an_epoch_and_100_validation_images(compose_cfg):
    conf = compose_cfg(["+experiment=folder_select", "dataset.path=/nowhere"])
    cluster = OmegaConf.to_object(conf.cluster)
    assert temi_batch_size(cluster, 300) == 20
    assert validation_size(300, conf.selection.val_fraction, conf.selection.min_val) == 100
    # every default budget's search reaches the top of its own range, 1 - budget
    for budget in conf.selection.budget:
        assert max(beta_grid_for(budget, conf.selection.beta_grid)) == pytest.approx(1 - budget)


def test_the_embedded_default_keeps_its_batch_and_its_tenth(compose_cfg):
    conf = compose_cfg([])
    assert temi_batch_size(OmegaConf.to_object(conf.cluster), 4000) == 256
    assert validation_size(4000, conf.selection.val_fraction, conf.selection.min_val) == 400


def test_one_standard_error_rule_by_hand():
    # the demo photos' 10 % curve on 100 validation images (beta 0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9): the best, 0.52,
    # has a standard error of sqrt(0.52 * 0.48 / 100) = 0.0500, so 0.50 at beta 0.3 is within it
    photos = [0.25, 0.44, 0.39, 0.5, 0.49, 0.5, 0.52]
    assert pick_beta(photos, 100, 0.0) == 6  # the plain maximum: beta 0.9, at the grid's edge
    assert pick_beta(photos, 100, 1.0) == 3
    assert pick_beta([0.5, 0.5], 100, 0.0) == 0  # ties keep the smaller beta
    # a curve that rises by more than its noise still ends at the edge (and the search warns)
    assert pick_beta([0.2, 0.3, 0.4, 0.5, 0.6], 100, 1.0) == 4  # 0.6 - 0.0490 = 0.551 > 0.5


def test_search_with_the_one_se_rule_warns_only_on_a_real_rise():
    hardness = np.arange(1000, dtype=float)

    def flat_then_noise(kept, val):  # a flat curve with the largest beta ahead by one validation image
        return 0.5 + (0.01 if hardness[kept].max() < 600 else 0.0)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = search_beta(hardness, 0.1, [0.0, 0.3, 0.5], train_and_validate=flat_then_noise, se_tolerance=1.0)
    assert res.best_beta == 0.0 and not res.at_edge

    def rising(kept, val):
        return 0.2 + 0.001 * (1000 - hardness[kept].max())  # beta 0, 0.3, 0.5: 0.201, 0.501, 0.701

    with pytest.warns(UserWarning, match="largest beta on the grid"):
        res = search_beta(hardness, 0.1, [0.0, 0.3, 0.5], train_and_validate=rising, se_tolerance=1.0)
    assert res.best_beta == 0.5 and res.at_edge
