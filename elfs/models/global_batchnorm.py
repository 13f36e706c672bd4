"""Batch normalisation over the GLOBAL batch of a DDP run, on any device.

With plain BatchNorm each of W ranks normalises by the statistics of its own B/W examples, so "batch_size" would
not mean the same on 1 and on W devices. On GPUs Lightning's ``sync_batchnorm`` (torch's SyncBatchNorm, fused CUDA
kernels) fixes that; torch's SyncBatchNorm refuses CPU tensors, so CPU DDP runs (and the tests that compare a
2-process run with a 1-process one) use :class:`GlobalBatchNorm`: the per-channel sums are all-reduced inside
autograd, so the forward statistics and the backward pass are exactly the global batch's, up to the order of
float additions.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightning.pytorch.plugins.layer_sync import LayerSync
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of every rank's input is the sum of all ranks' output gradients (each rank's
    loss depends on every rank's contribution), so DDP's gradient average is the global batch's gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm{1,2,3}d whose training statistics are those of the whole DDP batch (two-pass mean and variance,
    as F.batch_norm computes them); outside DDP training it is the plain layer."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions [B, C, ...], got {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not (self.training and active):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        # the example count travels with the sums (one all-reduce) and stays a tensor: no host sync per layer
        wide = torch.promote_types(x.dtype, torch.float32)  # counts are exact in it
        count = torch.full((1,), float(x.numel() // x.shape[1]), dtype=wide, device=x.device)
        sums = _AllReduceSum.apply(torch.cat([x.sum(dims).to(wide), count]))
        n = sums[-1].detach()
        mean = (sums[:-1] / n).to(x.dtype)
        centred = x - mean.view(shape)
        var = (_AllReduceSum.apply((centred * centred).sum(dims)) / n).to(
            x.dtype
        )  # biased, as batch norm normalises with
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1.0).clamp_min(1.0)), alpha=m)  # unbiased
        return out


class GlobalBatchNormSync(LayerSync):
    """Lightning plugin (``plugins=[GlobalBatchNormSync()]``): swaps every BatchNorm layer for
    :class:`GlobalBatchNorm` before DDP wraps the model, and back after the fit."""

    def apply(self, model: nn.Module) -> nn.Module:
        return _swap(model, to_global=True)

    def revert(self, model: nn.Module) -> nn.Module:
        return _swap(model, to_global=False)


def _swap(module: nn.Module, *, to_global: bool) -> nn.Module:
    """The same parameters and buffers in the other class (the original class is remembered on the way in)."""
    out = module
    is_bn = isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, nn.SyncBatchNorm)
    if to_global and is_bn and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        out._elfs_original = type(module)
    elif not to_global and isinstance(module, GlobalBatchNorm):
        cls = getattr(module, "_elfs_original", nn.BatchNorm2d)
        out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
    if out is not module:
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _swap(child, to_global=to_global))
    return out
