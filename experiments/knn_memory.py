"""The kNN stage's peak memory at a million images, measured rather than extrapolated: N x D float16 embeddings
(default 1,000,000 x 1280, elfs-select's encoder width) written to a file and read through a memory map, as the
cache holds them, then elfs's kNN with elfs-select's settings (knn=auto on a CPU: faiss_ivf, 8-bit codes above
100,000 images, 4 sqrt(N) cells, k = 50). Prints the process's peak resident memory (VmHWM: the mapped file's pages
included) before and after the stage, and the seconds it took.

    python experiments/knn_memory.py                       # 1,000,000 x 1280, knn=auto's nprobe (32)
    python experiments/knn_memory.py --n 120000             # a smaller set, the same settings

Measured on 2 cores (2026-12-06), 1,000,000 x 1280 at nprobe 32: 39.4 min (from the resident memory sampled every
20 s: training the cells about 5 min, adding the codes 3, the search 31; 11 of 12 stack samples during the search
were in faiss's IVF scan, 1 in the exact re-scoring), peak 5.19 GiB resident with the mapped file's 2.38 GiB and
torch's 0.5 GiB of libraries included. The bench_folder.py
extrapolation draws a line through two folder sizes; at 20,000 images the stage is exact (another algorithm), so
that line says little about the kNN stage at a million. This measures it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def hwm_mib() -> float:
    """This process's peak resident memory so far (MiB)."""
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1]) / 1024


def write_embeddings(path: Path, n: int, d: int, seed: int = 0) -> None:
    """``n`` x ``d`` float16 rows around 500 centres (non-negative, as pooled CNN features are), in blocks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((500, d)).astype(np.float32)
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, d))
    for s in range(0, n, 20000):
        c = centres[rng.integers(0, 500, min(20000, n - s))]
        x[s : s + len(c)] = np.maximum(c + 0.7 * rng.standard_normal(c.shape, dtype=np.float32), 0)
    x.flush()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--nprobe", type=int, default=None, help="cells searched (default: knn=auto's)")
    p.add_argument("--dir", type=Path, default=None, help="where the embeddings file is written (default: a temp dir)")
    a = p.parse_args()
    from omegaconf import OmegaConf

    from elfs.config import KnnConfig

    conf = Path(__file__).resolve().parents[1] / "conf" / "knn" / "auto.yaml"
    cfg = KnnConfig(**OmegaConf.to_container(OmegaConf.load(conf)))
    nprobe = cfg.nprobe if a.nprobe is None else a.nprobe
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        path = Path(tmp) / "embeddings.npy"
        t0 = time.perf_counter()
        import multiprocessing as mp

        # written by another process: the pages written would stay in this one's resident peak (VmHWM)
        child = mp.get_context("spawn").Process(target=write_embeddings, args=(path, a.n, a.dim))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"writing the embeddings failed (exit code {child.exitcode})")
        gib = path.stat().st_size / 2**30
        print(f"wrote {a.n:,} x {a.dim} float16 ({gib:.2f} GiB) in {time.perf_counter() - t0:.0f} s", flush=True)
        import faiss  # noqa: F401 - loaded before the baseline is taken, as torch (elfs-select has both loaded)
        import torch  # noqa: F401

        from elfs.method.knn import ivf_storage, knn, resolve_backend

        backend = resolve_backend(cfg.backend, a.n, cfg.approx_above)
        x = np.load(path, mmap_mode="r")
        base = hwm_mib()
        t0 = time.perf_counter()
        idx, sims = knn(x, cfg.k, backend=backend, chunk_size=cfg.chunk_size, nlist=cfg.nlist, nprobe=nprobe)
        seconds = time.perf_counter() - t0
        peak = hwm_mib()
        out = {
            "n": a.n,
            "dim": a.dim,
            "backend": backend,
            "storage": ivf_storage(a.n) if backend == "faiss_ivf" else "exact",
            "k": cfg.k,
            "nprobe": nprobe,
            "seconds": round(seconds, 1),
            "base_mib": round(base),
            "peak_mib": round(peak),
            "stage_mib": round(peak - base),
            "file_mib": round(path.stat().st_size / 2**20),
            "result_mib": round((idx.nbytes + sims.nbytes) / 2**20),
        }
    print(json.dumps(out))
    print(
        f"kNN stage on {a.n:,} x {a.dim} float16 ({backend}, {out['storage']}, nprobe {nprobe}): peak "
        f"{peak / 1024:.2f} GiB resident ({(peak - base) / 1024:.2f} GiB above the {base / 1024:.2f} GiB before it, "
        f"the mapped file's {out['file_mib'] / 1024:.2f} GiB included), {seconds / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
