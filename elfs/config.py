"""Structured configs: one dataclass per Hydra group, registered as schemas so a typo or a wrong type fails
at start-up naming the key; plus `validate`, which refuses bad values before any expensive work.

The dataclass defaults are the paper's settings (method.md §4, §5, §7); the YAML files in conf/ pick the
embedded CPU default or a paper experiment on top of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class DatasetConfig:
    """Which images to select from; see elfs/data/datasets.py for the registry."""

    name: str = "mnist5k"
    path: Optional[str] = None  # the .npz file for name=npz
    root: str = "${paths.data_dir}"  # torchvision datasets live here
    download: bool = False
    test_fraction: float = 0.2  # for datasets shipped as one pool (mnist5k, digits)
    split_seed: int = 0
    max_train: Optional[int] = None  # keep only the first N training images (quick runs)
    hflip: Optional[bool] = None  # None = the dataset's own default (no flips for digits)
    crop_padding: Optional[int] = None


@dataclass
class BackboneConfig:
    """The frozen pretrained encoder that embeds every image."""

    name: str = "efficientnet_lite0"
    image_size: Optional[int] = None  # None = the backbone's default
    batch_size: int = 256
    pretrained: bool = True  # false = random weights (architecture tests only)
    device: str = "auto"


@dataclass
class KnnConfig:
    """Cosine nearest neighbours among the training embeddings (self excluded)."""

    k: int = 50
    backend: str = "faiss"  # faiss | torch
    chunk_size: int = 4096


@dataclass
class ClusterConfig:
    """TEMI deep clustering (method.md §4); defaults are the ELFS README command for CIFAR-10."""

    method: str = "temi"  # temi | kmeans
    num_clusters: Optional[int] = None  # None = number of classes
    num_heads: int = 50
    hidden_dim: int = 512
    bottleneck_dim: int = 256
    beta: float = 0.6
    student_temp: float = 0.1
    teacher_temp: float = 0.1
    teacher_momentum: float = 0.996
    probs_momentum: float = 0.9
    knn_k: int = 50
    epochs: int = 200
    batch_size: int = 1024
    lr: float = 1e-4  # scaled by batch_size / 256
    min_lr: float = 1e-4
    warmup_epochs: int = 20
    weight_decay: float = 1e-4
    freeze_last_layer_epochs: int = 1
    rule: str = "best_head"  # best_head | ensemble (both label-free)
    head_impl: str = "loop"  # loop (fastest on CPU) | batched (GPU)
    embed_norm: bool = False
    kmeans_baseline: bool = True  # also report k-means on the same embeddings (diagnostic)


@dataclass
class ClassifierTrainingConfig:
    """Network and SGD settings shared by the proxy (dynamics) and the coreset training (evaluate)."""

    model: str = "resnet18_cifar"  # small_cnn | mlp (over embeddings) | resnet18_cifar | resnet34
    width: int = 64
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    min_lr: float = 1e-4


@dataclass
class DynamicsConfig(ClassifierTrainingConfig):
    """The proxy classifier trained on pseudo-labels whose training dynamics give the scores (method.md §5)."""

    epochs: int = 200
    el2n_epochs: int = 10


@dataclass
class SelectionConfig:
    """How the coreset is chosen. budget = fraction KEPT; beta = fraction of the whole set dropped as too hard."""

    method: str = "double_end"  # double_end | ccs | random | easy | hard
    score: str = "aum"  # aum | aum_prob_sum | forgetting | el2n
    budget: Any = field(default_factory=lambda: [0.1, 0.3, 0.5])  # a fraction or a list of fractions
    beta: Any = "auto"  # "auto" = the label-free 90/10 search over beta_grid, or a fixed fraction
    beta_grid: list = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    val_fraction: float = 0.1
    strata: int = 50
    baselines: list = field(default_factory=lambda: ["random"])
    search_steps: Optional[int] = None  # training steps per beta candidate; None = evaluate.steps


@dataclass
class EvaluateConfig(ClassifierTrainingConfig):
    """Train a fresh model on the coreset with ground-truth labels for a fixed number of steps (method.md §7)."""

    steps: int = 40000
    test_every: int = 0  # >0 also reports best-of-run test accuracy (secondary; the headline is the final one)
    seeds: list = field(default_factory=lambda: [0])


@dataclass
class TrainerConfig:
    """Lightning Trainer settings shared by every training stage."""

    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    deterministic: bool = True
    enable_progress_bar: bool = True
    num_workers: int = 0


@dataclass
class LoggerConfig:
    """wandb (offline unless WANDB_MODE says otherwise), csv, or none."""

    name: str = "wandb"  # wandb | csv | none
    project: str = "elfs"
    group: Optional[str] = None
    mode: str = "${oc.env:WANDB_MODE,offline}"
    tags: list = field(default_factory=list)


@dataclass
class PathsConfig:
    root_dir: str = "${hydra:runtime.cwd}"
    data_dir: str = "${paths.root_dir}/data"
    cache_dir: str = "${oc.env:ELFS_CACHE_DIR,${paths.root_dir}/outputs/cache}"
    output_dir: str = "${hydra:runtime.output_dir}"


@dataclass
class ElfsConfig:
    dataset: DatasetConfig = MISSING
    backbone: BackboneConfig = MISSING
    knn: KnnConfig = MISSING
    cluster: ClusterConfig = MISSING
    dynamics: DynamicsConfig = MISSING
    selection: SelectionConfig = MISSING
    evaluate: EvaluateConfig = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = MISSING
    paths: PathsConfig = MISSING
    seed: int = 0
    name: str = "elfs"
    progress: bool = True


GROUPS: dict[str, type] = {
    "dataset": DatasetConfig,
    "backbone": BackboneConfig,
    "knn": KnnConfig,
    "cluster": ClusterConfig,
    "dynamics": DynamicsConfig,
    "selection": SelectionConfig,
    "evaluate": EvaluateConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
    "paths": PathsConfig,
}


def register_configs() -> None:
    """Register the schema that conf/config.yaml extends, so every group node is typed by its dataclass."""
    ConfigStore.instance().store(name="elfs_schema", node=ElfsConfig)


# ----------------------------------------------------------------------------------------------- validation


class ConfigError(ValueError):
    """A config value is out of range; the message names the key, the value and what would be valid."""


def as_budgets(value: Any) -> list[float]:
    """Normalise selection.budget (a fraction or a list of fractions) to a list of floats in (0, 1]."""
    values = [value] if isinstance(value, (str, int, float)) or value is None else list(value)
    if not values:
        raise ConfigError("selection.budget is empty; give a fraction in (0, 1] or a list of them")
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"selection.budget={v!r} is not a number; give a fraction in (0, 1]") from None
        if not (0.0 < f <= 1.0) or math.isnan(f):
            raise ConfigError(f"selection.budget={v} is outside (0, 1] (it is the fraction of the data KEPT)")
        out.append(f)
    return out


def as_beta(value: Any) -> Optional[float]:
    """selection.beta: None for "auto" (search), else a fraction >= 0."""
    if isinstance(value, str) and value.lower() == "auto":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"selection.beta={value!r} must be 'auto' or a fraction in [0, 1)") from None
    if f < 0 or math.isnan(f):
        raise ConfigError(f"selection.beta={value} is negative; it must be 'auto' or a fraction in [0, 1)")
    return f


def _choice(key: str, value: str, valid) -> None:
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {sorted(valid)}")


def _positive(key: str, value, allow_zero: bool = False) -> None:
    if value is None or (value < 0 if allow_zero else value <= 0):
        raise ConfigError(f"{key}={value} must be {'>= 0' if allow_zero else '> 0'}")


def validate(cfg) -> None:
    """Refuse bad values with one clear message, before any data is loaded or any model is built."""
    from elfs.backbones import BACKBONES
    from elfs.data import DATASETS
    from elfs.dynamics import HARD_END
    from elfs.models import MODEL_INPUTS
    from elfs.select import SELECTORS

    _choice("dataset.name", cfg.dataset.name, DATASETS)
    _choice("backbone.name", cfg.backbone.name, BACKBONES)
    _choice("knn.backend", cfg.knn.backend, {"faiss", "torch"})
    _choice("cluster.method", cfg.cluster.method, {"temi", "kmeans"})
    _choice("cluster.rule", cfg.cluster.rule, {"best_head", "ensemble"})
    _choice("cluster.head_impl", cfg.cluster.head_impl, {"loop", "batched"})
    _choice("dynamics.model", cfg.dynamics.model, MODEL_INPUTS)
    _choice("evaluate.model", cfg.evaluate.model, MODEL_INPUTS)
    _choice("selection.method", cfg.selection.method, SELECTORS)
    _choice("selection.score", cfg.selection.score, HARD_END)
    for b in cfg.selection.baselines:
        _choice("selection.baselines[]", b, SELECTORS)
    _choice("logger.name", cfg.logger.name, {"wandb", "csv", "none"})
    if cfg.dataset.max_train is not None:
        _positive("dataset.max_train", cfg.dataset.max_train)
    _positive("knn.k", cfg.knn.k)
    if cfg.cluster.knn_k > cfg.knn.k:
        raise ConfigError(f"cluster.knn_k={cfg.cluster.knn_k} exceeds knn.k={cfg.knn.k}; it must be <= knn.k")
    for key in ("num_heads", "epochs", "batch_size", "hidden_dim", "bottleneck_dim", "knn_k"):
        _positive(f"cluster.{key}", getattr(cfg.cluster, key))
    _positive("cluster.beta", cfg.cluster.beta)
    for key in ("epochs", "batch_size", "width"):
        _positive(f"dynamics.{key}", getattr(cfg.dynamics, key))
    for key in ("steps", "batch_size", "width"):
        _positive(f"evaluate.{key}", getattr(cfg.evaluate, key))
    if not cfg.evaluate.seeds:
        raise ConfigError("evaluate.seeds is empty; give at least one seed, e.g. [0]")
    if not 0.0 < cfg.selection.val_fraction < 0.5:
        raise ConfigError(f"selection.val_fraction={cfg.selection.val_fraction} must be in (0, 0.5)")
    _positive("selection.strata", cfg.selection.strata)

    budgets = as_budgets(cfg.selection.budget)
    beta = as_beta(cfg.selection.beta)
    if beta is None:
        grid = [float(b) for b in cfg.selection.beta_grid]
        if not grid or any(b < 0 for b in grid):
            raise ConfigError(f"selection.beta_grid={grid} must be a non-empty list of fractions >= 0")
        for budget in budgets:
            if not any(b + budget <= 1.0 + 1e-9 for b in grid):
                raise ConfigError(
                    f"selection.beta_grid={grid} has no beta with beta + budget <= 1 for budget={budget}")
    else:
        for budget in budgets:
            if beta + budget > 1.0 + 1e-9:
                raise ConfigError(
                    f"selection.beta={beta} + selection.budget={budget} = {beta + budget:.3g} > 1; "
                    f"beta may be at most {1 - budget:.3g} for this budget"
                )
