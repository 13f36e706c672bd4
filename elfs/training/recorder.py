"""Per-example training-dynamics statistics (AUM, forgetting, EL2N, correctness) accumulated in O(N) memory.

The recorder is fed the ordinary (train-mode, augmented) logits of every training minibatch together with the
examples' dataset indices, as ELFS's `TrainingDynamicsLogger` does (method.md §5), but instead of storing
N x epochs x classes logits it keeps running sums in tensors of size N, keyed by dataset index.

Deliberate difference from the reference code (method.md §10 item 10): an example that is never classified
correctly gets `forgetting = (max number of recorded epochs of any example) + 1`, more than any learned example
can reach, so that it sits at the HARD end of the forgetting ranking instead of looking easy with 0.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from elfs.infra.names import HARD_END as HARD_END  # which end of each score is hard (re-exported)

_FLOAT_BUFFERS = ("aum_logit_sum", "aum_prob_sum", "el2n_sum")
_INT_BUFFERS = ("num_records", "correct_count", "forgetting_count", "el2n_count", "last_epoch")
_BOOL_BUFFERS = ("prev_correct", "ever_correct")


def _margins(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (logit margin, probability margin, correct, EL2N) per row, computed in float64."""
    z = logits.detach().to(torch.float64)
    t = targets.view(-1, 1)
    p = torch.softmax(z, dim=1)
    z_y = z.gather(1, t).squeeze(1)
    p_y = p.gather(1, t).squeeze(1)
    z_other = z.scatter(1, t, float("-inf")).amax(dim=1)
    p_other = p.scatter(1, t, float("-inf")).amax(dim=1)
    correct = z.argmax(dim=1) == targets
    onehot = torch.zeros_like(p).scatter_(1, t, 1.0)
    el2n = torch.linalg.vector_norm(p - onehot, dim=1)
    return z_y - z_other, p_y - p_other, correct, el2n


