"""A folder of unlabeled images in, a list of images to annotate out: the folder source, the label-free run, the
`elfs-select` command and the Python API, on real images shipped with scikit-learn."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from elfs.data.folder import decode_image, scan_folder
from elfs.errors import DataError

KINDS = 4
PER_KIND = 60


def _write_folder(root: Path) -> dict[str, str]:
    """240 images of four kinds (two digits, crops of two photos) as PNG and JPEG in nested folders, plus a
    corrupt JPEG and a text file. Returns {relative path: kind} for the readable images."""
    from PIL import Image
    from sklearn.datasets import load_digits, load_sample_images

    digits = load_digits()
    photos = load_sample_images().images  # china, flower: 427 x 640 x 3
    rng = np.random.default_rng(0)
    kinds: dict[str, str] = {}
    for kind in range(KINDS):
        for j in range(PER_KIND):
            if kind < 2:  # a digit 0 or 1, 8x8 grey scaled up
                img = digits.images[digits.target == kind][j]
                arr = np.kron(np.clip(img * 16, 0, 255), np.ones((6, 6))).astype(np.uint8)
            else:  # a random crop of a photo, of varying size and aspect
                ph = photos[kind - 2]
                h, w = int(rng.integers(60, 160)), int(rng.integers(60, 160))
                y, x = int(rng.integers(0, ph.shape[0] - h)), int(rng.integers(0, ph.shape[1] - w))
                arr = ph[y : y + h, x : x + w]
            ext = "png" if j % 2 == 0 else "jpg"
            rel = f"kind{kind}/{'deep/' if j % 3 == 0 else ''}img_{j:03d}.{ext}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / rel)
            kinds[rel] = f"kind{kind}"
    (root / "kind2" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" + bytes(200))
    (root / "notes.txt").write_text("not an image")
    return kinds


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("photos")
    return root, _write_folder(root)


def test_scan_lists_images_and_skips_other_files(folder):
    root, kinds = folder
    images, skipped = scan_folder(root)
    assert len(images) == len(kinds) + 1  # the corrupt .jpg is only found out when it is decoded
    assert list(images.paths) == sorted(images.paths) and "kind2/broken.jpg" in images.paths
    assert skipped == [("notes.txt", "not an image (extension '.txt')")]
    fp = images.fingerprint()
    assert fp == scan_folder(root)[0].fingerprint()
    os.utime(root / "kind0" / "img_001.jpg", ns=(1, 1))  # touched: a different fingerprint
    assert scan_folder(root)[0].fingerprint() != fp
    x = decode_image(root / "kind3" / "deep" / "img_000.png", 32)
    assert x.shape == (32, 32, 3) and x.dtype == np.uint8
    with pytest.raises(Exception):  # noqa: B017 - PIL's own error type for a corrupt file
        decode_image(root / "kind2" / "broken.jpg", 32)


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: p, "is an empty folder"),
        (lambda p: (p / "a.txt").write_text("x") and p, "holds 1 file(s) but no image"),
        (lambda p: p / "missing", "does not exist"),
    ],
)
def test_scan_refuses_folders_without_images(tmp_path, make, needle):
    target = make(tmp_path) or tmp_path
    with pytest.raises(DataError, match=re.escape(needle)):
        scan_folder(target)


def _select(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("elfs-select")
    assert exe.exists(), "the console script elfs-select is installed with the package"
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "selection.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_elfs_select_on_a_folder_then_another_budget_from_the_cache(folder, tmp_path):
    root, kinds = folder
    cache = tmp_path / "cache"
    common = ["--clusters", str(KINDS), f"paths.cache_dir={cache}", "progress=false", "selection.search_steps=100"]
    p = _select([str(root), "--budget", "0.3", "--out", str(tmp_path / "a"), *common], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    run = tmp_path / "a"
    rows = _rows(run)
    assert sorted(r["id"] for r in rows) == sorted(kinds)  # one row per readable image, nothing else
    assert all((root / r["id"]).is_file() for r in rows)
    kept = [r for r in rows if r["kept_0.3"] == "1"]
    assert len(kept) == round(0.3 * len(kinds))
    clusters = {r["pseudo_label"] for r in rows}
    assert clusters <= {str(c) for c in range(KINDS)} and {r["pseudo_label"] for r in kept} == clusters
    listed = (run / "annotate_0.3.txt").read_text().splitlines()  # absolute paths, in priority order
    assert listed == [r["filepath"] for r in sorted(kept, key=lambda r: int(r["priority_0.3"]))]
    assert listed == [str(root.absolute() / r["id"]) for r in sorted(kept, key=lambda r: int(r["priority_0.3"]))]
    with open(run / "skipped.csv", newline="") as f:
        skipped = {r["path"]: r["reason"] for r in csv.DictReader(f)}
    assert set(skipped) == {"kind2/broken.jpg", "notes.txt"}
    for name in ("contact_sheet.png", "score_histogram.png", "cluster_coverage.png", "results.json"):
        assert (run / name).stat().st_size > 1000, name
    res = json.loads((run / "results.json").read_text())
    assert res["labelled"] is False and res["n_train"] == len(kinds) and res["n_skipped"] == 2
    assert "evaluate" not in {e["stage"] for e in res["cache"]}  # no labels: nothing is evaluated
    # the pseudo-labels found the four kinds (a diagnostic computed here, never by elfs)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score([kinds[r["id"]] for r in rows], [r["pseudo_label"] for r in rows]) > 0.3

    p = _select([str(root), "--budget", "0.2", "--out", str(tmp_path / "b"), *common], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    cached = {e["stage"]: e["cached"] for e in res["cache"]}
    assert cached == {"embed": True, "knn": True, "cluster": True, "dynamics": True, "beta_search": False}
    assert sum(r["kept_0.2"] == "1" for r in _rows(tmp_path / "b")) == round(0.2 * len(kinds))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--budget", "1.0"], "selection.budget=1.0 keeps all"),
        (["--budget", "0.001"], "keeps round"),
        (["--clusters", "500"], "cluster.num_clusters=500"),
    ],
)
def test_elfs_select_bad_input_is_one_line(folder, tmp_path, args, needle):
    root, _ = folder
    p = _select([str(root), *args, "--out", str(tmp_path / "o"), f"paths.cache_dir={tmp_path / 'c'}"], tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("elfs: error:") and needle in last and "Traceback" not in p.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.csv"))


def test_elfs_select_refuses_a_folder_of_unreadable_images(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(60):  # more than knn.k, so that the check that fails is the one after decoding
        (bad / f"x{i}.png").write_bytes(b"garbage")
    p = _select([str(bad), "--out", str(tmp_path / "o"), f"paths.cache_dir={tmp_path / 'c'}"], tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    last = p.stderr.strip().splitlines()[-1]
    assert "elfs-select needs at least 20 images; this folder has 0 that can be decoded" in last
    assert "(0 of 60 images could be decoded: x0.png (cannot identify image file), x1.png (" in last
    assert last.endswith(" and 55 more)")


def _folder_conf(compose_cfg, root: Path, *extra: str, sub: str = ""):
    from elfs.config import to_typed

    overrides = ["+experiment=folder_select", f"dataset.path={root}", "logger=none", *extra]
    return to_typed(compose_cfg(overrides, sub=sub))


def test_three_corrupt_jpegs_are_counted_as_they_decode(tmp_path, compose_cfg):
    """A new user's folder of three files that are not JPEGs: the count is of images that decode, with why."""
    from elfs.pipeline import load_data
    from elfs.preflight import check_data

    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("a", "b", "c"):
        (bad / f"{name}.jpg").write_bytes(np.random.default_rng(ord(name)).integers(0, 256, 300).astype(np.uint8))
    conf = _folder_conf(compose_cfg, bad)
    with pytest.raises(DataError) as e:
        check_data(conf, load_data(conf.dataset))
    assert str(e.value) == (
        "elfs-select needs at least 20 images; this folder has 0 that can be decoded (0 of 3 images could be "
        "decoded: a.jpg (cannot identify image file), b.jpg (cannot identify image file), c.jpg (cannot identify "
        "image file))"
    )


