"""selection_report: the CSV / annotate lists / PNGs a label-free run hands back, on real files in tmp_path."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from elfs.handback.answer import Answer
from elfs.handback.selection_report import (
    MAX_ROWS,
    PER_ROW,
    atomic_write,
    budget_cuts,
    contact_sheet_rows,
    priorities,
    priority_order,
    write_selection_outputs,
)
from elfs.select import select


def _write(run_dir, *, load_image=None, report_sections=(), pseudo_labels=None, **fields):
    """write_selection_outputs over one Answer record made of these fields (checked when it is made)."""
    answer = Answer(clusters=pseudo_labels, **fields)
    return write_selection_outputs(run_dir, answer, load_image=load_image, sections=report_sections)


N = 300
C = 5
BUDGETS = (0.1, 0.3)
BETA = 0.1
ODD_ID = 'dir, with "quotes"/naïve_ünïcödé €.png'


@pytest.fixture(scope="module")
def images():
    """Small real pictures: RGB crops of sklearn's sample photos and grayscale digits, mixed by index."""
    from sklearn.datasets import load_digits, load_sample_images

    photos = load_sample_images().images
    digits = load_digits().images  # 8x8 floats in [0, 16]
    rng = np.random.default_rng(0)
    out = []
    for i in range(N):
        if i % 3 == 2:
            out.append((digits[i] * 15).astype(np.uint8))  # HxW
        else:
            p = photos[i % 2]
            hh, ww = int(rng.integers(40, 120)), int(rng.integers(40, 120))  # non-square too
            y, x = int(rng.integers(0, p.shape[0] - hh)), int(rng.integers(0, p.shape[1] - ww))
            out.append(np.ascontiguousarray(p[y : y + hh, x : x + ww]))
    return out


def _inputs(images=None, n=N, c=C):
    rng = np.random.default_rng(1)
    ids = [f"img_{i:03d}.jpg" for i in range(n)]
    ids[7] = ODD_ID
    ids[8] = "#8"
    pl = rng.integers(0, c, size=n).astype(np.int64)
    aum = rng.normal(size=n).round(2)  # rounded: plenty of ties in the score
    hardness = -aum  # AUM: low = hard
    kept = {b: select("double_end", hardness, n=n, budget=b, beta=BETA) for b in BUDGETS}
    return dict(
        ids=ids,
        pseudo_labels=pl,
        hardness=hardness,
        score_name="aum",
        score=aum,
        kept=kept,
        beta=dict.fromkeys(BUDGETS, BETA),
        num_clusters=c,
        load_image=None if images is None else (lambda i: images[i]),
        skipped=[("broken, file.png", "cannot identify image file"), ("ümlaut.gif", 'bad "header"')],
    )


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _no_temp_files(run_dir: Path) -> None:
    leftovers = [p.name for p in run_dir.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_outputs(tmp_path, images):
    args = _inputs(images)
    paths = _write(tmp_path, **args)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        [
            "selection.csv",
            "annotate_0.1.txt",
            "annotate_0.3.txt",
            "skipped.csv",
            "contact_sheet.png",
            "score_histogram.png",
            "cluster_coverage.png",
            "selection.json",
            "report.html",
        ]
    )  # no file paths (in-memory images): no Label Studio / CVAT / FiftyOne / symlink exports
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    _no_temp_files(tmp_path)

    rows = _read_csv(tmp_path / "selection.csv")
    assert len(rows) == N
    assert list(rows[0]) == [
        "index",
        "id",
        "filepath",
        "pseudo_label",
        "score_name",
        "score",
        "hardness",
        "rank",
        "kept_0.1",
        "kept_0.3",
        "priority_0.1",
        "priority_0.3",
    ]
    assert {r["score_name"] for r in rows} == {"aum"} and {r["filepath"] for r in rows} == {""}
    assert [r["id"] for r in rows] == args["ids"]  # exact round trip, comma / quote / unicode included
    assert rows[7]["id"] == ODD_ID
    assert [int(r["index"]) for r in rows] == list(range(N))
    assert np.array_equal([int(r["pseudo_label"]) for r in rows], args["pseudo_labels"])
    assert np.array_equal([float(r["score"]) for r in rows], args["score"])
    assert np.array_equal([float(r["hardness"]) for r in rows], args["hardness"])
    for b, k in args["kept"].items():
        col = np.array([int(r[f"kept_{b:g}"]) for r in rows])
        assert set(col) <= {0, 1}
        assert col.sum() == k.size == round(b * N)
        assert np.array_equal(np.flatnonzero(col), k)

    rank = np.array([int(r["rank"]) for r in rows])
    assert sorted(rank) == list(range(1, N + 1))
    by_rank = np.argsort(rank)  # hardest first
    h = args["hardness"]
    assert np.all(np.diff(h[by_rank]) <= 0)  # hardness never increases down the ranks
    # double_end keeps one contiguous block of ranks, just below the round(beta*N) hardest
    for k in args["kept"].values():
        assert sorted(rank[k]) == list(range(round(BETA * N) + 1, round(BETA * N) + k.size + 1))

    for b, k in args["kept"].items():
        prio = np.array([int(r[f"priority_{b:g}"]) if r[f"priority_{b:g}"] else 0 for r in rows])
        assert np.array_equal(np.flatnonzero(prio), k)  # empty exactly where not kept
        order = np.flatnonzero(prio)[np.argsort(prio[prio > 0])]
        assert sorted(prio[k]) == list(range(1, k.size + 1))
        assert np.array_equal(order, priority_order(args["pseudo_labels"], h, k))
        text = (tmp_path / f"annotate_{b:g}.txt").read_text(encoding="utf-8")
        assert text.endswith("\n")
        assert text.splitlines() == [args["ids"][i] for i in order]  # priority order, ids for in-memory images

    skipped = _read_csv(tmp_path / "skipped.csv")
    assert [(r["path"], r["reason"]) for r in skipped] == args["skipped"]

    for name in ("contact_sheet.png", "score_histogram.png", "cluster_coverage.png"):
        with Image.open(tmp_path / name) as im:
            im.verify()
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG"
            w, hgt = im.size
            assert 300 <= w <= 3000 and 200 <= hgt <= 5000, (name, im.size)
    with Image.open(tmp_path / "contact_sheet.png") as im:  # one row per cluster with kept images at 0.1
        assert im.size[1] >= C * 64


