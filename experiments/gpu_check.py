"""The prepared GPU check: one script for a bare GPU machine without network (issue 7). It prints and saves JSON.

    python experiments/gpu_check.py [--out DIR] [--quick] [--compile]

It needs torch and lightning (installed on such machines) and elfs's other pinned dependencies, which travel as
wheels: it names the missing ones and the pip line that installs them from a wheel folder before doing anything.
It measures, on whatever device it finds (CPU too, for checking the script itself with --quick):

1. ResNet-18 (CIFAR) training at 32x32, batch 256: the plain path (host DataLoader, fp32) against the fast path
   (images kept on the device, device-side crops/flips, bf16 autocast, channels-last, cudnn benchmark; with
   --compile also torch.compile), images/s and the ratio, through elfs's own train_classifier;
2. one TEMI epoch at paper shape (50 heads, batch 1024, 50,000 x 768 embeddings), batched vs looped heads;
3. embedding throughput of DINO ViT-B/16 (random weights: the same network and cost) at 224 px;
4. a short ELFS-vs-random run on real images shipped in wheels (MNIST-5k, EfficientNet-Lite0 weights):
   the whole pipeline with the GPU trainer, its table and stage times.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

NEEDED = {  # import name -> pip requirement (pinned in requirements.txt)
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
    "faiss": "faiss-cpu",
    "timm": "timm",
    "sklearn": "scikit-learn",
    "scipy": "scipy",
    "mlxtend": "mlxtend",
    "PIL": "pillow",
    "matplotlib": "matplotlib",
    "wandb": "wandb",
    "tqdm": "tqdm",
}


def missing_packages() -> list[str]:
    return [pip for mod, pip in NEEDED.items() if importlib.util.find_spec(mod) is None]


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_resnet(n: int, steps: int, compile_: bool) -> dict:
    """Images/s of train_classifier on CIFAR-shaped uint8 images: plain vs fast path (same model and steps)."""
    import numpy as np
    import torch

    from elfs.config import ClassifierTrainingConfig
    from elfs.dynamics.classifier import train_classifier

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    idx = np.arange(n)
    cuda = torch.cuda.is_available()
    base = dict(model="resnet18_cifar", batch_size=256, lr=0.1)
    variants = {
        "plain": (ClassifierTrainingConfig(**base), {"precision": "32-true"}),
        "fast": (
            ClassifierTrainingConfig(**base, device_data=True, channels_last=True, compile=compile_),
            {"precision": "bf16-mixed" if cuda else "32-true", "benchmark": cuda},
        ),
    }
    out = {}
    for name, (cfg, tk) in variants.items():
        common = dict(num_classes=10, seed=0, crop_padding=4, hflip=True, mean=[0.5] * 3, std=[0.25] * 3)
        kw = dict(accelerator="auto", devices=1, deterministic=False, **tk)
        train_classifier(x, y, idx, cfg, steps=max(2, steps // 10), trainer_kwargs=kw, **common)  # warm-up
        _sync()
        t0 = time.perf_counter()
        train_classifier(x, y, idx, cfg, steps=steps, trainer_kwargs=kw, **common)
        _sync()
        dt = time.perf_counter() - t0
        out[name] = {"seconds": round(dt, 3), "images_per_s": round(steps * 256 / dt, 1), "step_ms": 1e3 * dt / steps}
    out["fast_over_plain"] = round(out["fast"]["images_per_s"] / out["plain"]["images_per_s"], 2)
    return out


def bench_temi(n: int, dim: int, heads: int, epochs: int) -> dict:
    """Seconds per TEMI epoch at paper shape, batched vs looped heads (k = 50 random neighbours)."""
    import numpy as np

    from elfs.cluster import fit_temi
    from elfs.config import ClusterConfig

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    knn = rng.integers(0, n, (n, 50))
    out = {}
    for impl in ("batched", "loop"):
        cfg = ClusterConfig(num_heads=heads, epochs=epochs, warmup_epochs=0, batch_size=1024, head_impl=impl)
        kw = dict(accelerator="auto", devices=1, precision="32-true")
        t0 = time.perf_counter()
        fit_temi(emb, knn, 10, cfg, seed=0, trainer_kwargs=kw)
        _sync()
        out[impl] = {"seconds_per_epoch": round((time.perf_counter() - t0) / epochs, 3)}
    out["loop_over_batched"] = round(out["loop"]["seconds_per_epoch"] / out["batched"]["seconds_per_epoch"], 2)
    return out


def bench_embed(n: int) -> dict:
    """Images/s of the embedding stage, DINO ViT-B/16 with random weights at 224 px (32 px uint8 inputs resized)."""
    import numpy as np

    from elfs.embed import embed_images

    x = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    embed_images(x[:64], "dino_vitb16", pretrained=False, batch_size=64, progress=False)  # warm-up
    _sync()
    t0 = time.perf_counter()
    embed_images(x, "dino_vitb16", pretrained=False, batch_size=256, progress=False)
    _sync()
    dt = time.perf_counter() - t0
    return {"images": n, "seconds": round(dt, 2), "images_per_s": round(n / dt, 1)}


def bench_concurrent(n: int, steps: int, k: int) -> dict:
    """k coreset evaluations (ResNet-18, 32 px) one by one vs k at once in worker processes (evaluate.concurrent),
    wall time including the workers' start, and the largest accuracy difference: 0 needs deterministic kernels and,
    on a CPU, the same thread count per training (the workers share the cores out), so it is reported, not assumed."""
    import numpy as np
    import torch

    from elfs.config import EvaluateConfig
    from elfs.pipeline import EvaluationData, in_workers, train_and_test

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    cuda = torch.cuda.is_available()
    e = EvaluateConfig(model="resnet18_cifar", batch_size=128, lr=0.1, steps=steps, device_data=True)
    tk = dict(accelerator="auto", devices=1, precision="bf16-mixed" if cuda else "32-true", benchmark=cuda)
    image = dict(crop_padding=4, hflip=True, mean=[0.5] * 3, std=[0.25] * 3)
    data = EvaluationData(x, y, x[: n // 4], y[: n // 4], 10, tk, 0, image)
    jobs = [(e, np.sort(rng.choice(n, n // 2, replace=False)), seed) for seed in range(k)]
    _sync()
    t0 = time.perf_counter()
    one = [train_and_test(data, *job) for job in jobs]
    _sync()
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    together = in_workers(train_and_test, jobs, data, k)
    t_together = time.perf_counter() - t0
    diff = max(abs(float(a["final_acc"]) - float(b["final_acc"])) for a, b in zip(one, together, strict=True))
    return {
        "trainings": k,
        "one_by_one_s": round(t_one, 2),
        "concurrent_s": round(t_together, 2),
        "speedup": round(t_one / t_together, 2),
        "max_accuracy_difference": diff,
    }


def run_elfs(out_dir: Path, quick: bool) -> dict:
    """ELFS vs random on MNIST-5k (real images and weights from wheels), the GPU trainer, fast data path."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from elfs.config import register_configs
    from elfs.train import run

    register_configs()
    import torch

    gpu = torch.cuda.is_available()
    overrides = [
        f"paths.root_dir={out_dir}",
        f"paths.output_dir={out_dir / 'elfs_run'}",
        f"paths.cache_dir={out_dir / 'cache'}",
        "logger=csv",
        "progress=false",
        "selection.budget=[0.1,0.3]",
        "evaluate.seeds=[0,1,2]",
        f"evaluate.steps={60 if quick else 3000}",
        f"selection.search_steps={30 if quick else 1000}",
        f"dynamics.epochs={2 if quick else 30}",
        f"cluster.epochs={5 if quick else 100}",
        "dynamics.device_data=true",
        "evaluate.device_data=true",
    ]
    if gpu:
        overrides += ["trainer=gpu", "trainer.num_workers=0", "trainer.precision=bf16-mixed", "trainer.benchmark=true"]
        overrides += ["dynamics.channels_last=true", "evaluate.channels_last=true", "cluster.head_impl=batched"]
        overrides += ["evaluate.concurrent=3"]  # the 3 seeds' trainings share the GPU, each in its own process
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_check")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script itself (CPU: ~1 minute)")
    p.add_argument("--compile", action="store_true", help="also torch.compile the fast path's network")
    p.add_argument("--skip", default="", help="comma list of sections to skip: resnet,temi,embed,concurrent,elfs")
    args = p.parse_args()
    missing = missing_packages()
    if missing:
        print(
            "missing packages: " + " ".join(missing) + "\ninstall them from the wheels that travel with this script:\n"
            "  pip install --no-index --find-links wheels/ " + " ".join(missing) + "\n"
            "(build that folder where there is network: pip download -d wheels/ -r requirements.txt)",
            file=sys.stderr,
        )
        return 2
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "quick": args.quick,
    }
    skip = set(filter(None, args.skip.split(",")))
    q = args.quick
    sections = {
        "resnet18_32px_batch256": lambda: bench_resnet(1024 if q else 50000, 6 if q else 300, args.compile),
        "temi_paper_shape": lambda: bench_temi(2048 if q else 50000, 64 if q else 768, 4 if q else 50, 1 if q else 2),
        "embed_dino_vitb16_224px": lambda: bench_embed(64 if q else 4096),
        "concurrent_evaluations": lambda: bench_concurrent(512 if q else 20000, 5 if q else 400, 2 if q else 4),
        "elfs_vs_random_mnist5k": lambda: run_elfs(args.out, q),
    }
    keys = {"resnet": "resnet18_32px_batch256", "temi": "temi_paper_shape", "embed": "embed_dino_vitb16_224px"}
    keys["concurrent"] = "concurrent_evaluations"
    keys["elfs"] = "elfs_vs_random_mnist5k"
    for short, name in keys.items():
        if short in skip:
            continue
        t0 = time.perf_counter()
        try:
            report[name] = sections[name]()
        except Exception as e:  # keep going: one broken section must not hide the others' numbers
            report[name] = {"error": f"{type(e).__name__}: {e}"}
        report[name]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {json.dumps(report[name])}", flush=True)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"written: {args.out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