def _digit_pngs(root: Path, n: int) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    root.mkdir()
    for i, img in enumerate(load_digits().images[:n]):
        Image.fromarray((img * 16).clip(0, 255).astype(np.uint8)).save(root / f"d{i:03d}.png")
    return root


def test_a_small_folder_gets_neighbour_counts_that_fit(tmp_path, compose_cfg, caplog):
    """30 images, knn.k=50: k becomes one cluster's worth (30 // 10 clusters = 3), with one warning line; 12
    images: one line saying how many are needed."""
    import logging

    from elfs.pipeline import load_data
    from elfs.preflight import MIN_IMAGES, check_data

    conf = _folder_conf(compose_cfg, _digit_pngs(tmp_path / "small", 30), "selection.baselines=[d2]", sub="a")
    assert (conf.knn.k, conf.cluster.knn_k, conf.selection.d2_k) == (50, 20, 5)
    with caplog.at_level(logging.WARNING, logger="elfs.preflight"):
        assert check_data(conf, load_data(conf.dataset)) == 10
    assert (conf.knn.k, conf.cluster.knn_k, conf.selection.d2_k) == (3, 3, 5)  # D2 builds its own graphs
    lines = [r.getMessage() for r in caplog.records if r.name == "elfs.preflight"]
    assert lines == [
        "only 30 images for 10 clusters: knn.k 50 -> 3; cluster.knn_k 20 -> 3 (one cluster's worth of neighbours)"
    ]
    conf = _folder_conf(compose_cfg, _digit_pngs(tmp_path / "tiny", 12), sub="b")
    with pytest.raises(DataError, match=rf"^elfs-select needs at least {MIN_IMAGES} images; this folder has 12$"):
        check_data(conf, load_data(conf.dataset))


