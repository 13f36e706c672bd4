"""Embeddings stored once as float16 and read through a memory map: the cache's mapped entries, the kNN stage, TEMI
and the proxy reading the map batch by batch, and how far float16 storage moves their results from float32's."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from elfs.cache import ArtifactCache

N, D, CLUSTERS = 600, 32, 4


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    """(float32 embeddings of 4 separated clusters, the same rounded to float16 as a memory-mapped .npy, their
    true cluster ids)."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((CLUSTERS, D)).astype(np.float32) * 3
    truth = rng.integers(0, CLUSTERS, N)
    x32 = centres[truth] + rng.standard_normal((N, D)).astype(np.float32)
    path = tmp_path_factory.mktemp("emb") / "train.npy"
    np.save(path, x32.astype(np.float16))
    return x32, np.load(path, mmap_mode="c"), truth


def test_mapped_arrays_are_own_files_read_through_a_map_and_checked(tmp_path):
    cache = ArtifactCache(tmp_path, code="t")
    x = np.arange(12, dtype=np.float16).reshape(4, 3)

    def compute():
        return {"train": x, "valid": np.arange(4)}, {}

    art = cache.run("embed", {"a": 1}, {}, compute, mapped=("train", "test"))  # no "test": nothing to map
    assert isinstance(art["train"], np.memmap) and not isinstance(art["valid"], np.memmap)
    assert sorted(p.name for p in art.path.iterdir()) == ["arrays.npz", "meta.json", "train.npy"]
    with np.load(art.path / "arrays.npz") as z:
        assert z.files == ["valid"]  # the mapped array is stored once, in its own file
    again = cache.run("embed", {"a": 1}, {}, lambda: pytest.fail("recomputed"), mapped=("train",))
    assert again.cached and isinstance(again["train"], np.memmap) and again["train"].dtype == np.float16
    np.testing.assert_array_equal(again["train"], x)
    raw = bytearray((art.path / "train.npy").read_bytes())
    raw[-1] ^= 0xFF  # one flipped byte of the mapped file: the checksum refuses the entry
    (art.path / "train.npy").write_bytes(bytes(raw))
    assert cache.load("embed", again.key) is None and not art.path.exists()


def test_knn_from_the_float16_map_equals_float32_up_to_its_rounding(embeddings):
    from elfs.method.knn import knn

    x32, x16, _ = embeddings
    exact32 = knn(x32, 10, backend="faiss")
    exact16 = knn(x16, 10, backend="faiss")
    # float16 moves a cosine by about 1e-3 at most here: neighbours swap only where two were that close
    assert np.abs(exact16[1] - exact32[1]).max() < 2e-3
    same = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact16[0].tolist(), exact32[0].tolist(), strict=True)])
    assert same > 0.97, same
    # the IVF path reads the map a block at a time; on the values float16 holds it finds what exact search finds,
    # with the same similarities (computed from the normalised rows, as the exact path's copy holds them)
    ivf16 = knn(x16, 10, backend="faiss_ivf", nlist=8, nprobe=8)  # every cell probed: exhaustive
    np.testing.assert_array_equal(ivf16[0], exact16[0])
    np.testing.assert_allclose(ivf16[1], exact16[1], rtol=0, atol=1e-6)


def test_temi_reads_the_map_without_a_float32_copy_and_float16_changes_only_rounding(embeddings):
    from sklearn.metrics import adjusted_rand_score

    from elfs.cluster import fit_temi
    from elfs.cluster.module import TEMIModule
    from elfs.config import ClusterConfig
    from elfs.infra.runtime import Runtime
    from elfs.method.knn import knn

    x32, x16, _ = embeddings
    idx, _ = knn(x16, 10, backend="faiss")
    cfg = ClusterConfig(
        num_heads=2,
        hidden_dim=64,
        bottleneck_dim=32,
        epochs=4,
        batch_size=128,
        lr=1e-3,
        warmup_epochs=0,
        knn_k=10,
        embed_norm=True,
        kmeans_baseline=False,
    )
    held = TEMIModule(x16, idx, CLUSTERS, cfg).embeddings
    assert held.dtype.is_floating_point and held.element_size() == 2  # float16, the map itself: no copy
    assert held.data_ptr() == x16.ctypes.data

    def fit(x, precision):
        kw = {"accelerator": "cpu", "enable_progress_bar": False, "precision": precision}
        return fit_temi(x, idx, CLUSTERS, cfg, seed=0, runtime=Runtime(trainer_kwargs=kw))

    # batches converted on the fly are exactly the float32 run on the rounded values, also under CPU autocast
    # (trainer.precision=auto gives bf16-mixed on a CPU with native bf16)
    mapped, rounded = fit(x16, "bf16-mixed"), fit(x16.astype(np.float32), "bf16-mixed")
    np.testing.assert_array_equal(mapped.pseudo_labels, rounded.pseudo_labels)
    np.testing.assert_array_equal(mapped.head_losses, rounded.head_losses)
    # and float16 rounding changes the clustering no more than a float32 run's own noise would
    mapped, full = fit(x16, "32-true"), fit(x32, "32-true")
    assert adjusted_rand_score(mapped.pseudo_labels, full.pseudo_labels) > 0.95


