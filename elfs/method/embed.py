"""Embedding stage: uint8 images -> frozen-backbone features (method.md §2).

Features are stored unnormalised in fp32, as the reference code does; the kNN stage L2-normalises.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from elfs.infra.progress import progress_bar
from elfs.method.backbones import BackboneSpec, build_backbone, get_spec, scale_size

__all__ = ["embed_folder", "embed_images", "pixel_signature", "preprocess", "resize_placement", "resolve_device"]

_INTERPOLATIONS = {"bilinear", "bicubic"}


def _check_images(images: np.ndarray | torch.Tensor, what: str = "images") -> None:
    if isinstance(images, np.ndarray):
        dtype_ok = images.dtype == np.uint8
    elif isinstance(images, torch.Tensor):
        dtype_ok = images.dtype == torch.uint8
    else:
        raise ValueError(f"{what} must be a numpy array or torch tensor of uint8, got {type(images).__name__}")
    if not dtype_ok:
        raise ValueError(f"{what} must have dtype uint8 (0..255 pixels), got {images.dtype}")
    shape = tuple(images.shape)
    if len(shape) == 3:
        pass  # N x H x W grey
    elif len(shape) == 4 and shape[3] in (1, 3):
        pass
    else:
        raise ValueError(f"{what} must be N x H x W (grey) or N x H x W x C with C in (1, 3), got shape {shape}")
    if min(shape[:3]) < 1:
        raise ValueError(f"{what} must be non-empty with positive height and width, got shape {shape}")


def preprocess(
    images: np.ndarray | torch.Tensor,
    spec: BackboneSpec,
    image_size: int,
    *,
    device: torch.device | str | None = None,
    resize: str = "host",
) -> torch.Tensor:
    """uint8 ``N x H x W [x C]`` images -> normalised float32 ``[N, 3, S, S]`` on ``device`` (default CPU).

    ``resize="host"``: the square resize (``spec.interpolation``, antialiased) runs on uint8 CPU tensors, which
    matches a PIL resize (the reference's torchvision transforms) to within 2 grey levels. ``resize="device"``:
    the uint8 pixels travel to ``device`` first (4x less to copy than floats, asynchronously from pinned memory)
    and are resized there in float, one axis at a time, rounded to whole grey levels in between as the uint8 path
    does: within 2 grey levels of the host path (bicubic upsampling of noise; 0.12 on average at most), since no GPU
    kernel resizes uint8. With ``spec.crop_pct`` < 1 (timm models) the resize goes to ``floor(image_size / crop_pct)``
    and the centre ``image_size`` crop is kept, as timm's eval transform does; images already at that size are only
    cropped. Grey images are repeated to 3 channels; then ``(x / 255 - mean) / std``.
    """
    _check_images(images)
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if spec.interpolation not in _INTERPOLATIONS:
        raise ValueError(f"spec.interpolation must be one of {sorted(_INTERPOLATIONS)}, got {spec.interpolation!r}")
    if resize not in ("host", "device"):
        raise ValueError(f"resize must be 'host' or 'device', got {resize!r}")
    dev = torch.device(device if device is not None else "cpu")
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if x.ndim == 3:
        x = x.unsqueeze(-1)
    x = x.permute(0, 3, 1, 2)  # N, C, H, W uint8 (channels-last memory)
    scale = scale_size(spec, image_size)
    size = (scale, scale)
    if resize == "device":
        if dev.type == "cuda" and x.device.type == "cpu":
            x = x.pin_memory()
        x = _resize_separable(x.to(dev, non_blocking=True).float(), size, spec.interpolation)
    else:
        x = x.cpu()
        if tuple(x.shape[-2:]) != size:  # uint8 in, uint8 out (rounded and saturated, like PIL)
            x = F.interpolate(x, size=size, mode=spec.interpolation, antialias=True, align_corners=False)
        x = x.to(device=dev, dtype=torch.float32)
    if scale != image_size:  # centre crop, torchvision CenterCrop's offsets
        top = int(round((scale - image_size) / 2.0))
        x = x[:, :, top : top + image_size, top : top + image_size]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x / 255.0 - mean) / std).contiguous()


def _resize_separable(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Antialiased float resize of [N, C, H, W] grey levels: width first, then height, each pass rounded and
    clamped to 0..255 as uint8 resamplers (PIL's, torchvision's CPU kernel) store their intermediate image. (A
    one-axis pass leaves the other axis alone: the bicubic and bilinear kernels are 1 at 0 and 0 at every other
    integer.)"""
    h, w = x.shape[-2:]
    for shape in ((h, size[1]), size):
        if tuple(x.shape[-2:]) != shape:
            x = F.interpolate(x, size=shape, mode=mode, antialias=True, align_corners=False).round_().clamp_(0, 255)
    return x


def resize_placement(device: torch.device) -> str:
    """Where the embedding stage resizes: on a GPU there ("device"), else with the uint8 CPU kernel ("host")."""
    return "device" if device.type == "cuda" else "host"


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; any other string must be a valid torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def embed_images(
    images: np.ndarray,
    backbone: str,
    *,
    image_size: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    pretrained: bool = True,
    progress: bool = True,
    progress_every_s: float = 10.0,
    model: str | None = None,
    weights: str | None = None,
    signatures: bool = False,
    half: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Embed uint8 images with a frozen backbone; returns float32 ``[N, dim]`` features (fp32, eval, no grad; with
    ``half`` rounded to float16 as each batch arrives, unless one exceeds its range), and with ``signatures=True``
    also each image's :func:`pixel_signature` at the size it was embedded at.

    ``backbone="timm"`` with ``model`` (a timm model name) takes the input size, mean/std, interpolation and crop
    from the model's pretrained config; ``image_size`` overrides the size. ``weights`` is a local checkpoint
    file loaded instead of the pretrained weights (a bad file fails before any image is embedded)."""
    if not isinstance(images, np.ndarray):
        raise ValueError(f"images must be a numpy uint8 array, got {type(images).__name__}")
    _check_images(images)
    get_spec(backbone)
    _check_size(image_size)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    dev = resolve_device(device)

    net, spec = build_backbone(backbone, pretrained=pretrained, model=model, weights=weights)
    size = spec.image_size if image_size is None else image_size
    net = net.to(device=dev, dtype=torch.float32).eval()
    n = images.shape[0]
    out = _FeatureSink(n, spec.dim, dev, half=half)
    resize = resize_placement(dev)
    label = model if backbone == "timm" and model else backbone
    sig = np.empty((n, SIGNATURE_SIDE**2), dtype=np.int8) if signatures else None
    bar = progress_bar(n, f"embed[{label}]", unit="img", enabled=progress, every_s=progress_every_s)
    with torch.no_grad(), bar:
        for start in range(0, n, batch_size):
            x = preprocess(images[start : start + batch_size], spec, size, device=dev, resize=resize)
            feats = net(x)
            _check_features(feats, label, spec.dim)
            out.put(start, feats)
            if sig is not None:  # from the resized, normalised pixels: the same per image up to an affine map
                sig[start : start + len(x)] = pixel_signature(x.float().mean(dim=1).cpu())
            bar.update(feats.shape[0])
    return out.numpy() if sig is None else (out.numpy(), sig)


SIGNATURE_SIDE = 32  # pixels a side of the grey thumbnail near-copies are confirmed by (elfs/method/duplicates.py)


def pixel_signature(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """A near-copy's fingerprint: each uint8 image ``N x H x W [x C]`` as a 32 x 32 grey thumbnail (area average),
    zero mean, scaled so its largest value is 127: int8 ``[N, 1024]``, 1 KB an image. It is only ever compared by
    cosine (elfs/method/duplicates.py), so a brightness or contrast shift leaves it unchanged; 32 px a side leaves
    room to align a copy cropped by a few percent before comparing it at 16 x 16."""
    x = torch.as_tensor(images)
    if x.ndim == 4:
        x = x[..., :3].float().mean(dim=3)
    x = F.adaptive_avg_pool2d(x.float()[:, None], SIGNATURE_SIDE).flatten(1)
    x = x - x.mean(dim=1, keepdim=True)
    x = x * (127.0 / x.abs().amax(dim=1, keepdim=True).clamp_min(1e-6))
    return x.round().to(torch.int8).numpy()


def _check_size(image_size: object) -> None:
    if image_size is not None and (not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")


def _check_features(feats: torch.Tensor, backbone: str, dim: int) -> None:
    if feats.ndim != 2 or feats.shape[1] != dim:
        raise RuntimeError(f"backbone {backbone!r} returned shape {tuple(feats.shape)}, expected [B, {dim}]")


class _FeatureSink:
    """[N, dim] features gathered on the host, float32 or float16 (``half``: half the memory, what the cache stores;
    a batch beyond float16's range turns the sink to float32 rather than storing inf: one check, a host sync, per
    batch); from a GPU the copies go
    asynchronously into pinned memory, so the next batch's transfer and forward pass are queued without waiting for
    this one's features."""

    def __init__(self, n: int, dim: int, device: torch.device, half: bool = False) -> None:
        self.cuda = device.type == "cuda"
        dtype = torch.float16 if half else torch.float32
        self.out = torch.empty((n, dim), dtype=dtype, pin_memory=self.cuda)

    def put(self, start: int, feats: torch.Tensor) -> None:
        f = feats.float()
        if self.out.dtype == torch.float16 and bool(f.abs().max() > torch.finfo(torch.float16).max):
            if self.cuda:
                torch.cuda.synchronize()
            self.out = self.out.float().pin_memory() if self.cuda else self.out.float()
        self.out[start : start + feats.shape[0]].copy_(f, non_blocking=self.cuda)

    def numpy(self, rows: int | None = None) -> np.ndarray:
        if self.cuda:
            torch.cuda.synchronize()
        out = self.out[: self.out.shape[0] if rows is None else rows].numpy()
        return out.copy() if self.cuda else out  # a copy gives the pinned (page-locked) host memory back


class _DecodedFolder(torch.utils.data.Dataset):
    """Decodes one image of a FolderImages per item (in a DataLoader worker); a failure becomes a message."""

    def __init__(self, folder, size: int, resample: str) -> None:
        self.folder, self.size, self.resample = folder, size, resample

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int):
        from elfs.data.folder import decode_image

        try:
            return i, decode_image(self.folder.full_path(i), self.size, resample=self.resample), ""
        except Exception as e:  # any decoding failure (truncated, not really an image, ...) skips the file
            return i, None, f"{type(e).__name__}: {e}".splitlines()[0][:200]


def _collate_decoded(items):
    ok = [(i, x) for i, x, _ in items if x is not None]
    failed = [(i, msg) for i, x, msg in items if x is None]
    idx = torch.tensor([i for i, _ in ok], dtype=torch.int64)
    x = torch.from_numpy(np.stack([x for _, x in ok])) if ok else None
    return idx, x, failed


def embed_folder(
    folder,
    backbone: str,
    *,
    image_size: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    pretrained: bool = True,
    num_workers: int = 2,
    progress: bool = True,
    progress_every_s: float = 10.0,
    model: str | None = None,
    weights: str | None = None,
    signatures: bool = False,
    half: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]] | tuple[np.ndarray, np.ndarray, list, np.ndarray]:
    """Embed a streamed :class:`~elfs.data.folder.FolderImages`: files are decoded, resized (shorter side, then a
    centre crop) in ``num_workers`` DataLoader workers and embedded batch by batch, so memory holds one batch of
    pixels, never the set. Returns float32 ``[M, dim]`` features of the M decodable images, their indices into
    ``folder`` (sorted int64), and ``(index, reason)`` for each file that could not be decoded. ``model`` and
    ``weights`` as for :func:`embed_images`; with a crop_pct < 1 (timm) files are decoded at
    ``floor(size / crop_pct)`` and the centre ``size`` crop is embedded. ``signatures=True`` also returns each
    decodable image's :func:`pixel_signature` (of the decoded pixels), a fourth array. ``half``: features rounded
    to float16 batch by batch, as for :func:`embed_images`."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    get_spec(backbone)
    _check_size(image_size)
    dev = resolve_device(device)
    net, spec = build_backbone(backbone, pretrained=pretrained, model=model, weights=weights)
    size = spec.image_size if image_size is None else image_size
    net = net.to(device=dev, dtype=torch.float32).eval()
    label = model if backbone == "timm" and model else backbone
    loader = torch.utils.data.DataLoader(
        _DecodedFolder(folder, scale_size(spec, size), spec.interpolation),
        batch_size=batch_size,
        shuffle=False,
        num_workers=int(num_workers),
        collate_fn=_collate_decoded,
        pin_memory=dev.type == "cuda",
        persistent_workers=False,
    )
    out = _FeatureSink(len(folder), spec.dim, dev, half=half)  # filled in order; decodable rows packed first
    valid = np.empty(len(folder), dtype=np.int64)
    sig = np.empty((len(folder), SIGNATURE_SIDE**2), dtype=np.int8) if signatures else None
    m, failed = 0, []
    bar = progress_bar(len(folder), f"embed[{label}]", unit="img", enabled=progress, every_s=progress_every_s)
    with torch.no_grad(), bar:
        for idx, x, bad in loader:  # the workers decoded at the scale size already: no resize left (maybe a crop)
            failed.extend(bad)
            if x is not None:
                f = net(preprocess(x, spec, size, device=dev, resize=resize_placement(dev)))
                _check_features(f, label, spec.dim)
                out.put(m, f)
                valid[m : m + len(idx)] = idx.numpy()
                if sig is not None:
                    sig[m : m + len(idx)] = pixel_signature(x)
                m += len(idx)
            bar.update(len(idx) + len(bad))
    if sig is not None:
        return out.numpy(m), valid[:m], sorted(failed), sig[:m]
    return out.numpy(m), valid[:m], sorted(failed)
