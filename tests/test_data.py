"""Dataset loaders: the embedded default, user .npz files in every layout, and clear errors."""

import numpy as np
import pytest

from elfs.data import DATASETS, ImageSet, load_dataset, to_nhwc
from elfs.errors import DataError


def test_mnist5k_is_real_and_split_without_labels():
    ds = load_dataset("mnist5k")
    assert ds.train.images.shape == (4000, 28, 28, 1) and ds.test.images.shape == (1000, 28, 28, 1)
    assert ds.num_classes == 10 and ds.train.images.dtype == np.uint8
    counts = np.bincount(ds.truth.train, minlength=10)
    assert counts.min() > 300  # the source is sorted by label: a label-blind permutation still mixes classes
    again = load_dataset("mnist5k")
    assert again.train.fingerprint() == ds.train.fingerprint()
    other = load_dataset("mnist5k", split_seed=1)
    assert other.train.fingerprint() != ds.train.fingerprint()


def test_label_free_view_has_no_targets():
    ds = load_dataset("digits")
    free = ds.unlabelled()
    assert not any("label" in f or "truth" in f or "target" in f for f in vars(free))
    assert free.num_classes == 10 and free.train is ds.train


@pytest.mark.parametrize("layout", ["nhwc", "nchw", "grey", "rgb_nchw"])
def test_npz_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    if layout == "nhwc":
        x = rng.integers(0, 255, (20, 6, 6, 3), dtype=np.uint8)
    elif layout == "nchw":
        x = rng.integers(0, 255, (20, 1, 6, 6), dtype=np.uint8)
    elif layout == "grey":
        x = rng.integers(0, 255, (20, 6, 6), dtype=np.uint8)
    else:
        x = rng.integers(0, 255, (20, 3, 6, 5), dtype=np.uint8)
    y = np.arange(20) % 4
    p = tmp_path / "d.npz"
    np.savez(p, x_train=x[:15], y_train=y[:15], x_test=x[15:], y_test=y[15:])
    ds = load_dataset("npz", path=str(p))
    assert ds.num_classes == 4 and len(ds.train) == 15 and len(ds.test) == 5
    assert ds.train.images.ndim == 4 and ds.train.images.shape[-1] in (1, 3)
    assert (ds.hflip, ds.crop_padding) == (True, 1)  # side/8 of the 6 (or 5) pixel side, rounded
    if layout == "nchw":
        np.testing.assert_array_equal(ds.train.images[..., 0], x[:15, 0])
    if layout == "rgb_nchw":
        np.testing.assert_array_equal(ds.train.images[3, :, :, 2], x[3, 2])


def test_npz_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="nope.npz"):
        load_dataset("npz", path=str(tmp_path / "nope.npz"))
    with pytest.raises(ValueError, match="dataset.path"):
        load_dataset("npz", path=None)
    p = tmp_path / "bad.npz"
    np.savez(p, x_train=np.zeros((4, 5, 5), np.uint8), y_train=np.zeros(4, int))
    with pytest.raises(ValueError, match="x_test"):
        load_dataset("npz", path=str(p))
    np.savez(
        p,
        x_train=np.zeros((4, 5, 5), np.float32),
        y_train=np.zeros(4, int),
        x_test=np.zeros((2, 5, 5), np.float32),
        y_test=np.zeros(2, int),
    )
    with pytest.raises(ValueError, match="uint8"):
        load_dataset("npz", path=str(p))
    np.savez(
        p,
        x_train=np.zeros((4, 5, 5), np.uint8),
        y_train=np.array([0, 1, -1, 0]),
        x_test=np.zeros((2, 5, 5), np.uint8),
        y_test=np.zeros(2, int),
    )
    with pytest.raises(ValueError, match="negative"):
        load_dataset("npz", path=str(p))


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="mnist5k") as e:
        load_dataset("imagenet22k")
    assert "imagenet22k" in str(e.value)
    assert set(DATASETS) >= {"mnist5k", "digits", "npz", "cifar10", "cifar100", "stl10"}


def test_torchvision_dataset_offline_fails_clearly(tmp_path):
    from elfs.data import DatasetUnavailableError

    with pytest.raises(DatasetUnavailableError, match="cifar10"):
        load_dataset("cifar10", root=str(tmp_path), download=False)


def test_cifar_loader_reads_a_real_torchvision_layout(tmp_path):
    """A tiny CIFAR-10-format pickle tree, written here, goes through the real torchvision loader."""
    import hashlib
    import pickle

    import torchvision.datasets as tvd

    base = tmp_path / tvd.CIFAR10.base_folder
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = {}
    for name, _ in tvd.CIFAR10.train_list + tvd.CIFAR10.test_list:
        n = 6
        batch = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n))}
        raw = pickle.dumps(batch)
        (base / name).write_bytes(raw)
        files[name] = hashlib.md5(raw).hexdigest()
    meta = pickle.dumps({"label_names": [str(i) for i in range(10)]})
    (base / tvd.CIFAR10.meta["filename"]).write_bytes(meta)
    # point torchvision's integrity check at our files
    orig = (tvd.CIFAR10.train_list, tvd.CIFAR10.test_list, dict(tvd.CIFAR10.meta))
    try:
        tvd.CIFAR10.train_list = [[n, files[n]] for n, _ in orig[0]]
        tvd.CIFAR10.test_list = [[n, files[n]] for n, _ in orig[1]]
        tvd.CIFAR10.meta = {**orig[2], "md5": hashlib.md5(meta).hexdigest()}
        ds = load_dataset("cifar10", root=str(tmp_path))
    finally:
        tvd.CIFAR10.train_list, tvd.CIFAR10.test_list, tvd.CIFAR10.meta = orig
    assert ds.train.images.shape == (30, 32, 32, 3) and ds.test.images.shape == (6, 32, 32, 3)


def test_imageset_rejects_wrong_arrays():
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(np.zeros((2, 4, 4, 3), np.float32), "x")
    with pytest.raises(ValueError, match="N x H x W x C"):
        ImageSet(np.zeros((2, 4, 4, 5), np.uint8), "x")
    with pytest.raises(ValueError, match="layouts"):
        to_nhwc(np.zeros((2, 4, 4, 5), np.uint8), "x_train")


def test_pipeline_data_options(compose_cfg):
    """dataset.max_train keeps the first N training images (and their labels); flips/crop can be overridden."""
    from elfs.config import to_typed
    from elfs.pipeline import load_data

    cfg = compose_cfg(["dataset=digits", "dataset.max_train=100", "dataset.hflip=true", "dataset.crop_padding=3"])
    ds = load_data(to_typed(cfg).dataset)
    full = load_dataset("digits")
    assert len(ds.train) == 100 and len(ds.truth.train) == 100 and len(ds.test) == len(full.test)
    np.testing.assert_array_equal(ds.train.images, full.train.images[:100])
    np.testing.assert_array_equal(ds.truth.train, full.truth.train[:100])
    assert (ds.hflip, ds.crop_padding) == (True, 3)
    free = ds.unlabelled()
    assert (free.hflip, free.crop_padding, len(free.train)) == (True, 3, 100)
