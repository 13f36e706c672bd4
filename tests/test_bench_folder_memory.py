"""experiments/bench_folder.py's memory sampling: the process tree's PSS counts a page its forked processes share
once, where the RSS summed over them counts it in each; and each stage's peak is taken over its own samples."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_folder", ROOT / "experiments" / "bench_folder.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="PSS needs Linux's /proc/PID/smaps_rollup")
def test_tree_pss_counts_a_page_shared_by_forked_children_once():
    bench = _bench()
    # a parent touches 256 MiB, then forks 3 children that only read it: the pages stay shared (copy-on-write)
    code = (
        "import os, sys, time\n"
        "b = bytearray(256 * 2**20)\n"
        "for i in range(0, len(b), 4096): b[i] = 1\n"
        "kids = []\n"
        "for _ in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        s = sum(b[i] for i in range(0, len(b), 4096))\n"
        "        os.write(1, f'{s}\\n'.encode()); time.sleep(30); os._exit(0)\n"
        "    kids.append(pid)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(3):
            assert proc.stdout.readline().strip() == str(256 * 2**20 // 4096)  # each child has read every page
        time.sleep(0.2)
        rss, pss = bench._tree_memory(proc.pid)
    finally:
        subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)  # the children first, then the parent
        proc.kill()
        proc.wait()
    mib = 2**20
    assert rss >= 4 * 256 * mib  # the RSS sum: the 256 MiB once per process
    assert 256 * mib <= pss < 2 * 256 * mib, (rss / mib, pss / mib)  # PSS: once for the tree


def test_stage_peaks_take_each_stage_its_own_samples():
    bench = _bench()
    g = 2**30
    samples = [(0.0, 1 * g, 1 * g), (1.0, 5 * g, 2 * g), (2.0, 3 * g, 3 * g), (3.0, 9 * g, 1 * g)]
    spans = [("embed", 0.5, 1.5, {}), ("knn", 1.5, 2.5, {})]
    assert bench.stage_peaks(samples, spans, 1) == {"embed": 5.0, "knn": 3.0, "other": 9.0}
    assert bench.stage_peaks(samples, spans, 2) == {"embed": 2.0, "knn": 3.0, "other": 1.0}
