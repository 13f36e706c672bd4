"""`elfs-select`'s command line: overrides anywhere, --budget as fractions or image counts, input checked before
torch, --version, and every mistake as one line with exit code 2. The parser runs for real, on real files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from elfs.api import _api_fractions
from elfs.cli.select import _parse
from elfs.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _folder(root: Path, n: int = 10, ext: str = ".png") -> Path:
    """A folder of ``n`` one-byte image files (listed, never decoded: an empty file is skipped at listing), half of
    them nested, plus a text file; the parser only lists them."""
    (root / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / ("sub" if i % 2 else "") / f"img{i:05d}{ext}").write_bytes(b"\0")
    (root / "notes.txt").write_text("not an image\n")
    return root


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return _folder(tmp_path / "photos")


def _error(capsys, argv: list[str]) -> str:
    """The one stderr line of a refused command line (asserting exit code 2 and nothing else printed)."""
    with pytest.raises(SystemExit) as e:
        _parse(argv)
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.endswith("\n") and len(err.splitlines()) == 1, err
    assert err.startswith("elfs-select: error: ")
    return err


def test_the_readme_line_keeps_the_overrides_out_of_the_budget(tmp_path):
    (tmp_path / "a.png").touch()
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.png'}\n")
    args = _parse([str(tmp_path / "list.txt"), "--budget", "0.1", "backbone=dino_vits16", "paths.cache_dir=/scratch"])
    assert args.images == str(tmp_path / "list.txt")
    assert args.budget == [0.1]
    assert args.overrides == ["backbone=dino_vits16", "paths.cache_dir=/scratch"]


@pytest.mark.parametrize(
    "line",
    [
        "backbone=dino_vits16 {p} --budget 0.1 0.3 --clusters 4",
        "{p} backbone=dino_vits16 --budget 0.1 0.3 --clusters 4",
        "--budget 0.1 0.3 backbone=dino_vits16 {p} --clusters 4",
        "--clusters 4 --budget 0.1 0.3 {p} backbone=dino_vits16",
        "--budget=0.1,0.3 backbone=dino_vits16 --clusters=4 {p}",
    ],
)
def test_an_override_may_stand_anywhere(photos, line):
    args = _parse(line.format(p=photos).split())
    assert (args.images, args.budget, args.clusters) == (str(photos), [0.1, 0.3], 4)
    assert args.overrides == ["backbone=dino_vits16"]


def test_every_override_form_is_kept_in_order(photos):
    given = [
        "+experiment=folder_select",
        "++knn.k=5",
        "~logger",
        "~dynamics.epochs=3",
        "hydra/launcher=basic",
        "backbone@model=dino_vits16",
        "paths.cache_dir='/my dir/with = and ,'",
        "selection.beta_grid=[0.0,0.1]",
    ]
    args = _parse([given[0], str(photos), *given[1:4], "--budget", "0.2", *given[4:], "--out", "o=k"])
    assert args.overrides == given
    assert args.out == "o=k" and args.budget == [0.2]  # an option's value is never an override


def test_an_existing_path_that_looks_like_an_override_is_the_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _folder(tmp_path / "batch=3")
    args = _parse(["batch=3", "--budget", "0.5", "seed=1"])
    assert args.images == "batch=3" and args.overrides == ["seed=1"]


def test_after_a_double_dash_a_dash_name_is_the_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _folder(tmp_path / "-odd")
    args = _parse(["--budget", "0.5", "--", "-odd", "seed=1"])
    assert args.images == "-odd" and args.overrides == ["seed=1"]


@pytest.mark.parametrize(
    "budget, expected",
    [
        ([], [0.1]),
        (["--budget", "0.3", "0.1"], [0.1, 0.3]),
        (["--budget", "0.3,0.1"], [0.1, 0.3]),
        (["--budget", "0.3", "--budget", "0.1"], [0.1, 0.3]),
        (["--budget", "0.3,0.1", "0.2", "--budget=0.1"], [0.1, 0.2, 0.3]),
        (["--budget", "1"], [1.0]),
        (["--budget", "1.0", "1"], [1.0]),
        (["--budget", ".5", "5e-1"], [0.5]),
    ],
)
def test_budget_fractions_in_every_spelling_sorted_without_duplicates(photos, budget, expected):
    assert _parse([str(photos), *budget]).budget == expected


def test_an_image_count_becomes_a_fraction_of_the_files_found(tmp_path, capsys):
    photos = _folder(tmp_path / "many", n=5000)
    args = _parse([str(photos), "--budget", "500", "0.3", "--budget", "1500,0.1"])
    assert args.budget == [0.1, 0.3]  # 500 / 5,000 = 0.1 is a duplicate; notes.txt is not an image
    out, err = capsys.readouterr()
    assert out == "" and err == "elfs-select: --budget 500 = 0.1, 1500 = 0.3 of 5,000 images\n"


def test_an_image_count_in_a_txt_list_counts_the_listed_images(tmp_path, capsys):
    _folder(tmp_path / "d", n=4)
    listed = ["# four images, one missing, one not an image", "d/img00000.png", "d/sub/img00001.png", ""]
    listed += ["d/img00002.png", "d/sub/img00003.png", "d/gone.png", "d/notes.txt"]
    (tmp_path / "list.txt").write_text("\n".join(listed))
    assert _parse([str(tmp_path / "list.txt"), "--budget", "2"]).budget == [0.5]
    assert capsys.readouterr().err == "elfs-select: --budget 2 = 0.5 of 4 images\n"


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["{p}", "--budget", "11"], "budget 11 is more images than the 10 in"),
        (["{p}", "--budget", "0"], "argument --budget: 0 is not positive"),
        (["{p}", "--budget", "-0.1"], "argument --budget: -0.1 is not positive"),
        (["{p}", "--budget", "0.1,-3"], "argument --budget: -3 is not positive"),
        (["{p}", "--budget", "ten"], "argument --budget: 'ten' is not a number"),
        (["{p}", "--budget", "nan"], "argument --budget: nan is not a number"),
        (["{p}", "--budget", "1.5"], "1.5 is above 1 but not a whole number"),
        (["{p}", "--budget", "backbone=dino_vits16"], "'backbone=dino_vits16' is not a number"),
        (["{p}", "--budget"], "argument --budget: expected one argument"),
        (["{p}", "--budget", "--clusters", "4"], "argument --budget: expected one argument"),
        (["{p}", "--budget="], "argument --budget: expected a value"),
        (["{p}", "--clusters", "many"], "argument --clusters: 'many' is not a whole number >= 2"),
        (["{p}", "--clusters", "1"], "'1' is not a whole number >= 2"),
        (["{p}", "--out"], "argument --out: expected one argument"),
        (["{p}", "--bud", "0.1"], "unrecognized arguments: --bud 0.1"),
        (["{p}", "{p}"], "unrecognized arguments: "),
        (["{p}", "nonsense"], "unrecognized arguments: nonsense (expected one folder or .txt list"),
        (["--budget", "0.1", "seed=1"], "no images given; name a folder of images or a .txt file"),
        (["{p}/nope", "--budget", "0.1"], "nope' does not exist; give a folder of images or a .txt file"),
        (["{p}/notes.txt"], "notes.txt' lists no image path"),
        (["{p}/sub/img00001.png"], "img00001.png' is a file but not a .txt list"),
        (["{empty}"], "holds no image file (.jpg, .jpeg, .png"),
    ],
)
def test_a_mistake_is_one_line_naming_it_with_exit_code_2(photos, tmp_path, capsys, argv, needle):
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    (tmp_path / "empty" / ".hidden" / "x.png").touch()  # hidden: not listed, so not an image of the folder
    (tmp_path / "empty" / "readme.md").touch()
    (photos / "notes.txt").write_text("# only a comment\n\n")
    err = _error(capsys, [a.format(p=photos, empty=tmp_path / "empty") for a in argv])
    assert needle.format(p=photos) in err


def test_a_budget_mistake_says_what_is_valid(photos, capsys):
    err = _error(capsys, [str(photos), "--budget", "2.5"])
    assert "a fraction in (0, 1]" in err and "a whole number of images >= 2" in err


def test_version_prints_the_distribution_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        _parse(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"elfs-select {version('elfs')}\n"


def test_package_version_falls_back_to_pyproject(monkeypatch):
    import importlib.metadata

    from elfs.infra.version import package_version

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert package_version.__wrapped__() == expected


def test_help_lists_the_options_and_an_override_anywhere(capsys):
    with pytest.raises(SystemExit) as e:
        _parse(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in ("--budget", "--clusters", "--out", "--version", "IMAGES"):
        assert option in text
    examples = text.split("examples:")[1].splitlines()
    assert any(line.split()[1:2] == ["backbone=dino_vits16"] for line in examples if line.strip())
    assert any("--budget 0.1" in line and "paths.cache_dir=" in line for line in examples)


def test_select_images_takes_image_counts_too(tmp_path):
    photos = _folder(tmp_path / "p", n=40)
    assert _api_fractions(10, str(photos)) == [0.25]
    assert _api_fractions([0.5, 10, np.int64(20), "1"], photos) == [0.25, 0.5, 1.0]
    assert _api_fractions(3, np.zeros((6, 8, 8), np.uint8)) == [0.5]
    paths = [str(p) for p in sorted(photos.rglob("*.png"))[:8]] + [str(photos / "notes.txt")]
    assert _api_fractions(2, paths) == [0.25]
    assert _api_fractions([0.3, 0.1, 0.3], photos) == [0.1, 0.3]
    for bad, needle in [(41, "more images than the 40"), (0, "not positive"), (1.5, "above 1"), (True, "number")]:
        with pytest.raises(UserError, match=needle):
            _api_fractions(bad, photos)


def test_a_missing_folder_is_refused_before_torch_is_imported(tmp_path):
    """`python -m elfs.select /no/such/folder --budget 0.1` as a user types it: one line, code 2, no torch."""
    script = textwrap.dedent(
        """
        import runpy, sys
        sys.argv = ["elfs-select", "/no/such/folder", "--budget", "0.1"]
        try:
            runpy.run_module("elfs.select", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code = e.code
        heavy = [m for m in ("torch", "lightning", "hydra", "omegaconf", "elfs.run") if m in sys.modules]
        print("heavy modules:", heavy)
        sys.exit(code)
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines() == [
        "elfs-select: error: '/no/such/folder' does not exist; give a folder of images or a .txt file listing "
        "image paths"
    ]
    assert p.stdout.strip() == "heavy modules: []"