def test_python_api_on_an_array(tmp_path, one_torch_thread):
    """The notebook form: images in (here an array), kept indices and the table out."""
    from sklearn.datasets import load_digits

    from elfs.api import select_images

    x = np.kron(load_digits().images[:150] * 16, np.ones((2, 2))).clip(0, 255).astype(np.uint8)
    sel = select_images(
        x,
        budget=[0.2, 0.4],
        num_clusters=5,
        out=tmp_path / "run",
        overrides=[
            f"paths.cache_dir={tmp_path / 'cache'}",
            "cluster.epochs=5",
            "dynamics.epochs=3",
            "evaluate.steps=20",
            "knn.k=10",
            "cluster.knn_k=10",
            "selection.beta_grid=[0.0,0.1]",
            "backbone.image_size=32",
        ],
    )
    assert len(sel.ids) == 150 and sel.ids[0] == "#0"
    assert [len(sel.kept[b]) for b in (0.2, 0.4)] == [30, 60]
    assert sel.paths(0.2) == [f"#{i}" for i in sel.kept[0.2]]
    assert len(sel.table) == 150 and sel.skipped == []


@pytest.mark.slow
def test_imagefolder_evaluates_with_the_class_folders_as_labels(folder, tmp_path, elfs_cli):
    """Class sub-folders give labels, used for evaluation and diagnostics only."""
    root, kinds = folder
    common = [
        "dynamics=mlp",
        "evaluate=mlp",
        "selection.budget=[0.3]",
        "selection.beta=0.1",
        "logger=none",
        "progress=false",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    p = elfs_cli(
        ["dataset=imagefolder", f"dataset.path={root}", *common, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env_extra={"OMP_NUM_THREADS": "1"},
        timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["labelled"] and res["num_classes"] == KINDS and res["n_train"] + res["n_test"] == len(kinds)
    row = res["results"][0]
    for method in ("double_end", "random"):
        assert 0.25 < row["methods"][method]["acc_mean"] <= 1.0  # better than chance on 4 kinds
    with open(tmp_path / "run" / "skipped.csv", newline="") as f:
        skipped = {r["path"].removeprefix("(test) ") for r in csv.DictReader(f)}
    assert skipped == {"notes.txt", "kind2/broken.jpg"}
