"""Near-duplicates: groups from the kNN graph, one representative each, the candidate pool (method/duplicates.py) on
hand-computed cases and against a brute-force grouping; then elfs-select on real images with planted near-copies."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elfs.handback.near_copies import duplicates_html, write_duplicates_csv
from elfs.method.duplicates import (
    aligned_similarity,
    crop_boxes,
    groups_around_representatives,
    near_copy_pairs,
    pair_similarity,
    plain_signature,
    pool,
    preference,
)


def _unit(rows) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _groups(n: int, pairs, order=None, weight=None) -> tuple[list[int], list[int]]:
    a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    w = np.ones(len(a)) if weight is None else np.asarray(weight)
    g, rep = groups_around_representatives(n, a, b, w, np.arange(n) if order is None else np.asarray(order))
    return g.tolist(), rep.tolist()


def _basis(n: int) -> list[np.ndarray]:
    """``n`` orthonormal 16 x 16 signatures with zero mean (what plain_signature leaves as they are)."""
    out = []
    for i in range(n):
        v = np.zeros(256)
        v[2 * i], v[2 * i + 1] = 1.0, -1.0
        out.append(v / np.sqrt(2))
    return out


def test_groups_by_hand():
    # signatures: 0-1 and 1-2 at cosine 0.99, 0-2 at 0.96; 3-4 at 0.6 and 4-5 at 0.8 (3 and 5 nothing alike)
    a, b, c = _basis(3)
    sig = _unit([a, a + 0.1425 * b, a + 0.29 * b, b, b + 1.33 * c, c])
    idx = np.array([[1, 2], [0, 2], [1, 0], [4, 0], [3, 1], [4, 3]])
    sims = np.einsum("nd,nkd->nk", sig, sig[idx])
    assert np.allclose(sims, pair_similarity(sig, idx, block=2), atol=2e-3)  # 16 x 16 kept as float16
    assert round(float(sig[0] @ sig[1]), 2) == 0.99 and round(float(sig[3] @ sig[4]), 1) == 0.6
    lo, hi, w = near_copy_pairs(idx, sig, 0.95)
    assert list(zip(lo.tolist(), hi.tolist(), strict=True)) == [(0, 1), (0, 2), (1, 2)]  # each pair once
    assert np.allclose(w, [sig[0] @ sig[1], sig[0] @ sig[2], sig[1] @ sig[2]], atol=2e-3)
    order = np.arange(6)
    assert groups_around_representatives(6, lo, hi, w, order)[0].tolist() == [0, 0, 0, -1, -1, -1]
    lo, hi, w = near_copy_pairs(idx, sig, 0.5)
    g, rep = groups_around_representatives(6, lo, hi, w, order)
    # 3 first: 4 (its copy) joins it; 5 is a copy of 4 only, which is never proposed, so 5 stays a candidate
    assert g.tolist() == [0, 0, 0, 1, 1, -1] and rep.tolist() == [0, 3]
    # an edge seen from one side only (the kNN graph is not symmetric) is still a pair
    idx1 = idx.copy()
    idx1[1] = [2, 2]
    assert near_copy_pairs(idx1, sig, 0.95)[0].tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="threshold"):
        near_copy_pairs(idx, sig, 1.5)


def test_groups_against_brute_force_on_random_pairs():
    """On random near-copy graphs and orders, against all pairs checked one by one: every member is a near-copy of
    its group's representative, which comes first in the order; no two images the pool keeps are near-copies;
    every image with a pair is grouped or kept."""
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(5, 60))
        m = int(rng.integers(0, 3 * n))
        a, b = rng.integers(0, n, m), rng.integers(0, n, m)
        keep = a != b
        a, b, w = a[keep], b[keep], rng.uniform(0.9, 1.0, int(keep.sum()))
        adj = np.zeros((n, n), dtype=bool)
        adj[a, b] = adj[b, a] = True
        order = rng.permutation(n)
        rank = np.empty(n, dtype=int)
        rank[order] = np.arange(n)
        g, rep = groups_around_representatives(n, a, b, w, order)
        for j, r in enumerate(rep.tolist()):
            members = np.flatnonzero(g == j)
            assert len(members) >= 2 and g[r] == j, (trial, j)
            assert all(adj[r, i] for i in members if i != r), (trial, j)
            assert rank[r] == rank[members].min(), (trial, j)
        kept = pool(g, rep)
        assert not adj[np.ix_(kept, kept)].any(), trial
        assert sorted(set(kept.tolist()) | set(np.flatnonzero(g >= 0).tolist())) == list(range(n))
        first = [int(np.flatnonzero(g == j).min()) for j in range(len(rep))]
        assert first == sorted(first)  # numbered by their smallest member


def test_a_chain_of_near_copies_is_split_so_every_member_is_a_copy_of_its_representative():
    # 0-1-2-3-4-5-6: each a near-copy of the next, 0 and 6 nothing alike; connected components would make one group
    chain = [(i, i + 1) for i in range(6)]
    assert _groups(8, chain) == ([0, 0, 1, 1, 2, 2, -1, -1], [0, 2, 4])  # 6: a copy of 5 only, kept
    assert _groups(8, chain, order=[6, 5, 4, 3, 2, 1, 0, 7]) == ([-1, 0, 0, 1, 1, 2, 2, -1], [2, 4, 6])


def test_an_image_near_two_representatives_joins_the_more_similar():
    pairs = [(0, 1), (0, 2), (4, 0), (4, 5), (5, 6)]
    order = [0, 5, 1, 2, 4, 6, 3]
    assert _groups(7, pairs, order, [1, 1, 0.97, 0.99, 1])[0] == [0, 0, 0, -1, 1, 1, 1]
    assert _groups(7, pairs, order, [1, 1, 0.99, 0.97, 1])[0] == [0, 0, 0, -1, 0, 1, 1]


def test_report_shows_a_bounded_part_of_a_large_group():
    groups = np.array([0] * 20 + [1, 1, -1])
    rep = np.array([5, 21])
    names = [f"img{i}.jpg" for i in range(len(groups))]
    html = duplicates_html(groups, rep, names, None, threshold=0.95)
    assert html.count("<li>") == 12 + 2 and "8 more image(s) of this group" in html
    assert html.index("img5.jpg") < html.index("img0.jpg")  # the representative first
    assert "2 group(s), 20 copies never proposed" in html


def test_representative_is_the_member_the_method_ranks_best_and_the_pool():
    pairs = [(0, 2), (0, 5), (3, 4)]
    hardness = np.array([0.5, 0.0, 0.2, 0.9, 0.1, 0.2, 0.3])
    assert preference(7, hardness).tolist() == [1, 4, 2, 5, 6, 0, 3]  # easiest first, a tie (2, 5) by index
    g, rep = _groups(7, pairs, preference(7, hardness))
    # 2 before 0 and 5; 5 is a copy of 0 only, so it stays a candidate; 0 joins 2 (first of two alike)
    assert g == [0, -1, 0, 1, 1, -1, -1] and rep == [2, 4]
    assert _groups(7, pairs, preference(7, hardness, hardest=True)) == ([0, -1, 0, 1, 1, 0, -1], [0, 3])
    assert _groups(7, pairs, preference(7, None))[1] == [0, 3]
    groups, rep = np.array(g), np.array(rep)
    assert pool(groups, rep).tolist() == [1, 2, 4, 5, 6]
    # an excluded (already labelled) image takes its whole group out of the pool, and with the pairs given its
    # near-copies in no group or another one: 5 is a copy of 0
    assert pool(groups, rep, np.array([0, 1])).tolist() == [4, 5, 6]
    a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    assert pool(groups, rep, np.array([0, 1]), (a, b)).tolist() == [4, 6]
    assert pool(groups, rep, np.array([3]), (a, b)).tolist() == [1, 2, 5, 6]


def test_duplicates_csv_lists_the_copies_left_out(tmp_path):
    groups = np.array([0, -1, 0, 1, 1, 0])
    rep = np.array([2, 4])
    write_duplicates_csv(tmp_path / "d.csv", groups, rep, [f"/p/{i}.png" for i in range(6)])
    with open(tmp_path / "d.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [
        {"group": "0", "path": "/p/0.png", "representative": "/p/2.png"},
        {"group": "0", "path": "/p/5.png", "representative": "/p/2.png"},
        {"group": "1", "path": "/p/3.png", "representative": "/p/4.png"},
    ]


# ------------------------------------------------------------------- elfs-select on real images with planted copies

COMMON = ["--clusters", "4", "progress=false", "selection.search_steps=50", "dynamics.epochs=10"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, dict]:
    """45 real photo tiles (scikit-learn's sample photos), a near-copy of each (JPEG, resize, crop, brightness in
    turn) and a distinct look-alike of each (the tile half a tile over): 135 images."""
    from elfs.data.planted import write_planted_folder

    root = tmp_path_factory.mktemp("planted") / "photos"
    return root, write_planted_folder(root, copies=45, tile=64, seed=0)


def _select(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("elfs-select")
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _kept(run: Path, budget: str) -> set[str]:
    with open(run / "selection.csv", newline="", encoding="utf-8") as f:
        return {r["id"] for r in csv.DictReader(f) if r[f"kept_{budget}"] == "1"}


def _dup_groups(run: Path, root: Path) -> list[set[str]]:
    """duplicates.csv read back as groups of relative paths (the representative included)."""
    groups: dict[str, set[str]] = {}
    with open(run / "duplicates.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            g = groups.setdefault(r["group"], set())
            g |= {str(Path(r["path"]).relative_to(root)), str(Path(r["representative"]).relative_to(root))}
    return list(groups.values())


@pytest.mark.slow
def test_elfs_select_proposes_one_image_of_each_group_of_near_copies(planted, tmp_path):
    import json

    from elfs.select.double_end import double_end

    root, truth = planted
    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    p = _select([str(root), "--budget", "0.2", "--out", str(tmp_path / "a"), cache, *COMMON], tmp_path / "cwd")
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "a"
    kept = _kept(run, "0.2")
    n = len(truth["paths"])
    assert len(kept) == round(0.2 * n)  # the budget: distinct images
    pairs = [set(g) for g in truth["groups"]]
    found = _dup_groups(run, root)
    missed = [g for g in pairs if not any(g <= f for f in found)]
    assert 1 - len(missed) / len(pairs) >= 0.95, missed
    assert not [f for f in found if len(f & kept) > 1], "two members of one group found were proposed"
    assert not [g for g in pairs if g <= kept], "two members of one planted group were proposed"
    of = {p: i for i, g in enumerate(pairs) for p in g}
    # no distinct image grouped: every group found is (part of) one planted pair
    assert all(len({of.get(p, p) for p in f}) == 1 for f in found), found
    listed = {r for f in found for r in f}
    with open(run / "duplicates.csv", newline="", encoding="utf-8") as f:
        left_out = {str(Path(r["path"]).relative_to(root)) for r in csv.DictReader(f)}
    assert not kept & left_out and listed - left_out  # copies never kept; representatives may be
    html = (run / "report.html").read_text(encoding="utf-8")
    shown = html.count("<div class='cluster'><div class='head'><b>group ")
    assert "Near-duplicates:" in html and shown == min(len(found), 30)

    # --keep-duplicates: the old behaviour, double-end pruning over every image, and no duplicates.csv
    p = _select(
        [str(root), "--budget", "0.2", "--keep-duplicates", "--out", str(tmp_path / "b"), cache, *COMMON],
        tmp_path / "cwd",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    run_b = tmp_path / "b"
    assert not (run_b / "duplicates.csv").exists()
    with open(run_b / "selection.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    beta = json.loads((run_b / "results.json").read_text())["results"][0]["beta"]
    ref = double_end(np.array([float(r["hardness"]) for r in rows]), 0.2, beta)
    assert _kept(run_b, "0.2") == {rows[i]["id"] for i in ref.tolist()}

    # --nested --exclude: an excluded image's near-copies are never proposed either
    labelled = [g[0] for g in truth["groups"][:20]]
    (tmp_path / "labelled.txt").write_text("".join(f"{root / p}\n" for p in labelled))
    p = _select(
        [str(root), "--budget", "0.1", "0.2", "--nested", "--exclude", str(tmp_path / "labelled.txt")]
        + ["--out", str(tmp_path / "c"), cache, *COMMON],
        tmp_path / "cwd",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    small, large = _kept(tmp_path / "c", "0.1"), _kept(tmp_path / "c", "0.2")
    assert small <= large and len(large) == round(0.2 * n)
    near_labelled = {p for f in found if f & set(labelled) for p in f}
    assert near_labelled and not large & (near_labelled | set(labelled))


def test_pixel_signature_ignores_brightness_and_tells_apart_other_pictures():
    from elfs.method.embed import pixel_signature

    rng = np.random.default_rng(0)
    img = rng.integers(0, 200, (2, 64, 64, 3), dtype=np.uint8)
    brighter = (img.astype(np.float32) * 1.2 + 10).astype(np.uint8)  # an affine map of the pixels
    raw = pixel_signature(img)
    assert raw.shape == (2, 1024) and raw.dtype == np.int8 and (np.abs(raw).max(axis=1) == 127).all()
    a, b = plain_signature(raw), plain_signature(pixel_signature(brighter))
    assert a.shape == (2, 256) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert (np.sum(a * b, axis=1) > 0.999).all() and abs(float(a[0] @ a[1])) < 0.3
    # the 16 x 16 comparison is the 16 x 16 grey thumbnail of the image (int8 rounding aside)
    grey = img.astype(np.float64).mean(axis=3).reshape(2, 16, 4, 16, 4).mean(axis=(2, 4)).reshape(2, 256)
    assert np.allclose(a, _unit(grey - grey.mean(axis=1, keepdims=True)), atol=0.01)


def _box_mean(img: np.ndarray, y0: float, x0: float, length: float) -> np.ndarray:
    """Independent of the library: the 16 x 16 cell averages of the square box (y0, x0, side ``length``) of a
    piecewise-constant image over [0, 1]^2, each cell by the difference of the image's cumulative integral."""
    side = img.shape[0]
    grid = np.arange(side + 1) / side

    def integral_1d(rows: np.ndarray, start: float) -> np.ndarray:  # [.., side] -> [.., 16] cell averages
        cum = np.concatenate([np.zeros((*rows.shape[:-1], 1)), np.cumsum(rows, axis=-1) / side], axis=-1)
        edges = start + length * np.arange(17) / 16
        at = np.stack([np.interp(edges, grid, r) for r in cum.reshape(-1, side + 1)])
        return (np.diff(at, axis=-1) / (length / 16)).reshape(*rows.shape[:-1], 16)

    cols = integral_1d(img, x0)  # [side, 16]
    return integral_1d(cols.T, y0).T  # [16, 16]


