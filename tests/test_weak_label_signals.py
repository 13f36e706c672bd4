"""Label-free signs of weak pseudo-labels (elfs/cluster/signals.py), on hand-made clusterings."""

from __future__ import annotations

import numpy as np

from elfs.cluster.signals import WHAT_TO_TRY, cluster_size_signals, head_agreement, weak_label_signals


def test_even_clusters_that_every_head_agrees_on_raise_nothing():
    labels = np.repeat(np.arange(4), 25)
    heads = np.stack([labels, (labels + 1) % 4, labels])  # the same partition, renamed: full agreement
    assert head_agreement(heads, 0) == 1.0
    assert weak_label_signals(labels, 4, heads, 0) == []


def test_empty_and_tiny_clusters_are_named_with_their_counts():
    labels = np.array([0] * 60 + [1] * 38 + [2] * 2)  # cluster 3 empty; cluster 2 holds 2 of an even 25
    assert cluster_size_signals(labels, 4) == [
        "1 of the 4 clusters are empty",
        "1 of the 4 clusters hold fewer than 3 images",  # a tenth of an even share (25) is 2.5
    ]


def test_heads_that_disagree_are_a_sign():
    rng = np.random.default_rng(0)
    heads = rng.integers(0, 5, (4, 500))  # independent random partitions
    agree = head_agreement(heads, 0)
    assert agree is not None and agree < 0.05
    (sign,) = weak_label_signals(np.repeat(np.arange(5), 100), 5, heads, 0)
    assert sign.startswith("the clustering heads disagree") and "--method zcore" in WHAT_TO_TRY
