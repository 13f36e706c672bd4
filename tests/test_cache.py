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
    from elfs.version import code_version

    calls = []
    ours = ArtifactCache(tmp_path)
    assert ours.code == code_version() and len(code_version()) == 16
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
