"""plan=true: what a command would do and cost, before any data, weights or device is touched.

Every job of the command (a `-m` sweep expanded exactly as Hydra's basic sweeper does, experiment sweeps
included) is composed and validated; one line per job names its overrides, the label-free stages it needs and
which of them an earlier run left in the cache, and its trainings; a last line sums the device-hours of the
image trainings (the proxy, the beta-search candidates, the coreset evaluations) at a measured or assumed rate.

Which stages are cached is read from a ledger that every finished run appends to (``<cache>/ledger.jsonl``): a
digest of the settings a stage depends on (the dataset's config, not its bytes: a folder edited since is not
noticed here) -> the cache key that run used; a stage counts as cached when that entry still exists.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elfs.cache import stable_hash
from elfs.config import ElfsConfig

ASSUMED_IMAGES_PER_S = 10_700.0  # ResNet-18, batch 256, one H100, plain data path: an estimate, never measured
# Training-set sizes of the datasets that have fixed ones (the plan loads nothing); ImageNet-1K for imagefolder.
KNOWN_TRAIN_SIZES = {
    "cifar10": 50_000,
    "cifar100": 50_000,
    "stl10": 5_000,
    "mnist5k": 4_000,
    "digits": 1_438,
    "imagefolder": 1_281_167,
}
LEDGER = "ledger.jsonl"
GPU_CHECK = "gpu_check.json"  # experiments/gpu_check.py's output, copied to <root>/outputs/ to plan at its rate
#: (image side, channels) of the datasets with fixed images; a folder trains at dynamics/evaluate.image_size or 224
KNOWN_IMAGES = {"cifar10": (32, 3), "cifar100": (32, 3), "stl10": (96, 3), "mnist5k": (28, 1), "digits": (8, 1)}
KNOWN_CLASSES = {"cifar100": 100, "imagefolder": 1000}
#: dense bf16 tensor-core peaks (TFLOP/s, vendors' data sheets), first matching name fragment wins
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)
ASSUMED_DEVICE = "H100"


@dataclass
class JobPlan:
    """One job: what it needs, what the cache already holds, and the trainings it runs (each a unit with an id,
    so that a training shared by several jobs, like the proxy of a sweep or the full-data reference, counts once).
    """

    overrides: list[str]
    n_train: int | None
    n_source: str
    stages: dict[str, bool] = field(default_factory=dict)  # stage -> found in the cache
    # unit id -> (kind, images it trains on, training FLOPs, nan where the network's cost is not known here)
    units: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    concurrent: int = 1  # evaluate.concurrent: evaluations and beta-search candidates this many at a time


# ------------------------------------------------------------------------------------------------ digests


def _fields(obj: Any, drop: Sequence[str] = ()) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(obj).items() if k not in drop}


def stage_digests(conf: ElfsConfig) -> dict[str, str]:
    """A digest per label-free stage of the settings it depends on (its config and everything upstream, the code
    version of its own stage module included, as in its cache key); equal digests mean the same cache entry.
    Over-inclusive on purpose: a spurious miss costs a recomputation in the plan's count, a spurious hit would
    hide one."""
    from elfs.infra.version import module_version

    def code(*stages: str) -> list[str]:
        return [module_version(f"elfs.stages.{s}") for s in stages]

    run = {"seed": conf.seed, "precision": conf.trainer.precision}
    data = _fields(conf.dataset, ("num_workers",))
    out = {"data": stable_hash({"data": data, **run, "code": code("data")})}
    backbone = _fields(conf.backbone, ("batch_size",))
    out["embed"] = stable_hash({"up": out["data"], "backbone": backbone, "code": code("embed")})
    out["knn"] = stable_hash({"up": out["embed"], "knn": _fields(conf.knn, ("chunk_size",)), "code": code("knn")})
    clus = {"up": out["knn"], "cluster": _fields(conf.cluster), **run, "code": code("cluster")}
    out["cluster"] = stable_hash(clus)
    proto = {"up": out["embed"], "k": conf.cluster.num_clusters, **run, "code": code("prototypes")}
    out["prototypes"] = stable_hash(proto)
    zcore = {k: v for k, v in _fields(conf.selection).items() if k.startswith("zcore_")}
    out["zcore"] = stable_hash({"up": out["embed"], **zcore, "seed": conf.seed, "code": code("zcore")})
    dyn = {"dynamics": _fields(conf.dynamics), **run, "code": code("dynamics")}
    mixed = {"mixed_replaced": conf.selection.mixed_replaced} if conf.selection.labels == "mixed" else {}
    out["dynamics"] = stable_hash({"up": out["cluster"], **dyn, **mixed})
    # a proxy on ground truth reads the encoder only when it trains on the embeddings (an MLP): an image model's
    # is one training for every encoder, as its cache key says
    from elfs.infra.names import uses_embeddings

    gt_up = out["embed"] if uses_embeddings(conf.dynamics.model) else out["data"]
    out["dynamics_gt"] = stable_hash({"up": gt_up, **dyn})
    job = {"up": [out["dynamics"], out["dynamics_gt"], out["prototypes"]], "selection": _fields(conf.selection)}
    job["code"] = code("beta_search", "select", "evaluate")
    out["job"] = stable_hash({**job, "evaluate": _fields(conf.evaluate, ("concurrent",)), **run})
    return out


def record_run(conf: ElfsConfig, results: dict[str, Any]) -> None:
    """Append this finished run's stage keys to the cache's ledger (one JSON line per stage), for later plans."""
    digests = stage_digests(conf)
    keys = {**results.get("artifacts", {}), "job": "done"}
    lines = [json.dumps({"digest": digests[s], "stage": s, "key": k}) for s, k in keys.items() if s in digests]
    ledger = Path(conf.paths.cache_dir) / LEDGER
    with open(ledger, "a", encoding="utf-8") as f:  # one short write per line: concurrent jobs do not interleave
        for line in lines:
            f.write(line + "\n")


def _ledger(cache_dir: str) -> dict[str, tuple[str, str]]:
    path = Path(cache_dir) / LEDGER
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
            out[rec["digest"]] = (rec["stage"], rec["key"])
        except (ValueError, KeyError):
            continue  # a line cut by a killed process
    return out


def _cached(ledger: dict[str, tuple[str, str]], cache_dir: str, digest: str) -> bool:
    if digest not in ledger:
        return False
    stage, key = ledger[digest]
    return key == "done" or (Path(cache_dir) / stage / key / "meta.json").is_file()


# ------------------------------------------------------------------------------------------------ one job


def source_facts(conf: ElfsConfig) -> tuple[int | None, str, bool]:
    """(training images, where that number comes from, whether there is ground truth to evaluate with), without
    loading a single image: an npz's header, a folder's listing, or the known size of a named dataset."""
    d = conf.dataset
    labelled = d.name != "folder" or d.synthetic is not None
    if d.synthetic is not None:
        n, source = d.synthetic, "synthetic"
    elif d.name == "npz" and d.path and Path(d.path).expanduser().is_file():
        import numpy as np

        with np.load(Path(d.path).expanduser(), mmap_mode="r") as z:  # reads the header, not the pixels
            n, source, labelled = int(z["x_train"].shape[0]), "npz header", "y_train" in z.files
    elif d.name == "folder" and d.path and Path(d.path).expanduser().exists():
        from elfs.data.folder import scan_folder

        n, source = len(scan_folder(Path(d.path).expanduser())[0]), "files listed"
    elif d.name in KNOWN_TRAIN_SIZES:
        n, source = KNOWN_TRAIN_SIZES[d.name], "known size"
    else:
        return None, "unknown size", labelled
    if d.max_train is not None:
        n = min(n, d.max_train)
    return n, source, labelled


def plan_job(conf: ElfsConfig, overrides: Sequence[str], seen: dict[Any, Any] | None = None) -> JobPlan:
    """Which stages and trainings ``conf`` needs and which the cache holds; images of the trainings to run.
    ``seen`` carries the source facts and the ledger from job to job of one command (a folder is listed once)."""
    from elfs.select import METHOD_INPUTS, METHODS_USING_BETA
    from elfs.select.beta_search import beta_grid_for

    seen = {} if seen is None else seen
    s, e, d = conf.selection, conf.evaluate, conf.dynamics
    data_key = ("source", stable_hash(_fields(conf.dataset, ("num_workers",))))
    if data_key not in seen:
        seen[data_key] = source_facts(conf)
    n, source, labelled = seen[data_key]
    plan = JobPlan(list(overrides), n, source)
    if ("ledger", conf.paths.cache_dir) not in seen:
        seen["ledger", conf.paths.cache_dir] = _ledger(conf.paths.cache_dir)
    ledger = seen["ledger", conf.paths.cache_dir]
    digests = stage_digests(conf)
    methods = [m for m in dict.fromkeys([s.method, *s.baselines]) if m != "full"]
    needs = {METHOD_INPUTS[m] for m in methods}
    stages: list[str] = []
    if needs & {"score", "prototypes", "graph", "zcore"} or e.model == "mlp" or d.model == "mlp":
        stages.append("embed")
    if "score" in needs and not s.uses_ground_truth:  # D2 builds its own graphs (elfs/select/d2.py)
        stages.append("knn")
    if "score" in needs:
        stages += ["dynamics_gt"] if s.uses_ground_truth else ["cluster", "dynamics"]
    if "prototypes" in needs or "graph" in needs:
        stages.append("prototypes")
    if "zcore" in needs:
        stages.append("zcore")
    plan.stages = {st: _cached(ledger, conf.paths.cache_dir, digests[st]) for st in dict.fromkeys(stages)}
    job_done = _cached(ledger, conf.paths.cache_dir, digests["job"])

    plan.concurrent = int(e.concurrent)
    flops = {"proxy": image_training_flops(conf, d), "evaluations": image_training_flops(conf, e)}
    flops["beta_candidates"] = flops["evaluations"]

    def add(kind: str, count: int, images_each: float, *unit: Any) -> None:
        for i in range(count):
            plan.units[stable_hash([kind, i, *unit])] = (kind, images_each, images_each * flops.get(kind, math.nan))

    if conf.cluster.method == "temi" and not plan.stages.get("cluster", True):
        add("temi", 1, 0.0, digests["cluster"])  # over embeddings: minutes next to the image trainings, not counted
    for st in ("dynamics", "dynamics_gt"):
        if st in plan.stages and not plan.stages[st]:
            add("proxy", 1, d.epochs_for(n or 0) * (n or 0), digests[st])
    if job_done:
        return plan
    upstream = {m: _upstream(METHOD_INPUTS[m], s.uses_ground_truth, digests) for m in [*methods, "full"]}
    budgets = [] if s.method == "full" else s.feasible_budgets()
    train = _fields(e, ("seeds", "concurrent"))
    searched = s.method in METHODS_USING_BETA and s.searched
    search = _fields(s, ("baselines", "budget", "beta", "d2_beta", "d2_reference_beta", "d2_k", "d2_gamma"))
    if searched:
        steps = int(s.search_steps or e.steps)
        for b in budgets:
            add("beta_candidates", len(beta_grid_for(b, s.beta_grid)), steps * e.batch_size, upstream[s.method],
                search, b, _fields(e, ("seeds", "concurrent", "steps", "test_every")))  # fmt: skip
    if labelled:
        for m in methods:
            fixed = (s.beta, s.reference_beta, s.d2_beta, s.d2_reference_beta)
            beta = (search, "searched") if searched and m in METHODS_USING_BETA else fixed
            for b in budgets:
                for seed in e.seeds:
                    add("evaluations", 1, e.steps * e.batch_size, m, upstream[m], beta, b, seed, train)
        if s.method == "full" or "full" in s.baselines:
            for seed in e.seeds:  # the full-data reference: the same training beside every job
                add("evaluations", 1, e.steps * e.batch_size, "full", upstream["full"], seed, train)
    return plan


def _upstream(needs: str, ground_truth: bool, digests: dict[str, str]) -> str:
    """The digest of what a method ranks by: the proxy's scores, prototypes, the kNN graph, or only the data."""
    if needs == "score":
        return digests["dynamics_gt" if ground_truth else "dynamics"]
    if needs == "graph":  # D2: the prototype score and its own graphs over the embeddings
        return stable_hash([digests["embed"], digests["prototypes"]])
    if needs in ("prototypes", "zcore"):
        return digests[needs]
    return digests["data"]


