"""Clustering diagnostics (Hungarian ACC, NMI, ARI) and the label-free pseudo-label rules, checked against
brute-force implementations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from elfs.cluster.metrics import cluster_metrics, contingency, hungarian_accuracy
from elfs.cluster.pseudo_labels import PSEUDO_LABEL_RULES, align_to_reference, pseudo_labels


def _brute_force_accuracy(pred, truth):
    """Best accuracy over every injective map from clusters to classes (or classes to clusters)."""
    clusters, classes = np.unique(pred), np.unique(truth)
    best = 0
    if len(clusters) <= len(classes):
        for perm in itertools.permutations(classes, len(clusters)):
            m = dict(zip(clusters, perm, strict=True))
            best = max(best, sum(m[p] == t for p, t in zip(pred, truth, strict=True)))
    else:
        for perm in itertools.permutations(clusters, len(classes)):
            m = dict(zip(perm, classes, strict=True))
            best = max(best, sum(m.get(p, -1) == t for p, t in zip(pred, truth, strict=True)))
    return best / len(pred)


def test_permuted_labels_score_perfectly():
    truth = np.array([0, 0, 1, 1, 2, 2, 2])
    pred = np.array([2, 2, 0, 0, 1, 1, 1])
    assert hungarian_accuracy(pred, truth) == 1.0
    m = cluster_metrics(pred, truth)
    assert set(m) == {"acc", "nmi", "ari"}
    assert m["acc"] == 1.0 and m["nmi"] == pytest.approx(1.0) and m["ari"] == pytest.approx(1.0)


def test_hand_case():
    # clusters {0: [a a b], 1: [b b], 2: [c]}; best matching 0->a, 1->b, 2->c gives 2 + 2 + 1 = 5 of 6.
    truth = np.array([0, 0, 1, 1, 1, 2])
    pred = np.array([0, 0, 0, 1, 1, 2])
    assert hungarian_accuracy(pred, truth) == pytest.approx(5 / 6)
    np.testing.assert_array_equal(contingency(pred, truth), [[2, 1, 0], [0, 2, 0], [0, 0, 1]])


@pytest.mark.parametrize("n_pred,n_true", [(3, 3), (4, 2), (2, 4), (5, 3)])
def test_matches_brute_force_with_unequal_cluster_counts(n_pred, n_true):
    rng = np.random.default_rng(n_pred * 10 + n_true)
    for _ in range(5):
        truth = rng.integers(0, n_true, 40)
        pred = rng.integers(0, n_pred, 40) + 7  # arbitrary, non-contiguous ids are fine
        assert hungarian_accuracy(pred, truth) == pytest.approx(_brute_force_accuracy(pred, truth))


def test_random_labels_score_low_nmi_ari():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, 5000)
    m = cluster_metrics(rng.integers(0, 5, 5000), truth)
    assert m["nmi"] < 0.01 and abs(m["ari"]) < 0.01 and m["acc"] < 0.25


def test_metric_input_errors():
    with pytest.raises(ValueError, match="same length"):
        hungarian_accuracy(np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="1-D"):
        cluster_metrics(np.zeros((2, 2), dtype=int), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="integer"):
        hungarian_accuracy(np.array([0.5, 1.0]), np.array([0, 1]))


# ---------------------------------------------------------------- pseudo-label rules (no ground truth used)


def _brute_force_ensemble(a: np.ndarray, losses: np.ndarray) -> np.ndarray | None:
    """Align each head by the best of all K! relabelings, vote with loops, ties -> best head's label.

    Returns None when some head has several equally good relabelings (the answer is then not unique).
    """
    best = int(np.argmin(losses))
    k = int(a.max()) + 1
    ref = a[best]
    aligned = []
    for h in range(a.shape[0]):
        scored = [(int(np.sum(np.array(p)[a[h]] == ref)), p) for p in itertools.permutations(range(k))]
        top = max(sc for sc, _ in scored)
        winners = [p for sc, p in scored if sc == top]
        if len(winners) > 1:
            return None
        aligned.append(np.array(winners[0])[a[h]])
    out = []
    for i in range(a.shape[1]):
        counts = [sum(int(al[i] == c) for al in aligned) for c in range(k)]
        top = max(counts)
        out.append(ref[i] if counts[ref[i]] == top else counts.index(top))
    return np.array(out)


def test_best_head_rule_takes_lowest_loss_head():
    a = np.array([[0, 0, 1], [1, 1, 0], [2, 0, 1]])
    np.testing.assert_array_equal(pseudo_labels(a, np.array([0.3, -0.2, 0.1]), "best_head"), [1, 1, 0])
    assert pseudo_labels(a, np.array([0.3, -0.2, 0.1]), "best_head").dtype == np.int64


def test_ensemble_realigns_permuted_heads_and_outvotes_noise():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 4, 300)
    heads = []
    for _ in range(5):
        noisy = base.copy()
        flip = rng.random(300) < 0.15
        noisy[flip] = rng.integers(0, 4, flip.sum())
        heads.append(rng.permutation(4)[noisy])  # each head uses its own arbitrary cluster ids
    a = np.stack(heads)
    losses = np.array([0.5, 0.1, 0.4, 0.3, 0.2])
    ens = pseudo_labels(a, losses, "ensemble")
    expected = _brute_force_ensemble(a, losses)
    assert expected is not None
    np.testing.assert_array_equal(ens, expected)
    # The vote repairs points where the best head alone is wrong: it agrees with base better (up to relabeling).
    agree = lambda x: max(np.mean(np.array(p)[x] == base) for p in itertools.permutations(range(4)))  # noqa: E731
    assert agree(ens) > agree(a[1]) + 0.05


def test_ensemble_ties_go_to_best_head():
    a = np.array([[0, 1], [1, 0]])  # two heads, each point: one vote each
    np.testing.assert_array_equal(pseudo_labels(a, np.array([1.0, 0.0]), "ensemble"), a[1])
    np.testing.assert_array_equal(pseudo_labels(a, np.array([0.0, 1.0]), "ensemble"), a[0])


def test_ensemble_matches_brute_force_on_random_heads():
    rng = np.random.default_rng(2)
    checked = 0
    while checked < 8:
        a = rng.integers(0, 3, (4, 30))
        losses = rng.random(4)
        expected = _brute_force_ensemble(a, losses)
        if expected is None:  # ambiguous alignment: any optimal relabeling is correct, skip
            continue
        np.testing.assert_array_equal(pseudo_labels(a, losses, "ensemble"), expected)
        checked += 1


def test_align_to_reference_recovers_permutation():
    ref = np.array([0, 1, 2, 2, 1, 0, 3])
    perm = np.array([2, 3, 1, 0])
    np.testing.assert_array_equal(align_to_reference(perm[ref], ref, 4), ref)


def test_pseudo_label_input_errors():
    a = np.zeros((2, 5), dtype=np.int64)
    with pytest.raises(ValueError, match="best_head.*ensemble"):
        pseudo_labels(a, np.zeros(2), "oracle")
    with pytest.raises(ValueError, match="head_losses"):
        pseudo_labels(a, np.zeros(3), "best_head")
    with pytest.raises(ValueError, match="NaN"):
        pseudo_labels(a, np.full(2, np.nan), "best_head")
    assert PSEUDO_LABEL_RULES == ("best_head", "ensemble", "aligned_mean")
