"""What each stage's cache key is made of: a golden record of the key inputs, and one computation per key when
two runs start together on a fresh cache.

The golden file (tests/golden/cache_keys.json) lists, for every stage entry of one `+experiment=digits_quick` run
with every baseline, the config dict that enters the key and the names of its inputs (their values are upstream
keys, which change with the code). A refactor that moves code must leave it equal; a change that means to alter
a key updates it with ``ELFS_UPDATE_GOLDEN=1 python -m pytest tests/test_cache_keys.py`` and says why in its commit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "cache_keys.json"
# precision fixed: trainer.precision=auto resolves per machine (bf16 where the CPU computes it natively), and the
# record must be the same on every machine
RUN = [
    "+experiment=digits_quick",
    "logger=none",
    "selection.baselines=[random,prototypicality,d2,ccs]",
    "trainer.precision=32-true",
]


def key_inputs(cache: Path) -> dict[str, list[dict]]:
    """{stage: [{config, inputs: sorted input names}, ...]} over every entry of ``cache``, deduplicated and sorted."""
    out: dict[str, list[dict]] = {}
    for meta_file in sorted(cache.glob("*/*/meta.json")):
        meta = json.loads(meta_file.read_text())
        entry = {"config": meta["config"], "inputs": sorted(meta["inputs"])}
        if entry not in out.setdefault(meta["stage"], []):
            out[meta["stage"]].append(entry)
    return {k: sorted(v, key=lambda e: json.dumps(e, sort_keys=True)) for k, v in sorted(out.items())}


def _start(cwd: Path, cache: Path, pythonpath: Path | None = None) -> subprocess.Popen:
    """`python -m elfs.train ...` as a user types it, in its own empty folder, on the shared cache (with the
    package imported from ``pythonpath`` when given; it prints where it was imported from)."""
    cwd.mkdir()
    env = {**os.environ, "WANDB_MODE": "disabled", "ELFS_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "elfs.train", *RUN]
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
        run = "import runpy, sys, elfs; print('elfs from', elfs.__path__[0], flush=True); "
        run += f"sys.argv = ['elfs.train', *{RUN!r}]; runpy.run_module('elfs.train', run_name='__main__')"
        cmd = [sys.executable, "-c", run]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_runs_started_together_compute_each_entry_once_with_the_golden_keys(tmp_path):
    cache = tmp_path / "cache"
    procs = [_start(tmp_path / f"job{i}", cache) for i in range(2)]
    logs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), [log[-3000:] for log in logs]
    computed = Counter(m for log in logs for m in re.findall(r"computed in [\d.]+s -> (\S+)", log))
    entries = {str(p.parent) for p in cache.glob("*/*/meta.json")}
    assert set(computed) == entries and set(computed.values()) == {1}, computed

    found = key_inputs(cache)
    if os.environ.get("ELFS_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    assert found == json.loads(GOLDEN.read_text())

    # the same command from a copy of the package whose report writer gained a comment: nothing is recomputed
    pkg = tmp_path / "edited"
    shutil.copytree(ROOT / "elfs", pkg / "elfs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "conf", pkg / "elfs" / "conf", ignore=shutil.ignore_patterns("local"))
    with open(pkg / "elfs" / "tables" / "report.py", "a") as f:
        f.write("\n# a comment added after the first runs\n")
    rerun = _start(tmp_path / "job_edited", cache, pythonpath=pkg)
    log = rerun.communicate(timeout=900)[0]
    assert rerun.returncode == 0 and f"{pkg / 'elfs'}" in log, log[-3000:]
    assert "computed in" not in log and log.count("cache hit") >= len(entries), log[-3000:]


# ------------------------------------------------------------------------------------------ one rule for keys


def test_every_field_of_every_stage_group_is_in_its_key_or_listed_with_a_reason():
    """Walks every dataclass field of every group of every stage: a field is keyed, or listed as not affecting the
    artifact with a reason; a listed field must exist (a renamed field cannot hide behind a stale entry)."""
    import dataclasses

    from elfs.config import GROUPS, STAGES
    from elfs.stages.keys import NOT_IN_KEY, group_key

    assert set(NOT_IN_KEY) == set(STAGES)
    for stage, groups in NOT_IN_KEY.items():
        for group, listed in groups.items():
            fields = {f.name for f in dataclasses.fields(GROUPS[group])}
            assert set(listed) <= fields, (stage, group, set(listed) - fields)
            assert all(isinstance(why, str) and len(why) > 10 for why in listed.values()), (stage, group)
            keyed = group_key(stage, group, GROUPS[group]())
            assert set(keyed) | set(listed) == fields and not set(keyed) & set(listed), (stage, group)


def test_each_stage_keys_exactly_the_config_groups_it_receives():
    """The config groups in a stage's signature (plus the Trainer settings of a stage that trains) are the groups
    its key covers: a stage handed a new group fails here until the rule says how that group enters its key."""
    import importlib
    import inspect

    from elfs.config import GROUPS
    from elfs.stages.keys import NOT_IN_KEY

    by_type = {cls.__name__: name for name, cls in GROUPS.items()}
    trains = {"cluster", "dynamics", "beta_search", "evaluate"}
    for stage in NOT_IN_KEY:
        fn = getattr(importlib.import_module(f"elfs.stages.{stage}"), f"stage_{stage}")
        received = {by_type[p.annotation] for p in inspect.signature(fn).parameters.values() if p.annotation in by_type}
        received |= {"trainer"} if stage in trains else set()
        assert received == set(NOT_IN_KEY[stage]), (stage, received, set(NOT_IN_KEY[stage]))


def test_a_new_field_enters_the_key_by_default():
    import dataclasses

    from elfs.config import ClusterConfig
    from elfs.stages.keys import stage_key

    @dataclasses.dataclass
    class WithDropout(ClusterConfig):
        head_dropout: float = 0.0

    a = stage_key("cluster", {"cluster": WithDropout(), "trainer": _trainer()})
    b = stage_key("cluster", {"cluster": WithDropout(head_dropout=0.5), "trainer": _trainer()})
    assert a != b and a["cluster"]["head_dropout"] == 0.0


def _trainer():
    from elfs.config import TrainerConfig

    return TrainerConfig()


# ---------------------------------------------------------------------------------------- code per stage


def _package_copy(tmp_path: Path) -> Path:
    import shutil

    from elfs.infra.version import PACKAGE_DIR

    dst = tmp_path / "elfs"
    shutil.copytree(PACKAGE_DIR, dst, ignore=shutil.ignore_patterns("__pycache__", "conf"))
    return dst


def _versions(pkg: Path) -> dict[str, str]:
    from elfs.config import STAGES
    from elfs.infra.version import closure_version

    return {s: closure_version(f"elfs.stages.{s}", pkg) for s in STAGES}


@pytest.mark.parametrize(
    ("edited", "changed"),
    [
        ("tables/report.py", set()),
        ("tables/aggregate.py", set()),
        ("train.py", set()),
        ("run.py", set()),
        ("cli/main.py", set()),
        ("api.py", set()),
        ("handback/selection_report.py", set()),
        ("pipeline.py", set()),
        ("stages/evaluate.py", {"evaluate"}),
        ("stages/beta_search.py", {"beta_search"}),
        ("method/knn.py", {"knn"}),
        ("cluster/module.py", {"cluster"}),
        ("training/classifier.py", {"dynamics", "beta_search", "evaluate"}),
    ],
)
def test_an_edit_changes_the_code_version_of_the_stages_that_run_it_only(tmp_path, edited, changed):
    pkg = _package_copy(tmp_path)
    before = _versions(pkg)
    with open(pkg / edited, "a") as f:
        f.write("\n# an added comment\n")
    after = _versions(pkg)
    assert {s for s in before if before[s] != after[s]} == changed


def test_recompute_forces_one_stage_once_per_run(tmp_path):
    from elfs.cache import ArtifactCache

    calls: list[int] = []

    def compute():
        calls.append(1)
        return {"x": np.arange(3) + len(calls)}, {}

    first = ArtifactCache(tmp_path).run("evaluate", {"a": 1}, {}, compute)
    forced = ArtifactCache(tmp_path, recompute=frozenset({"evaluate"}))
    again = forced.run("evaluate", {"a": 1}, {}, compute)
    once_more = forced.run("evaluate", {"a": 1}, {}, compute)  # the same run: the fresh entry is reused
    assert len(calls) == 2 and not again.cached and once_more.cached
    assert first.key == again.key and (again["x"] == np.arange(3) + 2).all()
    other = ArtifactCache(tmp_path, recompute=frozenset({"evaluate"})).run("knn", {"a": 1}, {}, compute)
    assert not other.cached and len(calls) == 3


def test_every_run_field_is_keyed_or_says_why_not():
    """ElfsConfig's own fields (outside the groups): ``seed`` enters every key, the rest say why none holds them."""
    import dataclasses

    from elfs.config import GROUPS, ElfsConfig
    from elfs.stages.keys import RUN_NOT_IN_KEY

    own = {f.name for f in dataclasses.fields(ElfsConfig)} - set(GROUPS)
    assert own - {"seed"} == set(RUN_NOT_IN_KEY), own ^ set(RUN_NOT_IN_KEY)