class TrainingDynamicsRecorder(nn.Module):
    """Accumulates AUM / forgetting / EL2N / correctness per dataset index; state lives in (checkpointed) buffers.

    Each buffer has N + 1 entries: slot N is a write-only sink that absorbs ignored rows (duplicates of an index
    within a batch, or an example already recorded in this or a later epoch) so that `update` needs no
    host-device synchronisation. `scores()` only reads slots 0..N-1.
    """

    def __init__(self, num_examples: int, num_classes: int, el2n_epochs: int = 10) -> None:
        super().__init__()
        if int(num_examples) < 1:
            raise ValueError(f"num_examples must be >= 1, got {num_examples}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2 (a margin needs another class), got {num_classes}")
        if int(el2n_epochs) < 0:
            raise ValueError(f"el2n_epochs must be >= 0, got {el2n_epochs}")
        self.num_examples = int(num_examples)
        self.num_classes = int(num_classes)
        self.el2n_epochs = int(el2n_epochs)
        n = self.num_examples + 1
        for name in _FLOAT_BUFFERS:
            self.register_buffer(name, torch.zeros(n, dtype=torch.float64))
        for name in _INT_BUFFERS:
            self.register_buffer(name, torch.zeros(n, dtype=torch.int64))
        for name in _BOOL_BUFFERS:
            self.register_buffer(name, torch.zeros(n, dtype=torch.bool))
        self.last_epoch.fill_(-1)

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        """Move with the parent module between devices but keep the accumulator dtypes (no half-precision casts)."""
        dtypes = {k: b.dtype for k, b in self._buffers.items() if b is not None}
        super()._apply(fn, recurse)
        for k, dt in dtypes.items():
            if self._buffers[k].dtype != dt:
                self._buffers[k] = self._buffers[k].to(dt)
        return self

    def reset(self) -> None:
        """Forget everything recorded so far."""
        for buf in self._buffers.values():
            buf.zero_()
        self.last_epoch.fill_(-1)

    @torch.no_grad()
    def update(self, indices: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, epoch: int) -> None:
        """Record one minibatch of logits [B, C] for dataset `indices` [B] with labels `targets` [B] at `epoch`.

        An example counts at most once per epoch: later occurrences of an index in the same epoch (DDP padding,
        duplicates) and occurrences at an epoch not after its last recorded one are ignored. Value-range checks run
        when the tensors are on the CPU; on an accelerator an out-of-range index fails in the indexing kernel.
        """
        if indices.ndim != 1 or targets.ndim != 1 or logits.ndim != 2:
            raise ValueError(
                f"expected indices [B], logits [B, C], targets [B]; got shapes {tuple(indices.shape)}, "
                f"{tuple(logits.shape)}, {tuple(targets.shape)}"
            )
        b = indices.shape[0]
        if logits.shape[0] != b or targets.shape[0] != b:
            raise ValueError(f"batch sizes differ: indices {b}, logits {logits.shape[0]}, targets {targets.shape[0]}")
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} classes, the recorder expects {self.num_classes}")
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if b == 0:
            return
        dev = self.num_records.device
        indices = indices.to(device=dev, dtype=torch.int64)
        targets = targets.to(device=dev, dtype=torch.int64)
        logits = logits.to(dev)
        if dev.type == "cpu":
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= self.num_examples:
                raise ValueError(f"indices must lie in [0, {self.num_examples}), got range [{lo}, {hi}]")
            lo, hi = int(targets.min()), int(targets.max())
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(f"targets must lie in [0, {self.num_classes}), got range [{lo}, {hi}]")

        # first occurrence of each index in this batch (stable sort keeps the original order among equals)
        sorted_idx, order = torch.sort(indices, stable=True)
        first_sorted = torch.ones_like(sorted_idx, dtype=torch.bool)
        first_sorted[1:] = sorted_idx[1:] != sorted_idx[:-1]
        is_first = torch.empty_like(first_sorted).scatter_(0, order, first_sorted)
        keep = is_first & (self.last_epoch[indices] < int(epoch))
        slot = torch.where(keep, indices, torch.full_like(indices, self.num_examples))  # ignored rows -> sink

        m_logit, m_prob, correct, el2n = _margins(logits, targets)
        seen = self.num_records[slot] > 0
        forgot = seen & self.prev_correct[slot] & ~correct

        self.aum_logit_sum[slot] = self.aum_logit_sum[slot] + m_logit
        self.aum_prob_sum[slot] = self.aum_prob_sum[slot] + m_prob
        self.correct_count[slot] = self.correct_count[slot] + correct.long()
        self.forgetting_count[slot] = self.forgetting_count[slot] + forgot.long()
        self.ever_correct[slot] = self.ever_correct[slot] | correct
        self.prev_correct[slot] = correct
        self.num_records[slot] = self.num_records[slot] + 1
        self.last_epoch[slot] = int(epoch)
        if int(epoch) < self.el2n_epochs:
            self.el2n_sum[slot] = self.el2n_sum[slot] + el2n
            self.el2n_count[slot] = self.el2n_count[slot] + 1

    def scores(self) -> dict[str, np.ndarray]:
        """Per-example scores (length N, by dataset index); see HARD_END for the direction of each.

        Examples never recorded hold NaN (float scores) or -1 (forgetting, correctness); `num_records` says how
        many epochs each example was recorded in, `never_learned` flags recorded examples never classified right.
        """
        n = self.num_examples
        cnt = self.num_records[:n].cpu().numpy()
        recorded = cnt > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            aum = np.where(recorded, self.aum_logit_sum[:n].cpu().numpy() / np.maximum(cnt, 1), np.nan)
            e_cnt = self.el2n_count[:n].cpu().numpy()
            el2n = np.where(e_cnt > 0, self.el2n_sum[:n].cpu().numpy() / np.maximum(e_cnt, 1), np.nan)
        aum_prob = np.where(recorded, self.aum_prob_sum[:n].cpu().numpy(), np.nan)
        never = recorded & ~self.ever_correct[:n].cpu().numpy()
        max_epochs = int(cnt.max()) if cnt.size else 0
        forgetting = self.forgetting_count[:n].cpu().numpy().copy()
        forgetting[never] = max_epochs + 1
        forgetting[~recorded] = -1
        correctness = np.where(recorded, self.correct_count[:n].cpu().numpy(), -1)
        return {
            "aum": aum.astype(np.float64),
            "aum_prob_sum": aum_prob.astype(np.float64),
            "forgetting": forgetting.astype(np.int64),
            "el2n": el2n.astype(np.float64),
            "correctness": correctness.astype(np.int64),
            "never_learned": never.astype(bool),
            "num_records": cnt.astype(np.int64),
        }

    def extra_repr(self) -> str:
        return f"num_examples={self.num_examples}, num_classes={self.num_classes}, el2n_epochs={self.el2n_epochs}"
