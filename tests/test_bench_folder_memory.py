"""experiments/bench_folder.py's memory sampling: the process tree's PSS counts a page its forked processes share
once, where the RSS summed over them counts it in each; each stage's peak is taken over its own samples; and the
near-copy scores it reports, on a hand-made duplicates.csv."""

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


def test_duplicate_scores_by_hand(tmp_path):
    """The near-copy scores: 60 photos, every 20th a copy of the one before (pairs 18-19, 38-39, 58-59)."""
    bench = _bench()

    def name(i: int) -> str:
        return f"/p/{i // 1000:04d}/img_{i:07d}.jpg"

    rows = [(0, 19, 18), (0, 5, 18), (1, 38, 7), (2, 40, 41)]  # 18-19 in one group; 38 a copy of 7, not of 39
    csv_path = tmp_path / "duplicates.csv"
    csv_path.write_text("group,path,representative\n" + "".join(f"{g},{name(a)},{name(b)}\n" for g, a, b in rows))
    got = bench.duplicate_scores(csv_path, 60, 20)
    assert got["planted"] == 3 and got["found"] == 1 and got["recall"] == round(1 / 3, 4)
    assert got["rows"] == 4 and got["precision"] == 0.25 and got["groups"] == 3
    assert got["proposable_twice"] == 1  # 58-59: neither listed; 38 is listed, so 38-39 is not proposed twice
    assert bench.duplicate_scores(tmp_path / "none.csv", 60, 20)["proposable_twice"] == 3
