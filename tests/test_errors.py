"""User errors and bugs look different: a bad input is one line and exit code 2, before any work is paid for;
an internal error keeps its traceback; Ctrl-C exits 130 saying what was kept."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from elfs.config import ClusterConfig, ElfsConfig, to_typed
from elfs.errors import ConfigError, DataError, UserError
from elfs.preflight import check_config, check_data

QUICK = ["+experiment=digits_quick", "logger=none"]


def _cli(args: list[str], cwd: Path, timeout: int = 600, code: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [sys.executable, "-m", "elfs.train", *args] if code is None else [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _one_line_error(p: subprocess.CompletedProcess, needle: str) -> str:
    assert p.returncode == 2, (p.stdout[-2000:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("elfs: error:") and needle in last, last
    return last


def _npz(path: Path, y_train: np.ndarray | None = None, n: int = 300) -> Path:
    from elfs.data import load_dataset

    ds = load_dataset("digits")
    y = ds.truth.train[:n] if y_train is None else y_train
    np.savez(path, x_train=ds.train.images[:n], y_train=y, x_test=ds.test.images, y_test=ds.truth.test)
    return path


# ------------------------------------------------------------------------------------- in process, fast


def test_unknown_key_added_with_plus_is_refused_with_a_hint(compose_cfg):
    """`+selection.bta=0.3` is what Hydra suggests for a typo; the schema still refuses it, naming the real key."""
    with pytest.raises(ConfigError, match=r"selection\.bta is not a known setting \(did you mean 'beta'\?\)"):
        to_typed(compose_cfg(["+selection.bta=0.3"]))
    with pytest.raises(ConfigError, match="seeed is not a known setting"):
        to_typed(compose_cfg(["+seeed=1"], sub="top"))


@pytest.mark.parametrize(
    "override, needle",
    [
        ("cluster.num_clusters=0", "cluster.num_clusters=0 is not valid"),
        ("cluster.num_clusters=1", "cluster.num_clusters=1 is not valid"),
        ("cluster.probs_momentum=1.0", "cluster.probs_momentum=1.0"),
        ("dynamics.lr=0", "dynamics.lr=0"),
        ("evaluate.min_lr=5.0", "evaluate.min_lr=5.0"),
        ("dynamics.momentum=0", "dynamics.nesterov"),
        ("trainer.num_workers=-1", "trainer.num_workers=-1"),
        ("dataset.test_fraction=1.0", "dataset.test_fraction=1.0"),
        ("selection.search_steps=0", "selection.search_steps=0"),
        ("logger.mode=sometimes", "logger.mode"),
        ("cluster.head_impl=vmap", "cluster.head_impl='vmap'"),
        ("cluster.rule=oracle", "cluster.rule='oracle'"),
        ("trainer.devices=3", "cluster.batch_size=256 is the global batch, split across"),
    ],
)
def test_more_bad_values_are_refused_before_loading(compose_cfg, override, needle):
    conf = to_typed(compose_cfg([override]))
    with pytest.raises(ConfigError) as e:
        check_config(conf, weights=False)
    assert needle in str(e.value)


def test_checks_that_need_the_data_run_right_after_loading(compose_cfg, tmp_path):
    from elfs.pipeline import load_data

    conf = to_typed(compose_cfg(["+experiment=digits_quick"]))
    ds = load_data(conf.dataset)
    assert check_data(conf, ds) == 10
    n = len(ds.train)
    for change, needle in [
        (dict(knn=dataclasses.replace(conf.knn, k=n)), f"knn.k={n} must be smaller"),
        (dict(cluster=dataclasses.replace(conf.cluster, num_clusters=n + 1)), f"cluster.num_clusters={n + 1}"),
        (dict(selection=dataclasses.replace(conf.selection, budget=0.0001)), "keeps round"),
    ]:
        with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(".", r"\.")):
            check_data(dataclasses.replace(conf, **change), ds)


def test_a_single_class_is_recognised_whatever_its_label(compose_cfg, tmp_path):
    from elfs.data import load_dataset

    path = _npz(tmp_path / "one.npz", y_train=np.full(300, 3))
    ds = load_dataset("npz", path=str(path))  # loading is not where data is judged: check_data is
    conf = to_typed(compose_cfg(["dataset=npz", f"dataset.path={path}"]))
    with pytest.raises(DataError, match="every training label is 3"):
        check_data(conf, ds)


def test_new_hyperparameter_reaches_its_module_without_touching_the_pipeline(compose_cfg, tmp_path, one_torch_thread):
    """A field added to the cluster schema (here by a test-only subclass) travels inside the config object to
    TEMIModule and into the cache key: no signature in between names it."""
    import lightning as L

    from elfs.cache import Artifact, ArtifactCache
    from elfs.pipeline import Context
    from elfs.stages.cluster import stage_cluster
    from elfs.tracking import RunLoggers

    @dataclasses.dataclass
    class ClusterWithDropout(ClusterConfig):
        head_dropout: float = 0.0

    class Probe(L.Callback):
        seen: list = []

        def on_train_start(self, trainer, pl_module):
            Probe.seen.append(pl_module.cfg)

    class ProbeContext(Context):
        def trainer_kwargs(self, **kw) -> dict:
            return {**super().trainer_kwargs(**kw), "callbacks": [Probe()]}

    conf: ElfsConfig = to_typed(compose_cfg(["+experiment=digits_quick", "logger=none"]))
    cluster = ClusterWithDropout(**{**dataclasses.asdict(conf.cluster), "epochs": 1}, head_dropout=0.25)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8)).astype(np.float32)
    idx = np.stack([(np.arange(120) + j) % 120 for j in range(1, 21)], axis=1)
    emb = Artifact("embed", "e" * 16, tmp_path, {"train": x}, {})
    nn = Artifact("knn", "k" * 16, tmp_path, {"idx": idx}, {})
    ctx = ProbeContext(
        cfg=conf, cache=ArtifactCache(tmp_path / "cache"), run_dir=tmp_path, loggers=RunLoggers(conf.logger, tmp_path)
    )
    art = stage_cluster(ctx, cluster, emb, nn, 3)
    assert [type(c).__name__ for c in Probe.seen] == ["ClusterWithDropout"]
    assert Probe.seen[0].head_dropout == 0.25
    assert art.meta["config"]["cluster"]["head_dropout"] == 0.25  # and it is part of the cache key


# ----------------------------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    "args, needle",
    [
        (["selection.bugdet=0.1"], "selection.bugdet is not a known setting (did you mean 'budget'?)"),
        (["+selection.bta=0.3"], "selection.bta is not a known setting (did you mean 'beta'?)"),
        (["cluster.num_heads=many"], "num_heads"),
        (["dataset=imagenet22k"], "imagenet22k"),
        (["cluster.num_clusters=0"], "cluster.num_clusters=0"),
        (["debug=fast"], "Could not find 'debug/fast'; Available options in 'debug': smoke"),
    ],
)
def test_composition_and_config_errors_are_one_line(tmp_path, args, needle):
    p = _cli([*QUICK, *args, f"hydra.run.dir={tmp_path / 'r'}", f"paths.cache_dir={tmp_path / 'c'}"], tmp_path)
    _one_line_error(p, needle)
    assert not (tmp_path / "c").exists() and not (tmp_path / "r").exists()  # nothing half-written


def test_data_checks_fail_before_any_stage_runs(tmp_path):
    t0 = time.time()
    p = _cli(
        [
            *QUICK,
            "knn.k=5000",
            "cluster.knn_k=10",
            f"hydra.run.dir={tmp_path / 'r'}",
            f"paths.cache_dir={tmp_path / 'c'}",
        ],
        tmp_path,
    )
    _one_line_error(p, "knn.k=5000 must be smaller than the number of training images (1438)")
    assert not (tmp_path / "c" / "embed").exists() and not (tmp_path / "r").exists()
    assert time.time() - t0 < 120


def test_unwritable_folders_name_the_setting(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    p = _cli([*QUICK, f"hydra.run.dir={tmp_path / 'r'}", f"paths.cache_dir={blocker / 'cache'}"], tmp_path)
    _one_line_error(p, "paths.cache_dir=")
    p = _cli([*QUICK, f"hydra.run.dir={blocker / 'run'}", f"paths.cache_dir={tmp_path / 'c'}"], tmp_path)
    last = _one_line_error(p, str(blocker))
    assert "hydra.run.dir" in last


def test_an_internal_error_keeps_its_traceback(tmp_path):
    """A bug (here a ValueError raised inside a stage) is not disguised as a user mistake."""
    code = (
        "import sys, elfs.pipeline as p\n"
        "def boom(*a, **k): raise ValueError('deliberate internal error')\n"
        "p.stage_embed = boom\n"
        "from elfs.cli.main import cli\n"
        "sys.argv = ['elfs', *sys.argv[1:]]\n"
        "cli()\n"
    )
    p = _cli([*QUICK, f"hydra.run.dir={tmp_path / 'r'}", f"paths.cache_dir={tmp_path / 'c'}"], tmp_path, code=code)
    assert p.returncode == 1, p.stderr[-2000:]
    assert "Traceback" in p.stderr and "deliberate internal error" in p.stderr
    assert "elfs: error:" not in p.stderr


@pytest.mark.slow
def test_ctrl_c_exits_130_saying_what_was_kept(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "elfs.train",
            *QUICK,
            "cluster.epochs=400",
            f"hydra.run.dir={tmp_path / 'r'}",
            f"paths.cache_dir={cache}",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not [d for d in (cache / "knn").glob("*") if not d.name.startswith(".")]:
        time.sleep(0.1)
    time.sleep(2.0)  # inside the long TEMI fit
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("elfs: interrupted; kept complete stages (embed, knn)") and str(cache) in last, last
    assert "Traceback" not in err
    assert not (cache / "cluster").exists() or not [
        d for d in (cache / "cluster").iterdir() if not d.name.startswith(".")
    ]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_without_one_stops_before_any_work(tmp_path):
    """trainer=gpu (every paper experiment) on a machine without a usable GPU: one line, exit 2, no silent CPU run."""
    p = _cli([*QUICK, "trainer=gpu", f"hydra.run.dir={tmp_path / 'r'}", f"paths.cache_dir={tmp_path / 'c'}"], tmp_path)
    _one_line_error(p, "trainer.accelerator asks for a GPU, but none is usable (torch ")
    assert not (tmp_path / "r").exists()
