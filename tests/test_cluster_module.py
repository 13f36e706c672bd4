"""TEMI Lightning module and fit_temi: clustering quality on a synthetic mixture, determinism, loop-vs-batched
heads, last-layer freeze, teacher EMA, lr schedule, neighbour sampling, argument validation."""

from __future__ import annotations

import copy
import csv
import dataclasses
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger

from elfs.cluster import TEMIResult, fit_temi, head_assignments, kmeans_labels, pseudo_labels
from elfs.cluster.loss import temi_loss
from elfs.cluster.metrics import hungarian_accuracy
from elfs.cluster.module import TEMIModule, make_heads, momentum_at
from elfs.config import ClusterConfig
from elfs.infra.runtime import Runtime


def _mixture(seed: int = 0, n: int = 600, k: int = 5, d: int = 32, sep: float = 4.0, n_nbrs: int = 20):
    """Well-separated Gaussian mixture plus a brute-force cosine kNN (self excluded)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d))
    centers *= sep / np.linalg.norm(centers, axis=1, keepdims=True)
    y = np.repeat(np.arange(k), n // k)
    x = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    np.fill_diagonal(sim, -np.inf)
    knn = np.argsort(-sim, axis=1, kind="stable")[:, :n_nbrs]
    return x, knn, y


TEMI_CFG = ClusterConfig(
    epochs=20,
    batch_size=128,
    num_heads=4,
    hidden_dim=64,
    bottleneck_dim=32,
    beta=0.6,
    student_temp=0.1,
    teacher_temp=0.1,
    teacher_momentum=0.9,
    probs_momentum=0.9,
    lr=1e-3,
    min_lr=1e-3,
    warmup_epochs=1,
    weight_decay=1e-4,
    freeze_last_layer_epochs=1,
    knn_k=20,
    rule="best_head",
    head_impl="loop",
    embed_norm=False,
)
FIT_KW = dict(seed=0, runtime=Runtime(trainer_kwargs={"accelerator": "cpu"}))


def _trainer(**kw) -> L.Trainer:
    base = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    base.update(kw)
    return L.Trainer(**base)


def _module(x, knn, seed: int = 0, **kw) -> TEMIModule:
    base = dict(
        num_heads=3,
        hidden_dim=32,
        bottleneck_dim=16,
        batch_size=100,
        knn_k=10,
        lr=1e-3,
        min_lr=1e-3,
        warmup_epochs=0,
        freeze_last_layer_epochs=0,
        teacher_momentum=0.9,
    )
    base.update(kw)
    return TEMIModule(x, knn, 5, ClusterConfig(**base), seed=seed)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    return _mixture()


@pytest.fixture(scope="module")
def fitted(data, one_torch_thread):
    x, knn, _ = data
    return fit_temi(x, knn, 5, TEMI_CFG, **FIT_KW)


def test_fit_temi_recovers_mixture_clusters(data, fitted):
    _, _, y = data
    assert isinstance(fitted, TEMIResult)
    assert fitted.pseudo_labels.dtype == np.int64 and fitted.pseudo_labels.shape == (600,)
    assert fitted.head_assignments.shape == (4, 600) and fitted.head_losses.shape == (4,)
    assert fitted.best_head == int(np.argmin(fitted.head_losses))
    np.testing.assert_array_equal(fitted.pseudo_labels, fitted.head_assignments[fitted.best_head])
    assert len(fitted.loss_curve) == TEMI_CFG.epochs and fitted.loss_curve[-1] < fitted.loss_curve[0] - 0.3
    assert hungarian_accuracy(fitted.pseudo_labels, y) > 0.95  # diagnostics only: truth never enters fit_temi
    ensemble = pseudo_labels(fitted.head_assignments, fitted.head_losses, "ensemble")
    assert hungarian_accuracy(ensemble, y) > 0.95


def test_fit_temi_is_deterministic_given_seed(data, fitted):
    x, knn, _ = data
    again = fit_temi(x, knn, 5, TEMI_CFG, **FIT_KW)
    np.testing.assert_array_equal(again.pseudo_labels, fitted.pseudo_labels)
    np.testing.assert_array_equal(again.head_assignments, fitted.head_assignments)
    np.testing.assert_array_equal(again.head_losses, fitted.head_losses)
    assert again.loss_curve == fitted.loss_curve


def test_kmeans_baseline(data):
    x, _, y = data
    labels = kmeans_labels(x, 5, seed=0)
    assert labels.dtype == np.int64 and hungarian_accuracy(labels, y) > 0.95
    np.testing.assert_array_equal(labels, kmeans_labels(x, 5, seed=0))
    with pytest.raises(ValueError, match="num_clusters"):
        kmeans_labels(x, 1, seed=0)


def _perturbed(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: v.detach() + 0.05 * torch.randn(v.shape, generator=g) for k, v in state.items()}


def test_batched_and_loop_heads_give_same_outputs_loss_and_gradients():
    torch.manual_seed(0)
    H, D, B, C = 3, 16, 24, 5
    loop, batched = make_heads("loop", H, D, 32, 8, C), make_heads("batched", H, D, 32, 8, C)
    batched.load_stacked(loop.stacked_state())
    t_loop, t_batched = copy.deepcopy(loop), copy.deepcopy(batched)
    t_state = _perturbed(loop.stacked_state(), 1)  # a teacher that differs from the student
    t_loop.load_stacked(t_state)
    t_batched.load_stacked(t_state)
    x = torch.randn(2 * B, D)
    q = torch.softmax(torch.randn(H, C), -1)

    outs = {}
    for name, s_heads, t_heads in (("loop", loop, t_loop), ("batched", batched, t_batched)):
        s = s_heads(x)
        with torch.no_grad():
            t = t_heads(x)
        out = temi_loss(s[:, :B], s[:, B:], t[:, :B], t[:, B:], q)
        out.loss.backward()
        grads = {
            k: (torch.stack([p.grad for p in v]) if isinstance(v, list) else v.grad)
            for k, v in _stacked_params(s_heads).items()
        }
        outs[name] = (s.detach(), out, grads)
    (s_l, o_l, g_l), (s_b, o_b, g_b) = outs["loop"], outs["batched"]
    assert s_l.shape == (H, 2 * B, C)
    torch.testing.assert_close(s_b, s_l, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(o_b.loss, o_l.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(o_b.head_losses, o_l.head_losses, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(o_b.marginal, o_l.marginal, atol=1e-6, rtol=1e-5)
    for k in g_l:
        assert g_l[k].abs().sum() > 0, k
        torch.testing.assert_close(g_b[k], g_l[k], atol=1e-5, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")


def _stacked_params(heads) -> dict:
    """Parameters in stacked-state order: lists of per-head Parameters (loop) or the stacked Parameter."""
    if hasattr(heads, "heads"):
        hs = heads.heads
        return {
            "w1": [h.fc1.weight for h in hs],
            "b1": [h.fc1.bias for h in hs],
            "w2": [h.fc2.weight for h in hs],
            "b2": [h.fc2.bias for h in hs],
            "g": [h.weight_g for h in hs],
            "v": [h.weight_v for h in hs],
        }
    return {k: getattr(heads, k) for k in ("w1", "b1", "w2", "b2", "g", "v")}


def test_batched_and_loop_modules_train_identically(data):
    x, knn, _ = data
    mods = {}
    for impl in ("loop", "batched"):
        mods[impl] = _module(x, knn, head_impl=impl, seed=3)
    mods["batched"].student.load_stacked(mods["loop"].student.stacked_state())
    mods["batched"].teacher.load_stacked(mods["loop"].teacher.stacked_state())
    init = {k: v.detach().clone() for k, v in mods["loop"].student.stacked_state().items()}
    for m in mods.values():
        _trainer(max_steps=4).fit(m)
    s_l, s_b = mods["loop"].student.stacked_state(), mods["batched"].student.stacked_state()
    t_l, t_b = mods["loop"].teacher.stacked_state(), mods["batched"].teacher.stacked_state()
    for k in s_l:
        assert (s_l[k] - init[k]).abs().max() > 1e-3, f"{k} did not train, the comparison would be vacuous"
        torch.testing.assert_close(s_b[k], s_l[k], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(t_b[k], t_l[k], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mods["batched"].marginal, mods["loop"].marginal, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "impl,decay,no_decay",
    [
        ("loop", {"fc1.weight", "fc2.weight", "weight_g", "weight_v"}, {"fc1.bias", "fc2.bias"}),
        ("batched", {"w1", "w2", "g", "v"}, {"b1", "b2"}),
    ],
)
def test_adamw_param_groups(data, impl, decay, no_decay):
    x, knn, _ = data
    m = _module(x, knn, head_impl=impl, weight_decay=0.05)
    names = {id(p): n.split(".", 2)[-1] if impl == "loop" else n for n, p in m.student.named_parameters()}
    g_decay, g_none = m.param_groups()
    assert g_decay["weight_decay"] == 0.05 and g_none["weight_decay"] == 0.0
    assert {names[id(p)] for p in g_decay["params"]} == decay
    assert {names[id(p)] for p in g_none["params"]} == no_decay
    assert len(g_decay["params"]) + len(g_none["params"]) == len(list(m.student.parameters()))
    assert not any(p.requires_grad for p in m.teacher.parameters())


def test_head_assignments_are_per_head_teacher_argmax(data):
    x, knn, _ = data
    m = _module(x, knn, embed_norm=True)
    a = head_assignments(m, x, batch_size=128)  # several chunks
    xt = torch.nn.functional.normalize(torch.from_numpy(x), dim=-1)
    with torch.no_grad():
        expected = np.stack([h(xt).argmax(-1).numpy() for h in m.teacher.heads])
    assert a.dtype == np.int64 and a.shape == (3, 600)
    np.testing.assert_array_equal(a, expected)


class _Snapshots(L.Callback):
    """Record the student's stacked weights at the end of every epoch and the lr at every batch."""

    def __init__(self):
        self.epochs, self.lrs = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs.append({k: v.detach().clone() for k, v in pl_module.student.stacked_state().items()})


