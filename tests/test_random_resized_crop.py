"""crop=random_resized: the ImageNet recipe's RandomResizedCrop (scale (0.08, 1), ratio (3/4, 4/3)) + flip of the
whole decoded picture in the loader workers, drawn from (seed, epoch, index), and the test-time Resize(S / 0.875)
+ CenterCrop(S); in-memory image arrays refuse it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from elfs.config import ClassifierTrainingConfig, DynamicsConfig
from elfs.data.folder import scan_folder
from elfs.dynamics import ImageFacts, evaluate_accuracy, train_classifier
from elfs.errors import ConfigError
from elfs.infra.runtime import Runtime
from elfs.training.augment import (
    center_crop,
    eval_resize_size,
    random_resized_crop_flip,
    random_resized_crop_params,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N = 96
SIZE = 12
SGD = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, min_lr=1e-4)


def _cfg(cls=ClassifierTrainingConfig, **kw):
    base = dict(model="small_cnn", width=8, batch_size=32, image_size=SIZE, crop="random_resized", **SGD)
    return cls(**{**base, **kw})


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """N small RGB PNGs of different, non-square shapes (cut from scikit-learn's sample photos)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images  # 427 x 640 x 3
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    y = np.zeros(N, np.int64)
    for i in range(N):
        pic = (china, flower)[i % 2]
        h, w = int(rng.integers(14, 30)), int(rng.integers(14, 30))
        t, s = int(rng.integers(0, 427 - 8 * h)), int(rng.integers(0, 640 - 8 * w))
        Image.fromarray(pic[t : t + 8 * h : 8, s : s + 8 * w : 8]).save(root / f"p{i:03d}.png")
        y[i] = i % 2
    src, skipped = scan_folder(root)
    assert len(src) == N and not skipped
    return src, y


# ------------------------------------------------------------------------------------------- parameters
def test_params_are_a_function_of_seed_epoch_index():
    idx = torch.arange(2000)
    a = random_resized_crop_params(idx, 300, 400, seed=0, epoch=0)
    b = random_resized_crop_params(idx, 300, 400, seed=0, epoch=0)
    for x, z in zip(a, b, strict=True):
        assert torch.equal(x, z)
    # the same example alone, or in another batch order, draws the same window
    perm = torch.randperm(2000, generator=torch.Generator().manual_seed(1))
    c = random_resized_crop_params(idx[perm], 300, 400, seed=0, epoch=0)
    for x, z in zip(a, c, strict=True):
        assert torch.equal(x[perm], z)
    one = random_resized_crop_params(torch.tensor([7]), 300, 400, seed=0, epoch=0)
    assert [int(t) for t in one] == [int(t[7]) for t in a]
    # another epoch, seed or index: other windows
    for other in (
        random_resized_crop_params(idx, 300, 400, seed=0, epoch=1),
        random_resized_crop_params(idx, 300, 400, seed=1, epoch=0),
    ):
        same = torch.stack([x == z for x, z in zip(a, other, strict=True)]).all(0)
        assert same.float().mean() < 0.01
    assert len(set(zip(*(t.tolist() for t in a), strict=True))) > 1900


@pytest.mark.parametrize(("height", "width"), [(300, 400), (500, 375), (224, 224)])
def test_params_follow_random_resized_crop(height, width):
    top, left, h, w = random_resized_crop_params(torch.arange(20000), height, width, seed=3, epoch=2)
    assert (h >= 1).all() and (w >= 1).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    frac = (h * w).double() / (height * width)
    aspect = w.double() / h.double()
    # the window's sides are rounded to whole pixels: allow a pixel's worth around the bounds
    tol = 2.0 / min(h.min().item(), w.min().item())
    assert frac.min() >= 0.08 * (1 - tol) and frac.max() <= 1.0
    assert aspect.min() >= 0.75 * (1 - tol) and aspect.max() <= (4 / 3) * (1 + tol)
    # spread over the whole ranges, not stuck in a corner
    assert frac.min() < 0.09 and frac.max() > 0.9 and aspect.min() < 0.77 and aspect.max() > 1.3
    # loosely the same distribution as torchvision's RandomResizedCrop.get_params (area fraction and log aspect;
    # on a non-square image the accepted windows lean towards its own shape, in both)
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    img = torch.zeros(1, height, width)
    ref = torch.tensor([RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)])
    ref_frac = (ref[:, 2] * ref[:, 3]).double() / (height * width)
    ref_la = torch.log(ref[:, 3].double() / ref[:, 2].double())
    la = torch.log(aspect)
    assert abs(ref_frac.mean().item() - frac.mean().item()) < 0.02
    assert abs(torch.quantile(ref_frac, 0.5).item() - torch.quantile(frac, 0.5).item()) < 0.03
    assert abs(ref_la.mean().item() - la.mean().item()) < 0.015
    if height == width:  # by hand: log aspect uniform on [-log 4/3, log 4/3] (mean 0, upper quartile at half)
        assert abs(la.mean().item()) < 0.01
        assert abs(torch.quantile(la, 0.75).item() - math.log(4 / 3) / 2) < 0.02
    # left / top uniform over the free range: their mean position is about the middle of it
    assert abs((((top.double() + 0.5) / (height - h + 1).double()).mean()).item() - 0.5) < 0.01
    assert abs((((left.double() + 0.5) / (width - w + 1).double()).mean()).item() - 0.5) < 0.01


