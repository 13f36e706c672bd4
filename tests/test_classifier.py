"""Augmentation, cosine schedule and ClassifierModule / train_classifier on tiny CPU problems (sklearn digits)."""

import math

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from elfs.config import ClassifierTrainingConfig, DynamicsConfig
from elfs.dynamics import (
    HARD_END,
    ClassifierModule,
    ImageFacts,
    TestSet,
    cosine_lr,
    evaluate_accuracy,
    record_dynamics,
    train_classifier,
)
from elfs.infra.runtime import Runtime
from elfs.training.augment import crop_flip, normalize_uint8, random_crop_flip, sample_crop_params

SGD = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, min_lr=1e-4)
DATA = dict(images=ImageFacts(crop_padding=1, hflip=False, mean=[0.3], std=[0.35]))
FLIP = dict(images=ImageFacts(crop_padding=1, hflip=True, mean=[0.3], std=[0.35]))


def _cfg(model: str = "small_cnn", *, width: int = 4, batch_size: int = 16, cls=ClassifierTrainingConfig, **kw):
    """A training config as the pipeline hands it over (the network and SGD settings, nothing else)."""
    return cls(model=model, width=width, batch_size=batch_size, **{**SGD, **kw})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)[..., None]  # N x 8 x 8 x 1 uint8
    return x, d.target.astype(np.int64)


# ------------------------------------------------------------------ augmentation
def test_crop_flip_matches_per_sample_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 7, 9, generator=g)
    p = 3
    top, left, flip = sample_crop_params(torch.arange(16), p, True, seed=1, epoch=0)
    out = crop_flip(x, p, top, left, flip)
    for b in range(16):
        padded = np.pad(x[b].numpy(), ((0, 0), (p, p), (p, p)), mode="reflect")
        ref = padded[:, top[b] : top[b] + 7, left[b] : left[b] + 9]
        if flip[b]:
            ref = ref[:, :, ::-1]
        np.testing.assert_array_equal(out[b].numpy(), ref)
    assert flip.any() and (~flip).any()


def test_crop_draws_are_a_function_of_seed_epoch_and_example():
    """An example's crop depends on (seed, epoch, its index) only: not on the batch it lands in or its position
    there (so any number of DDP ranks draws the same), and it changes from epoch to epoch."""
    x = torch.randn(400, 1, 8, 8)
    idx = torch.arange(1000, 1400)
    a = random_crop_flip(x, 2, True, index=idx, seed=5, epoch=3)
    perm = torch.randperm(400)
    b = random_crop_flip(x[perm], 2, True, index=idx[perm], seed=5, epoch=3)  # shuffled into other batches
    torch.testing.assert_close(b, a[perm], rtol=0, atol=0)
    top, left, flip = sample_crop_params(idx, 2, True, seed=5, epoch=3)
    assert set(top.tolist()) == set(range(5)) and set(left.tolist()) == set(range(5))
    assert 0.4 < flip.float().mean() < 0.6
    top4, left4, _ = sample_crop_params(idx, 2, True, seed=5, epoch=4)
    assert (top4 != top).float().mean() > 0.6 and (left4 != left).float().mean() > 0.6  # 4/5 differ by chance
    assert random_crop_flip(x, 0, False, index=idx, seed=5, epoch=3) is x
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(x, 8, False, index=idx, seed=5, epoch=3)
    with pytest.raises(ValueError, match="one dataset index per image"):
        random_crop_flip(x, 2, True, index=idx[:3], seed=5, epoch=3)


def test_normalize_uint8():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2).contiguous()
    out = normalize_uint8(x, torch.tensor([0.0, 0.5, 1.0]), torch.tensor([1.0, 0.5, 2.0]))
    assert out.dtype == torch.float32
    assert out[0, :, 0, 0].tolist() == pytest.approx([0.0, (0.2 - 0.5) / 0.5, 0.0])
    with pytest.raises(ValueError, match="uint8"):
        normalize_uint8(x.float(), torch.zeros(3), torch.ones(3))


# ------------------------------------------------------------------ schedule
def test_cosine_formula_and_clamp():
    kw = dict(total_steps=100, lr=0.1, min_lr=1e-4)
    assert cosine_lr(0, **kw) == pytest.approx(0.1)
    assert cosine_lr(50, **kw) == pytest.approx((0.1 + 1e-4) / 2)
    assert cosine_lr(25, **kw) == pytest.approx(1e-4 + (0.1 - 1e-4) * (1 + math.cos(math.pi / 4)) / 2)
    assert cosine_lr(100, **kw) == pytest.approx(1e-4)
    assert cosine_lr(150, **kw) == pytest.approx(1e-4)  # no rise after total_steps


