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
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden" / "cache_keys.json"
RUN = ["+experiment=digits_quick", "logger=none", "selection.baselines=[random,prototypicality,d2,ccs]"]


def key_inputs(cache: Path) -> dict[str, list[dict]]:
    """{stage: [{config, inputs: sorted input names}, ...]} over every entry of ``cache``, deduplicated and sorted."""
    out: dict[str, list[dict]] = {}
    for meta_file in sorted(cache.glob("*/*/meta.json")):
        meta = json.loads(meta_file.read_text())
        entry = {"config": meta["config"], "inputs": sorted(meta["inputs"])}
        if entry not in out.setdefault(meta["stage"], []):
            out[meta["stage"]].append(entry)
    return {k: sorted(v, key=lambda e: json.dumps(e, sort_keys=True)) for k, v in sorted(out.items())}


def _start(cwd: Path, cache: Path) -> subprocess.Popen:
    """`python -m elfs.train ...` as a user types it, in its own empty folder, on the shared cache."""
    cwd.mkdir()
    env = {**os.environ, "WANDB_MODE": "disabled", "ELFS_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "elfs.train", *RUN]
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
