"""Content-addressed artifact cache: every stage output lives under <root>/<stage>/<key>/.

The key hashes the stage's own config, the keys (or fingerprints) of its inputs, a cache format version and the
version of the stage's code (a hash of the source its module imports, elfs/infra/version.py: older code's results are
never reused, while an edit of code the stage does not run recomputes nothing), so a beta or budget sweep reuses
embeddings, clusters and dynamics, while a backbone change invalidates everything downstream. ``recompute``
names stages computed afresh once per run even when an entry exists (``recompute=[evaluate]``). Artifacts are
written into a temporary folder and renamed into place, so a killed run leaves no half artifact; a corrupt or
incomplete entry is detected by its checksum and recomputed. Large arrays a stage names as ``mapped`` (the
embeddings) are stored as their own ``<name>.npy`` files and loaded as read-only memory maps (copy-on-write), so
every stage reads the one copy on disk instead of holding its own in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import socket
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: 2: arrays named ``mapped`` live in their own <name>.npy (memory-mapped on load; meta.json "mapped" holds their
#: checksums) instead of inside arrays.npz; the embeddings are stored there as float16
CACHE_FORMAT = 2
ARRAYS = "arrays.npz"
META = "meta.json"


def _load_mapped(path: Path) -> np.ndarray:
    """A .npy file as a copy-on-write memory map: pages are read on demand and shared with the page cache, and a
    write (none is expected) would change this process's view only, never the file."""
    return np.load(path, mmap_mode="c", allow_pickle=False)


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short sha256 of a JSON-serialisable object with sorted keys (numbers normalised by json)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def array_hash(a: np.ndarray, length: int = 16) -> str:
    """A content hash of an array's dtype, shape and bytes."""
    h = hashlib.sha256(f"{a.dtype}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:length]


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("elfs", "torch", "numpy", "lightning", "faiss-cpu", "timm", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


@dataclass
class Artifact:
    """A loaded cache entry: its arrays, its meta.json, and whether it came from the cache."""

    stage: str
    key: str
    path: Path
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    cached: bool = False
    seconds: float = 0.0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


@dataclass
class ArtifactCache:
    """Stage artifacts keyed by content under `root`; `events` records hits and misses for the report."""

    root: Path
    events: list[dict] = field(default_factory=list)
    code: str | None = None  # one code version for every key (tests); None = each stage module's own
    recompute: frozenset[str] = frozenset()  # stages computed afresh (once per run) even when an entry exists
    _fresh: set[str] = field(default_factory=set)  # keys computed by this run (a forced stage is not computed twice)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.recompute = frozenset(self.recompute)

    def code_of(self, module: str | None) -> str:
        """The code version a key holds: ``module``'s import closure (elfs.infra.version.module_version), the whole
        package's when no module is named, or the fixed ``code`` this cache was given."""
        from elfs.infra.version import code_version, module_version

        if self.code is not None:
            return self.code
        return module_version(module) if module else code_version()

    def key(
        self, stage: str, config: Mapping[str, Any], inputs: Mapping[str, str], *, module: str | None = None
    ) -> str:
        code = self.code_of(module)
        return stable_hash(
            {"stage": stage, "format": CACHE_FORMAT, "code": code, "config": dict(config), "inputs": dict(inputs)}
        )

    def forced(self, stage: str, key: str) -> bool:
        """Whether ``recompute`` asks for this entry afresh: its stage is listed and this run has not yet made it."""
        return stage in self.recompute and key not in self._fresh

    def has(self, stage: str, key: str) -> bool:
        """Whether a usable entry exists (a forced one does not count)."""
        return self.entry(stage, key).exists() and not self.forced(stage, key)

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def load(self, stage: str, key: str) -> Artifact | None:
        """The complete entry, or None when absent; a corrupt entry is removed (with a warning) and None returned."""
        path = self.entry(stage, key)
        if not path.exists():
            return None
        try:
            meta = json.loads((path / META).read_text())
            if meta.get("sha256") != _file_sha256(path / ARRAYS):
                raise ValueError("checksum mismatch")
            with np.load(path / ARRAYS, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            for name, sha in meta.get("mapped", {}).items():
                if sha != _file_sha256(path / f"{name}.npy"):
                    raise ValueError(f"checksum mismatch of {name}.npy")
                arrays[name] = _load_mapped(path / f"{name}.npy")
            if sorted(arrays) != sorted(meta.get("arrays", [])):
                raise ValueError("array list differs from meta.json")
        except Exception as e:  # any damage means: do not trust it, recompute
            log.warning("cache entry %s is corrupt (%s: %s); recomputing it", path, type(e).__name__, e)
            shutil.rmtree(path, ignore_errors=True)
            return None
        return Artifact(stage, key, path, arrays, meta, cached=True)

    def save(
        self,
        stage: str,
        key: str,
        arrays: Mapping[str, np.ndarray],
        meta: Mapping[str, Any],
        *,
        code: str = "",
        mapped: Collection[str] = (),
    ) -> Artifact:
        """Write arrays + meta.json into a temporary folder, then rename it into place atomically (replacing the
        entry of a forced recomputation). Arrays named in ``mapped`` get their own .npy file, and the returned
        artifact reads them through a memory map (the computed copy can then be freed)."""
        final = self.entry(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._clean_stale_tmp(final.parent, key)
        tmp = final.parent / f".tmp-{key}-{socket.gethostname()}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        mapped = sorted(set(mapped) & set(arrays))
        with open(tmp / ARRAYS, "wb") as f:
            np.savez(f, **{k: v for k, v in arrays.items() if k not in mapped})
            f.flush()
            os.fsync(f.fileno())
        for name in mapped:
            with open(tmp / f"{name}.npy", "wb") as f:
                np.save(f, arrays[name], allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
        full_meta = {
            "stage": stage,
            "key": key,
            "format": CACHE_FORMAT,
            "code": code or self.code_of(None),
            "arrays": sorted(arrays),
            "shapes": {k: list(v.shape) for k, v in arrays.items()},
            "sha256": _file_sha256(tmp / ARRAYS),
            "mapped": {name: _file_sha256(tmp / f"{name}.npy") for name in mapped},
            "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **dict(meta),
        }
        with open(tmp / META, "w") as f:
            json.dump(full_meta, f, indent=2, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())
        if self.forced(stage, key) and final.exists():  # under the entry's lock (run): nobody reads it meanwhile
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:  # another job finished the same entry first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            existing = self.load(stage, key)
            if existing is None:
                raise
            return existing
        arrays.update({name: _load_mapped(final / f"{name}.npy") for name in mapped})  # the computed copy is freed
        return Artifact(stage, key, final, arrays, full_meta, cached=False)

    @staticmethod
    def _clean_stale_tmp(folder: Path, key: str) -> None:
        """Remove temporary folders of this key left by dead processes on this host (a killed run)."""
        host = socket.gethostname()
        for p in folder.glob(f".tmp-{key}-{host}-*"):
            try:
                pid = int(p.name.rsplit("-", 1)[1])
                os.kill(pid, 0)
                alive = pid != os.getpid()
            except (ValueError, ProcessLookupError):
                alive = False
            except PermissionError:
                alive = True
            if not alive:
                shutil.rmtree(p, ignore_errors=True)

    def run(
        self,
        stage: str,
        config: Mapping[str, Any],
        inputs: Mapping[str, str],
        compute: Callable[[], tuple[Mapping[str, np.ndarray], Mapping[str, Any]]],
        *,
        label: str | None = None,
        every_rank: bool = False,
        module: str | None = None,
        mapped: Collection[str] = (),
    ) -> Artifact:
        """Return the cached artifact for (stage, config, inputs), computing and saving it on a miss; ``module`` is
        the stage's module, whose import closure is the code version in the key; arrays named in ``mapped`` are
        stored in their own files and read through memory maps (:meth:`save`).

        Under DDP (elfs/infra/distributed.py) rank 0 alone decides hit or miss, so no rank can skip a collective another
        one enters; on a miss ``compute`` runs on rank 0 only, or on every rank when it trains (``every_rank``: it
        holds the DDP collectives); rank 0 alone writes the entry, and every rank then returns rank 0's arrays."""
        from elfs.infra import distributed

        code = self.code_of(module)
        key = self.key(stage, config, inputs, module=module)
        zero = distributed.is_zero()
        forced = self.forced(stage, key)
        art = self.load(stage, key) if zero and not forced else None
        lock = None
        if zero and art is None:  # one computation per key: another job may be computing this very entry
            lock = self._lock(stage, key)
            art = None if forced else self.load(stage, key)  # written by that job while this one waited
        try:
            described = {"config": dict(config), "inputs": dict(inputs), "module": module, "code": code}
            art = self._run_locked(
                stage, key, art, compute, described, label=label, every_rank=every_rank, mapped=mapped
            )
            self._fresh.add(key)
            return art
        finally:
            if lock is not None:
                lock.release()

    def _lock(self, stage: str, key: str):
        """Hold ``<cache>/.locks/<stage>-<key>.lock`` (an OS file lock, flock: the kernel releases it when its process
        dies, so a killed run leaves no stale lock), waiting, with one log line, while another process computes the
        same entry. The small lock files stay (deleting one that a waiter holds open would let two processes in)."""
        from filelock import FileLock, Timeout

        folder = self.root / ".locks"
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / f"{stage}-{key}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("stage %-12s another process is computing %s; waiting for it", stage, key)
            lock.acquire()
        return lock

    def _run_locked(
        self,
        stage: str,
        key: str,
        art: Artifact | None,
        compute: Callable[[], tuple[Mapping[str, np.ndarray], Mapping[str, Any]]],
        described: Mapping[str, Any],
        *,
        label: str | None,
        every_rank: bool,
        mapped: Collection[str] = (),
    ) -> Artifact:
        """The hit-or-miss decision (rank 0's, for every rank) and, on a miss, the computation and the entry."""
        from elfs.infra import distributed

        zero = distributed.is_zero()
        hit, key = distributed.from_zero((art is not None, key))  # rank 0's entry, whatever another rank would name
        if hit:
            art = art or self._load_written(stage, key)
            log.info("stage %-12s %s cache hit %s", stage, label or "", art.path)
        else:
            t0 = time.perf_counter()
            arrays: Mapping[str, np.ndarray] = {}
            if zero or every_rank:
                arrays, extra = compute()
            seconds = time.perf_counter() - t0
            if zero:
                meta = {**described, "wall_seconds": seconds, **dict(extra)}
                art = self.save(stage, key, arrays, meta, code=described["code"], mapped=mapped)
                log.info("stage %-12s %s computed in %.1fs -> %s", stage, label or "", seconds, art.path)
            del arrays  # the entry's memory maps replace the computed copies of the mapped arrays: freed here
            distributed.barrier()
            if not zero:
                art = self._load_written(stage, key)
                art.cached = False
            art.seconds = seconds
        self.events.append(
            {
                "stage": stage,
                "label": label,
                "key": key,
                "cached": art.cached,
                "seconds": art.seconds,
                "resumed": bool(art.meta.get("resumed", False)),
            }
        )
        return art

    def _load_written(self, stage: str, key: str) -> Artifact:
        """An entry rank 0 has just found or written; absent here means this rank sees another filesystem."""
        art = self.load(stage, key)
        if art is None:
            from elfs.infra import distributed

            raise RuntimeError(
                f"rank {distributed.rank()} cannot read the cache entry rank 0 wrote at {self.entry(stage, key)}: "
                f"paths.cache_dir must be on a filesystem that every rank (every node) shares"
            )
        return art
