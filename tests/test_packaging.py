"""elfs installs like a library: the Hydra configs (conf/, shipped as the package `elfs.conf`) and the paper's
numbers (elfs/tables/paper_results.yaml) are package data, and the `elfs` console script runs from any directory."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_pyproject_lists_every_subpackage_and_maps_conf_into_the_package():
    st = _pyproject()["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "elfs").rglob("__init__.py")}
    assert set(st["packages"]) == on_disk | {"elfs.conf"}, "add new subpackages to [tool.setuptools] packages"
    assert st["package-dir"] == {"elfs.conf": "conf"}
    assert (ROOT / "conf" / "__init__.py").is_file()  # Hydra's pkg:// source needs a regular package
    assert (ROOT / "elfs" / "tables" / "paper_results.yaml").is_file()


def test_hydra_finds_the_configs_as_the_package_elfs_conf():
    """What `@hydra.main(config_path="pkg://elfs.conf")` reads; in an editable install it is the top-level conf/
    (an old editable install that predates the mapping fails here: rerun `pip install -e .`)."""
    from hydra._internal.core_plugins.importlib_resources_config_source import ImportlibResourcesConfigSource
    from hydra.core.object_type import ObjectType

    import elfs.conf

    assert Path(elfs.conf.__file__).resolve().parent == ROOT / "conf"
    src = ImportlibResourcesConfigSource(provider="main", path="pkg://elfs.conf")
    assert src.available() and src.is_config("config") and src.is_group("experiment")
    assert "digits_quick" in src.list("experiment", ObjectType.CONFIG)


def _copy_sources(dst: Path) -> None:
    """The files a wheel is built from, copied so that the build leaves nothing (build/, *.egg-info) in the repo."""
    dst.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dst / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("elfs", "conf"):
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)


def _run(cmd: list, *, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{cmd} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return p


@pytest.mark.slow
def test_wheel_installs_and_runs_from_an_empty_directory(tmp_path):
    # 1. a wheel, built offline from a copy of the sources; a per-machine conf/local/default.yaml must not ship
    src = tmp_path / "src"
    _copy_sources(src)
    (src / "conf" / "local" / "default.yaml").write_text("# @package _global_\nseed: 12345\n")
    dist = tmp_path / "dist"
    can_build_here = importlib.util.find_spec("setuptools.command.bdist_wheel") or importlib.util.find_spec("wheel")
    isolation = ["--no-build-isolation", "--no-index"] if can_build_here else []
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", *isolation, "-w", dist, src], cwd=tmp_path
    )
    (wheel,) = dist.glob("elfs-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "elfs/tables/paper_results.yaml",
        "elfs/conf/__init__.py",
        "elfs/conf/config.yaml",
        "elfs/conf/experiment/digits_quick.yaml",
        "elfs/conf/hydra/default.yaml",
    } <= names
    assert "elfs/conf/local/example.yaml" in names and "elfs/conf/local/default.yaml" not in names

    # 2. a fresh venv with only the wheel; this venv's site-packages appended by a .pth line for the dependencies
    # (a directory added by a .pth line has its own .pth files ignored, so our editable install stays out)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    py = venv / "bin" / "python"
    site = Path(
        _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).stdout.strip()
    )
    outer = dict.fromkeys(
        [
            sysconfig.get_paths()["purelib"],
            sysconfig.get_paths()["platlib"],
            *(p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")),
        ]
    )
    (site / "_elfs_test_outer_site.pth").write_text("".join(f"{p}\n" for p in outer))
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", wheel], cwd=tmp_path)

    # 3. from an empty directory: the package, the paper data, the config groups and a whole run
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "ELFS_CACHE_DIR")}
    # one thread: tiny models, and no OpenMP spin-wait slowdowns when other processes share the cores
    env.update(WANDB_MODE="disabled", WANDB_SILENT="true", HYDRA_FULL_ERROR="1", OMP_NUM_THREADS="1")
    probe = (
        "import json, elfs, elfs.conf, elfs.tables.paper as p; print(json.dumps([elfs.__file__, elfs.conf.__file__, "
        "str(p.PAPER_RESULTS), p.paper_reference('cifar10', 0.9), p.paper_source()]))"
    )
    files = json.loads(_run([py, "-c", probe], cwd=work, env=env).stdout.strip().splitlines()[-1])
    for f in files[:3]:
        assert Path(f).resolve().is_relative_to(site.resolve()), f"{f} is not from the installed wheel"
    assert files[3]["elfs"] > files[3]["random"] > 0 and "figure" in files[4]

    elfs_cli = venv / "bin" / "elfs"
    helptext = _run([elfs_cli, "--help"], cwd=work, env=env).stdout
    assert "experiment: " in helptext and "digits_quick" in helptext and "dataset: " in helptext

    p = _run(
        [
            elfs_cli,
            "+experiment=digits_quick",
            "logger=none",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "progress=false",
        ],
        cwd=work,
        env=env,
        timeout=900,
    )
    (results,) = work.glob("outputs/runs/*/*/results.json")
    assert [q.name for q in work.iterdir()] == ["outputs"]
    assert (results.parent / ".hydra" / "config.yaml").is_file() and str(results) in p.stdout
    res = json.loads(results.read_text())
    assert res["dataset"] == "digits" and [r["budget"] for r in res["results"]] == [0.3, 0.5]
    assert "seed: 12345" not in (results.parent / ".hydra" / "config.yaml").read_text()
