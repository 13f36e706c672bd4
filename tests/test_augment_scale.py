"""Augmentation that fits the data: the padded-crop default scales with the image side (side/8, CIFAR's 4 of 32),
a padding of a quarter of the side or more is warned about, and the sklearn digits as a user's .npz (with
dataset.hflip=false) train exactly as dataset=digits."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from elfs.data import load_dataset
from elfs.data.datasets import streamed_crop_padding
from elfs.data.types import crop_padding_warning, default_crop_padding


def _digits_npz(path, *, labels: bool = True):
    ds = load_dataset("digits")
    if labels:
        np.savez(path, x_train=ds.train.images, y_train=ds.truth.train, x_test=ds.test.images, y_test=ds.truth.test)
    else:
        np.savez(path, x_train=ds.train.images)
    return path


@pytest.mark.parametrize("side, padding", [(2, 0), (4, 1), (8, 1), (12, 2), (28, 4), (32, 4), (96, 12), (224, 28)])
def test_default_crop_padding_is_side_over_8(side, padding):
    assert default_crop_padding(side) == padding


def test_npz_crop_padding_scales_with_the_image(tmp_path):
    rng = np.random.default_rng(0)
    for side, expected in [(8, 1), (32, 4), (64, 8)]:
        p = tmp_path / f"s{side}.npz"
        x = rng.integers(0, 255, (12, side, side, 3), dtype=np.uint8)
        np.savez(p, x_train=x[:8], y_train=np.arange(8) % 2, x_test=x[8:], y_test=np.arange(4) % 2)
        ds = load_dataset("npz", path=str(p))
        assert (ds.hflip, ds.crop_padding) == (True, expected)  # photos: flips on
        np.savez(p, x_train=x)  # images only (label-free): the same default
        assert load_dataset("npz", path=str(p)).crop_padding == expected
    assert load_dataset("npz", path=str(p), crop_padding=2).crop_padding == 2  # set by the user: kept
    # a folder's images are decoded to the training image_size; side/8 of it when the loader is told it
    assert (streamed_crop_padding(None), streamed_crop_padding(224), streamed_crop_padding(64)) == (4, 28, 8)


def test_a_quarter_of_the_side_or_more_is_warned_about_once(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("elfs.data.types._WARNED", set())  # once per process: other tests may have said it already
    assert crop_padding_warning(1, 8) is None and crop_padding_warning(0, 2) is None
    assert "dataset.crop_padding=2 is 25% of the 8px image side" in crop_padding_warning(2, 8)
    import dataclasses

    ds = load_dataset("digits")  # 8x8, padding 1: fine, no warning
    with caplog.at_level(logging.WARNING, logger="elfs.data.types"):
        dataclasses.replace(ds, crop_padding=3)  # what dataset.crop_padding=3 does (elfs.pipeline.load_data)
        dataclasses.replace(ds, crop_padding=3)
    lines = [r.getMessage() for r in caplog.records if r.name == "elfs.data.types"]
    assert len(lines) == 1 and "dataset.crop_padding=3 is 38% of the 8px image side" in lines[0]
    assert "\n" not in lines[0]


def test_digits_as_npz_gets_the_digits_augmentation(compose_cfg, tmp_path):
    """dataset=npz on the digits with dataset.hflip=false: the same (hflip, crop_padding) as dataset=digits; the
    crop padding (1 = 8/8) comes from the side, the flips from the user (an .npz cannot tell digits from photos)."""
    from elfs.config import to_typed
    from elfs.pipeline import load_data

    path = _digits_npz(tmp_path / "digits.npz")
    ref = load_data(to_typed(compose_cfg(["dataset=digits"], sub="a")).dataset)
    npz = load_data(
        to_typed(compose_cfg(["dataset=npz", f"dataset.path={path}", "dataset.hflip=false"], sub="b")).dataset
    )
    assert (ref.hflip, ref.crop_padding) == (npz.hflip, npz.crop_padding) == (False, 1)
    np.testing.assert_array_equal(ref.train.images, npz.train.images)
    flipped = load_data(to_typed(compose_cfg(["dataset=npz", f"dataset.path={path}"], sub="c")).dataset)
    assert (flipped.hflip, flipped.crop_padding) == (True, 1)  # without hflip=false: flipped digits (wrong)


def test_digits_as_npz_trains_like_digits(compose_cfg, tmp_path, one_torch_thread):
    """The random arm's accuracy through both routes, one budget, one seed: the same images, labels, augmentation
    and seed, so the same number (up to float noise; measured identical, 0.688). About 5 s on one thread."""
    from elfs.run import run

    path = _digits_npz(tmp_path / "digits.npz")
    quick = [
        "+experiment=digits_quick",
        "logger=none",
        "selection.method=random",
        "selection.baselines=[]",
        "selection.budget=[0.3]",
        "evaluate.steps=30",
    ]
    accs = {}
    for name, data in [
        ("digits", ["dataset=digits"]),
        ("npz", ["dataset=npz", f"dataset.path={path}", "dataset.hflip=false"]),
    ]:
        res = run(compose_cfg([*quick, *data], sub=name))
        accs[name] = res["results"][0]["methods"]["random"]["acc_mean"]
    assert accs["digits"] > 0.3  # well above chance (10 classes)
    assert abs(accs["digits"] - accs["npz"]) < 0.02
