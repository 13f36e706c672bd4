"""Embedding stage: preprocessing against PIL / hand values, batching invariance, grey handling, validation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from elfs.method.backbones import BACKBONES, build_backbone
from elfs.method.embed import embed_images, preprocess, resolve_device

LITE = BACKBONES["efficientnet_lite0"]
SIZE = 32  # tiny resolution keeps the CPU forward cheap


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(7, 20, 20, 3), dtype=np.uint8)


def test_preprocess_without_resize_is_hand_normalisation() -> None:
    img = np.array([[[[0, 127, 255], [10, 20, 30]], [[255, 255, 255], [1, 2, 3]]]], dtype=np.uint8)  # 1x2x2x3
    out = preprocess(img, LITE, 2)
    assert out.shape == (1, 3, 2, 2) and out.dtype == torch.float32
    expected = (img[0].astype(np.float64) - 127.0) / 128.0
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    dino = BACKBONES["dino_vits16"]
    out = preprocess(img, dino, 2)
    expected = (img[0] / 255.0 - np.array(dino.mean)) / np.array(dino.std)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("src,dst", [(8, 32), (32, 224), (50, 20)])
def test_preprocess_resize_matches_pil(interpolation: str, src: int, dst: int) -> None:
    rng = np.random.default_rng(src)
    img = rng.integers(0, 256, size=(2, src, src, 3), dtype=np.uint8)
    spec = replace(LITE, interpolation=interpolation)
    out = preprocess(img, spec, dst).permute(0, 2, 3, 1).numpy() * 128.0 + 127.0  # back to pixels
    pil_mode = Image.BICUBIC if interpolation == "bicubic" else Image.BILINEAR
    for i in range(2):
        ref = np.asarray(Image.fromarray(img[i]).resize((dst, dst), pil_mode), dtype=np.float64)
        assert np.abs(out[i] - ref).max() <= 2.0 + 1e-4  # within a couple of grey levels of PIL
        assert np.abs(out[i] - ref).mean() < 0.5


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("src,dst", [(8, 32), (32, 224), (96, 224), (500, 224), (50, 20)])
def test_device_resize_within_two_grey_levels_of_the_host_path(interpolation: str, src: int, dst: int) -> None:
    """The GPU path's float resize (run here on CPU tensors: the same arithmetic), one axis at a time with whole
    grey levels in between, against the uint8 host path and PIL, on noise (the worst case for bicubic overshoot).
    A single 2-D float pass would differ by up to 24 levels."""
    rng = np.random.default_rng(src)
    img = rng.integers(0, 256, size=(2, src, src, 3), dtype=np.uint8)
    spec = replace(LITE, interpolation=interpolation)
    host = preprocess(img, spec, dst).numpy() * 128.0
    dev = preprocess(img, spec, dst, resize="device").numpy() * 128.0
    assert np.abs(dev - host).max() <= 2.0 + 1e-3 and np.abs(dev - host).mean() < 0.15
    assert np.allclose(dev, np.round(dev + 127.0) - 127.0, atol=1e-3)  # whole grey levels, as uint8 would hold
    pil_mode = Image.BICUBIC if interpolation == "bicubic" else Image.BILINEAR
    for i in range(2):
        ref = np.asarray(Image.fromarray(img[i]).resize((dst, dst), pil_mode), dtype=np.float64)
        assert np.abs(dev[i].transpose(1, 2, 0) + 127.0 - ref).max() <= 3.0 + 1e-3
    with pytest.raises(ValueError, match="resize must be"):
        preprocess(img, spec, dst, resize="gpu")


def test_preprocess_grey_forms_agree(rgb: np.ndarray) -> None:
    grey = rgb[..., 0]
    a = preprocess(grey, LITE, 28)
    b = preprocess(grey[..., None], LITE, 28)
    c = preprocess(np.repeat(grey[..., None], 3, axis=-1), LITE, 28)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    assert torch.equal(a[:, 0], a[:, 2])


def test_embed_shape_dtype_and_matches_direct_forward(rgb: np.ndarray) -> None:
    out = embed_images(rgb, "efficientnet_lite0", image_size=SIZE, batch_size=4, device="cpu", progress=False)
    assert out.shape == (7, 1280) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.std() > 0
    model, spec = build_backbone("efficientnet_lite0")
    with torch.no_grad():
        direct = model(preprocess(rgb[2:3], spec, SIZE)).numpy()
    np.testing.assert_allclose(out[2:3], direct, atol=1e-5)


def test_batching_invariance_and_determinism(rgb: np.ndarray) -> None:
    a = embed_images(rgb, "efficientnet_lite0", image_size=SIZE, batch_size=3, device="cpu", progress=False)
    b = embed_images(rgb, "efficientnet_lite0", image_size=SIZE, batch_size=7, device="cpu", progress=False)
    c = embed_images(rgb, "efficientnet_lite0", image_size=SIZE, batch_size=3, device="cpu", progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # float32 conv noise only
    np.testing.assert_array_equal(a, c)
    # different images give different features
    assert np.abs(a[0] - a[1]).max() > 1e-2


def test_grey_equals_repeated_rgb(rgb: np.ndarray) -> None:
    grey = rgb[:4, :, :, 1]
    a = embed_images(grey, "efficientnet_lite0", image_size=SIZE, device="cpu", progress=False)
    b = embed_images(
        np.repeat(grey[..., None], 3, axis=-1), "efficientnet_lite0", image_size=SIZE, device="cpu", progress=False
    )
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_progress_flag(rgb: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    embed_images(rgb[:2], "efficientnet_lite0", image_size=SIZE, device="cpu", progress=False)
    assert "embed[" not in capsys.readouterr().err
    embed_images(rgb[:2], "efficientnet_lite0", image_size=SIZE, device="cpu", progress=True)
    assert "embed[efficientnet_lite0]" in capsys.readouterr().err


def test_validation(rgb: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        embed_images(rgb.astype(np.float32), "efficientnet_lite0")
    with pytest.raises(ValueError, match=r"C in \(1, 3\)"):
        embed_images(np.zeros((2, 8, 8, 4), np.uint8), "efficientnet_lite0")
    with pytest.raises(ValueError, match="shape"):
        embed_images(np.zeros((8, 8), np.uint8), "efficientnet_lite0")
    with pytest.raises(ValueError, match="non-empty"):
        embed_images(np.zeros((0, 8, 8, 3), np.uint8), "efficientnet_lite0")
    with pytest.raises(ValueError, match="valid names"):
        embed_images(rgb, "resnet18")
    with pytest.raises(ValueError, match="batch_size"):
        embed_images(rgb, "efficientnet_lite0", batch_size=0)
    with pytest.raises(ValueError, match="image_size"):
        embed_images(rgb, "efficientnet_lite0", image_size=0)
    with pytest.raises(ValueError, match="numpy"):
        embed_images(torch.zeros(2, 8, 8, 3, dtype=torch.uint8), "efficientnet_lite0")
    with pytest.raises(ValueError, match="device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            embed_images(rgb, "efficientnet_lite0", device="cuda")
    assert resolve_device("cpu") == torch.device("cpu")