class _Probe(L.Callback):
    """Records the lr used at each step and the logits/indices/targets of each training forward pass."""

    def __init__(self):
        self.lrs, self.batches, self._logits = [], [], None

    def on_fit_start(self, trainer, pl_module):
        pl_module.model.register_forward_hook(lambda m, i, o: setattr(self, "_logits", o.detach().clone()))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        _, y, idx = batch
        self.batches.append((trainer.current_epoch, idx.clone(), self._logits, y.clone()))


def test_lr_schedule_in_fit_and_exact_max_steps(digits):
    x, y = digits
    probe = _Probe()
    r = train_classifier(
        x[:100],
        y[:100],
        np.arange(100),
        _cfg(),
        num_classes=10,
        steps=37,
        seed=0,
        runtime=Runtime(trainer_kwargs={"callbacks": [probe]}),
        **DATA,
    )
    assert r.steps == 37 and len(probe.lrs) == 37  # 100 / 16 -> 7 batches per epoch, stops mid-epoch
    expected = [cosine_lr(k, total_steps=37, lr=0.05, min_lr=1e-4) for k in range(37)]
    np.testing.assert_allclose(probe.lrs, expected, rtol=1e-12)
    assert r.module.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4)


# ------------------------------------------------------------------ training
def test_learns_digits_and_reports_test_accuracy(digits):
    x, y = digits
    train, test = np.arange(0, 1400), np.arange(1400, len(x))
    r = train_classifier(
        x,
        y,
        train,
        _cfg(width=8, batch_size=64),
        num_classes=10,
        steps=300,
        seed=0,
        test=TestSet(x[test], y[test], every=100),
        **DATA,
    )
    assert evaluate_accuracy(r.module, x[train], y[train]) > 0.9
    assert r.final_test_acc > 0.85
    assert [s for s, _ in r.test_history] == [100, 200, 300]
    assert r.best_test_acc == max(a for _, a in r.test_history)
    assert r.scores is None and r.module.training  # evaluation restores train mode


@pytest.mark.slow
def test_compile_builds_one_graph_per_architecture_and_shape(digits):
    """compile=true: full batches, each epoch's smaller last batch (150 = 64 + 64 + 22), periodic and final
    evaluation, and a second training of the same architecture in the same process (as in a long-lived worker)
    all run on one compiled graph; the compiled training learns as the eager one does (inductor on the CPU)."""
    import torch._dynamo
    import torch._dynamo.utils

    x, y = digits
    train, test = np.arange(150), np.arange(1400, len(x))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    results = []
    run = dict(num_classes=10, steps=30, test=TestSet(x[test], y[test], every=10), **DATA)
    for seed in (0, 1):
        results.append(train_classifier(x, y, train, _cfg(width=8, batch_size=64, compile=True), seed=seed, **run))
        eager = train_classifier(x, y, train, _cfg(width=8, batch_size=64), seed=seed, **run)
        assert abs(results[-1].final_test_acc - eager.final_test_acc) < 0.05  # the same training, other kernels
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert all(r.final_test_acc > 0.5 for r in results)


def test_mlp_on_embeddings():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, (4, 16))
    lab = rng.integers(0, 4, 400)
    emb = (centers[lab] + rng.normal(0, 1, (400, 16))).astype(np.float32)
    r = train_classifier(
        emb, lab, np.arange(400), _cfg("mlp", width=32, batch_size=32), num_classes=4, epochs=5, seed=0, **DATA
    )
    assert r.steps == 5 * 13
    assert evaluate_accuracy(r.module, emb, lab) > 0.95
    assert r.module.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4)  # epochs -> total steps