def test_aligned_similarity_against_a_loop_over_boxes():
    """The batched crops against each box cut out one by one with cumulative integrals, on random thumbnails;
    never below the plain cosine (the whole picture is a box)."""
    rng = np.random.default_rng(0)
    sig = rng.integers(-127, 128, (6, 1024)).astype(np.int8)
    a, b = np.array([0, 1, 2, 5]), np.array([3, 4, 5, 0])
    got = aligned_similarity(sig, a, b, max_crop=0.04)
    boxes = crop_boxes(0.04)
    assert len(boxes) == 1 + 2 + 3 + 4 + 5 and (0.0, 1.0) in boxes and (0.04, 0.96) in boxes
    plain = plain_signature(sig)
    for p, (i, j) in enumerate(zip(a, b, strict=True)):
        best = -1.0
        for x, y in ((i, j), (j, i)):
            img = sig[x].astype(np.float64).reshape(32, 32)
            for ox, n in boxes:
                for oy, m in boxes:
                    if m == n:
                        crop = _unit(_box_mean(img, oy, ox, n).reshape(1, 256) - _box_mean(img, oy, ox, n).mean())
                        best = max(best, float(crop[0] @ plain[y]))
        assert abs(got[p] - best) < 1e-5, (p, got[p], best)
        assert got[p] >= float(plain[i] @ plain[j]) - 1e-5


