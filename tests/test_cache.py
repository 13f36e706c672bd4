"""The content-addressed artifact cache: keys, atomic writes, corruption detection."""

import json

import numpy as np
import pytest

from elfs.cache import ArtifactCache, stable_hash


def _compute(calls):
    def f():
        calls.append(1)
        return {"x": np.arange(5, dtype=np.int64), "y": np.ones((2, 3), np.float32)}, {"note": "hi"}

    return f


def test_hit_after_miss_and_key_depends_on_config_and_inputs(tmp_path):
    cache, calls = ArtifactCache(tmp_path), []
    a = cache.run("embed", {"b": 1}, {"data": "abc"}, _compute(calls))
    b = cache.run("embed", {"b": 1}, {"data": "abc"}, _compute(calls))
    assert len(calls) == 1 and not a.cached and b.cached and a.key == b.key
    np.testing.assert_array_equal(a["x"], b["x"])
    assert b.meta["note"] == "hi" and b.meta["config"] == {"b": 1} and "versions" in b.meta
    assert cache.key("embed", {"b": 2}, {"data": "abc"}) != a.key
    assert cache.key("embed", {"b": 1}, {"data": "abd"}) != a.key
    assert cache.key("knn", {"b": 1}, {"data": "abc"}) != a.key


def test_results_of_other_code_are_not_reused(tmp_path):
    """The code version is part of every key: an entry computed by other code is a miss, not a silent reuse."""
    from elfs.infra.version import code_version

    calls = []
    ours = ArtifactCache(tmp_path)
    assert ours.code_of(None) == code_version() and len(code_version()) == 16
    a = ours.run("embed", {"b": 1}, {"data": "abc"}, _compute(calls))
    older = ArtifactCache(tmp_path, code="0123456789abcdef")
    b = older.run("embed", {"b": 1}, {"data": "abc"}, _compute(calls))
    assert len(calls) == 2 and not b.cached and a.key != b.key
    assert a.meta["code"] == code_version() and b.meta["code"] == "0123456789abcdef"
    assert ours.run("embed", {"b": 1}, {"data": "abc"}, _compute(calls)).cached and len(calls) == 2


def test_stable_hash_ignores_dict_order():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 1.5})


@pytest.mark.parametrize("damage", ["truncate_arrays", "flip_byte", "delete_meta", "bad_json"])
def test_corrupt_entry_is_recomputed_not_trusted(tmp_path, damage):
    cache, calls = ArtifactCache(tmp_path), []
    a = cache.run("s", {}, {}, _compute(calls))
    arrays, meta = a.path / "arrays.npz", a.path / "meta.json"
    if damage == "truncate_arrays":
        arrays.write_bytes(arrays.read_bytes()[:50])
    elif damage == "flip_byte":
        raw = bytearray(arrays.read_bytes())
        raw[-20] ^= 0xFF
        arrays.write_bytes(bytes(raw))
    elif damage == "delete_meta":
        meta.unlink()
    else:
        meta.write_text("{not json")
    b = cache.run("s", {}, {}, _compute(calls))
    assert len(calls) == 2 and not b.cached
    np.testing.assert_array_equal(b["y"], np.ones((2, 3), np.float32))
    assert cache.run("s", {}, {}, _compute(calls)).cached


def test_failed_compute_leaves_nothing_behind(tmp_path):
    cache = ArtifactCache(tmp_path)

    def boom():
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.run("s", {}, {}, boom)
    assert not (tmp_path / "s").exists()


def test_stale_tmp_of_dead_process_is_cleaned(tmp_path):
    cache, calls = ArtifactCache(tmp_path), []
    key = cache.key("s", {}, {})
    import socket

    stale = tmp_path / "s" / f".tmp-{key}-{socket.gethostname()}-999999999"
    stale.mkdir(parents=True)
    (stale / "arrays.npz").write_bytes(b"half")
    cache.run("s", {}, {}, _compute(calls))
    assert not stale.exists()
    entries = [p.name for p in (tmp_path / "s").iterdir()]
    assert entries == [key]
    assert json.loads((tmp_path / "s" / key / "meta.json").read_text())["key"] == key


_COMPUTE_ONCE = """
import sys, time, numpy as np
from pathlib import Path
from elfs.cache import ArtifactCache
root, log, sleep = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
def compute():
    with open(log, "a") as f:
        f.write("computed\\n")
    time.sleep(sleep)
    return {"x": np.arange(3)}, {}
art = ArtifactCache(root).run("s", {"a": 1}, {}, compute)
print(int(art.cached), int(art["x"].sum()))
"""


def _start(tmp_path, sleep: float):
    import subprocess
    import sys

    args = [sys.executable, "-c", _COMPUTE_ONCE, str(tmp_path / "cache"), str(tmp_path / "log"), str(sleep)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_started_together_compute_an_entry_once(tmp_path):
    """A per-key lock: the second process waits for the first one's entry instead of computing it again."""
    procs = [_start(tmp_path, 3.0) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert (tmp_path / "log").read_text().count("computed") == 1
    assert sorted(out.split()[0] for out, _ in outs) == ["0", "1"] and all(out.split()[1] == "3" for out, _ in outs)


def test_the_lock_of_a_killed_process_does_not_block(tmp_path):
    """The lock is the kernel's (flock): SIGKILL mid-computation releases it, and the next run computes the entry."""
    import time

    first = _start(tmp_path, 60.0)
    deadline = time.time() + 60
    while not (tmp_path / "log").exists() and time.time() < deadline:  # it holds the lock while it computes
        time.sleep(0.1)
    first.kill()
    first.communicate(timeout=30)
    calls: list[int] = []
    art = ArtifactCache(tmp_path / "cache").run("s", {"a": 1}, {}, _compute(calls))
    assert not art.cached and calls == [1]
