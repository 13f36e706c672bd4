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
from elfs.method.duplicates import duplicate_groups, pair_similarity, pool, representatives, star_groups


def _unit(rows) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_groups_by_hand():
    # signatures: 0 and 1 at cosine 0.99 (a copy), 1 and 2 at 0.99 (so 0-2 by transitivity), 3 and 4 at 0.6
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    sig = _unit([a, a + 0.1425 * b, a + 0.29 * b, b, b + 1.33 * np.array([0, 0, 1.0]), [0, 0, 1.0]])
    idx = np.array([[1, 2], [0, 2], [1, 0], [4, 0], [3, 1], [4, 3]])
    sims = np.einsum("nd,nkd->nk", sig, sig[idx])
    assert np.allclose(sims, pair_similarity(sig, idx, block=2))
    assert round(float(sig[0] @ sig[1]), 2) == 0.99 and round(float(sig[3] @ sig[4]), 1) == 0.6
    assert duplicate_groups(idx, sig, 0.95).tolist() == [0, 0, 0, -1, -1, -1]
    assert duplicate_groups(idx, sig, 0.5).tolist() == [0, 0, 0, 1, 1, 1]
    # an edge seen from one side only (the kNN graph is not symmetric) still joins both
    idx1 = idx.copy()
    idx1[1] = [2, 2]
    assert duplicate_groups(idx1, sig, 0.95).tolist() == [0, 0, 0, -1, -1, -1]
    with pytest.raises(ValueError, match="threshold"):
        duplicate_groups(idx, sig, 1.5)


def test_groups_match_brute_force_components():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((40, 8))
    x = _unit(np.concatenate([base, base[:10] + 0.01 * rng.standard_normal((10, 8)), base[:3] * 1.001]))
    s = x @ x.T
    np.fill_diagonal(s, -2)
    idx = np.argsort(-s, axis=1)[:, :5]
    got = duplicate_groups(idx, x, 0.99)
    # brute force: the components of all pairs above the threshold (the 5-NN graph holds every such pair here)
    n = len(x)
    label = list(range(n))
    for i in range(n):
        for j in range(n):
            if s[i, j] >= 0.99:
                a, b = label[i], label[j]
                label = [a if v == b else v for v in label]
    label = np.array(label)
    alone = np.bincount(label, minlength=n)[label] == 1
    assert ((got < 0) == alone).all()
    assert ((got[:, None] == got[None, :]) == (label[:, None] == label[None, :]))[~alone][:, ~alone].all()
    assert (~alone).sum() == 10 + 10 + 3  # originals 0..9 with their copies; 0..2 with a third member too


def test_a_chain_of_near_copies_is_split_so_every_member_is_a_copy_of_its_centre():
    # 0-1-2-3-4-5-6: each a near-copy of the next, 0 and 6 nothing alike; connected components would make one group
    got = star_groups(8, np.arange(6), np.arange(1, 7))
    assert got.tolist() == [0, 0, 0, 1, 1, 2, 2, -1]  # centres 1, 3, 5 (most pairs, then the smaller index); 7 alone
    # a pair given from both sides, or to itself, counts once
    both = star_groups(3, np.array([0, 1, 2]), np.array([1, 0, 2]))
    assert both.tolist() == [0, 0, -1]


def test_a_node_whose_partners_are_all_grouped_joins_its_most_similar_partners_group():
    # centres 0 (partners 1, 2, 3) and 5 (6, 7, 8); 4 pairs with 1 (0.97) and 6 (0.99), both grouped before its turn
    a = np.array([0, 0, 0, 5, 5, 5, 4, 4])
    b = np.array([1, 2, 3, 6, 7, 8, 1, 6])
    w = np.array([1, 1, 1, 1, 1, 1, 0.97, 0.99])
    assert star_groups(9, a, b, w).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    w[6:] = [0.99, 0.97]
    assert star_groups(9, a, b, w).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]


def test_report_shows_a_bounded_part_of_a_large_group():
    groups = np.array([0] * 20 + [1, 1, -1])
    rep = np.array([5, 21])
    names = [f"img{i}.jpg" for i in range(len(groups))]
    html = duplicates_html(groups, rep, names, None, threshold=0.95)
    assert html.count("<li>") == 12 + 2 and "8 more image(s) of this group" in html
    assert html.index("img5.jpg") < html.index("img0.jpg")  # the representative first
    assert "2 group(s), 20 copies never proposed" in html


def test_representative_is_the_member_the_method_ranks_best_and_the_pool():
    groups = np.array([0, -1, 0, 1, 1, 0, -1])
    hardness = np.array([0.5, 0.0, 0.2, 0.9, 0.1, 0.2])
    hardness = np.append(hardness, 0.3)
    assert representatives(groups, hardness).tolist() == [2, 4]  # easiest; a tie (2, 5) goes to the first
    assert representatives(groups, hardness, hardest=True).tolist() == [0, 3]
    assert representatives(groups, None).tolist() == [0, 3]
    rep = np.array([2, 4])
    assert pool(groups, rep).tolist() == [1, 2, 4, 6]
    # an excluded (already labelled) image takes its whole group out of the pool
    assert pool(groups, rep, np.array([0, 1])).tolist() == [4, 6]


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
    # a planted pair proposed twice is one the grouping missed (here 1 of 45: a crop whose thumbnail cosine is 0.84)
    assert all(g in missed for g in pairs if g <= kept), [g for g in pairs if g <= kept]
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
    a, b = pixel_signature(img).astype(np.float32), pixel_signature(brighter).astype(np.float32)
    assert a.shape == (2, 256) and a.dtype == np.float32 and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-3)
    assert (np.sum(a * b, axis=1) > 0.999).all() and abs(float(a[0] @ a[1])) < 0.3


@pytest.mark.parametrize("field, value", [("dedup_threshold", 0.0), ("dedup_threshold", 1.5), ("dedup", "yes")])
def test_bad_dedup_settings_are_refused_naming_the_key(field, value):
    from elfs.config import SelectionConfig
    from elfs.errors import ConfigError

    with pytest.raises(ConfigError, match=f"selection.{field}"):
        SelectionConfig(**{field: value}).validate()