def test_a_copy_cropped_a_few_percent_is_found_once_aligned():
    """A picture and a copy with 3 % cut off the left and top (what a crop does to a thumbnail: shift and scale):
    the plain cosine misses it, the aligned one finds it; a distinct picture stays far below either way."""
    from PIL import Image

    from elfs.method.embed import pixel_signature

    rng = np.random.default_rng(1)
    big = np.asarray(
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).resize((400, 400), Image.Resampling.BICUBIC)
    )
    copy = np.asarray(Image.fromarray(big[12:, 12:]).resize((400, 400), Image.Resampling.BICUBIC))
    other = np.asarray(
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).resize((400, 400), Image.Resampling.BICUBIC)
    )
    sig = pixel_signature(np.stack([big, copy, other]))
    idx = np.array([[1, 2], [0, 2], [0, 1]])
    plain = pair_similarity(sig, idx)
    assert plain[0, 0] < 0.95
    lo, hi, w = near_copy_pairs(idx, sig, 0.95)
    assert not len(lo)
    lo, hi, w = near_copy_pairs(idx, sig, 0.95, 0.975, crop_gate=0.5, crop_candidates=1, max_crop=0.08)
    assert list(zip(lo.tolist(), hi.tolist(), strict=True)) == [(0, 1)] and w[0] >= 0.975 > plain[0, 0]
    assert not len(near_copy_pairs(idx, sig, 0.95, 0.975, crop_gate=0.9, crop_candidates=1, max_crop=0.08)[0])
    # only each image's most alike candidates are aligned: a blend of both (plain 0.92 to each, not a copy once
    # aligned either) outranks the crop from both sides with one candidate; with two the crop is found again
    blend = ((big.astype(np.float64) + copy) / 2 * 0.8 + other * 0.2).astype(np.uint8)
    sig4 = pixel_signature(np.stack([big, copy, other, blend]))
    idx4 = np.array([[1, 3], [0, 3], [0, 1], [0, 1]])
    assert (pair_similarity(sig4, idx4)[:2, 1] > pair_similarity(sig4, idx4)[0, 0]).all()
    for m, found in ((1, []), (2, [(0, 1)])):
        lo, hi, _ = near_copy_pairs(idx4, sig4, 0.95, 0.975, crop_gate=0.5, crop_candidates=m, max_crop=0.08)
        assert list(zip(lo.tolist(), hi.tolist(), strict=True)) == found, m
    assert aligned_similarity(sig, np.array([0, 1]), np.array([2, 2]), 0.08).max() < 0.5
    with pytest.raises(ValueError, match="crop_gate, crop_candidates and max_crop"):
        near_copy_pairs(idx, sig, 0.95, 0.975)


@pytest.mark.parametrize(
    "field, value",
    [
        ("dedup_threshold", 0.0),
        ("dedup_threshold", 1.5),
        ("dedup", "yes"),
        ("dedup_crop_threshold", 1.2),
        ("dedup_crop_gate", 0.0),
        ("dedup_max_crop", 0.5),
        ("dedup_crop_candidates", 0),
    ],
)
def test_bad_dedup_settings_are_refused_naming_the_key(field, value):
    from elfs.config import SelectionConfig
    from elfs.errors import ConfigError

    with pytest.raises(ConfigError, match=f"selection.{field}"):
        SelectionConfig(**{field: value}).validate()