def test_without_images_or_skips(tmp_path):
    args = _inputs(None)
    args["skipped"] = ()
    args["beta"] = {0.1: None}  # 0.3 missing -> None as well
    paths = _write(tmp_path, **args)
    assert "contact_sheet.png" not in {p.name for p in paths}
    assert not (tmp_path / "contact_sheet.png").exists()
    assert (tmp_path / "skipped.csv").read_text(encoding="utf-8") == "path,reason\n"
    assert all(p.exists() for p in paths)
    _no_temp_files(tmp_path)


def test_budget_cuts_match_the_double_end_window():
    args = _inputs(None)
    h = args["hardness"]
    for k in args["kept"].values():
        beta_cut, n_hard, easy_cut, n_easy = budget_cuts(h, k, BETA)
        assert n_hard == round(BETA * N) and n_easy == N - n_hard - k.size
        assert easy_cut <= h[k].min() and h[k].max() <= beta_cut
        assert (h >= beta_cut).sum() >= n_hard and (h <= easy_cut).sum() >= n_easy
    assert budget_cuts(h, args["kept"][0.1], None)[:2] == (None, 0)


def test_contact_sheet_rows_capped_and_deterministic():
    n, c = 400, 60
    pl = np.arange(n) % c
    h = np.linspace(0.0, 1.0, n)
    kept = np.arange(0, n, 2, dtype=np.int64)
    rows, present = contact_sheet_rows(pl, h, kept, c)
    assert present == 30  # even indices only reach the even clusters
    assert len(rows) == min(MAX_ROWS, present)
    rows_all, present_all = contact_sheet_rows(pl, h, np.arange(n, dtype=np.int64), c)
    assert present_all == c and len(rows_all) == MAX_ROWS
    assert [r[0] for r in rows_all] == list(range(MAX_ROWS))
    for cluster, pick, n_kept, total in rows_all:
        assert n_kept == total == np.sum(pl == cluster)
        assert pick.size == min(PER_ROW, total) and np.all(pl[pick] == cluster)
        assert np.all(np.diff(h[pick]) > 0)  # easy -> hard
    # clusters larger than a row: PER_ROW picks spread from the cluster's easiest to its hardest kept image
    big_pl = np.arange(n) % 3
    for cluster, pick, n_kept, _ in contact_sheet_rows(big_pl, h, np.arange(n, dtype=np.int64), 3)[0]:
        members = np.flatnonzero(big_pl == cluster)
        assert pick.size == PER_ROW and n_kept == members.size and np.all(big_pl[pick] == cluster)
        assert h[pick[0]] == h[members].min() and h[pick[-1]] == h[members].max()
        assert np.all(np.diff(h[pick]) > 0)
    rows_again, _ = contact_sheet_rows(pl, h, np.arange(n, dtype=np.int64), c)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(rows_all, rows_again, strict=True))


