"""The "aligned_mean" pseudo-label rule: the alignment permutation, a naive [H, N, C] reference implementation,
batch-size independence, the H=1 and permuted-heads special cases, and fit_temi with the rule (no ground truth)."""

from __future__ import annotations

import dataclasses

import lightning as L
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from elfs.cluster import PSEUDO_LABEL_RULES, aligned_mean_labels, fit_temi, head_assignments, pseudo_labels
from elfs.cluster.module import TEMIModule
from elfs.cluster.pseudo_labels import align_to_reference, alignment_mapping
from elfs.config import ClusterConfig
from elfs.infra.runtime import Runtime

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, D, C = 200, 16, 5
CFG = ClusterConfig(
    num_heads=4,
    hidden_dim=32,
    bottleneck_dim=16,
    batch_size=64,
    knn_k=10,
    epochs=2,
    lr=1e-3,
    min_lr=1e-3,
    warmup_epochs=0,
    freeze_last_layer_epochs=0,
    teacher_momentum=0.9,
    teacher_temp=0.1,
    head_impl="loop",
)


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random embeddings around C centres plus a brute-force cosine kNN (self excluded); no labels kept."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(C, D)) * 2.0
    x = (centers[rng.integers(0, C, N)] + rng.normal(size=(N, D))).astype(np.float32)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    np.fill_diagonal(sim, -np.inf)
    return x, np.argsort(-sim, axis=1, kind="stable")[:, :20]


def _module(x: np.ndarray, knn: np.ndarray, **kw) -> TEMIModule:
    return TEMIModule(x, knn, C, dataclasses.replace(CFG, **kw), seed=0)


def _naive_aligned_mean(module: TEMIModule, x: np.ndarray, head_losses: np.ndarray) -> np.ndarray:
    """Independent reference: all probabilities [H, N, C] at once, Hungarian on np.add.at counts, head h's column
    j written to reference column mapping[j], mean over heads, argmax."""
    module.eval()
    with torch.no_grad():
        logits = module(torch.from_numpy(x))  # [H, N, C], one batch
    probs = torch.softmax(logits.float() / module.cfg.teacher_temp, dim=-1).numpy().astype(np.float64)
    a = probs.argmax(axis=-1)
    best = int(np.nanargmin(head_losses))
    aligned = np.empty_like(probs)
    for h in range(probs.shape[0]):
        if h == best:
            mapping = np.arange(C)
        else:
            counts = np.zeros((C, C), dtype=np.int64)
            np.add.at(counts, (a[h], a[best]), 1)
            rows, cols = linear_sum_assignment(counts, maximize=True)
            mapping = np.empty(C, dtype=np.int64)
            mapping[rows] = cols
        aligned[h][:, mapping] = probs[h]
    return aligned.mean(axis=0).argmax(axis=1)


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.fixture(scope="module")
def trained(data, one_torch_thread):
    """A real TEMIModule trained for 2 epochs, its assignments [H, N] and head losses [H]."""
    x, knn = data
    L.seed_everything(0, verbose=False)
    module = _module(x, knn)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=CFG.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
    trainer.fit(module)
    losses = module.head_losses.detach().numpy().astype(np.float64)
    assert np.isfinite(losses).all()
    return module, head_assignments(module, x), losses


def test_alignment_mapping_recovers_known_permutation():
    rng = np.random.default_rng(1)
    k = 7
    ref = np.concatenate([np.arange(k), rng.integers(0, k, 300)])  # every id occurs
    perm = rng.permutation(k)  # head id j <-> reference id perm[j]
    labels = np.argsort(perm)[ref]
    np.testing.assert_array_equal(alignment_mapping(labels, ref, k), perm)
    np.testing.assert_array_equal(align_to_reference(labels, ref, k), ref)
    noisy = labels.copy()
    flip = rng.random(noisy.size) < 0.1  # 10% noise does not change the best matching
    noisy[flip] = rng.integers(0, k, int(flip.sum()))
    np.testing.assert_array_equal(alignment_mapping(noisy, ref, k), perm)