def test_last_layer_frozen_during_first_epoch_only(data):
    x, knn, _ = data
    m = _module(x, knn, freeze_last_layer_epochs=1)
    init = {k: v.detach().clone() for k, v in m.student.stacked_state().items()}
    snap = _Snapshots()
    _trainer(max_epochs=2, callbacks=[snap]).fit(m)
    e0, e1 = snap.epochs
    for k in ("g", "v"):
        assert torch.equal(e0[k], init[k]), f"last layer {k} changed during the frozen epoch"
        assert not torch.equal(e1[k], e0[k]), f"last layer {k} did not train after the frozen epoch"
    for k in ("w1", "b1", "w2", "b2"):
        assert not torch.equal(e0[k], init[k]), f"{k} did not train during epoch 0"


def test_teacher_is_ema_of_student_after_one_step(data):
    x, knn, _ = data
    m = _module(x, knn, teacher_momentum=0.9, freeze_last_layer_epochs=0)
    theta0 = {k: v.detach().clone() for k, v in m.student.stacked_state().items()}
    for k, v in m.teacher.stacked_state().items():
        assert torch.equal(v, theta0[k])  # the teacher starts as a copy of the student
    _trainer(max_steps=1).fit(m)
    theta1 = m.student.stacked_state()
    teacher = m.teacher.stacked_state()
    for k in theta0:
        assert not torch.allclose(theta1[k], theta0[k])
        torch.testing.assert_close(teacher[k], 0.9 * theta0[k] + 0.1 * theta1[k], atol=1e-7, rtol=1e-6)
    # The marginal buffer moved away from uniform by one EMA step and is still a distribution per head.
    assert not torch.allclose(m.marginal, torch.full((3, 5), 0.2))
    torch.testing.assert_close(m.marginal.sum(-1), torch.ones(3))


