"""Proxy / evaluation classifiers: a registry of models built by name (see `build_model`)."""

from __future__ import annotations

from torch import nn

from elfs.infra.names import MODEL_INPUTS, uses_embeddings  # what each model consumes; the registry below builds them
from elfs.models.mlp import MLP
from elfs.models.resnet_cifar import ResNetCifar, resnet18_cifar
from elfs.models.small_cnn import SmallCNN


class GlobalAvgPool(nn.Module):
    """Mean over height and width, [B, C, H, W] -> [B, C, 1, 1]: what AdaptiveAvgPool2d((1, 1)) computes, with a
    backward that CUDA runs deterministically (adaptive pooling's backward refuses deterministic=True there)."""

    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True)


def _resnet34(num_classes: int, in_channels: int) -> nn.Module:
    from torchvision.models import resnet34

    model = resnet34(weights=None, num_classes=num_classes)
    model.avgpool = GlobalAvgPool()
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


def build_model(
    name: str, *, num_classes: int, in_channels: int = 3, in_dim: int | None = None, width: int = 32
) -> nn.Module:
    """Build a freshly initialised classifier by registry name (see MODEL_INPUTS for the names).

    `width` is the channel width of "small_cnn" and the hidden size of "mlp"; the ResNets have their
    standard widths and ignore it. `in_dim` (embedding size) is required for "mlp" only.
    """
    if name not in MODEL_INPUTS:
        raise ValueError(f"unknown model {name!r}; valid names: {sorted(MODEL_INPUTS)}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if int(in_channels) < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if int(width) < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if name == "mlp":
        if in_dim is None or int(in_dim) < 1:
            raise ValueError(f"model 'mlp' needs the embedding size in_dim >= 1, got in_dim={in_dim}")
        return MLP(int(in_dim), int(num_classes), width=int(width))
    if name == "small_cnn":
        return SmallCNN(int(num_classes), in_channels=int(in_channels), width=int(width))
    if name == "resnet18_cifar":
        return resnet18_cifar(int(num_classes), in_channels=int(in_channels))
    return _resnet34(int(num_classes), int(in_channels))


__all__ = ["MODEL_INPUTS", "build_model", "uses_embeddings", "MLP", "SmallCNN", "ResNetCifar", "resnet18_cifar"]
