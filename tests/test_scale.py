"""The label-free stages at scale on a CPU: 200,000 synthetic embeddings through kNN (faiss IVF), TEMI, the proxy's
dynamics (an MLP over the embeddings), double-end selection and the answer files, within a stated memory bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

N, D, CLASSES = 200_000, 64, 100
#: the stated bound on peak RSS for the whole run: the Python + torch + faiss runtime (about 0.9 GB here) plus the
#: O(N·d) arrays (embeddings 51 MB, neighbours N x 20 x 12 B = 48 MB, TEMI and proxy copies, scores). A single
#: N x N float32 similarity matrix would be 160 GB.
RSS_BOUND_MB = 2500

#: each subprocess's own peak RSS (MiB): ru_maxrss would start at the forking pytest worker's (Linux keeps it over exec)
_HWM = r"""
def hwm_mb():  # own peak RSS; ru_maxrss would start at the forking pytest worker's (kept over exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]) / 1024
"""

_SCRIPT = r"""
import json, sys, time
from pathlib import Path
import numpy as np
n, d, classes, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
rng = np.random.default_rng(0)
centers = (rng.standard_normal((classes, d)) * 2).astype(np.float32)
x = centers[rng.integers(0, classes, n)] + rng.standard_normal((n, d), dtype=np.float32)
t, t0 = {}, time.perf_counter()
{HWM}rss = {}  # peak RSS after each stage (MiB): a failure says which stage took the memory
def peak(stage):
    rss[stage] = hwm_mb()
from elfs.method.knn import knn
idx, _ = knn(x, 20, backend="faiss_ivf", chunk_size=8192)
peak("knn")
t["knn"], t0 = time.perf_counter() - t0, time.perf_counter()
from elfs.cluster import fit_temi
from elfs.config import ClusterConfig, DynamicsConfig
from elfs.infra.runtime import Runtime
cc = ClusterConfig(num_heads=4, hidden_dim=128, bottleneck_dim=64, epochs=1, batch_size=1024, lr=1e-3,
                   min_lr=1e-4, warmup_epochs=0, knn_k=20, teacher_momentum=0.99, embed_norm=True)
tr = Runtime(trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False})
pseudo = fit_temi(x, idx, classes, cc, seed=0, runtime=tr).pseudo_labels
peak("cluster")
t["cluster"], t0 = time.perf_counter() - t0, time.perf_counter()
from elfs.dynamics import HARD_END, record_dynamics
dc = DynamicsConfig(model="mlp", width=256, batch_size=1024, lr=0.05, epochs=2, el2n_epochs=1)
scores = record_dynamics(x, pseudo, dc, num_classes=classes, seed=0, runtime=tr)
peak("dynamics")
t["dynamics"], t0 = time.perf_counter() - t0, time.perf_counter()
from elfs.select import select, to_hardness
from elfs.handback.answer import Answer
from elfs.handback.selection_report import write_selection_outputs
h = to_hardness(scores["aum"], HARD_END["aum"])
kept = {b: select("double_end", h, n=n, budget=b, beta=0.1) for b in (0.1, 0.3)}
answer = Answer(ids=[f"#{i}" for i in range(n)], clusters=pseudo, hardness=h, score_name="aum", score=scores["aum"],
                kept=kept, beta={0.1: 0.1, 0.3: 0.1}, num_clusters=classes)
files = write_selection_outputs(out, answer)
t["select"] = time.perf_counter() - t0
print(json.dumps({"seconds": t, "peak_mb_after": rss, "kept": {str(b): len(k) for b, k in kept.items()},
                  "files": len(files), "maxrss_mb": hwm_mb()}))