def image_training_flops(conf: ElfsConfig, training: Any) -> float:
    """FLOPs of one training image (forward and backward: 3 x the forward's) of ``training.model`` at the
    dataset's image size, from the layer shapes (:func:`forward_macs`; no torch: a plan loads nothing). nan where
    the size is not known here (synthetic data, an MLP on embeddings)."""
    from elfs.infra.names import uses_embeddings

    d = conf.dataset
    if uses_embeddings(training.model) or d.synthetic is not None:
        return math.nan
    size, channels = KNOWN_IMAGES.get(d.name, (getattr(training, "image_size", None) or 224, 3))
    macs = forward_macs(training.model, int(size), channels, KNOWN_CLASSES.get(d.name, 10), int(training.width))
    return 3.0 * 2.0 * macs


def _conv(h: int, cin: int, cout: int, k: int, stride: int, pad: int) -> tuple[float, int]:
    """(multiply-adds of a square conv on an h x h input, output side)."""
    out = (h + 2 * pad - k) // stride + 1
    return float(out * out * cout * cin * k * k), out


def forward_macs(model: str, size: int, channels: int, classes: int, width: int = 32) -> float:
    """Multiply-adds of one image's forward pass through the convolutions and linear layers of elfs's image
    networks (elfs/models): what a tensor core computes; the rest (norms, activations) is memory-bound."""
    total = 0.0
    if model == "small_cnn":
        h, cin = size, channels
        for cout, stride in ((width, 1), (2 * width, 2), (4 * width, 2)):
            macs, h = _conv(h, cin, cout, 3, stride, 1)
            total, cin = total + macs, cout
        return total + 4 * width * classes
    if model == "resnet18_cifar":
        (macs, h), blocks = _conv(size, channels, 64, 3, 1, 1), (2, 2, 2, 2)
    elif model == "resnet34":
        macs, h = _conv(size, channels, 64, 7, 2, 3)
        h = (h + 2 - 3) // 2 + 1  # the 3x3 stride-2 max-pool
        blocks = (3, 4, 6, 3)
    else:
        raise ValueError(f"no FLOP count for model {model!r}")
    total, cin = macs, 64
    for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
        for b in range(n):
            stride = 2 if stage > 0 and b == 0 else 1
            m1, h_out = _conv(h, cin, planes, 3, stride, 1)
            m2, _ = _conv(h_out, planes, planes, 3, 1, 1)
            total += m1 + m2
            if stride != 1 or cin != planes:  # the 1x1 projection shortcut
                total += _conv(h, cin, planes, 1, stride, 0)[0]
            h, cin = h_out, planes
    return total + 512 * classes