class _TeacherSnapshots(L.Callback):
    def __init__(self):
        self.states = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.states.append({k: v.detach().clone() for k, v in pl_module.teacher.stacked_state().items()})


def test_teacher_momentum_schedule_is_applied_per_step(data):
    x, knn, _ = data
    # cosine 0.5 -> 1.0 over 2 steps: step 0 uses m=0.5, step 1 uses m=1.0 (teacher frozen).
    m = _module(x, knn, teacher_momentum=0.5, teacher_momentum_end=1.0)
    theta0 = {k: v.detach().clone() for k, v in m.student.stacked_state().items()}
    snap, student1 = _TeacherSnapshots(), {}

    class _Student(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 0:
                student1.update({k: v.detach().clone() for k, v in pl_module.student.stacked_state().items()})

    _trainer(max_steps=2, callbacks=[_Student(), snap]).fit(m)
    t1, t2 = snap.states
    for k in theta0:
        torch.testing.assert_close(t1[k], 0.5 * theta0[k] + 0.5 * student1[k])
        torch.testing.assert_close(t2[k], t1[k], rtol=0, atol=0)
    assert not torch.allclose(m.student.stacked_state()["w1"], student1["w1"])


def test_teacher_momentum_cosine_schedule():
    assert momentum_at(0, start=0.996, end=0.996, total_iters=100) == 0.996
    assert momentum_at(0, start=0.9, end=1.0, total_iters=11) == pytest.approx(0.9)
    assert momentum_at(5, start=0.9, end=1.0, total_iters=11) == pytest.approx(0.95)
    assert momentum_at(10, start=0.9, end=1.0, total_iters=11) == pytest.approx(1.0)


def _expected_lr(it, base, final, warmup, total):
    if it < warmup:
        return base * it / warmup
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * (it - warmup) / (total - warmup)))


