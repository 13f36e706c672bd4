"""TEMI loss (method.md §4.4) against an independent plain-Python implementation and closed forms."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from elfs.cluster.loss import beta_pmi, instance_weights, temi_loss, update_marginal

# H=2 heads, B=2 pairs, C=3 clusters; fixed numbers so the reference below is fully explicit.
S0 = [[[1.0, 0.0, -1.0], [0.3, 0.2, 0.1]], [[0.0, 0.5, 0.2], [-0.4, 0.1, 0.6]]]
S1 = [[[0.2, 0.9, -0.3], [0.0, 0.0, 0.4]], [[0.7, -0.2, 0.1], [0.3, 0.3, -0.6]]]
T0 = [[[0.5, -0.5, 0.0], [0.1, 0.3, 0.2]], [[0.2, 0.1, 0.0], [-0.1, 0.4, 0.3]]]
T1 = [[[0.4, 0.1, -0.2], [0.0, 0.2, 0.3]], [[0.3, 0.0, 0.1], [0.2, 0.2, 0.1]]]
Q = [[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]]
BETA, TS, TT, M = 0.6, 0.5, 0.1, 0.9  # distinct temperatures catch a student/teacher swap


def _softmax(row, temp):
    e = [math.exp(v / temp) for v in row]
    z = sum(e)
    return [v / z for v in e]


def _reference(s0, s1, t0, t1, q, beta, ts, tt, m):
    """Plain-loop TEMI loss: returns (total, per-head, new marginal, weights)."""
    H, B, C = len(s0), len(s0[0]), len(s0[0][0])
    P = lambda x, temp: [[_softmax(x[h][i], temp) for i in range(B)] for h in range(H)]  # noqa: E731
    ps0, ps1, pt0, pt1 = P(s0, ts), P(s1, ts), P(t0, tt), P(t1, tt)
    qn = [
        [m * q[h][c] + (1 - m) * sum(pt0[h][i][c] + pt1[h][i][c] for i in range(B)) / (2 * B) for c in range(C)]
        for h in range(H)
    ]
    w = [sum(pt0[h][i][c] * pt1[h][i][c] for h in range(H) for c in range(C)) / H for i in range(B)]

    def ell(s, t, h, i):
        return -math.log(sum((s[h][i][c] * t[h][i][c]) ** beta / qn[h][c] for c in range(C)))

    heads = [
        0.5
        * (
            sum(w[i] * ell(ps1, pt0, h, i) for i in range(B)) / B
            + sum(w[i] * ell(ps0, pt1, h, i) for i in range(B)) / B
        )
        for h in range(H)
    ]
    return sum(heads) / H, heads, qn, w


def _t(x, grad=False):
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def test_matches_plain_loop_reference():
    out = temi_loss(
        _t(S0), _t(S1), _t(T0), _t(T1), _t(Q), beta=BETA, student_temp=TS, teacher_temp=TT, probs_momentum=M
    )
    total, heads, qn, w = _reference(S0, S1, T0, T1, Q, BETA, TS, TT, M)
    assert out.loss.item() == pytest.approx(total, rel=1e-6)
    np.testing.assert_allclose(out.head_losses.numpy(), heads, rtol=1e-6)
    np.testing.assert_allclose(out.marginal.numpy(), qn, rtol=1e-6)
    np.testing.assert_allclose(out.weights.numpy(), w, rtol=1e-6)
    assert not out.head_losses.requires_grad


def test_uniform_logits_closed_form():
    # All-zero logits: s = t = q = 1/C, w = 1/C, l = -(2 - 2 beta) log C, so L = -(2 - 2 beta) log(C) / C.
    H, B, C, beta = 3, 4, 5, 0.6
    z = torch.zeros(H, B, C)
    out = temi_loss(z, z, z, z, torch.full((H, C), 1 / C), beta=beta)
    expected = -(2 - 2 * beta) * math.log(C) / C
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    np.testing.assert_allclose(out.marginal.numpy(), 1 / C, rtol=1e-6)


def test_gradient_reaches_only_student_logits():
    s0, s1, t0, t1, q = _t(S0, True), _t(S1, True), _t(T0, True), _t(T1, True), _t(Q, True)
    q_before = q.detach().clone()
    out = temi_loss(s0, s1, t0, t1, q, beta=BETA, student_temp=TS, teacher_temp=TT, probs_momentum=M)
    out.loss.backward()
    assert s0.grad is not None and s0.grad.abs().sum() > 0
    assert s1.grad is not None and s1.grad.abs().sum() > 0
    assert t0.grad is None and t1.grad is None and q.grad is None
    assert torch.equal(q.detach(), q_before), "temi_loss must not modify the marginal in place"


def test_student_gradient_matches_finite_differences():
    s0 = _t(S0, True)
    kw = dict(beta=BETA, student_temp=TS, teacher_temp=TT, probs_momentum=M)
    temi_loss(s0, _t(S1), _t(T0), _t(T1), _t(Q), **kw).loss.backward()
    eps = 1e-6
    for idx in [(0, 0, 0), (1, 1, 2), (0, 1, 1)]:
        plus, minus = [list(map(lambda h: [list(r) for r in h], S0)) for _ in range(2)]
        plus[idx[0]][idx[1]][idx[2]] += eps
        minus[idx[0]][idx[1]][idx[2]] -= eps
        fd = (
            _reference(plus, S1, T0, T1, Q, BETA, TS, TT, M)[0] - _reference(minus, S1, T0, T1, Q, BETA, TS, TT, M)[0]
        ) / (2 * eps)
        assert s0.grad[idx].item() == pytest.approx(fd, rel=1e-4, abs=1e-8)


def test_marginal_is_updated_before_the_loss_uses_it():
    out = temi_loss(
        _t(S0), _t(S1), _t(T0), _t(T1), _t(Q), beta=BETA, student_temp=TS, teacher_temp=TT, probs_momentum=M
    )
    # Same pipeline but the loss reading the OLD marginal (what a wrong order would give).
    lt0 = torch.log_softmax(_t(T0) / TT, -1)
    lt1 = torch.log_softmax(_t(T1) / TT, -1)
    w = instance_weights(lt0.exp(), lt1.exp())
    ls0 = torch.log_softmax(_t(S0) / TS, -1)
    ls1 = torch.log_softmax(_t(S1) / TS, -1)

    def total(q):
        return (0.5 * ((w * beta_pmi(ls1, lt0, q, BETA)).mean(1) + (w * beta_pmi(ls0, lt1, q, BETA)).mean(1))).mean()

    assert out.loss.item() == pytest.approx(total(out.marginal).item(), rel=1e-10)
    assert abs(out.loss.item() - total(_t(Q)).item()) > 1e-3


def test_update_marginal_formula_and_momentum_edges():
    t0 = torch.softmax(_t(T0) / TT, -1)
    t1 = torch.softmax(_t(T1) / TT, -1)
    q = _t(Q)
    batch_mean = torch.cat([t0, t1], dim=1).mean(dim=1)
    torch.testing.assert_close(update_marginal(q, t0, t1, 0.9), 0.9 * q + 0.1 * batch_mean)
    torch.testing.assert_close(update_marginal(q, t0, t1, 0.0), batch_mean)
    torch.testing.assert_close(update_marginal(q, t0, t1, 1.0), q)
    assert torch.allclose(update_marginal(q, t0, t1, 0.9).sum(-1), torch.ones(2, dtype=torch.float64))


def test_instance_weights_hand_case():
    t0 = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.2, 0.8]]])
    t1 = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[1.0, 0.0], [0.2, 0.8]]])
    # item 0: head0 agrees (1), head1 disagrees (0) -> 0.5; item 1: (0.5) and (0.04 + 0.64) -> 0.59
    torch.testing.assert_close(instance_weights(t0, t1), torch.tensor([0.5, 0.59]))


def test_peaked_logits_give_finite_loss_and_gradients():
    # s*t underflows to 0 for some classes; (s t)^beta with beta<1 would have an infinite derivative there.
    s0 = torch.tensor([[[60.0, -60.0, 0.0]]], requires_grad=True)
    t1 = torch.tensor([[[-60.0, 60.0, 0.0]]])
    out = temi_loss(s0, s0.detach().clone(), t1.clone(), t1, torch.full((1, 3), 1 / 3), beta=0.6)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(s0.grad).all()


def test_bad_inputs_are_refused():
    z = torch.zeros(2, 3, 4)
    q = torch.full((2, 4), 0.25)
    with pytest.raises(ValueError, match="beta"):
        temi_loss(z, z, z, z, q, beta=0.0)
    with pytest.raises(ValueError, match="temperatures"):
        temi_loss(z, z, z, z, q, student_temp=0.0)
    with pytest.raises(ValueError, match=r"\[H, B, C\]"):
        temi_loss(z, z, torch.zeros(2, 3, 5), torch.zeros(2, 3, 5), q)
    with pytest.raises(ValueError, match="marginal"):
        update_marginal(torch.full((2, 5), 0.2), z, z)


def _dist_worker(rank: int, world: int, port: int, t0: torch.Tensor, t1: torch.Tensor, q: torch.Tensor, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        b = t0.shape[1] // world
        sl = slice(rank * b, (rank + 1) * b)
        out[rank] = update_marginal(q, t0[:, sl], t1[:, sl], 0.9)
    finally:
        dist.destroy_process_group()


def test_marginal_all_reduce_equals_full_batch_mean():
    # Two real gloo processes each see half of the batch; the all-reduced EMA must equal the full-batch one.
    g = torch.Generator().manual_seed(0)
    t0 = torch.softmax(torch.randn(2, 8, 3, generator=g), -1)
    t1 = torch.softmax(torch.randn(2, 8, 3, generator=g), -1)
    q = torch.full((2, 3), 1 / 3)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_dist_worker, args=(2, port, t0, t1, q, out), nprocs=2, join=True)
        results = [out[0], out[1]]
    expected = update_marginal(q, t0, t1, 0.9)
    local_only = update_marginal(q, t0[:, :4], t1[:, :4], 0.9)
    for r in results:
        torch.testing.assert_close(r, expected)
    assert not torch.allclose(local_only, expected)