def test_aligned_mean_matches_naive_implementation(data, trained):
    x, _ = data
    module, assign, losses = trained
    best = int(np.argmin(losses))
    maps = [alignment_mapping(assign[h], assign[best], C) for h in range(CFG.num_heads)]
    assert any(not np.array_equal(m, np.arange(C)) for m in maps)  # the alignment is not trivially the identity
    got = aligned_mean_labels(module, x, assign, losses, batch_size=64)
    assert got.dtype == np.int64 and got.shape == (N,) and 0 <= got.min() and got.max() < C
    assert len(np.unique(got)) > 1
    np.testing.assert_array_equal(got, _naive_aligned_mean(module, x, losses))
    # another reference head (a different best), still identical to the naive version
    other = np.full(CFG.num_heads, 1.0)
    other[(best + 1) % CFG.num_heads] = 0.0
    np.testing.assert_array_equal(
        aligned_mean_labels(module, x, assign, other, batch_size=64), _naive_aligned_mean(module, x, other)
    )


def test_aligned_mean_batch_size_does_not_matter(data, trained):
    x, _ = data
    module, assign, losses = trained
    module.train()
    small = aligned_mean_labels(module, x, assign, losses, batch_size=7)
    assert module.training  # the mode is restored
    np.testing.assert_array_equal(small, aligned_mean_labels(module, x, assign, losses, batch_size=4096))
    np.testing.assert_array_equal(small, aligned_mean_labels(module, torch.from_numpy(x), assign, losses))


def test_aligned_mean_with_one_head_is_best_head(data):
    x, knn = data
    module = _module(x, knn, num_heads=1)
    assign = head_assignments(module, x)
    losses = np.array([0.5])
    np.testing.assert_array_equal(
        aligned_mean_labels(module, x, assign, losses, batch_size=50), pseudo_labels(assign, losses, "best_head")
    )


def test_aligned_mean_of_permuted_heads_is_reference_labels(data):
    """Heads that are exact column permutations of one head: the aligned mean is that head's argmax."""
    x, knn = data
    module = _module(x, knn, num_heads=3)
    heads = module.teacher.heads
    rng = np.random.default_rng(3)
    perms = [np.arange(C), rng.permutation(C), rng.permutation(C)]
    with torch.no_grad():
        for h in (1, 2):  # head h = head 0 with its column j taken from head 0's column perms[h][j]
            heads[h].load_state_dict(heads[0].state_dict())
            p = torch.from_numpy(perms[h])
            heads[h].weight_v.copy_(heads[0].weight_v[p])
            heads[h].weight_g.copy_(heads[0].weight_g[p])
    assign = head_assignments(module, x)
    assert len(np.unique(assign[0])) == C  # every id used: the permutation is recoverable exactly
    for h, perm in enumerate(perms):
        np.testing.assert_array_equal(perm[assign[h]], assign[0])
        np.testing.assert_array_equal(alignment_mapping(assign[h], assign[0], C), perm)
    for best in range(3):
        losses = np.full(3, 1.0)
        losses[best] = 0.0
        np.testing.assert_array_equal(aligned_mean_labels(module, x, assign, losses, batch_size=32), assign[best])


def test_aligned_mean_input_errors(data, trained):
    x, _ = data
    module, assign, losses = trained
    assert "aligned_mean" in PSEUDO_LABEL_RULES
    with pytest.raises(ValueError, match="aligned_mean_labels"):
        pseudo_labels(assign, losses, "aligned_mean")
    with pytest.raises(ValueError, match="batch_size"):
        aligned_mean_labels(module, x, assign, losses, batch_size=0)
    with pytest.raises(ValueError, match="N=199"):
        aligned_mean_labels(module, x[:199], assign, losses)
    with pytest.raises(ValueError, match="head_losses"):
        aligned_mean_labels(module, x, assign, losses[:2])
    with pytest.raises(ValueError, match=r"\[H=3"):
        aligned_mean_labels(module, x, assign[:3], losses[:3])
    bad = assign.copy()
    bad[0, 0] = C
    with pytest.raises(ValueError, match="C=5"):
        aligned_mean_labels(module, x, bad, losses)


def test_fit_temi_aligned_mean_rule(data):
    x, knn = data
    cfg = dataclasses.replace(CFG, rule="aligned_mean", num_heads=3)
    res = fit_temi(x, knn, C, cfg, seed=0, runtime=Runtime(trainer_kwargs={"accelerator": "cpu"}))
    assert res.pseudo_labels.dtype == np.int64 and res.pseudo_labels.shape == (N,)
    assert 0 <= res.pseudo_labels.min() and res.pseudo_labels.max() < C
    assert res.head_assignments.shape == (3, N) and res.best_head == int(np.argmin(res.head_losses))