def test_lr_warmup_cosine_schedule_and_logging(data, tmp_path):
    x, knn, _ = data
    m = _module(x, knn, lr=1e-3, min_lr=1e-4, warmup_epochs=1, batch_size=100)  # 6 steps per epoch
    snap = _Snapshots()
    logger = CSVLogger(tmp_path, name="temi")
    _trainer(max_epochs=3, callbacks=[snap], logger=logger, log_every_n_steps=1).fit(m)
    base, final = 1e-3 * 100 / 256, 1e-4 * 100 / 256
    assert len(snap.lrs) == 18
    for it, lrs in enumerate(snap.lrs):
        assert lrs == pytest.approx([_expected_lr(it, base, final, 6, 18)] * 2, rel=1e-9, abs=1e-15), it
    assert snap.lrs[0] == [0.0, 0.0] and snap.lrs[6][0] == pytest.approx(base)
    # Best head = argmin of the last epoch's mean head losses; both logged.
    assert int(m.best_head) == int(torch.argmin(m.head_losses)) and torch.isfinite(m.head_losses).all()
    with open(f"{logger.log_dir}/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    cols = set(rows[0])
    assert {"train/loss_step", "train/loss_epoch", "train/best_head_loss"} <= cols
    logged = [float(r["train/best_head_loss"]) for r in rows if r.get("train/best_head_loss")]
    assert logged[-1] == pytest.approx(float(m.head_losses.min()), rel=1e-5)
    # the config stays in checkpoints, not in the logger's run config (W&B would put `beta`, `lr` at the top level)
    hparams = Path(logger.log_dir) / "hparams.yaml"
    assert not hparams.exists() or "lr" not in (yaml.safe_load(hparams.read_text()) or {})
    assert m.hparams["cluster"]["lr"] == 1e-3 and m.hparams["cluster"]["_type"] == "ClusterConfig"


def test_no_warmup_starts_at_peak_lr(data):
    x, knn, _ = data
    m = _module(x, knn, lr=2e-3, min_lr=2e-3, warmup_epochs=0, batch_size=128)
    snap = _Snapshots()
    _trainer(max_steps=2, callbacks=[snap]).fit(m)
    assert snap.lrs[0] == pytest.approx([2e-3 * 128 / 256] * 2)


def test_neighbour_sampling_uses_first_knn_k_columns_uniformly(data):
    x, knn, _ = data
    m = _module(x, knn, knn_k=2)
    idx = torch.arange(600)
    j = np.stack([m.sample_neighbours(idx, epoch).numpy() for epoch in range(20)])  # [20 epochs, 600]
    first, second = knn[:, 0], knn[:, 1]
    assert np.all((j == first) | (j == second))
    frac_first = np.mean(j == first)
    assert 0.45 < frac_first < 0.55
    # a function of (seed, epoch, anchor): regardless of global RNG state, of the batch, of the position in it
    torch.manual_seed(123)
    again = _module(x, knn, knn_k=2)
    perm = torch.randperm(600)
    np.testing.assert_array_equal(again.sample_neighbours(idx[perm], 7).numpy(), j[7][perm.numpy()])
    assert (_module(x, knn, knn_k=2, seed=1).sample_neighbours(idx, 7).numpy() != j[7]).mean() > 0.3


def test_data_stays_out_of_checkpoints_and_ddp_buffers(data):
    """The N x D embeddings and the kNN index are plain tensors: no checkpoint stores them and DDP, which
    broadcasts every buffer from rank 0 before each forward, never sends them."""
    x, knn, _ = data
    m = _module(x, knn)
    sd = m.state_dict()
    assert "embeddings" not in sd and "knn_idx" not in sd
    assert {"marginal", "best_head", "head_losses"} <= set(sd)
    big = [name for name, b in m.named_buffers() if b.numel() >= x.shape[0]]
    assert big == []
    torch.testing.assert_close(sd["marginal"], torch.full((3, 5), 0.2))
    assert m.knn_idx.shape == (600, 10)  # only the first knn_k columns are kept
    loader = m.train_dataloader()
    assert loader.drop_last and len(loader) == 6


@pytest.mark.parametrize(
    "override,match",
    [
        ({"knn_k": 21}, "knn_k"),
        ({"num_heads": 0}, "num_heads"),
        ({"beta": 0.0}, "beta"),
        ({"head_impl": "vmap"}, "head_impl"),
        ({"rule": "oracle"}, "rule"),
        ({"epochs": 0}, "epochs"),
        ({"teacher_momentum": 1.5}, "teacher_momentum"),
    ],
)
def test_fit_temi_validates_arguments(data, override, match):
    x, knn, _ = data
    with pytest.raises(ValueError, match=match):
        fit_temi(x, knn, 5, dataclasses.replace(TEMI_CFG, **override), **FIT_KW)


def test_fit_temi_validates_shapes(data):
    x, knn, _ = data
    with pytest.raises(ValueError, match="num_clusters"):
        fit_temi(x, knn, 1, TEMI_CFG, **FIT_KW)
    with pytest.raises(ValueError, match="knn_idx"):
        fit_temi(x, knn[:-1], 5, TEMI_CFG, **FIT_KW)
    with pytest.raises(ValueError, match="knn_idx entries"):
        fit_temi(x, knn + 600, 5, TEMI_CFG, **FIT_KW)


_DDP_TEMI = """
import sys, dataclasses, numpy as np, torch
sys.path.insert(0, sys.argv[2])
from test_cluster_module import _mixture, TEMI_CFG
from elfs.cluster import fit_temi
from elfs.infra.runtime import Runtime
torch.set_num_threads(1)
x, knn, _ = _mixture(n=640)
cfg = dataclasses.replace(TEMI_CFG, epochs=4, batch_size=128)
ddp = Runtime(trainer_kwargs=dict(strategy="ddp_fork", accelerator="cpu", devices=2))
r = fit_temi(x, knn, 5, cfg, seed=0, runtime=ddp)
np.savez(f"{sys.argv[1]}/temi.npz", head_losses=r.head_losses, best_head=r.best_head, labels=r.pseudo_labels)
"""


@pytest.mark.slow
def test_two_processes_give_the_one_process_head_losses_and_head(tmp_path, one_torch_thread):
    """TEMI's epoch sums are every rank's, reduced once an epoch: with 2 DDP processes the per-head losses and the
    chosen head are those of 1 process (they were rank 0's alone while the sums were DDP-broadcast buffers)."""
    import os
    import subprocess
    import sys

    x, knn, _ = _mixture(n=640)
    cfg = dataclasses.replace(TEMI_CFG, epochs=4, batch_size=128)
    one = fit_temi(x, knn, 5, cfg, **FIT_KW)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    here = str(Path(__file__).parent)
    res = subprocess.run(
        [sys.executable, "-c", _DDP_TEMI, str(tmp_path), here], capture_output=True, text=True, timeout=300, env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    two = np.load(tmp_path / "temi.npz")
    np.testing.assert_allclose(two["head_losses"], one.head_losses, rtol=1e-4, atol=1e-5)
    assert int(two["best_head"]) == one.best_head
    assert np.mean(two["labels"] == one.pseudo_labels) >= 0.99


def test_max_steps_ends_a_large_set_early_with_the_schedule_compressed(data):
    """cluster.max_steps: the run stops after max_steps optimizer steps, mid-epoch; warm-up and the frozen last
    layer take the same share of the shorter run (not whole epochs of the long one); the epoch's head losses and
    best head still come from the steps that ran. A cap that does not bind changes nothing."""
    x, knn, _ = data
    # 6 steps per epoch (600 / 100), 10 epochs = 60 steps; capped at 15: warm-up 2 of 10 epochs -> 3 steps,
    # the last layer frozen for 1 of 10 epochs -> round(1.5) = 2 steps
    m = _module(x, knn, lr=1e-3, min_lr=1e-4, warmup_epochs=2, freeze_last_layer_epochs=1, epochs=10, max_steps=15)
    init = m.student.stacked_state()["v"].detach().clone()
    snap = _Snapshots()
    last = []

    class _LastLayer(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            last.append(pl_module.student.stacked_state()["v"].detach().clone())

    _trainer(max_epochs=10, max_steps=15, callbacks=[snap, _LastLayer()]).fit(m)
    base, final = 1e-3 * 100 / 256, 1e-4 * 100 / 256
    assert len(snap.lrs) == 15
    for it, lrs in enumerate(snap.lrs):
        assert lrs == pytest.approx([_expected_lr(it, base, final, 3, 15)] * 2, rel=1e-9, abs=1e-15), it
    assert torch.equal(last[0], init) and torch.equal(last[1], init) and not torch.equal(last[2], init)
    assert torch.isfinite(m.head_losses).all() and bool((m.head_losses != 0).all())  # the partial epoch reported
    assert int(m.best_head) == int(torch.argmin(m.head_losses))
    # a cap above the run's length: the same run as no cap, bit for bit
    cfg = dataclasses.replace(TEMI_CFG, epochs=3)
    free = fit_temi(x, knn, 5, cfg, **FIT_KW)
    capped = fit_temi(x, knn, 5, dataclasses.replace(cfg, max_steps=10**6), **FIT_KW)
    np.testing.assert_array_equal(free.pseudo_labels, capped.pseudo_labels)
    np.testing.assert_array_equal(free.head_losses, capped.head_losses)