def _naive(batches, n, c, el2n_epochs):
    """Scores from captured logits, in a plain per-example loop (first appearance per epoch)."""
    hist = {}
    for e, idx, logits, y in batches:
        for i, z, t in zip(idx.tolist(), logits.double(), y.tolist(), strict=True):
            hist.setdefault(i, {}).setdefault(e, (z, t))
    aum, prob, forg, el2n = np.full(n, np.nan), np.full(n, np.nan), np.full(n, -1), np.full(n, np.nan)
    max_rec = max(len(v) for v in hist.values())
    for i, per_epoch in hist.items():
        lm, pm, corr, el = [], [], [], []
        for e in sorted(per_epoch):
            z, t = per_epoch[e]
            p = torch.softmax(z, 0)
            o = torch.cat([z[:t], z[t + 1 :]]).max()
            po = torch.cat([p[:t], p[t + 1 :]]).max()
            lm.append(float(z[t] - o)), pm.append(float(p[t] - po)), corr.append(int(z.argmax()) == t)
            if e < el2n_epochs:
                el.append(float(torch.linalg.norm(p - torch.eye(c, dtype=p.dtype)[t])))
        aum[i], prob[i], el2n[i] = np.mean(lm), np.sum(pm), np.mean(el)
        forg[i] = sum(a and not b for a, b in zip(corr, corr[1:], strict=False)) if any(corr) else max_rec + 1
    return {"aum": aum, "aum_prob_sum": prob, "forgetting": forg, "el2n": el2n}


def test_recorder_in_fit_matches_captured_logits(digits, tmp_path):
    x, y = digits
    n = 300
    subset = np.arange(0, n, 3)[:90]  # examples outside the subset must stay unrecorded
    probe = _Probe()
    r = train_classifier(
        x[:n],
        y[:n],
        subset,
        _cfg(cls=DynamicsConfig, el2n_epochs=2),
        num_classes=10,
        epochs=3,
        seed=1,
        record=True,
        runtime=Runtime(trainer_kwargs={"callbacks": [probe]}),
        **FLIP,
    )
    s = r.scores
    assert r.steps == 3 * 6 and len(probe.batches) == 18
    ref = _naive(probe.batches, n, 10, 2)
    for k in ["aum", "aum_prob_sum", "el2n"]:
        np.testing.assert_allclose(s[k], ref[k], rtol=1e-6, atol=1e-7, equal_nan=True, err_msg=k)
    np.testing.assert_array_equal(s["forgetting"], ref["forgetting"])
    outside = np.setdiff1d(np.arange(n), subset)
    assert (s["num_records"][subset] == 3).all() and (s["num_records"][outside] == 0).all()
    assert np.isnan(s["aum"][outside]).all() and (s["correctness"][outside] == -1).all()
    # the recorder state travels in Lightning checkpoints
    r.module.trainer.save_checkpoint(tmp_path / "last.ckpt")
    fresh = ClassifierModule.load_from_checkpoint(tmp_path / "last.ckpt")
    for k in s:
        np.testing.assert_array_equal(fresh.recorder.scores()[k], s[k], err_msg=k)


