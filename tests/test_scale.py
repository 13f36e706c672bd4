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

_SCRIPT = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
n, d, classes, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
rng = np.random.default_rng(0)
centers = (rng.standard_normal((classes, d)) * 2).astype(np.float32)
x = centers[rng.integers(0, classes, n)] + rng.standard_normal((n, d), dtype=np.float32)
t, t0 = {}, time.perf_counter()
from elfs.knn import knn
idx, _ = knn(x, 20, backend="faiss_ivf", chunk_size=8192)
t["knn"], t0 = time.perf_counter() - t0, time.perf_counter()
from elfs.cluster import fit_temi
from elfs.config import ClusterConfig, DynamicsConfig
from elfs.runtime import Runtime
cc = ClusterConfig(num_heads=4, hidden_dim=128, bottleneck_dim=64, epochs=1, batch_size=1024, lr=1e-3,
                   min_lr=1e-4, warmup_epochs=0, knn_k=20, teacher_momentum=0.99, embed_norm=True)
tr = Runtime(trainer_kwargs={"accelerator": "cpu", "enable_progress_bar": False})
pseudo = fit_temi(x, idx, classes, cc, seed=0, runtime=tr).pseudo_labels
t["cluster"], t0 = time.perf_counter() - t0, time.perf_counter()
from elfs.dynamics import HARD_END, record_dynamics
dc = DynamicsConfig(model="mlp", width=256, batch_size=1024, lr=0.05, epochs=2, el2n_epochs=1)
scores = record_dynamics(x, pseudo, dc, num_classes=classes, seed=0, runtime=tr)
t["dynamics"], t0 = time.perf_counter() - t0, time.perf_counter()
from elfs.select import select, to_hardness
from elfs.selection_report import write_selection_outputs
h = to_hardness(scores["aum"], HARD_END["aum"])
kept = {b: select("double_end", h, n=n, budget=b, beta=0.1) for b in (0.1, 0.3)}
files = write_selection_outputs(out, ids=[f"#{i}" for i in range(n)], pseudo_labels=pseudo, hardness=h,
                                score_name="aum", score=scores["aum"], kept=kept, beta={0.1: 0.1, 0.3: 0.1},
                                num_clusters=classes, load_image=None)
t["select"] = time.perf_counter() - t0
print(json.dumps({"seconds": t, "kept": {str(b): len(k) for b, k in kept.items()}, "files": len(files),
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


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