def count_new(plans: Sequence[JobPlan]) -> list[dict[str, tuple[int, float, float]]]:
    """Per job, its trainings that no earlier job of the command already runs: kind -> (count, images, FLOPs);
    evaluations and beta-search candidates of a job with evaluate.concurrent = K > 1 come under "<kind>@K"."""
    seen: set[str] = set()
    out = []
    for p in plans:
        mine: dict[str, tuple[int, float, float]] = {}
        for unit, (kind, images, flops) in p.units.items():
            if unit in seen:
                continue
            seen.add(unit)
            if p.concurrent > 1 and kind in ("evaluations", "beta_candidates"):
                kind = f"{kind}@{p.concurrent}"
            count, total, work = mine.get(kind, (0, 0.0, 0.0))
            mine[kind] = (count + 1, total + images, work + flops)
        out.append(mine)
    return out


def format_job(i: int, plan: JobPlan, new: dict[str, tuple[int, float]]) -> str:
    """`job <i>: <overrides> | N=... | stages: embed (cached), knn (compute) ... | trainings: ...`; trainings that
    an earlier job of the same command runs are counted there and shown here as shared."""
    stages = ", ".join(f"{st} ({'cached' if hit else 'compute'})" for st, hit in plan.stages.items()) or "none"
    trainings = ", ".join(f"{k} {c}" for k, (c, *_) in new.items()) or "none"
    shared = len(plan.units) - sum(c for c, *_ in new.values())
    n = f"{plan.n_train:,}" if plan.n_train is not None else "?"
    return (
        f"job {i}: {' '.join(plan.overrides) or '(defaults)'} | N={n} ({plan.n_source}) | stages: {stages} "
        f"| trainings: {trainings}{f' (+{shared} shared with earlier jobs)' if shared else ''}"
    )


