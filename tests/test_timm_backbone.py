"""backbone=timm (any timm model, preprocessing from its own config), backbone.weights=FILE (local checkpoints for
every backbone) and elfs-select's choice of the best encoder whose weights are already here. Random weights only:
nothing is downloaded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from elfs.config import BackboneConfig
from elfs.errors import ConfigError, UserError
from elfs.method.backbones import (
    ENCODER_PREFERENCE,
    WeightsFileError,
    build_backbone,
    check_weights_available,
    choose_encoder,
    weights_local,
)
from elfs.method.embed import embed_images, preprocess

TINY = "vit_tiny_patch16_224"  # 192-d, mean/std 0.5, crop_pct 0.9, bicubic (timm's pretrained config)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _images(n: int = 3, size: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _save_random(model_name: str, path, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    src = timm.create_model(model_name, pretrained=False, **kwargs).eval()
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    else:
        torch.save(src.state_dict(), path)
    return src


@pytest.mark.parametrize(
    ("name", "dim", "size", "crop", "mean"),
    [(TINY, 192, 224, 0.9, (0.5, 0.5, 0.5)), ("resnet10t", 512, 176, 0.875, (0.485, 0.456, 0.406))],
)
def test_spec_comes_from_the_models_own_pretrained_config(name, dim, size, crop, mean) -> None:
    model, spec = build_backbone("timm", pretrained=False, model=name)
    cfg = timm.data.resolve_data_config({}, model=model)
    assert (spec.dim, spec.image_size, spec.crop_pct) == (dim, size, crop)
    assert spec.mean == pytest.approx(mean) and spec.mean == pytest.approx(cfg["mean"])
    assert spec.std == pytest.approx(cfg["std"]) and spec.interpolation == cfg["interpolation"] == "bicubic"
    assert model.num_classes == 0 and not model.training and not any(p.requires_grad for p in model.parameters())


def test_preprocess_resizes_to_size_over_crop_pct_then_takes_the_centre() -> None:
    _, spec = build_backbone("timm", pretrained=False, model=TINY)
    x = _images(2, 40)
    got = preprocess(x, spec, 224)
    scale = math.floor(224 / 0.9)  # 248, timm's eval transform
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    t = F.interpolate(t, size=(scale, scale), mode="bicubic", antialias=True, align_corners=False).float()
    top = round((scale - 224) / 2)
    t = t[:, :, top : top + 224, top : top + 224]
    torch.testing.assert_close(got, (t / 255 - 0.5) / 0.5)
    assert got.shape == (2, 3, 224, 224)
    # an image already at the scale size is only cropped
    big = _images(1, scale)
    crop = torch.from_numpy(big).permute(0, 3, 1, 2).float()[:, :, top : top + 224, top : top + 224]
    torch.testing.assert_close(preprocess(big, spec, 224), (crop / 255 - 0.5) / 0.5)


def test_embed_with_any_timm_model_gives_its_pooled_features() -> None:
    x = _images(3, 40)
    torch.manual_seed(0)
    feats = embed_images(x, "timm", model=TINY, pretrained=False, device="cpu", progress=False)
    assert feats.shape == (3, 192) and feats.dtype == np.float32 and np.isfinite(feats).all()
    small = embed_images(x, "timm", model=TINY, image_size=64, pretrained=False, device="cpu", progress=False)
    assert small.shape == (3, 192)  # backbone.image_size overrides the size (ViT position embeddings resampled)
    cnn = embed_images(x, "timm", model="resnet10t", image_size=64, pretrained=False, device="cpu", progress=False)
    assert cnn.shape == (3, 512)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_checkpoint_gives_the_features_of_the_model_it_came_from(tmp_path, suffix) -> None:
    path = tmp_path / f"tiny{suffix}"
    src = _save_random(TINY, path, seed=7, num_classes=0)
    x = _images(3, 40)
    feats = embed_images(x, "timm", model=TINY, weights=str(path), device="cpu", progress=False)
    model, spec = build_backbone("timm", model=TINY, weights=str(path))
    with torch.no_grad():
        want = src(preprocess(x, spec, spec.image_size)).numpy()
    np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-5)
    check_weights_available("timm", model=TINY, weights=str(path))  # no cache or network needed


def test_a_checkpoint_with_its_classifier_and_a_training_wrapper_loads(tmp_path) -> None:
    torch.manual_seed(1)
    src = timm.create_model("resnet10t", pretrained=False, num_classes=1000).eval()
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    model, _ = build_backbone("timm", model="resnet10t", weights=str(path))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src.forward_head(src.forward_features(x), pre_logits=True))


def test_registered_backbones_take_a_local_checkpoint_too(tmp_path) -> None:
    path = tmp_path / "lite0.pth"
    src = _save_random("tf_efficientnet_lite0", path, seed=2, num_classes=1000)
    model, spec = build_backbone("efficientnet_lite0", weights=str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src.forward_head(src.forward_features(x), pre_logits=True))
    dino = tmp_path / "dino.pth"
    src = _save_random("vit_small_patch16_224", dino, seed=3, num_classes=0, dynamic_img_size=True)
    model, _ = build_backbone("dino_vits16", weights=str(dino))  # no Hugging Face cache needed
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x))


def test_a_missing_or_mismatched_file_is_one_clear_error_before_any_embedding(tmp_path, monkeypatch) -> None:
    import elfs.method.embed

    calls = []
    monkeypatch.setattr(elfs.method.embed, "preprocess", lambda *a, **k: calls.append(1))  # no image may be embedded
    missing = str(tmp_path / "nope.pth")
    for call in (
        lambda: embed_images(_images(), "timm", model=TINY, weights=missing, device="cpu", progress=False),
        lambda: check_weights_available("timm", model=TINY, weights=missing),
        lambda: build_backbone("swav_resnet50", weights=missing),
    ):
        with pytest.raises(WeightsFileError, match="does not exist") as info:
            call()
        assert missing in str(info.value) and "state_dict" in str(info.value)
    other = tmp_path / "resnet.pth"
    _save_random("resnet10t", other, num_classes=0)
    with pytest.raises(WeightsFileError, match=r"missing keys.*unexpected keys") as info:
        embed_images(_images(), "timm", model=TINY, weights=str(other), device="cpu", progress=False)
    assert str(other) in str(info.value) and TINY in str(info.value)
    with pytest.raises(WeightsFileError, match="efficientnet_lite0"):
        build_backbone("efficientnet_lite0", weights=str(other))
    wider = tmp_path / "small.pth"
    _save_random("vit_small_patch16_224", wider, num_classes=0)  # same keys, other widths
    with pytest.raises(WeightsFileError, match="shape mismatches"):
        build_backbone("timm", model=TINY, weights=str(wider))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsFileError, match="torch.load"):
        build_backbone("timm", model=TINY, weights=str(junk))
    assert calls == [] and issubclass(WeightsFileError, UserError)


def test_unknown_timm_model_and_missing_model_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not a timm model"):
        build_backbone("timm", pretrained=False, model="vit_tiny_patch16_2244")
    with pytest.raises(ConfigError, match="backbone.model"):
        check_weights_available("timm")
    with pytest.raises(ConfigError, match="backbone=timm only"):
        build_backbone("dino_vits16", pretrained=False, model=TINY)


def test_config_fields_validate_and_enter_the_embedding_key() -> None:
    from elfs.stages.keys import group_key

    with pytest.raises(ConfigError, match=r"backbone\.model=None.*vit_small_patch16_224\.dino"):
        BackboneConfig(name="timm").validate()
    with pytest.raises(ConfigError, match=r"backbone\.model='x'.*backbone=timm only"):
        BackboneConfig(name="dino_vits16", model="x").validate()
    with pytest.raises(ConfigError, match="pretrained=false"):
        BackboneConfig(weights="/w.pth", pretrained=False).validate()
    with pytest.raises(ConfigError, match="backbone.weights"):
        BackboneConfig(weights="").validate()
    BackboneConfig(name="timm", model=TINY, weights="/w.pth").validate()
    key = group_key("embed", "backbone", BackboneConfig(name="timm", model=TINY, weights="/w.pth"))
    assert key["model"] == TINY and key["weights"] == "/w.pth"
    assert group_key("embed", "backbone", BackboneConfig(name="timm", model="resnet10t"))["model"] == "resnet10t"


def test_choose_encoder_picks_the_best_local_one_and_falls_back_with_a_hint() -> None:
    def only(*names):
        return lambda c: (c.model or c.backbone) in names

    overrides, line = choose_encoder(only("dino_vits16", "clip_vitb16", "efficientnet_lite0"))
    assert overrides == ["backbone=dino_vits16"] and "DINO ViT-S/16" in line and "\n" not in line
    overrides, line = choose_encoder(only("vit_small_patch14_dinov2.lvd142m", "dino_vits16"))
    assert overrides == ["backbone=timm", "backbone.model=vit_small_patch14_dinov2.lvd142m", "backbone.image_size=224"]
    assert "DINOv2 ViT-S/14" in line
    assert choose_encoder(only("swav_resnet50"))[0] == ["backbone=swav_resnet50"]
    overrides, line = choose_encoder(lambda c: False)
    assert overrides == []  # the composed default (EfficientNet-Lite0) stays
    assert "EfficientNet-Lite0" in line and "\n" not in line
    assert "timm.create_model('vit_small_patch14_dinov2.lvd142m', pretrained=True)" in line
    assert "backbone.weights=FILE" in line
    assert ENCODER_PREFERENCE[-1].backbone == "efficientnet_lite0"  # never asked: it ships in a package


def test_weights_local_reads_the_caches_only(tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "vit_small_patch14_dinov2.lvd142m"
    assert not weights_local("timm", name) and not weights_local("dino_vits16") and not weights_local("swav_resnet50")
    snap = tmp_path / f"models--timm--{name}" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (tmp_path / f"models--timm--{name}" / "refs").mkdir()
    (tmp_path / f"models--timm--{name}" / "refs" / "main").write_text("abc")
    (snap / "model.safetensors").write_bytes(b"x")
    assert weights_local("timm", name) and not weights_local("timm", "vit_base_patch14_dinov2.lvd142m")
    assert not weights_local("timm", "no_such_model") and not weights_local("timm")


def test_elfs_select_default_encoder_and_an_explicit_override(tmp_path, monkeypatch, capsys) -> None:
    import elfs.method.backbones
    from elfs.api import compose_selection

    x = _images(4, 16)
    monkeypatch.setattr(elfs.method.backbones, "local_encoder", lambda c: c.model == "vit_small_patch14_dinov2.lvd142m")
    cfg = compose_selection(x, budget=0.5, num_clusters=2, out=tmp_path / "a", overrides=["backbone.image_size=32"])
    assert (cfg.backbone.name, cfg.backbone.model, cfg.backbone.image_size) == (
        "timm",
        "vit_small_patch14_dinov2.lvd142m",
        32,  # the user's own backbone.image_size still wins
    )
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "DINOv2 ViT-S/14" in err[0]
    cfg = compose_selection(x, budget=0.5, num_clusters=2, out=tmp_path / "b", overrides=["backbone=swav_resnet50"])
    assert cfg.backbone.name == "swav_resnet50" and cfg.backbone.model is None and cfg.backbone.weights is None
    assert capsys.readouterr().err == ""  # an explicit backbone= always wins, silently
    cfg = compose_selection(
        x, budget=0.5, num_clusters=2, out=tmp_path / "c", overrides=["backbone=timm", f"backbone.model={TINY}"]
    )
    assert (cfg.backbone.name, cfg.backbone.model, cfg.backbone.image_size) == ("timm", TINY, None)
    BackboneConfig(**cfg.backbone).validate()
    monkeypatch.setattr(elfs.method.backbones, "local_encoder", lambda c: False)
    cfg = compose_selection(x, budget=0.5, num_clusters=2, out=tmp_path / "d")
    assert (cfg.backbone.name, cfg.backbone.image_size) == ("efficientnet_lite0", 64)
    assert "EfficientNet-Lite0" in capsys.readouterr().err