def test_same_seed_bit_identical_scores(digits):
    x, y = digits
    cfg = _cfg(cls=DynamicsConfig, batch_size=32, epochs=2)
    kw = dict(num_classes=10, **FLIP)
    a = record_dynamics(x[:200], y[:200], cfg, seed=7, **kw)
    b = record_dynamics(x[:200], y[:200], cfg, seed=7, **kw)
    c = record_dynamics(x[:200], y[:200], cfg, seed=8, **kw)
    assert set(HARD_END) <= set(a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.array_equal(a["aum"], c["aum"])


def test_fast_data_path_gives_the_host_paths_result(digits):
    """device_data (images kept on the training device, batches gathered there) is the same computation as the
    host loader on the same device: bit-identical scores and test accuracy here on the CPU; channels-last only
    changes the memory layout (same result up to float reduction order)."""
    x, y = digits
    kw = dict(num_classes=10, seed=3, **FLIP)
    plain = record_dynamics(x[:300], y[:300], _cfg(cls=DynamicsConfig, batch_size=32, epochs=2), **kw)
    fast = record_dynamics(x[:300], y[:300], _cfg(cls=DynamicsConfig, batch_size=32, epochs=2, device_data=True), **kw)
    for k in plain:
        np.testing.assert_array_equal(plain[k], fast[k], err_msg=k)
    idx = np.arange(0, 1500, 2)
    common = dict(num_classes=10, seed=1, steps=40, test=TestSet(x[1500:], y[1500:]), **DATA)
    a = train_classifier(x, y, idx, _cfg(batch_size=32), **common)
    b = train_classifier(x, y, idx, _cfg(batch_size=32, device_data=True), **common)
    c = train_classifier(x, y, idx, _cfg(batch_size=32, channels_last=True), **common)
    assert a.final_test_acc == b.final_test_acc > 0.3 and b.module.resident is None  # the copy is released
    assert abs(c.final_test_acc - a.final_test_acc) <= 0.02
    for (name, p), q in zip(a.module.model.named_parameters(), c.module.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=name)


def test_bad_arguments_are_refused(digits):
    x, y = digits
    cfg = _cfg(batch_size=8)
    kw = dict(num_classes=10, seed=0, **DATA)
    with pytest.raises(ValueError, match="exactly one"):
        train_classifier(x, y, np.arange(10), cfg, steps=3, epochs=1, **kw)
    with pytest.raises(ValueError, match="exactly one"):
        train_classifier(x, y, np.arange(10), cfg, **kw)
    with pytest.raises(ValueError, match="duplicates"):
        train_classifier(x, y, np.array([1, 1, 2]), cfg, steps=3, **kw)
    with pytest.raises(ValueError, match="embeddings"):
        train_classifier(x.reshape(len(x), -1).astype(np.float32), y, np.arange(10), cfg, steps=3, **kw)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        train_classifier(x, y, np.arange(10), cfg, steps=3, **{**kw, "num_classes": 5})
    with pytest.raises(ValueError, match="min_lr"):  # the config's own checks live in its schema, run once
        _cfg(min_lr=1.0).validate()
    with pytest.raises(ValueError, match="train.model='resnet9'"):
        _cfg("resnet9").validate()
    with pytest.raises(ValueError, match=r"test\.every"):
        train_classifier(x, y, np.arange(10), cfg, steps=3, test=TestSet(x[:5], y[:5], every=-1), **kw)
    with pytest.raises(ValueError, match="both inputs and labels"):
        train_classifier(x, y, np.arange(10), cfg, steps=3, test=TestSet(x[:5], None), **kw)
    with pytest.raises(ValueError, match="DynamicsConfig"):
        train_classifier(x, y, np.arange(10), cfg, steps=3, record=True, **kw)


_DDP_SCRIPT = r"""
import sys, numpy as np, torch, lightning as L
from sklearn.datasets import load_digits
from elfs.config import DynamicsConfig
from elfs.dynamics import ImageFacts, train_classifier
from elfs.infra.runtime import Runtime

class Dump(L.Callback):
    def on_fit_start(self, trainer, pl_module):
        self.rows, self.z = [], None
        pl_module.model.register_forward_hook(lambda m, i, o: setattr(self, "z", o.detach().clone()))
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((trainer.current_epoch, batch_idx, batch[2].clone(), self.z, batch[1].clone()))
        # the ranks' batch sizes the step used (from the sampler's plan, no collective) are the gathered ones
        gathered = pl_module.all_gather(torch.tensor(len(batch[1]))).flatten().tolist()
        assert pl_module._rank_batch_sizes(len(batch[1]), batch_idx) == gathered, (batch_idx, gathered)
    def on_train_end(self, trainer, pl_module):
        torch.save(self.rows, f"{sys.argv[1]}/rank{trainer.global_rank}.pt")

d = load_digits()
x = np.clip(d.images * 16, 0, 255).astype(np.uint8)[..., None]
n = 101  # odd: the DistributedSampler pads one duplicate per epoch
cfg = DynamicsConfig(model="small_cnn", width=4, batch_size=8, lr=0.05, momentum=0.9, nesterov=True,
                     weight_decay=5e-4, min_lr=1e-4, el2n_epochs=2)
r = train_classifier(x[:n], d.target[:n], np.arange(n), cfg, num_classes=10, epochs=3,
                     images=ImageFacts(crop_padding=1, hflip=True, mean=[0.3], std=[0.35]), seed=0, record=True,
                     runtime=Runtime(trainer_kwargs=dict(strategy="ddp_fork", accelerator="cpu", devices=2,
                                                         callbacks=[Dump()])))
np.savez(f"{sys.argv[1]}/scores.npz", **r.scores)
"""


def test_ddp_every_rank_records_every_example_once(tmp_path):
    """Two CPU processes (fork DDP, fresh interpreter): the gathered recorder equals a naive merge of both ranks,
    and the batch size is global (each rank takes half)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", _DDP_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=240, env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    s = dict(np.load(tmp_path / "scores.npz"))
    assert (s["num_records"] == 3).all()  # without the all_gather each rank would see about half
    rows = [(e, b, r, idx, z, y) for r in (0, 1) for e, b, idx, z, y in torch.load(tmp_path / f"rank{r}.pt")]
    assert sum(len(idx) for *_, idx, _, _ in rows) == 3 * 101  # each example once an epoch, nothing padded
    # batch_size=8 is the GLOBAL batch: 4 per rank, so 13 steps an epoch, as one process with batch 8 takes; the
    # last global batch holds the epoch's 5 remaining examples, 3 on rank 0 and 2 on rank 1
    assert max(len(idx) for *_, idx, _, _ in rows) == 4 and len(rows) == 2 * 3 * 13
    assert sorted(len(idx) for e, b, _, idx, _, _ in rows if e == 0 and b == 12) == [2, 3]
    rows.sort(key=lambda t: t[:3])  # the order the gathered recorder sees: epoch, step, rank
    ref = _naive([(e, idx, z, y) for e, _, _, idx, z, y in rows], 101, 10, 2)
    for k in ["aum", "aum_prob_sum", "el2n"]:
        np.testing.assert_allclose(s[k], ref[k], rtol=1e-6, atol=1e-7, err_msg=k)
    np.testing.assert_array_equal(s["forgetting"], ref["forgetting"])


def test_resume_from_epoch_checkpoint_is_exact(digits, tmp_path, interrupt_at_epoch):
    """Interrupted after 3 of 6 epochs, then rerun with the same checkpoint_dir: scores equal an uninterrupted run."""
    x, y = digits[0], digits[1]
    cfg = _cfg(cls=DynamicsConfig, width=8, batch_size=64, el2n_epochs=2)
    kw = dict(num_classes=10, **DATA, seed=3, record=True, epochs=6)
    idx = np.arange(len(x))
    quiet = dict(enable_progress_bar=False)
    ckpt = Runtime(trainer_kwargs=quiet, checkpoint_dir=str(tmp_path))
    ref = train_classifier(x, y, idx, cfg, runtime=Runtime(trainer_kwargs=quiet), **kw).scores
    with pytest.raises(SystemExit):  # Lightning turns the KeyboardInterrupt into sys.exit(1)
        train_classifier(
            x,
            y,
            idx,
            cfg,
            runtime=Runtime(
                trainer_kwargs={**quiet, "callbacks": [interrupt_at_epoch(3)]}, checkpoint_dir=str(tmp_path)
            ),
            **kw,
        )
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 2
    resumed = train_classifier(x, y, idx, cfg, runtime=ckpt, **kw)
    for k in ref:
        np.testing.assert_array_equal(resumed.scores[k], ref[k])
    (tmp_path / "last.ckpt").write_bytes(b"truncated")  # a kill during the write: ignored, training restarts
    again = train_classifier(x, y, idx, cfg, runtime=ckpt, **kw)
    np.testing.assert_array_equal(again.scores["aum"], ref["aum"])


def test_trainer_settings_merge_order():
    """elfs.infra.runtime's one merge: TRAINER_DEFAULTS < a caller's defaults < runtime.trainer_kwargs < fixed settings;
    callbacks are concatenated, the logger is the runtime's (False without one)."""
    from elfs.infra.runtime import TRAINER_DEFAULTS, trainer_settings, world_size_of

    own, extra = L.Callback(), L.Callback()
    rt = Runtime(trainer_kwargs={"deterministic": False, "callbacks": [own], "use_distributed_sampler": True})
    defaults = {"deterministic": "warn", "log_every_n_steps": 7}
    kw = trainer_settings(rt, callbacks=[extra], defaults=defaults, max_steps=3, use_distributed_sampler=False)
    assert kw["deterministic"] is False and kw["log_every_n_steps"] == 7 and kw["max_steps"] == 3
    assert kw["use_distributed_sampler"] is False and kw["callbacks"] == [own, extra] and kw["logger"] is False
    assert trainer_settings(Runtime(), defaults={"deterministic": "warn"})["deterministic"] == "warn"
    assert {k: v for k, v in trainer_settings(Runtime()).items() if k in TRAINER_DEFAULTS} == TRAINER_DEFAULTS
    assert world_size_of({}) == 1 and world_size_of({"accelerator": "cpu", "devices": 2, "num_nodes": 2}) == 4