def test_every_config_field_is_keyed_or_cannot_change_a_result():
    """Walks every field of the whole config (every group and the run's own): each is in exactly one of "keyed"
    (some stage's key holds it by the rule, or elfs/stages/keys.py KEYED_AS says as what) or "cannot change a
    result, because ..." (elfs/infra/no_effect.py NO_EFFECT, the one list the keys and the results table both read)."""
    import dataclasses

    from elfs.config import GROUPS, ElfsConfig
    from elfs.infra.no_effect import NO_EFFECT
    from elfs.stages.keys import KEYED_AS, NOT_IN_KEY, group_key

    fields = {f"{g}.{f.name}" for g, cls in GROUPS.items() for f in dataclasses.fields(cls)}
    fields |= {f.name for f in dataclasses.fields(ElfsConfig) if f.name not in GROUPS}
    by_rule = {"seed"} | {
        f"{g}.{k}" for stage, groups in NOT_IN_KEY.items() for g in groups for k in group_key(stage, g, GROUPS[g]())
    }
    keyed = by_rule | set(KEYED_AS)
    assert not set(KEYED_AS) & by_rule, set(KEYED_AS) & by_rule  # a KEYED_AS entry the rule already keys is stale
    assert set(NO_EFFECT) <= fields and set(KEYED_AS) <= fields, (set(NO_EFFECT) | set(KEYED_AS)) - fields
    assert not keyed & set(NO_EFFECT), keyed & set(NO_EFFECT)
    assert keyed | set(NO_EFFECT) == fields, sorted(fields - keyed - set(NO_EFFECT))
    assert all(isinstance(why, str) and len(why) > 10 for why in [*NO_EFFECT.values(), *KEYED_AS.values()])


def test_the_results_table_and_the_keys_read_one_list_of_what_changes_no_result(compose_cfg):
    """A setting that cannot change a result splits no sweep arm (backbone.batch_size, trainer.*), while one that
    can (a TEMI setting, knn.nlist read by faiss_ivf) does."""
    import dataclasses

    from elfs.config import to_typed
    from elfs.tables.results import arm_of

    base = to_typed(compose_cfg(["+experiment=digits_quick"]))
    arm = arm_of(base, "double_end")
    other = dataclasses.replace(base, backbone=dataclasses.replace(base.backbone, batch_size=7, device="cpu"))
    assert arm_of(other, "double_end") == arm
    for group, change in [("cluster", {"epochs": 3}), ("knn", {"nlist": 9})]:
        changed = dataclasses.replace(base, **{group: dataclasses.replace(getattr(base, group), **change)})
        assert arm_of(changed, "double_end")["settings"] != arm["settings"], group
    assert not any(k.startswith(("trainer.", "paths.", "logger.")) for k in arm["settings"])
