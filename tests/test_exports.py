"""The hand-offs of a selection run (elfs/handback/exports.py, report_html.py), on a folder of real PNGs in tmp_path."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import py_compile
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

from elfs.api import load_selection
from elfs.handback.answer import Answer
from elfs.handback.exports import LABELSTUDIO_IMAGE_KEY, LABELSTUDIO_PATH_KEY
from elfs.handback.selection_report import priority_order, write_selection_outputs


def _write(run_dir, *, load_image=None, report_sections=(), pseudo_labels=None, **fields):
    """write_selection_outputs over one Answer record made of these fields (checked when it is made)."""
    answer = Answer(clusters=pseudo_labels, **fields)
    return write_selection_outputs(run_dir, answer, load_image=load_image, sections=report_sections)


N = 24
C = 3
BUDGETS = (0.25, 0.5)
# nested folders, two files named x.png (their symlinks must not collide), a space, '#' and unicode in names
NAMES = [f"{'a' if i % 2 else 'b/deep'}/img {i:02d}.png" for i in range(N - 4)] + [
    "a/x.png",
    "b/x.png",
    "c/#hash é.png",
    "top.png",
]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos folder"
    rng = np.random.default_rng(0)
    for i, name in enumerate(NAMES):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        colour = np.array([(i * 40) % 256, (i * 90) % 256, (i * 150) % 256], dtype=np.uint8)
        a = np.clip(colour + rng.integers(0, 40, size=(20 + i, 30, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(p)
    return root


def _args(root: Path, **extra):
    ids = list(NAMES)
    filepaths = [str((root / s).resolve()) for s in ids]
    rng = np.random.default_rng(1)
    pl = np.arange(N) % C
    hardness = rng.permutation(N).astype(np.float64)
    kept = {b: np.sort(np.argsort(-hardness)[2 : 2 + int(b * N)]) for b in BUDGETS}  # nested windows

    def load(i: int) -> np.ndarray:
        with Image.open(filepaths[i]) as im:
            return np.asarray(im.convert("RGB"))

    args = dict(
        ids=ids,
        pseudo_labels=pl,
        hardness=hardness,
        score_name="forgetting",
        score=hardness * 2,
        kept=kept,
        beta=dict.fromkeys(BUDGETS, 2 / N),
        num_clusters=C,
        load_image=load,
        skipped=[("broken.png", "cannot identify image file")],
        filepaths=filepaths,
        embeddings=rng.normal(size=(N, 5)).astype(np.float32),
        nested=True,
        method="double_end",
    )
    args.update(extra)
    return args


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "selection.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _order(args, b) -> list[int]:
    return priority_order(args["pseudo_labels"], args["hardness"], args["kept"][b]).tolist()


@pytest.fixture
def run(folder, tmp_path):
    args = _args(folder)
    out = tmp_path / "run"
    files = _write(out, **args)
    return out, args, files


def test_files_of_a_run_folder(run):
    out, _, files = run
    expected = {
        "selection.csv",
        "skipped.csv",
        "contact_sheet.png",
        "score_histogram.png",
        "cluster_coverage.png",
        "selection.json",
        "fiftyone_tag.py",
        "embeddings.npy",
        "embeddings_ids.txt",
        "report.html",
    }
    for b in ("0.25", "0.5"):
        expected |= {f"annotate_{b}.txt", f"labelstudio_{b}.json", f"cvat_{b}.txt", f"selected_{b}"}
    expected.add("annotate_0.5_new.txt")  # nested budgets: what 0.5 adds to 0.25
    assert {p.name for p in files} == expected
    assert {p.name for p in out.iterdir()} == expected  # and no temp file left behind


def test_csv_paths_scores_and_priorities(run):
    out, args, _ = run
    rows = _rows(out)
    assert [r["id"] for r in rows] == NAMES
    for r, fp in zip(rows, args["filepaths"], strict=True):
        assert os.path.isabs(r["filepath"]) and Path(r["filepath"]).is_file() and r["filepath"] == fp
    assert {r["score_name"] for r in rows} == {"forgetting"}
    assert [float(r["score"]) for r in rows] == (args["hardness"] * 2).tolist()
    for b in BUDGETS:
        order = _order(args, b)
        prio = {int(r["index"]): int(r[f"priority_{b:g}"]) for r in rows if r[f"priority_{b:g}"]}
        assert sorted(prio, key=prio.get) == order
        lines = (out / f"annotate_{b:g}.txt").read_text(encoding="utf-8").splitlines()
        assert lines == [args["filepaths"][i] for i in order] and all(Path(p).is_file() for p in lines)


def test_selection_json_labelstudio_and_cvat(run, folder):
    out, args, _ = run
    summary = json.loads((out / "selection.json").read_text(encoding="utf-8"))
    assert summary["method"] == "double_end" and summary["score_name"] == "forgetting" and summary["nested"] is True
    assert summary["paths"] == "absolute"
    root = summary["labelstudio_document_root"]
    # Label Studio refuses a storage equal to its document root: the root is the folder above the images' folder
    assert root == summary["labelstudio"]["document_root"] == str(folder.resolve().parent)
    assert summary["labelstudio"]["storages"] == [str(folder.resolve())]
    assert [e["budget"] for e in summary["budgets"]] == list(BUDGETS)
    for entry in summary["budgets"]:
        b = entry["budget"]
        order = _order(args, b)
        assert entry["beta"] == pytest.approx(2 / N) and entry["count"] == len(order) == round(b * N)
        assert entry["files"] == [args["filepaths"][i] for i in order] and entry["indices"] == order

        tasks = json.loads((out / f"labelstudio_{b:g}.json").read_text(encoding="utf-8"))
        assert isinstance(tasks, list) and len(tasks) == len(order)  # one task per kept image
        for p, (task, i) in enumerate(zip(tasks, order, strict=True), start=1):
            data = task["data"]
            assert data[LABELSTUDIO_PATH_KEY] == args["filepaths"][i] and data["priority"] == p
            url = urlsplit(data[LABELSTUDIO_IMAGE_KEY])
            assert url.path == "/data/local-files/"
            (d,) = parse_qs(url.query)["d"]  # '#', spaces and unicode quoted, so the query parses back exactly
            assert os.path.join(root, d) == args["filepaths"][i]

        cvat = (out / f"cvat_{b:g}.txt").read_text(encoding="utf-8").splitlines()
        assert cvat == entry["files"]


def test_symlinks_resolve_in_priority_order(run, folder):
    out, args, _ = run
    for b in BUDGETS:
        links = sorted((out / f"selected_{b:g}").iterdir())
        assert [Path(os.readlink(p)) for p in links] == [Path(args["filepaths"][i]) for i in _order(args, b)]
        assert all(p.is_symlink() and p.resolve().is_file() for p in links)
    both_x = [p.name for p in (out / "selected_0.5").iterdir() if p.name.endswith("_x.png")]
    assert len(both_x) == len(set(both_x))
    # a second run replaces the folder as a whole
    _write(out, **_args(folder, kept={0.25: np.array([0, 1])}, beta={}))
    assert sorted(p.name for p in (out / "selected_0.25").iterdir()) == ["1_img 00.png", "2_img 01.png"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v is not None]


def _check_report(out: Path) -> list[str]:
    text = (out / "report.html").read_text(encoding="utf-8")
    parser = _Refs()
    parser.feed(text)
    relative = [r for r in parser.refs if not r.startswith("data:")]
    for ref in relative:
        assert not urlsplit(ref).scheme and not ref.startswith(("/", "#")), ref  # never outside the run folder
        target = out / unquote(urlsplit(ref).path)
        assert target.exists(), ref
        assert out.resolve() in (out / unquote(ref)).absolute().parents or target.is_dir()
    assert "<style>" in text and "<link" not in text and "<script" not in text
    return parser.refs


def test_report_html_links_resolve(run):
    out, args, _ = run
    refs = _check_report(out)
    assert {"score_histogram.png", "cluster_coverage.png", "contact_sheet.png", "selection.csv"} <= set(refs)
    assert sum(r.startswith("data:image/png;base64,") for r in refs) == sum(round(b * N) for b in BUDGETS)
    assert any(r.startswith("selected_0.25/") for r in refs)


def test_report_html_in_memory_and_capped(tmp_path, monkeypatch):
    import elfs.handback.report_html as rh

    monkeypatch.setattr(rh, "THUMBS_PER_CLUSTER", 2)
    n = 40
    pl = np.arange(n) % 4
    h = np.linspace(0, 1, n)
    args = dict(
        ids=[f"#{i}" for i in range(n)],
        pseudo_labels=pl,
        hardness=h,
        score_name="aum",
        score=-h,
        kept={0.5: np.arange(0, n, 2)},
        beta={0.5: None},
        num_clusters=4,
        load_image=lambda i: np.full((8, 8), i * 5, dtype=np.uint8),
    )
    files = _write(tmp_path, **args)
    assert {p.name for p in files} >= {"selection.json", "report.html"}
    assert not list(tmp_path.glob("selected_*")) and not (tmp_path / "labelstudio_0.5.json").exists()
    refs = _check_report(tmp_path)
    assert sum(r.startswith("data:") for r in refs) == 2 * 2  # 2 clusters kept (even indices), 2 thumbs each
    assert "8 more not shown" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_fiftyone_script_matches_through_symlinks(run, folder, tmp_path):
    """The script's pure planning (the real run is tests/test_handoffs.py): a sample path spelled through a
    symlinked folder finds its image, and every image of the run gets its cluster and score."""
    out, args, _ = run
    script = out / "fiftyone_tag.py"
    py_compile.compile(str(script), cfile=str(out.parent / "fo.pyc"), doraise=True)
    spec = importlib.util.spec_from_file_location("fiftyone_tag", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # fiftyone is imported only by main()
    assert mod.all_filepaths(out) == args["filepaths"]
    link = tmp_path / "link"
    link.symlink_to(folder, target_is_directory=True)
    real = str(folder.resolve())
    samples = [str(link) + p[len(real) :] for p in args["filepaths"][:-1]]  # one image is not in the dataset
    plan, missing = mod.plan_tags(samples, mod.load_selection(out))
    for b in BUDGETS:
        order = [i for i in _order(args, b) if i != N - 1]
        found = plan[f"elfs_{b:g}"]
        assert sorted(found, key=found.get) == [samples[i] for i in order]  # the dataset's spelling, by priority
        assert missing.get(f"elfs_{b:g}", []) == [args["filepaths"][N - 1]] * (N - 1 in _order(args, b))
    cluster, score = mod.plan_fields(samples, mod.load_rows(out))
    assert cluster == {samples[i]: int(args["pseudo_labels"][i]) for i in range(N - 1)}
    assert score == {samples[i]: float(args["hardness"][i] * 2) for i in range(N - 1)}


def test_embeddings_rows_match_ids(run):
    out, args, _ = run
    emb = np.load(out / "embeddings.npy")
    ids = (out / "embeddings_ids.txt").read_text(encoding="utf-8").splitlines()
    assert ids == NAMES and emb.shape == (N, 5)
    np.testing.assert_array_equal(emb, args["embeddings"])


def test_load_selection_gives_absolute_paths(run):
    out, args, _ = run
    (out / "results.json").write_text(json.dumps({"results": [{"budget": b} for b in BUDGETS]}))
    sel = load_selection(out)
    assert sel.filepaths == args["filepaths"]
    for b in BUDGETS:
        assert sel.paths(b) == [args["filepaths"][i] for i in args["kept"][b]]  # folder order
        assert sel.paths(b, by_priority=True) == [args["filepaths"][i] for i in _order(args, b)]
        assert all(os.path.isabs(p) and Path(p).is_file() for p in sel.paths(b))


@pytest.mark.parametrize(
    ("paths", "root", "storages", "unservable"),
    [
        (["/d/photos/a.png", "/d/photos/b.png"], "/d", ["/d/photos"], []),  # flat
        (["/d/photos/x/a.png", "/d/photos/y/z/b.png"], "/d", ["/d/photos"], []),  # nested
        (["/d/l/one/a.png", "/d/l/two/sub/b.png"], "/d", ["/d/l"], []),  # a list over several folders
        (["/photos/a.png"], "/", ["/photos"], []),  # one level below /: the root is / itself
        (["/data/a.png", "/home/u/b.png", "/c.png"], "/", ["/data", "/home"], ["/c.png"]),  # they share only /
    ],
)
def test_labelstudio_setup_never_makes_the_storage_the_root(paths, root, storages, unservable):
    from elfs.handback.exports import labelstudio_setup, labelstudio_url

    s = labelstudio_setup(paths)
    assert (s.document_root, list(s.storages), list(s.unservable)) == (root, storages, unservable)
    for st in s.storages:  # Label Studio: a storage lies strictly below the document root
        assert st != s.document_root and os.path.dirname(st) == s.document_root
    for p in paths:
        if p not in unservable:
            assert any(p.startswith(st + "/") for st in s.storages)
            assert labelstudio_url(p, s.document_root) == "/data/local-files/?d=" + os.path.relpath(p, root)
    assert f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root} label-studio start" in s.start_command()
    assert all(st in s.steps()[2] for st in storages) and ("directly in /" in s.steps()[-1]) == bool(unservable)


def test_cvat_command_is_posix_and_keeps_the_order():
    import shlex

    from elfs.handback.exports import cvat_command

    cmd = cvat_command("cvat_0.1.txt", "elfs 0.1")
    words = shlex.split(cmd.split("; ")[-1])
    assert words[:2] == ["cvat-cli", "--server-host"] and "xargs" not in cmd
    assert words[words.index("--sorting-method") + 1] == "predefined"
    assert words[words.index("create") + 1 : words.index("create") + 4] == ["elfs 0.1", "local", "$@"]
    assert subprocess.run(["/bin/sh", "-n", "-c", cmd]).returncode == 0  # dash parses it


@pytest.mark.parametrize(
    ("sizes", "expected", "kinds"),
    [
        ([30] * 10, None, 10),
        ([60, 60, 60, 60, 60, 0, 0, 0, 0, 0], "5 came out empty", 5),  # 300 images: tiny is under 6
        ([57, 1, 2, 60, 60, 60, 60, 0, 0, 0], "3 came out empty and 2 hold fewer than 6 images", 5),
        ([5, 95], "1 hold fewer than 10 images", 1),  # 100 images in 2 clusters: under a fifth of 50
        ([10, 90], None, 2),
    ],
)
def test_cluster_size_note_counts_empty_and_tiny_clusters(sizes, expected, kinds):
    from elfs.handback.report_html import cluster_size_note

    note = cluster_size_note(np.repeat(np.arange(len(sizes)), sizes), len(sizes))
    if expected is None:
        assert note is None
    else:
        assert expected in note and f"about {kinds} kinds" in note and f"--clusters {kinds} " in note