@dataclass
class Rates:
    """What a plan prices trainings at: ResNet-18 images/s, the gain of K trainings at once on one device, the
    device (for its peak), and where they come from."""

    images_per_s: float = ASSUMED_IMAGES_PER_S
    concurrent_gain: float | None = None  # one-by-one time / concurrent time, per GPU; None = not measured
    device: str | None = None
    source: str | None = None  # the gpu_check.json read, None = assumed


def read_rates(path: Path) -> Rates | None:
    """The measured rates of experiments/gpu_check.py's JSON at ``path``; None when it holds no ResNet rate."""
    try:
        report = json.loads(Path(path).read_text())
        r = report["resnet18_32px_batch256"]
        rate = float(r.get("fast", r.get("plain", {})).get("images_per_s") or r["plain"]["images_per_s"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not (rate > 0 and math.isfinite(rate)):
        return None
    gain = None
    c = report.get("concurrent_evaluations") or {}
    if isinstance(c.get("speedup_warm_workers"), (int, float)) and c["speedup_warm_workers"] > 0:
        gain = float(c["speedup_warm_workers"]) / max(1, int(c.get("gpus") or 1))
    device = report.get("device") if isinstance(report.get("device"), str) else None
    return Rates(rate, gain, device, str(path))


def measured_rate(root_dir: str) -> float | None:
    """ResNet-18 images/s from a gpu_check.json in <root>/outputs/ (the fast path, else the plain one)."""
    rates = read_rates(Path(root_dir) / "outputs" / GPU_CHECK)
    return rates.images_per_s if rates else None


def peak_tflops(device: str | None) -> tuple[float, str]:
    """(dense bf16 peak TFLOP/s, the device it is of): the named device's, else an H100's (assumed)."""
    for fragment, peak in PEAK_BF16_TFLOPS:
        if device and fragment.lower() in device.lower():
            return peak, device
    return dict(PEAK_BF16_TFLOPS)[ASSUMED_DEVICE], f"{ASSUMED_DEVICE}, assumed"


def _hours(h: float) -> str:
    return f"{h:.1f}" if h >= 0.1 else f"{h:.3f}"


def format_total(new: Sequence[dict[str, tuple]], rate: float, measured: bool, rates: Rates | None = None) -> str:
    """The last line: jobs, distinct trainings and device-hours of the whole command; evaluations run K at a time
    (evaluate.concurrent) count at the measured concurrent gain (none assumed without one); then the physical floor,
    the trainings' FLOPs over the device's bf16 peak, and how far the estimate is above it."""
    rates = rates or Rates(rate, None, None, "measured" if measured else None)
    trainings = sum(v[0] for job in new for v in job.values())
    seconds, flops, known = 0.0, 0.0, True
    for job in new:
        for kind, (_, images, *work) in job.items():
            gain = (rates.concurrent_gain or 1.0) if "@" in kind else 1.0
            seconds += images / rate / gain
            if work and images:
                known &= math.isfinite(work[0])
                flops += work[0] if math.isfinite(work[0]) else 0.0
    hours = seconds / 3600.0
    line = (
        f"plan: {len(new)} jobs, {trainings} trainings, ~{_hours(hours)} device-hours at {rate:,.0f} img/s "
        f"({'measured' if measured else 'assumed'})"
    )
    if any("@" in kind for job in new for kind in job):
        gain = rates.concurrent_gain
        line += f", concurrent evaluations x{gain:.2f} (measured)" if gain else ", no gain assumed for concurrency"
    if flops > 0 and known:
        peak, device = peak_tflops(rates.device)
        floor = flops / (peak * 1e12) / 3600.0
        line += f" | floor ~{_hours(floor)} h: {flops:.3g} training FLOPs at {peak:g} TFLOP/s bf16 ({device})"
        line += f", estimate {hours / floor:.0f}x the floor" if floor > 0 else ""
    return line


# -------------------------------------------------------------------------------------------- the command


def job_configs(args: Sequence[str], *, compose_each: bool = False) -> list[tuple[list[str], Any]]:
    """Every job's overrides and composed config, as Hydra's basic sweeper would launch them (one job without
    -m), with hydra.runtime.output_dir set so the paths resolve; nothing is created on disk. Jobs that choose the
    same config groups share one composition and get their values applied on a copy (``compose_each`` composes
    every job from scratch, as the sweep will: the test that both agree uses it)."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    from elfs.config import register_configs
    from elfs.infra.overrides import is_multirun

    multirun = is_multirun(args)
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    register_configs()
    GlobalHydra.instance().clear()
    jobs = []
    with initialize_config_module(config_module="elfs.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        mode = RunMode.MULTIRUN if multirun else RunMode.RUN
        master = loader.load_configuration("config", overrides, run_mode=mode)
        if multirun:
            from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

            declared = master.hydra.sweeper.get("params")
            params = OmegaConf.to_container(declared) if declared else {}
            parser = OverridesParser.create(config_loader=loader)
            parsed = parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + overrides)
            job_overrides = [list(j) for batch in BasicSweeper.split_arguments(parsed, None) for j in batch]
        else:
            job_overrides = [overrides]
        composed: dict[tuple[str, ...], Any] = {}  # by the job's group choices: 6 compositions, not 90
        for num, job in enumerate(job_overrides):
            if multirun and compose_each:
                cfg = loader.load_sweep_config(master, job)
            elif multirun:
                from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname

                parsed = OverridesParser.create(config_loader=loader).parse_overrides(job)
                groups = tuple(o.input_line for o in parsed if _is_group(loader, o.key_or_group))
                if groups not in composed:
                    composed[groups] = loader.load_sweep_config(master, list(groups))
                cfg = composed[groups].copy()
                with open_dict(cfg):  # the job's values over its composition, as Hydra applies them last
                    ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if o.input_line not in groups], cfg)
                    names = cfg.hydra.job.config.override_dirname
                    cfg.hydra.job.override_dirname = get_overrides_dirname(
                        [o for o in parsed if not o.is_hydra_override()],
                        kv_sep=names.kv_sep,
                        item_sep=names.item_sep,
                        exclude_keys=names.exclude_keys,
                    )
            else:
                cfg = master.copy()
            with open_dict(cfg):
                cfg.hydra.job.num = num
                cfg.hydra.job.id = str(num)
                where = f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}" if multirun else str(cfg.hydra.run.dir)
                cfg.hydra.runtime.output_dir = os.path.abspath(where)
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                cfg.paths.output_dir = cfg.hydra.runtime.output_dir
                del cfg["hydra"]
            shown = [o for o in job if not o.startswith(("hydra.", "plan="))]
            jobs.append((shown, cfg))
    GlobalHydra.instance().clear()
    return jobs


def _is_group(loader: Any, key: str) -> bool:
    """Whether an override chooses a config group option (composition) rather than sets a value."""
    return loader.repository.group_exists(key) or loader.repository.group_exists(key.replace(".", "/"))


def check_job(cfg: Any) -> ElfsConfig:
    """A composed job's config debug-applied, typed and checked for a plan (:func:`check_planned`)."""
    from elfs.config import to_typed
    from elfs.infra.overrides import apply_debug_mode

    return check_planned(to_typed(apply_debug_mode(cfg)))


def check_planned(conf: ElfsConfig) -> ElfsConfig:
    """A typed job config validated as a run would before loading data (weights and devices excepted: a plan is
    made on the laptop for the cluster)."""
    from elfs.preflight import check_config

    check_config(conf, weights=False, devices=False)
    return conf


def plan_rates(root_dir: str, rates_file: str | None) -> Rates | None:
    """The measured rates: ``plan_rates`` (a gpu_check.json; one that holds none is refused), else
    <root>/outputs/gpu_check.json when there is one, else None (assumed)."""
    if rates_file:
        rates = read_rates(Path(rates_file).expanduser())
        if rates is None:
            from elfs.errors import ConfigError

            raise ConfigError(
                f"plan_rates={rates_file!r} is not a gpu_check.json with a measured ResNet-18 rate "
                "(experiments/gpu_check.py writes one)"
            )
        return rates
    return read_rates(Path(root_dir) / "outputs" / GPU_CHECK)


def print_plan(plans: Sequence[JobPlan], root_dir: str, rates_file: str | None = None) -> None:
    """One line per job, then the total."""
    new = count_new(plans)
    for i, (p, mine) in enumerate(zip(plans, new, strict=True)):
        print(format_job(i, p, mine), flush=True)
    rates = plan_rates(root_dir, rates_file)
    rate = rates.images_per_s if rates else ASSUMED_IMAGES_PER_S
    print(format_total(new, rate, rates is not None, rates), flush=True)


def plan_command(args: Sequence[str]) -> None:
    """`elfs [-m] ... plan=true`: compose and validate every job, print its plan line and the total; exit 0."""
    plans, root, seen, rates_file = [], ".", {}, None
    for overrides, cfg in job_configs(args):
        conf = check_job(cfg)
        root, rates_file = conf.paths.root_dir, conf.plan_rates
        plans.append(plan_job(conf, overrides, seen))
    print_plan(plans, root, rates_file)
