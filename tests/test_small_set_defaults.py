"""The defaults on small sets (the 300 demo photos of elfs-select's quickstart): TEMI keeps its steps per epoch,
and the beta search validates on enough images; the embedded default (4,000 images) is left as it was."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from elfs.cluster.module import temi_batch_size
from elfs.config import ClusterConfig
from elfs.select.beta_search import split_train_val, validation_size


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
    # the grid reaches 1 - the largest default budget, so that budget's search can reach the top of its range
    assert max(conf.selection.beta_grid) == pytest.approx(0.5)


def test_the_embedded_default_keeps_its_batch_and_its_tenth(compose_cfg):
    conf = compose_cfg([])
    assert temi_batch_size(OmegaConf.to_object(conf.cluster), 4000) == 256
    assert validation_size(4000, conf.selection.val_fraction, conf.selection.min_val) == 400
