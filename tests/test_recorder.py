"""TrainingDynamicsRecorder against hand-computed cases and a naive full-logit-history implementation."""

import math

import numpy as np
import pytest
import torch

from elfs.training.recorder import HARD_END, TrainingDynamicsRecorder


def naive_scores(events, n, c, el2n_epochs):
    """Reference: keep the first logits of each (epoch, example) in a dense [E, N, C] array, then loop."""
    epochs = sorted({e for e, _, _, _ in events})
    pos = {e: k for k, e in enumerate(epochs)}
    hist = np.full((len(epochs), n, c), np.nan)
    label = np.full(n, -1)
    last = np.full(n, -1)
    for e, idx, logits, tgt in events:
        for i, z, y in zip(idx, logits, tgt, strict=True):
            if last[i] >= e:  # already recorded in this (or a later) epoch
                continue
            last[i] = e
            hist[pos[e], i] = z
            label[i] = y
    out = {k: [] for k in ["aum", "aum_prob_sum", "forgetting", "el2n", "correctness", "never_learned"]}
    max_rec = max(int((~np.isnan(hist[:, i, 0])).sum()) for i in range(n))
    for i in range(n):
        rows = [(epochs[k], hist[k, i]) for k in range(len(epochs)) if not np.isnan(hist[k, i, 0])]
        if not rows:
            out["aum"].append(np.nan), out["aum_prob_sum"].append(np.nan), out["el2n"].append(np.nan)
            out["forgetting"].append(-1), out["correctness"].append(-1), out["never_learned"].append(False)
            continue
        y = label[i]
        lm, pm, corr, el = [], [], [], []
        for e, z in rows:
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            others = [k for k in range(c) if k != y]
            lm.append(z[y] - max(z[k] for k in others))
            pm.append(p[y] - max(p[k] for k in others))
            corr.append(int(np.argmax(z)) == y)
            if e < el2n_epochs:
                onehot = np.eye(c)[y]
                el.append(math.sqrt(((p - onehot) ** 2).sum()))
        forget = sum(1 for a, b in zip(corr[:-1], corr[1:], strict=True) if a and not b)
        never = not any(corr)
        out["aum"].append(np.mean(lm))
        out["aum_prob_sum"].append(np.sum(pm))
        out["el2n"].append(np.mean(el) if el else np.nan)
        out["forgetting"].append(max_rec + 1 if never else forget)
        out["correctness"].append(sum(corr))
        out["never_learned"].append(never)
    return {k: np.asarray(v) for k, v in out.items()}


def _feed(rec, events):
    for e, idx, logits, tgt in events:
        rec.update(torch.as_tensor(idx), torch.as_tensor(logits, dtype=torch.float32), torch.as_tensor(tgt), e)


def _compare(got, ref):
    for k in ["aum", "aum_prob_sum", "el2n"]:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=k)
    for k in ["forgetting", "correctness", "never_learned"]:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_hand_computed_tiny_case():
    rec = TrainingDynamicsRecorder(num_examples=3, num_classes=3, el2n_epochs=2)
    seq0 = [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 0.0]]  # example 0 (y=0): correct, wrong, correct
    for e, z in enumerate(seq0):
        # example 1 (y=2) is never correct; example 2 is never fed
        rec.update(torch.tensor([0, 1]), torch.tensor([z, [1.0, 0.0, 0.0]]), torch.tensor([0, 2]), e)
    s = rec.scores()
    assert s["aum"][0] == pytest.approx((1.0 - 3.0 + 1.0) / 3)  # logit margins 2-1, 0-3, 1-0
    p = [np.exp(z) / np.exp(z).sum() for z in map(np.array, seq0)]
    assert s["aum_prob_sum"][0] == pytest.approx((p[0][0] - p[0][1]) + (p[1][0] - p[1][1]) + (p[2][0] - p[2][1]))
    assert s["forgetting"][0] == 1 and s["correctness"][0] == 2 and not s["never_learned"][0]
    el = [np.linalg.norm(p[k] - np.array([1.0, 0, 0])) for k in range(2)]  # epochs 0 and 1 only
    assert s["el2n"][0] == pytest.approx(np.mean(el))
    assert s["aum"][1] == pytest.approx(-1.0)  # z_2 - max(z_0, z_1) = 0 - 1
    assert s["never_learned"][1] and s["correctness"][1] == 0
    assert s["forgetting"][1] == 3 + 1  # never learned -> (recorded epochs + 1): the hard end
    assert np.isnan(s["aum"][2]) and np.isnan(s["el2n"][2]) and s["forgetting"][2] == -1
    assert s["correctness"][2] == -1 and not s["never_learned"][2] and s["num_records"].tolist() == [3, 3, 0]