def test_params_fall_back_to_the_central_crop_of_a_clamped_aspect():
    """An image too elongated for any window of ratio (3/4, 4/3) and area >= 8%: torchvision's fallback."""
    top, left, h, w = random_resized_crop_params(torch.arange(50), 10, 1000, seed=0, epoch=0)
    assert (h == 10).all() and (w == 13).all() and (top == 0).all() and (left == (1000 - 13) // 2).all()
    top, left, h, w = random_resized_crop_params(torch.arange(50), 1000, 10, seed=0, epoch=0)
    assert (w == 10).all() and (h == 13).all() and (left == 0).all() and (top == (1000 - 13) // 2).all()


def test_crop_flip_of_one_image():
    img = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    outs = [random_resized_crop_flip(img, 16, True, index=i, seed=0, epoch=0) for i in range(20)]
    assert all(o.shape == (3, 16, 16) and o.dtype == torch.uint8 for o in outs)
    assert torch.equal(outs[5], random_resized_crop_flip(img, 16, True, index=5, seed=0, epoch=0))
    assert not torch.equal(outs[5], random_resized_crop_flip(img, 16, True, index=5, seed=0, epoch=1))
    # the flip is the only difference between hflip on and off, and about half the examples get it
    flipped = [
        not torch.equal(o, random_resized_crop_flip(img, 16, False, index=i, seed=0, epoch=0))
        for i, o in enumerate(outs)
    ]
    for i, o in enumerate(outs):
        if flipped[i]:
            assert torch.equal(o, random_resized_crop_flip(img, 16, False, index=i, seed=0, epoch=0).flip(-1))
    assert 3 <= sum(flipped) <= 17
    # the resized crop itself is torchvision's, at the drawn window
    from torchvision.transforms.v2 import functional as TF

    t, lft, h, w = (int(v) for v in random_resized_crop_params(torch.tensor([3]), 40, 60, seed=0, epoch=0))
    ref = TF.resized_crop(img, t, lft, h, w, [16, 16], antialias=True)
    assert torch.equal(random_resized_crop_flip(img, 16, False, index=3, seed=0, epoch=0), ref)


def test_test_time_resize_and_center_crop():
    assert eval_resize_size(224) == 256 and eval_resize_size(32) == 37
    img = torch.arange(3 * 256 * 300, dtype=torch.int64).view(3, 256, 300)
    out = center_crop(img, 224)
    assert out.shape == (3, 224, 224) and torch.equal(out, img[:, 16:240, 38:262])


def test_config_validates_the_crop():
    ClassifierTrainingConfig(crop="random_resized").validate("train")
    with pytest.raises(ConfigError, match="train.crop='resized'"):
        ClassifierTrainingConfig(crop="resized").validate("train")


# ------------------------------------------------------------------------------------------- training
def test_streamed_training_with_random_resized_crop_is_reproducible(photo_folder):
    src, y = photo_folder
    idx = np.arange(0, N, 2)[:40]
    cfg = _cfg(DynamicsConfig, el2n_epochs=1)
    mean, std = src.channel_stats()
    kw = dict(
        num_classes=2, epochs=2, seed=3, record=True, images=ImageFacts(crop_padding=2, hflip=True, mean=mean, std=std)
    )
    a = train_classifier(src, y, idx, cfg, **kw)
    b = train_classifier(src, y, idx, cfg, **kw)
    # 2 persistent workers: the epoch reaches them through the sampler's (position, epoch) keys
    c = train_classifier(src, y, idx, cfg, runtime=Runtime(num_workers=2), **kw)
    assert a.steps == 4
    for k in a.scores:
        np.testing.assert_array_equal(a.scores[k], b.scores[k], err_msg=k)
        np.testing.assert_array_equal(a.scores[k], c.scores[k], err_msg=k)
    assert np.isfinite(a.scores["aum"][idx]).all() and np.isnan(np.delete(a.scores["aum"], idx)).all()
    for p, q in zip(a.module.parameters(), c.module.parameters(), strict=True):
        assert torch.equal(p, q)
    # the device only normalises: the crop and flip were the workers'
    assert a.module.transform.padding == 0 and not a.module.transform.hflip
    # test time: Resize(round(S / 0.875)) + CenterCrop(S) of each picture
    held = np.arange(1, N, 2)
    ref = np.stack(
        [
            center_crop(torch.from_numpy(src.load_rgb(int(i), eval_resize_size(SIZE))).permute(2, 0, 1), SIZE)
            .permute(1, 2, 0)
            .numpy()
            for i in held
        ]
    )
    assert evaluate_accuracy(a.module, src, y, indices=held) == evaluate_accuracy(a.module, ref, y[held])


def test_streamed_items_differ_by_epoch_and_are_the_whole_picture_resized(photo_folder):
    from elfs.training.classifier import _StreamedImageDataset

    src, y = photo_folder
    t = torch.as_tensor
    ds = _StreamedImageDataset(src, SIZE, t(y), torch.arange(N), crop="random_resized", train=True, seed=0, hflip=True)
    a0, a1 = ds[(4, 0)][0], ds[(4, 1)][0]
    assert a0.shape == (3, SIZE, SIZE) and torch.equal(a0, ds[(4, 0)][0]) and not torch.equal(a0, a1)
    full = torch.from_numpy(src.load_rgb(4, None)).permute(2, 0, 1)
    assert tuple(full.shape[1:]) != (SIZE, SIZE)  # decoded at its own size, then cropped and resized
    assert torch.equal(a0, random_resized_crop_flip(full, SIZE, True, index=4, seed=0, epoch=0))


def test_in_memory_images_refuse_random_resized_crop(photo_folder):
    src, y = photo_folder
    arr = np.stack([src.load_rgb(i, SIZE) for i in range(8)])
    with pytest.raises(ValueError, match="crop='random_resized'.*needs a streamed image source"):
        train_classifier(arr, y[:8], np.arange(8), _cfg(), num_classes=2, steps=1, seed=0)