def test_proxy_reads_the_map_per_batch_and_float16_changes_scores_only_by_rounding(embeddings):
    from scipy.stats import spearmanr

    from elfs.config import DynamicsConfig
    from elfs.dynamics import record_dynamics
    from elfs.infra.runtime import Runtime
    from elfs.training.classifier import to_model_inputs

    x32, x16, truth = embeddings
    held, kind = to_model_inputs(x16)
    assert kind == "embeddings" and held.element_size() == 2 and held.data_ptr() == x16.ctypes.data  # no copy
    cfg = DynamicsConfig(model="mlp", width=64, batch_size=128, lr=0.05, epochs=3, el2n_epochs=1)

    def record(x, precision):
        kw = {"accelerator": "cpu", "enable_progress_bar": False, "precision": precision}
        return record_dynamics(x, truth, cfg, num_classes=CLUSTERS, seed=0, runtime=Runtime(trainer_kwargs=kw))

    mapped, rounded = record(x16, "bf16-mixed"), record(x16.astype(np.float32), "bf16-mixed")
    for k in ("aum", "el2n", "forgetting"):  # batches converted on the fly: the float32 run on the rounded values
        np.testing.assert_array_equal(mapped[k], rounded[k], err_msg=k)
    mapped, full = record(x16, "32-true"), record(x32, "32-true")
    assert np.abs(mapped["aum"] - full["aum"]).max() < 0.02 * np.ptp(full["aum"])
    assert spearmanr(mapped["aum"], full["aum"]).statistic > 0.99


def test_embeddings_npy_links_to_the_cache_file_or_copies_it(tmp_path, embeddings):
    from elfs.handback.answer import Answer
    from elfs.handback.exports import mapped_file
    from elfs.handback.selection_report import write_selection_outputs

    cache = ArtifactCache(tmp_path / "cache", code="t")
    x16 = embeddings[1][:40].copy()
    art = cache.run("embed", {}, {}, lambda: ({"train": x16}, {}), mapped=("train",))
    assert mapped_file(art["train"]) == art.path / "train.npy" and mapped_file(art["train"][:39]) is None
    n = len(x16)
    kept = {0.5: np.arange(0, n, 2)}
    places = [tmp_path / "run"]
    shm = Path(f"/dev/shm/elfs-test-{os.getpid()}")  # another filesystem (tmpfs) where there is one: no hard link
    if shm.parent.is_dir() and os.stat(shm.parent).st_dev != os.stat(tmp_path).st_dev:
        places.append(shm)
    try:
        for run in places:
            answer = Answer(
                ids=[f"#{i}" for i in range(n)],
                clusters=np.zeros(n, np.int64),
                num_clusters=1,
                score_name="aum",
                score=np.linspace(0, 1, n),
                hardness=np.linspace(0, 1, n),
                kept=kept,
                beta={0.5: 0.0},
                embeddings=art["train"],
            )
            write_selection_outputs(run, answer, load_image=None)
            out, src = os.stat(run / "embeddings.npy"), os.stat(art.path / "train.npy")
            linked = out.st_ino == src.st_ino and out.st_dev == src.st_dev
            assert linked == (out.st_dev == src.st_dev)  # a hard link on the same filesystem, else a copy
            got = np.load(run / "embeddings.npy")
            assert got.dtype == np.float16
            np.testing.assert_array_equal(got, x16)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