def test_forgetting_counts_every_correct_to_wrong_transition():
    rec = TrainingDynamicsRecorder(1, 2)
    for e, ok in enumerate([1, 0, 1, 0, 0, 1, 1, 0]):
        rec.update(torch.tensor([0]), torch.tensor([[1.0, 0.0] if ok else [0.0, 1.0]]), torch.tensor([0]), e)
    s = rec.scores()
    assert s["forgetting"][0] == 3 and s["correctness"][0] == 4
    assert s["aum"][0] == pytest.approx(0.0)  # +1 four times, -1 four times


def test_duplicates_and_old_epochs_are_ignored():
    rec = TrainingDynamicsRecorder(2, 2)
    good, bad = [3.0, 0.0], [0.0, 3.0]
    # same index twice in one batch: the first occurrence counts
    rec.update(torch.tensor([0, 0, 1]), torch.tensor([good, bad, good]), torch.tensor([0, 0, 0]), 0)
    # again in a later batch of the same epoch (DDP padding): ignored
    rec.update(torch.tensor([1, 0]), torch.tensor([bad, bad]), torch.tensor([0, 0]), 0)
    rec.update(torch.tensor([0]), torch.tensor([bad]), torch.tensor([0]), 1)
    rec.update(torch.tensor([0]), torch.tensor([good]), torch.tensor([0]), 0)  # older epoch: ignored
    s = rec.scores()
    assert s["num_records"].tolist() == [2, 1]
    assert s["aum"].tolist() == pytest.approx([0.0, 3.0])
    assert s["forgetting"].tolist() == [1, 0] and s["correctness"].tolist() == [1, 1]


def test_matches_naive_full_history_on_random_case():
    rng = np.random.default_rng(0)
    n, c, n_epochs = 37, 5, 7
    labels = rng.integers(0, c, n)
    events = []
    for e in range(n_epochs):
        present = rng.permutation(n)[: n - int(rng.integers(0, 4))]  # a few examples skip an epoch
        order = np.concatenate([present, rng.choice(present, 5)])  # DDP-style padding duplicates at the end
        cuts = np.sort(rng.choice(np.arange(1, len(order)), 4, replace=False))
        for part in np.split(order, cuts):
            if rng.random() < 0.5 and len(part) > 1:
                part = np.concatenate([part, part[:1]])  # a duplicate inside one batch
            logits = rng.normal(0, 2, (len(part), c)).astype(np.float32)
            logits[part == 3] = np.eye(c)[(labels[3] + 1) % c] * 5  # example 3 is never learned
            events.append((e, part, logits, labels[part]))
    rec = TrainingDynamicsRecorder(n + 2, c, el2n_epochs=3)  # two examples never seen -> NaN / -1
    _feed(rec, events)
    got = rec.scores()
    ref = naive_scores([(e, i, z.astype(np.float64), t) for e, i, z, t in events], n + 2, c, 3)
    _compare(got, ref)
    assert got["never_learned"][3] and got["forgetting"][3] == got["num_records"].max() + 1
    assert np.isnan(got["aum"][n:]).all() and (got["forgetting"][n:] == -1).all()


def test_state_is_checkpointable_and_keeps_dtype():
    rng = np.random.default_rng(1)
    rec = TrainingDynamicsRecorder(10, 3)
    for e in range(3):
        z, t = torch.as_tensor(rng.normal(size=(10, 3))), torch.as_tensor(rng.integers(0, 3, 10))
        rec.update(torch.arange(10), z, t, e)
    rec.half()  # e.g. a 16-true precision plugin: accumulators must stay exact
    assert rec.aum_logit_sum.dtype == torch.float64 and rec.prev_correct.dtype == torch.bool
    clone = TrainingDynamicsRecorder(10, 3)
    clone.load_state_dict(rec.state_dict())
    a, b = rec.scores(), clone.scores()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    with pytest.raises(RuntimeError):
        TrainingDynamicsRecorder(11, 3).load_state_dict(rec.state_dict())


def test_hard_end_covers_the_scores():
    rec = TrainingDynamicsRecorder(2, 2)
    rec.update(torch.tensor([0, 1]), torch.zeros(2, 2), torch.tensor([0, 1]), 0)
    assert set(HARD_END) <= set(rec.scores()) and set(HARD_END.values()) == {"low", "high"}


def test_bad_input_is_refused():
    rec = TrainingDynamicsRecorder(4, 3)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        rec.update(torch.tensor([4]), torch.zeros(1, 3), torch.tensor([0]), 0)
    with pytest.raises(ValueError, match="classes"):
        rec.update(torch.tensor([0]), torch.zeros(1, 2), torch.tensor([0]), 0)
    with pytest.raises(ValueError, match="targets"):
        rec.update(torch.tensor([0]), torch.zeros(1, 3), torch.tensor([3]), 0)
    with pytest.raises(ValueError, match="epoch"):
        rec.update(torch.tensor([0]), torch.zeros(1, 3), torch.tensor([0]), -1)
    with pytest.raises(ValueError, match="num_classes"):
        TrainingDynamicsRecorder(4, 1)
