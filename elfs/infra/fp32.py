"""Full fp32 products where rounding would change an answer: the kNN graph and k-means compare distances whose
differences can be far below TF32's 10-bit mantissa, and the training's ``matmul_precision=high`` (set per
process) would otherwise reach them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def full_fp32() -> Iterator[None]:
    """Inside: torch's fp32 matmuls and convolutions in full precision (no TF32, no bf16 passes), whatever the
    process was set to; the setting is restored on the way out."""
    import torch

    saved = torch.get_float32_matmul_precision()
    cudnn = torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)
        torch.backends.cudnn.allow_tf32 = cudnn