def _bad(**changes):
    args = _inputs(None)
    args.update(changes)
    if "kept" in changes and "beta" not in changes:
        args["beta"] = dict.fromkeys(changes["kept"], BETA)
    return args


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(ids=[f"x{i}" for i in range(N - 1)]), "hardness has 300 entries but there are 299 ids"),
        (dict(score=np.zeros(N + 1)), "score has shape"),
        (dict(pseudo_labels=np.zeros(N - 1, dtype=np.int64)), "pseudo_labels has shape"),
        (dict(pseudo_labels=np.full(N, C, dtype=np.int64)), r"outside \[0, num_clusters=5\)"),
        (dict(pseudo_labels=np.full(N, -1, dtype=np.int64)), r"outside \[0, num_clusters=5\)"),
        (dict(kept={0.1: np.array([0, N], dtype=np.int64)}), r"out of range \[0, 300\)"),
        (dict(kept={0.1: np.array([-1, 3], dtype=np.int64)}), r"out of range \[0, 300\)"),
        (dict(kept={}), "kept is empty"),
        (dict(kept={0.1: np.array([3, 3], dtype=np.int64)}), "duplicate"),
        (dict(ids=["same"] * N), "ids must be unique"),
        (dict(ids=["a\nb"] + [f"x{i}" for i in range(N - 1)]), "line break"),
        (dict(score_name="a\nb"), "line break"),
        (dict(filepaths=["/x.png"] * N), "filepaths must be unique"),
        (dict(filepaths=[f"rel{i}.png" for i in range(N)]), "not absolute"),
        (dict(filepaths=[f"/x{i}.png" for i in range(N - 1)]), "filepaths has 299 entries"),
        (dict(embeddings=np.zeros((N - 1, 4))), "embeddings has shape"),
        (dict(embeddings=np.zeros(N)), "embeddings has shape"),
        (dict(beta={0.1: 0.95}), r"beta=0.95 \+ budget=0.1"),
        (dict(beta={0.5: 0.1}), "not in kept"),
        (dict(num_clusters=0), "num_clusters"),
    ],
)
def test_bad_inputs_raise_before_writing(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        _write(tmp_path, **_bad(**changes))
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_bad_image_from_loader(tmp_path):
    args = _inputs(None)
    args["load_image"] = lambda i: np.zeros((8, 8, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="dtype float32"):
        _write(tmp_path, **args)
    assert not (tmp_path / "contact_sheet.png").exists()
    _no_temp_files(tmp_path)


def test_atomic_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "selection.csv"
    target.write_text("old\n", encoding="utf-8")

    def half_then_crash(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("half")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError, match="crash mid-write"):
        atomic_write(target, half_then_crash)
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["selection.csv"]


def test_priority_order_by_hand():
    # 9 images; kept: clusters 0 (3 kept), 1 (1 kept), 2 (3 kept)
    pl = np.array([0, 0, 0, 1, 1, 2, 2, 2, 0])
    h = np.array([0.1, 0.9, 0.5, 0.7, 0.2, 0.3, 0.8, 0.6, 0.0])
    kept = np.array([0, 1, 2, 3, 5, 6, 7])
    # clusters 0 and 2 tie at 3 kept -> 0 first (smaller id), then 2, then 1 (1 kept).
    # hardest first within: cluster 0: 1 (0.9), 2 (0.5), 0 (0.1); cluster 2: 6 (0.8), 7 (0.6), 5 (0.3); cluster 1: 3
    # round 1: 1, 6, 3; round 2: 2, 7; round 3: 0, 5
    assert priority_order(pl, h, kept).tolist() == [1, 6, 3, 2, 7, 0, 5]
    assert priority_order(pl, h, kept, easy_first=True).tolist() == [0, 5, 3, 2, 7, 1, 6]
    assert priorities(priority_order(pl, h, kept), 9).tolist() == [6, 1, 4, 3, 0, 7, 2, 5, 0]
    # a bigger cluster is visited first: cluster 2 keeps 3, cluster 0 keeps 2
    assert priority_order(pl, h, np.array([1, 2, 5, 6, 7])).tolist() == [6, 1, 7, 2, 5]
    # ties in hardness: the higher index ranks harder (as in the rank column)
    assert priority_order(np.zeros(3, dtype=np.int64), np.zeros(3), np.array([0, 1, 2])).tolist() == [2, 1, 0]
    assert priority_order(pl, h, np.array([], dtype=np.int64)).tolist() == []


def test_any_prefix_of_the_priority_order_spreads_over_clusters():
    args = _inputs(None)
    pl, k = args["pseudo_labels"], args["kept"][0.3]
    order = priority_order(pl, args["hardness"], k)
    assert sorted(order.tolist()) == k.tolist()
    counts = np.bincount(pl[k], minlength=C)
    for m in range(1, order.size + 1):
        got = np.bincount(pl[order[:m]], minlength=C)
        # every cluster has min(its kept count, the round number) images in a prefix of m, give or take one round
        assert np.all(got >= np.minimum(counts, got.max() - 1)), (m, got)