""".replace("{HWM}", _HWM.lstrip("\n"))


@pytest.mark.slow
def test_label_free_stages_on_200k_embeddings_within_the_memory_bound(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    p = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(N), str(D), str(CLASSES), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    print(res)
    assert res["kept"] == {"0.1": N // 10, "0.3": 3 * N // 10}
    assert res["maxrss_mb"] < RSS_BOUND_MB, res
    with open(tmp_path / "selection.csv") as f:
        assert sum(1 for _ in f) == N + 1


#: the kNN stage on 200,000 x 1280 float16 embeddings read through a memory map (elfs-select's encoder width at the
#: size where faiss_ivf stores 8-bit codes): faiss_ivf reads the map a block at a time, normalising each block to
#: float32 as it goes, so its peak memory above the interpreter's is bounded by the index's 8-bit codes (a quarter of
#: a float32 copy of the embeddings: 244 MiB), the IVF training sample (64 rows a cell: 160 MiB at the 512 cells, 1
#: probed, used to keep the test short; 4 sqrt(N) by default, at most 131,072 rows), and the pages of the float16
#: file it maps (489 MiB), plus 300 MiB for the blocks, faiss's search buffers and the result arrays (N x k ids and
#: similarities: 31 MiB at k = 20). A whole float32 copy (977 MiB), as the stage held until the map was read in
#: blocks, would exceed it; holding the embeddings in float32 as well as an IVFFlat index of them, as before that,
#: would add two (1954 MiB). Bound before the block-wise reading: 2,170 MiB (one copy + codes + sample + pages + 300).
KNN_N, KNN_D, KNN_K, KNN_CELLS = 200_000, 1280, 20, 512
_MIB = 1 << 20
KNN_COPY_MB = KNN_N * KNN_D * 4 / _MIB
KNN_BOUND_MB = KNN_COPY_MB * 0.25 + 64 * KNN_CELLS * KNN_D * 4 / _MIB + KNN_COPY_MB / 2 + 300

#: writes the embeddings file in a process of its own, so the pages written do not set the measuring one's peak
_KNN_WRITE = r"""
import sys
from pathlib import Path
import numpy as np
n, d, path = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
rng = np.random.default_rng(0)
centers = rng.standard_normal((500, d)).astype(np.float32)
x = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, d))
for s in range(0, n, 10000):  # written in blocks: the set is never in memory as float32
    c = centers[rng.integers(0, 500, min(10000, n - s))]
    x[s : s + len(c)] = np.maximum(c + 0.7 * rng.standard_normal(c.shape, dtype=np.float32), 0)
x.flush()
"""

_KNN_SCRIPT = r"""
import json, sys
from pathlib import Path
import numpy as np
n, d, k, cells, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
import faiss, torch  # noqa: F401, E401 - loaded before the baseline is taken (elfs-select has both loaded)
from elfs.method.knn import ivf_storage, knn
x = np.load(path, mmap_mode="r")
{HWM}base = hwm_mb()
idx, sims = knn(x, k, backend="faiss_ivf", chunk_size=4096, nlist=cells, nprobe=1)
peak = hwm_mb()
q = np.arange(0, n, n // 200)  # exact neighbours of 200 rows, by brute force in float64, in blocks
xq = np.asarray(x[q], dtype=np.float64)
xq /= np.linalg.norm(xq, axis=1, keepdims=True)
s = np.empty((len(q), n))
for b in range(0, n, 20000):
    xb = np.asarray(x[b : b + 20000], dtype=np.float64)
    s[:, b : b + 20000] = xq @ (xb / np.linalg.norm(xb, axis=1, keepdims=True)).T
s[np.arange(len(q)), q] = -np.inf
exact = np.argsort(-s, axis=1)[:, :k]
recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(idx[q].tolist(), exact.tolist())])
err = float(np.abs(sims[q] - np.take_along_axis(s, idx[q], axis=1)).max())
print(json.dumps({"base_mb": base, "peak_mb": peak, "recall": recall, "sim_err": err, "storage": ivf_storage(n)}))
""".replace("{HWM}", _HWM.lstrip("\n"))


@pytest.mark.slow
def test_knn_on_200k_float16_embeddings_holds_no_float32_copy(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    args = [str(KNN_N), str(KNN_D), str(KNN_K), str(KNN_CELLS), str(tmp_path / "emb.npy")]
    w = subprocess.run([sys.executable, "-c", _KNN_WRITE, args[0], args[1], args[4]], capture_output=True, text=True)
    assert w.returncode == 0, w.stderr[-3000:]
    p = subprocess.run([sys.executable, "-c", _KNN_SCRIPT, *args], env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    print(res, f"bound {KNN_BOUND_MB:.0f} MiB above the baseline")
    assert res["storage"] == "sq8"
    assert res["peak_mb"] - res["base_mb"] < KNN_BOUND_MB, res
    assert res["recall"] > 0.9 and res["sim_err"] < 1e-3, res  # 8-bit codes find the candidates; sims are exact
