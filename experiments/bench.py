"""Speed benchmarks that print ratios (never run in the test suite).

    python experiments/bench.py [--n 20000] [--dim 384] [--heads 50] [--device auto] [--only zcore]

1. kNN: faiss IndexFlatIP vs the chunked torch fallback (same neighbours, checked).
2. TEMI heads: a Python loop over H heads vs the batched (bmm) form, forward + backward per step.
3. ResNet-18 training (32 px, batch 256, elfs's train_classifier): the plain data path vs the fast one (images on
   the device, bf16 + channels-last on a GPU), images/s and the ratio (experiments/gpu_check.py's measurement).
4. Coreset evaluations (ResNet-18, 32 px): K one by one vs K at once in worker processes (evaluate.concurrent).
5. Lockstep: K small CNNs trained one by one vs together in one process (torch.func vmap over stacked models),
   wall time and both forms' test accuracies (experiments/lockstep.py).
6. ZCore: the per-sample form (one sample a loop, as the reference code) vs the batched form on the same 50,000
   random embeddings, each on a fraction of the reference's million samples (the batched form on more, its setup
   included), wall and CPU time per sample and their ratio, then the million extrapolated from each (the cost is
   linear in samples at a fixed N; `--zcore-samples 1000000` runs the batched form on all of them). Their scores'
   equivalence is tests/test_zcore.py's.
On the 2-core build CPU the loop is expected to win (heads); on a GPU the batched form should.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _time(fn, repeat: int = 3) -> float:
    fn()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def bench_knn(n: int, dim: int, k: int = 50) -> None:
    from elfs.method.knn import knn

    x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    res = {}
    for backend in ("faiss", "torch"):
        out = {}
        res[backend] = _time(lambda b=backend, o=out: o.update(r=knn(x, k, backend=b)), repeat=1)
        if backend == "faiss":
            ref = out["r"][0]
        else:
            agree = np.mean([len(set(a) & set(b)) / k for a, b in zip(ref[:500], out["r"][0][:500], strict=True)])
    print(
        f"kNN N={n} d={dim} k={k}: faiss {res['faiss']:.2f}s  torch {res['torch']:.2f}s  "
        f"torch/faiss = {res['torch'] / res['faiss']:.2f}x  (neighbour agreement {agree:.4f})"
    )


def bench_heads(heads: int, dim: int, batch: int, device: str) -> None:
    from elfs.cluster.module import make_heads

    x = torch.randn(2 * batch, dim, device=device)
    times = {}
    for impl in ("loop", "batched"):
        torch.manual_seed(0)
        h = make_heads(impl, heads, dim, 512, 256, 10)
        h = h.to(device)
        opt = torch.optim.AdamW(h.parameters(), lr=1e-4)

        def step(h=h, opt=opt):
            opt.zero_grad(set_to_none=True)
            out = h(x)
            loss = (
                sum(o.logsumexp(-1).mean() for o in out) if isinstance(out, (list, tuple)) else out.logsumexp(-1).mean()
            )
            loss.backward()
            opt.step()

        times[impl] = _time(step)
    print(
        f"TEMI heads H={heads} d={dim} batch={batch} on {device}: loop {times['loop'] * 1e3:.0f} ms/step  "
        f"batched {times['batched'] * 1e3:.0f} ms/step  loop/batched = {times['loop'] / times['batched']:.2f}x"
    )


def bench_zcore(n: int, dim: int, samples: int, per_sample: int, device: str) -> None:
    """ZCore at the reference's settings (2-d subspaces, 1,000 neighbours, exponent 4) over ``n`` random embeddings:
    the per-sample form on ``per_sample`` samples and the batched form on ``samples`` (its setup included), wall and
    CPU time, the ratio per sample, and the reference's million samples extrapolated from each (linear in samples)."""
    from elfs.select.zcore import zcore_scores, zcore_scores_per_sample

    x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    kw = {"dim": 2, "neighbours": 1000, "exponent": 4.0, "rand_init": False}

    def timed(fn):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - wall, time.process_time() - cpu

    slow = timed(lambda: zcore_scores_per_sample(x, samples=per_sample, seed=0, **kw))
    if device == "cuda":
        zcore_scores(x, samples=256, seed=1, device=device, **kw)  # warm-up: CUDA context and kernels
    fast = timed(lambda: zcore_scores(x, samples=samples, seed=2, device=device, **kw))
    each = [(s / per_sample, f / samples) for s, f in zip(slow, fast, strict=True)]  # seconds per sample
    print(
        f"ZCore N={n} d={dim} (2-d subspaces, 1000 neighbours) on {device}, {torch.get_num_threads()} torch threads, "
        f"numpy single-threaded:\n  per-sample form: {per_sample} samples in {slow[0]:.1f} s wall, {slow[1]:.1f} s CPU"
        f" ({each[0][0] * 1e3:.2f} ms/sample wall)\n  batched form: {samples} samples in {fast[0]:.1f} s wall, "
        f"{fast[1]:.1f} s CPU, setup included ({each[0][1] * 1e3:.3f} ms/sample wall)\n"
        f"  per-sample/batched per sample = {each[0][0] / each[0][1]:.1f}x wall, {each[1][0] / each[1][1]:.1f}x CPU\n"
        f"  the reference's 1,000,000 samples: per-sample {each[0][0] * 1e6 / 3600:.2f} h wall, "
        f"{each[1][0] * 1e6 / 3600:.2f} h CPU (extrapolated linearly from its {per_sample} samples); batched "
        f"{each[0][1] * 1e6 / 60:.1f} min wall, {each[1][1] * 1e6 / 60:.1f} min CPU "
        f"({'measured' if samples == 1_000_000 else f'extrapolated linearly from its {samples} samples'})"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--heads", type=int, default=50)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--device", default="auto")
    p.add_argument("--resnet-images", type=int, default=4096, help="images for the concurrent-evaluations comparison")
    p.add_argument("--resnet-steps", type=int, default=20, help="timed steps (ResNet-18), steps per evaluation")
    p.add_argument("--concurrent", type=int, default=2, help="evaluations trained at once (evaluate.concurrent)")
    p.add_argument("--lockstep-k", type=int, default=3, help="models trained in lockstep (experiments/lockstep.py)")
    p.add_argument("--lockstep-steps", type=int, default=300)
    p.add_argument("--zcore-n", type=int, default=50000, help="embeddings for the ZCore comparison")
    p.add_argument("--zcore-samples", type=int, default=32768, help="samples timed in ZCore's batched form")
    p.add_argument("--zcore-per-sample", type=int, default=2048, help="samples timed in ZCore's per-sample form")
    p.add_argument("--only", choices=["zcore"], default=None, help="run one section only")
    a = p.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    bench_zcore(a.zcore_n, a.dim, a.zcore_samples, a.zcore_per_sample, device)
    if a.only == "zcore":
        return
    bench_knn(a.n, a.dim)
    bench_heads(a.heads, a.dim, a.batch, device)
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_check import bench_concurrent, bench_resnet
    from lockstep import bench_lockstep

    r = bench_resnet(256, 2, 2 + a.resnet_steps, compile_=False)  # steps 3 .. 2 + resnet_steps timed
    print(
        f"ResNet-18 32px batch 256 on {device}: plain {r['plain']['images_per_s']:.0f} img/s  "
        f"fast {r['fast']['images_per_s']:.0f} img/s  fast/plain = {r['fast_over_plain']:.2f}x"
    )
    c = bench_concurrent(a.resnet_images, a.resnet_steps, a.concurrent)
    print(
        f"{c['trainings']} evaluations on {device}: one by one {c['one_by_one_s']:.1f} s  at once "
        f"{c['concurrent_s']:.1f} s  speed-up = {c['speedup']:.2f}x  "
        f"(accuracies differ by {c['max_accuracy_difference']:.4f})"
    )
    s = bench_lockstep(a.lockstep_k, a.lockstep_steps, n=4000, kept=1200, device=device)
    print(
        f"{s['k']} {s['model']} trainings of {s['steps']} steps on {s['device']}: separate {s['separate_s']:.1f} s  "
        f"lockstep {s['lockstep_s']:.1f} s  separate/lockstep = {s['speedup']:.2f}x  (accuracy % mean, std: "
        f"separate {s['separate_mean_std']}, lockstep {s['lockstep_mean_std']})"
    )


if __name__ == "__main__":
    main()
