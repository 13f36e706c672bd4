"""The TEMI multi-head loss (method.md §4.4) as pure functions over [H, B, C] logits.

Per step, in this order: (1) EMA-update the per-head teacher marginal q with the teacher probabilities of both
views, (2) instance weights w_i from teacher-teacher agreement averaged over heads, (3) the beta-PMI term
-log sum_c (s_v t_u)^beta / q(c) for the two cross-view pairs, weighted and averaged, (4) mean over heads.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "TEMILossOutput",
    "update_marginal",
    "instance_weights",
    "beta_pmi",
    "temi_loss",
]


class TEMILossOutput(NamedTuple):
    """Result of :func:`temi_loss`: total loss (with grad), per-head losses (detached), the updated marginal,
    and the instance weights used."""

    loss: Tensor  # scalar, mean over heads, carries the student gradient
    head_losses: Tensor  # [H], detached
    marginal: Tensor  # [H, C], the EMA-updated teacher marginal that the loss used
    weights: Tensor  # [B], detached


def _dist_world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _up(x: Tensor) -> Tensor:
    """Half-precision inputs (autocast) are computed in float32; float32/float64 are kept as they are."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _check_probs_views(t0: Tensor, t1: Tensor, name: str = "teacher") -> None:
    if t0.ndim != 3 or t0.shape != t1.shape:
        raise ValueError(
            f"{name} views must both be [H, B, C] with equal shapes, got {tuple(t0.shape)} and {tuple(t1.shape)}"
        )


@torch.no_grad()
def update_marginal(
    marginal: Tensor, t0: Tensor, t1: Tensor, momentum: float = 0.9, *, all_reduce: bool = True
) -> Tensor:
    """EMA of the teacher's cluster marginal per head: q <- m q + (1-m) mean over the 2B rows of [t0; t1].

    t0, t1: teacher probabilities [H, B, C]; marginal: [H, C]. Returns a new tensor (the input is not modified).
    With ``all_reduce`` and an initialised process group of size > 1, the batch mean is taken over all ranks.
    """
    _check_probs_views(t0, t1)
    if marginal.shape != (t0.shape[0], t0.shape[2]):
        raise ValueError(f"marginal must be [H, C] = {(t0.shape[0], t0.shape[2])}, got {tuple(marginal.shape)}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    batch_sum = _up(t0).sum(dim=1) + _up(t1).sum(dim=1)  # [H, C]
    rows = 2 * t0.shape[1]
    world = _dist_world_size() if all_reduce else 1
    if world > 1:
        dist.all_reduce(batch_sum, op=dist.ReduceOp.SUM)
    batch_mean = batch_sum / (rows * world)
    return _up(marginal) * momentum + batch_mean * (1.0 - momentum)


@torch.no_grad()
def instance_weights(t0: Tensor, t1: Tensor) -> Tensor:
    """Per-pair weight w_i = (1/H) sum_h sum_c t0^h(c|i) t1^h(c|i): teacher agreement of anchor and neighbour."""
    _check_probs_views(t0, t1)
    return (_up(t0) * _up(t1)).sum(dim=-1).mean(dim=0)


def beta_pmi(log_s: Tensor, log_t: Tensor, marginal: Tensor, beta: float) -> Tensor:
    """l_i = -log sum_c (s(c|i) t(c|i))^beta / q(c), per head and item ([H, B]), computed in log space.

    log_s, log_t: log-probabilities [H, B, C]; marginal q: [H, C]. Log-space keeps the gradient finite where
    s*t underflows to 0 (d/dx x^beta is infinite at 0 for beta < 1).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    log_q = _up(marginal).log().unsqueeze(1)  # [H, 1, C]
    return -torch.logsumexp(beta * (log_s + log_t) - log_q, dim=-1)


def temi_loss(
    student0: Tensor,
    student1: Tensor,
    teacher0: Tensor,
    teacher1: Tensor,
    marginal: Tensor,
    *,
    beta: float = 0.6,
    student_temp: float = 0.1,
    teacher_temp: float = 0.1,
    probs_momentum: float = 0.9,
    all_reduce: bool = True,
) -> TEMILossOutput:
    """TEMI loss from student/teacher logits of view 0 (anchors) and view 1 (neighbours), each [H, B, C].

    The teacher marginal is EMA-updated first and the loss uses the updated value (method.md §4.4):
    L^h = 1/2 [mean_i w_i l_i(s1, t0) + mean_i w_i l_i(s0, t1)], total = mean_h L^h. Gradients reach only the
    student logits. Returns the loss, detached per-head losses, the new marginal and the weights.
    """
    _check_probs_views(student0, student1, "student")
    _check_probs_views(teacher0, teacher1)
    if student0.shape != teacher0.shape:
        raise ValueError(
            f"student and teacher logits must have the same [H, B, C] shape, got {tuple(student0.shape)} "
            f"and {tuple(teacher0.shape)}"
        )
    if student_temp <= 0 or teacher_temp <= 0:
        raise ValueError(f"temperatures must be > 0, got student_temp={student_temp}, teacher_temp={teacher_temp}")
    with torch.no_grad():
        lt0 = F.log_softmax(_up(teacher0.detach()) / teacher_temp, dim=-1)
        lt1 = F.log_softmax(_up(teacher1.detach()) / teacher_temp, dim=-1)
        t0, t1 = lt0.exp(), lt1.exp()
        new_marginal = update_marginal(marginal, t0, t1, probs_momentum, all_reduce=all_reduce)
        w = instance_weights(t0, t1)  # [B]
    ls0 = F.log_softmax(_up(student0) / student_temp, dim=-1)
    ls1 = F.log_softmax(_up(student1) / student_temp, dim=-1)
    l10 = beta_pmi(ls1, lt0, new_marginal, beta)  # student view 1 vs teacher view 0, [H, B]
    l01 = beta_pmi(ls0, lt1, new_marginal, beta)  # student view 0 vs teacher view 1
    head = 0.5 * ((w * l10).mean(dim=1) + (w * l01).mean(dim=1))  # [H]
    return TEMILossOutput(head.mean(), head.detach(), new_marginal, w)
