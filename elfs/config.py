"""Structured configs: one dataclass per Hydra group. They are the interface of every stage.

Each stage function and LightningModule receives its group's dataclass whole and reads the fields it needs, so a
new hyperparameter lives in three places only: its field here, its YAML default, and the line that uses it.
Each dataclass checks its own value ranges in ``validate(key)``; names that must match a registry (datasets,
backbones, models, selectors) are checked in elfs/preflight.py, where the registries are imported, so that this
module never imports a stage back.

The dataclass defaults are the paper's settings (method.md §4, §5, §7); the YAML files in conf/ pick the
embedded CPU default or a paper experiment on top of them.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from elfs.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

MISSING = "???"  # omegaconf.MISSING, spelled out so that importing the dataclasses needs neither hydra nor omegaconf

# ------------------------------------------------------------------------------------------- check helpers


def _fail(key: str, value: Any, valid: str) -> None:
    raise ConfigError(f"{key}={value!r} is not valid; {valid}")


def _int_at_least(key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(key, value, f"it must be an integer >= {low}")


def _number_in(
    key: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        _fail(key, value, f"it must be a number in {interval}")


def check_choice(key: str, value: Any, valid) -> None:
    """Refuse a value that is not one of ``valid``, naming the key and listing the valid values."""
    if value not in valid:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of {sorted(valid)}")


# ------------------------------------------------------------------------------------------------ schemas


@dataclass
class DatasetConfig:
    """Which images to select from; see elfs/data/datasets.py for the registry."""

    name: str = "mnist5k"
    path: str | None = None  # the .npz file for name=npz; the folder (or .txt list of images) for name=folder
    num_workers: int = 2  # DataLoader workers that decode a streamed source (folder) for the embedding
    root: str = "${paths.data_dir}"  # torchvision datasets live here
    download: bool = False
    test_fraction: float = 0.2  # for datasets shipped as one pool (mnist5k, digits)
    split_seed: int = 0
    max_train: int | None = None  # keep only the first N training images (quick runs)
    hflip: bool | None = None  # None = the dataset's own default (no flips for digits)
    crop_padding: int | None = None
    # debug=smoke: this many synthetic training images shaped like `name`'s (elfs/data/synthetic.py) replace the
    # real data, so an experiment's code path runs anywhere; None = the real data
    synthetic: int | None = None

    def validate(self, key: str = "dataset") -> None:
        _number_in(f"{key}.test_fraction", self.test_fraction, 0.0, 1.0, low_open=True, high_open=True)
        if self.max_train is not None:
            _int_at_least(f"{key}.max_train", self.max_train, 2)
        if self.crop_padding is not None:
            _int_at_least(f"{key}.crop_padding", self.crop_padding, 0)
        _int_at_least(f"{key}.num_workers", self.num_workers, 0)
        if self.synthetic is not None:
            _int_at_least(f"{key}.synthetic", self.synthetic, 20)


@dataclass
class BackboneConfig:
    """The frozen pretrained encoder that embeds every image."""

    name: str = "efficientnet_lite0"
    image_size: int | None = None  # None = the backbone's default
    batch_size: int = 256
    pretrained: bool = True  # false = random weights (architecture tests only)
    device: str = "auto"
    model: str | None = None  # name=timm: the timm model, e.g. vit_small_patch14_dinov2.lvd142m (required there)
    weights: str | None = None  # a local checkpoint (torch.save'd state_dict or .safetensors) instead of a download

    def validate(self, key: str = "backbone") -> None:
        if self.image_size is not None:
            _int_at_least(f"{key}.image_size", self.image_size, 8)
        _int_at_least(f"{key}.batch_size", self.batch_size, 1)
        if self.name == "timm":
            if not isinstance(self.model, str) or not self.model.strip():
                _fail(
                    f"{key}.model",
                    self.model,
                    "backbone=timm needs the timm model name, e.g. backbone.model=vit_small_patch16_224.dino or "
                    "vit_small_patch14_dinov2.lvd142m (any name of timm.list_models(pretrained=True))",
                )
        elif self.model is not None:
            _fail(
                f"{key}.model",
                self.model,
                f"it is read by backbone=timm only; drop it, or use backbone=timm (now {key}.name={self.name!r})",
            )
        if self.weights is not None:
            if not isinstance(self.weights, str) or not self.weights.strip():
                _fail(f"{key}.weights", self.weights, "it must be null or the path of a local checkpoint file")
            if not self.pretrained:
                _fail(
                    f"{key}.weights",
                    self.weights,
                    f"a checkpoint to load cannot be combined with {key}.pretrained=false (random weights); "
                    f"drop one of them",
                )


@dataclass
class KnnConfig:
    """Cosine nearest neighbours among the training embeddings (self excluded)."""

    k: int = 50
    # faiss (exact) | faiss_ivf (approximate, for millions of images on a CPU) | torch | auto (exact on a GPU; on a
    # CPU exact up to approx_above images, faiss_ivf above)
    backend: str = "faiss"
    chunk_size: int = 4096
    nlist: int | None = None  # faiss_ivf cells; None = 4 sqrt(N)
    nprobe: int = 32  # faiss_ivf cells searched per query (more = closer to exact, slower)
    approx_above: int | None = None  # backend=auto on a CPU: faiss_ivf above this many images; None = always exact

    def validate(self, key: str = "knn") -> None:
        _int_at_least(f"{key}.k", self.k, 1)
        _int_at_least(f"{key}.chunk_size", self.chunk_size, 1)
        if self.nlist is not None:
            _int_at_least(f"{key}.nlist", self.nlist, 1)
        _int_at_least(f"{key}.nprobe", self.nprobe, 1)
        if self.approx_above is not None:
            _int_at_least(f"{key}.approx_above", self.approx_above, 1)


@dataclass
class ClusterConfig:
    """TEMI deep clustering (method.md §4); defaults are the ELFS README command for CIFAR-10."""

    method: str = "temi"  # temi | kmeans
    num_clusters: int | None = None  # None = the number of classes; required for a source without labels
    num_heads: int = 50
    hidden_dim: int = 512
    bottleneck_dim: int = 256
    beta: float = 0.6
    student_temp: float = 0.1
    teacher_temp: float = 0.1
    teacher_momentum: float = 0.996
    teacher_momentum_end: float | None = None  # None = constant; else cosine from teacher_momentum to this
    probs_momentum: float = 0.9
    knn_k: int = 50
    epochs: int = 200
    batch_size: int = 1024  # GLOBAL (split across devices); the lr is scaled by batch_size / 256
    # an epoch takes at least this many steps (None = no floor): a set of fewer than batch_size x this images
    # trains with a batch of N // this, so TEMI's schedules and EMA teacher, set in steps, still run their course
    min_steps_per_epoch: int | None = None
    lr: float = 1e-4
    min_lr: float = 1e-4
    warmup_epochs: int = 20
    weight_decay: float = 1e-4
    freeze_last_layer_epochs: int = 1
    # at most this many optimizer steps (None = epochs decide): a large set stops early, with warm-up, cosine
    # schedules and the frozen last layer compressed onto the shorter run in proportion
    max_steps: int | None = None
    # pseudo-label rule, all label-free: best_head (lowest loss) | ensemble (aligned heads' majority vote) |
    # aligned_mean (head probabilities averaged after aligning the heads: the paper text's rule)
    rule: str = "best_head"
    head_impl: str = "loop"  # loop (fastest on CPU) | batched (GPU)
    embed_norm: bool = False
    kmeans_baseline: bool = True  # also report k-means on the same embeddings (diagnostic)

    def validate(self, key: str = "cluster") -> None:
        if self.num_clusters is not None:
            if isinstance(self.num_clusters, bool) or not isinstance(self.num_clusters, int) or self.num_clusters < 2:
                _fail(
                    f"{key}.num_clusters",
                    self.num_clusters,
                    "it must be null (= the number of classes) or an integer >= 2",
                )
        for name in ("num_heads", "hidden_dim", "bottleneck_dim", "knn_k", "epochs", "batch_size"):
            _int_at_least(f"{key}.{name}", getattr(self, name), 1)
        for name in ("warmup_epochs", "freeze_last_layer_epochs"):
            _int_at_least(f"{key}.{name}", getattr(self, name), 0)
        if self.max_steps is not None:
            _int_at_least(f"{key}.max_steps", self.max_steps, 1)
        if self.min_steps_per_epoch is not None:
            _int_at_least(f"{key}.min_steps_per_epoch", self.min_steps_per_epoch, 1)
        for name in ("beta", "student_temp", "teacher_temp", "lr"):
            _number_in(f"{key}.{name}", getattr(self, name), 0.0, math.inf, low_open=True)
        _number_in(f"{key}.teacher_momentum", self.teacher_momentum, 0.0, 1.0)
        if self.teacher_momentum_end is not None:
            _number_in(f"{key}.teacher_momentum_end", self.teacher_momentum_end, 0.0, 1.0)
        _number_in(f"{key}.probs_momentum", self.probs_momentum, 0.0, 1.0, high_open=True)
        _number_in(f"{key}.min_lr", self.min_lr, 0.0, math.inf)
        _number_in(f"{key}.weight_decay", self.weight_decay, 0.0, math.inf)


@dataclass
class ClassifierTrainingConfig:
    """Network and SGD settings shared by the proxy (dynamics) and the coreset training (evaluate)."""

    model: str = "resnet18_cifar"  # small_cnn | mlp (over embeddings) | resnet18_cifar | resnet34
    width: int = 64
    batch_size: int = 256  # GLOBAL (split across devices), as in the paper; lr is not rescaled
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    min_lr: float = 1e-4
    # side of the square a STREAMED source (dataset=folder / imagefolder) is decoded to (shorter side resized,
    # centre crop) for an image model; None = in-memory images at their own size (a streamed source then fails)
    image_size: int | None = None
    # training crop of an image model: "pad" = reflect-padded random crop (dataset.crop_padding) + flip on the
    # device, of the image decoded at image_size (CIFAR's recipe; test images as decoded); "random_resized" = the
    # standard ImageNet recipe for a STREAMED source: RandomResizedCrop(image_size, scale (0.08, 1), ratio
    # (3/4, 4/3)) of the whole decoded picture + flip (dataset.hflip) in the DataLoader workers, drawn from (seed,
    # epoch, index); test images Resize(round(image_size / 0.875)) + CenterCrop(image_size). In-memory image
    # arrays refuse "random_resized" (they keep "pad")
    crop: str = "pad"
    # the fast GPU data path (in-memory image sets that fit in device memory): the uint8 training images live on
    # the training device and each batch is gathered and augmented there (crops and flips hashed from seed, epoch
    # and index), so no host loader feeds the GPU; the same result as the host path on the same device
    device_data: bool = False
    channels_last: bool = False  # channels-last activations for the convolutions (tensor cores)
    compile: bool = False  # torch.compile the network (slower start, faster steps on a GPU)

    def validate(self, key: str = "train") -> None:
        """Every check of the network and SGD settings, once, before any work (train_classifier trusts them)."""
        from elfs.infra.names import MODEL_INPUTS

        check_choice(f"{key}.model", self.model, MODEL_INPUTS)
        _int_at_least(f"{key}.width", self.width, 1)
        if self.image_size is not None:
            _int_at_least(f"{key}.image_size", self.image_size, 8)
        _int_at_least(f"{key}.batch_size", self.batch_size, 1)
        check_choice(f"{key}.crop", self.crop, {"pad", "random_resized"})
        _number_in(f"{key}.lr", self.lr, 0.0, math.inf, low_open=True)
        _number_in(f"{key}.min_lr", self.min_lr, 0.0, self.lr)
        _number_in(f"{key}.momentum", self.momentum, 0.0, math.inf)
        _number_in(f"{key}.weight_decay", self.weight_decay, 0.0, math.inf)
        if self.nesterov and self.momentum == 0:
            _fail(f"{key}.nesterov", self.nesterov, f"Nesterov needs {key}.momentum > 0 (set it, or nesterov=false)")


@dataclass
class DynamicsConfig(ClassifierTrainingConfig):
    """The proxy classifier trained on pseudo-labels whose training dynamics give the scores (method.md §5)."""

    epochs: int = 200
    el2n_epochs: int = 10
    # at most the whole epochs that fit in this many optimizer steps (at least one; None = epochs decide): the
    # proxy of a large set sees each image fewer times, AUM averages fewer epochs
    max_steps: int | None = None

    def validate(self, key: str = "dynamics") -> None:
        super().validate(key)
        _int_at_least(f"{key}.epochs", self.epochs, 1)
        _int_at_least(f"{key}.el2n_epochs", self.el2n_epochs, 1)
        if self.max_steps is not None:
            _int_at_least(f"{key}.max_steps", self.max_steps, 1)

    def epochs_for(self, n: int) -> int:
        """Epochs the proxy trains for on ``n`` examples: ``epochs``, or the whole epochs within ``max_steps``."""
        if self.max_steps is None or n <= 0:
            return self.epochs
        return max(1, min(self.epochs, self.max_steps // math.ceil(n / self.batch_size)))


#: methods whose coresets can nest across budgets (windows of one ranking; elfs/select/double_end.py)
NESTABLE = ("double_end", "easy", "hard", "prototypicality", "zcore")


@dataclass
class SelectionConfig:
    """How the coreset is chosen. budget = fraction KEPT; beta = fraction of the whole set dropped as too hard."""

    method: str = "double_end"  # double_end | ccs | random | easy | hard | prototypicality | d2 | zcore
    score: str = "aum"  # aum | aum_prob_sum (the reference code's) | forgetting | el2n
    # whose labels the proxy's training dynamics (and the beta search) use: "pseudo" (label-free, the default),
    # "ground_truth", the supervised reference (method.md §8.5), or "mixed", the diagnostic "when does ELFS help":
    # ground truth with mixed_replaced of it replaced by the clusters' labels (aligned to the classes), so labels of
    # a controlled accuracy; ground truth is only ever read with one of these opt-ins
    labels: str = "pseudo"
    mixed_replaced: float = 1.0
    budget: Any = field(default_factory=lambda: [0.1, 0.3, 0.5])  # a fraction or a list of fractions
    # "auto" = the label-free 90/10 search over beta_grid, a fixed fraction, or "reference" = reference_beta's value
    # at each budget's pruning rate (a method's authors' own settings: conf/selection/supervised_ccs.yaml)
    beta: Any = "auto"
    reference_beta: dict = field(default_factory=dict)  # pruning rate in percent (int) -> beta, for beta=reference
    # the paper grid: every beta up to 1 - budget is tried (those with beta + budget > 1 are skipped per budget)
    beta_grid: list = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    val_fraction: float = 0.1
    # the beta search validates on at least this many images (at most half the set): an accuracy on n images has a
    # standard error up to 0.5 / sqrt(n), 9 points on 30 images (a tenth of 300), more than candidates differ
    min_val: int = 0
    # the search keeps the smallest beta within this many standard errors of the best validation accuracy
    # (0 = the best, the paper's rule; 1 = the one-standard-error rule)
    search_se: float = 0.0
    strata: int = 50
    # evaluated beside the method on the same coresets protocol: any label-free method, or "full" (all data)
    baselines: list = field(default_factory=lambda: ["random"])
    search_steps: int | None = None  # training steps per beta candidate; None = evaluate.steps
    # D2 pruning (method.md §8.3; elfs/select/d2.py): "stratified" = a fresh kNN graph per stratum of the raw
    # hardness (the reference's label-free mode) or "global" = one graph over all survivors (its ImageNet mode)
    d2_mode: str = "stratified"
    d2_k: int = 5  # neighbours per node of D2's own Euclidean kNN graph on the raw embeddings (symmetrised)
    d2_gamma: float = 0.1  # D2 reverse message passing: a picked node lowers its neighbours by exp(-gamma d)
    # D2's own hard cut (fraction of the most atypical dropped first), or "reference" = d2_reference_beta's value at
    # each budget's pruning rate (conf/selection/d2.yaml: the reference's commands)
    d2_beta: Any = 0.0
    d2_reference_beta: dict = field(default_factory=dict)  # pruning rate in percent (int) -> D2's hard cut
    d2_strata: int = 50  # D2's CCS-style strata (d2_mode=stratified); the reference's --stratas default
    # ZCore (elfs/select/zcore.py): random subspace samples, their dimension, the neighbours that share a covered
    # example's redundancy penalty, the penalty's distance exponent, and the uniform noise the scores start from
    zcore_samples: int = 1_000_000
    zcore_dim: int = 2
    zcore_neighbours: int = 1000
    zcore_exponent: float = 4.0
    zcore_rand_init: bool = True
    # several budgets as sets that grow: each larger coreset contains the smaller ones (beta searched only among the
    # windows that contain the previous budget's); double_end, easy, hard, prototypicality
    nested: bool = False
    # a file of images already labelled (one path or id a line): never proposed again, budgets count new images
    exclude: str | None = None
    # near-duplicates (elfs/method/duplicates.py): an image and a kNN neighbour whose pixel signatures (grey
    # thumbnails, embed.pixel_signature) have cosine similarity >= dedup_threshold at 16 x 16 are near-copies, and so
    # are those at >= dedup_crop_gate that reach dedup_crop_threshold once one is cropped to the box (side down to
    # 1 - dedup_max_crop) that best aligns it with the other (a copy cropped by a few percent), for each image's
    # dedup_crop_candidates most alike neighbours (aligning costs about 0.5 ms a pair); groups form
    # around the images the method ranks best, and only their representatives may be chosen, so no two proposed
    # images are near-copies; the budget counts distinct images.
    # elfs-select turns it on (--keep-duplicates: off). The threshold is measured on planted re-encoded / resized /
    # cropped / brightened copies against distinct look-alikes (experiments/duplicate_threshold.py; docs/usage.md)
    dedup: bool = False
    dedup_threshold: float = 0.95
    dedup_crop_threshold: float = 0.975
    dedup_crop_gate: float = 0.6
    dedup_crop_candidates: int = 2
    dedup_max_crop: float = 0.08

    @property
    def budgets(self) -> list[float]:
        """selection.budget as a list of fractions (validated)."""
        return as_budgets(self.budget)

    @property
    def fixed_beta(self) -> float | None:
        """selection.beta as a number, or None for "auto" (the label-free search) and "reference" (per budget)."""
        return as_beta(self.beta)

    @property
    def searched(self) -> bool:
        """True when beta is chosen by the label-free search (selection.beta=auto)."""
        return isinstance(self.beta, str) and self.beta.lower() == "auto"

    def beta_at(self, budget: float) -> float | None:
        """The fixed beta at ``budget``: selection.beta, or reference_beta at its pruning rate; None when searched."""
        if self.searched:
            return None
        if isinstance(self.beta, str) and self.beta.lower() == "reference":
            return float(at_rate(self.reference_beta, budget))
        return self.fixed_beta

    def d2_beta_at(self, budget: float) -> float:
        """D2's hard cut at ``budget``: selection.d2_beta, or d2_reference_beta at its pruning rate."""
        if isinstance(self.d2_beta, str) and self.d2_beta.lower() == "reference":
            return float(at_rate(self.d2_reference_beta, budget))
        return float(self.d2_beta)

    @property
    def uses_ground_truth(self) -> bool:
        """True only with the explicit opt-in selection.labels=ground_truth (the supervised reference)."""
        return self.labels == "ground_truth"

    @property
    def reads_ground_truth(self) -> bool:
        """True for the supervised reference and for the mixed-labels diagnostic: either selects with labels."""
        return self.labels in ("ground_truth", "mixed")

    def feasible_budgets(self) -> list[float]:
        """The budgets a fixed beta leaves room for (beta + budget <= 1); every budget when beta is searched."""
        return [b for b in self.budgets if self.searched or self.beta_at(b) + b <= 1.0 + 1e-9]

    def validate(self, key: str = "selection") -> None:
        budgets = as_budgets(self.budget)
        beta = as_beta(self.beta)
        if not self.searched and beta is None:  # beta=reference: a value for every budget's pruning rate
            _check_reference_beta(key, self.reference_beta, budgets)
        check_choice(f"{key}.labels", self.labels, {"pseudo", "ground_truth", "mixed"})
        _number_in(f"{key}.mixed_replaced", self.mixed_replaced, 0.0, 1.0)
        _number_in(f"{key}.val_fraction", self.val_fraction, 0.0, 0.5, low_open=True, high_open=True)
        _int_at_least(f"{key}.min_val", self.min_val, 0)
        _number_in(f"{key}.search_se", self.search_se, 0.0, math.inf)
        _int_at_least(f"{key}.strata", self.strata, 1)
        check_choice(f"{key}.d2_mode", self.d2_mode, {"stratified", "global"})
        _int_at_least(f"{key}.d2_k", self.d2_k, 1)
        _int_at_least(f"{key}.d2_strata", self.d2_strata, 1)
        _number_in(f"{key}.d2_gamma", self.d2_gamma, 0.0, math.inf)
        d2_reference = isinstance(self.d2_beta, str) and self.d2_beta.lower() == "reference"
        if not d2_reference:
            _number_in(f"{key}.d2_beta", self.d2_beta, 0.0, 1.0, high_open=True)
        _int_at_least(f"{key}.zcore_samples", self.zcore_samples, 1)
        _int_at_least(f"{key}.zcore_dim", self.zcore_dim, 1)
        _int_at_least(f"{key}.zcore_neighbours", self.zcore_neighbours, 1)
        _number_in(f"{key}.zcore_exponent", self.zcore_exponent, 0.0, math.inf)
        if not isinstance(self.zcore_rand_init, bool):
            raise ConfigError(f"{key}.zcore_rand_init={self.zcore_rand_init!r} must be true or false")
        if self.search_steps is not None:
            _int_at_least(f"{key}.search_steps", self.search_steps, 1)
        if self.searched:
            grid = [float(b) for b in self.beta_grid]
            if not grid or any(b < 0 or math.isnan(b) for b in grid):
                raise ConfigError(f"{key}.beta_grid={grid} must be a non-empty list of fractions >= 0")
            for budget in budgets:
                if not any(b + budget <= 1.0 + 1e-9 for b in grid):
                    raise ConfigError(f"{key}.beta_grid={grid} has no beta with beta + budget <= 1 for budget={budget}")
        elif not self.feasible_budgets():  # a fixed-beta grid may skip some budgets, but not all of them
            raise ConfigError(
                f"{key}.beta={self.beta} leaves no room for any {key}.budget={budgets} (beta + budget must be "
                f"<= 1); beta may be at most {1 - min(budgets):.3g}"
            )
        if self.nested and self.method not in NESTABLE:
            raise ConfigError(
                f"{key}.nested=true needs a method whose coresets are windows of one ranking: one of "
                f"{sorted(NESTABLE)}, not {key}.method={self.method!r}"
            )
        if not isinstance(self.dedup, bool):
            raise ConfigError(f"{key}.dedup={self.dedup!r} must be true or false")
        for name in ("dedup_threshold", "dedup_crop_threshold", "dedup_crop_gate"):
            _number_in(f"{key}.{name}", getattr(self, name), 0.0, 1.0, low_open=True)
        _number_in(f"{key}.dedup_max_crop", self.dedup_max_crop, 0.0, 0.5, high_open=True)
        _int_at_least(f"{key}.dedup_crop_candidates", self.dedup_crop_candidates, 1)
        if "d2" in [self.method, *self.baselines]:
            if d2_reference:
                _check_reference_beta(key, self.d2_reference_beta, budgets, name="d2_beta")
            for budget in budgets:
                if self.d2_beta_at(budget) + budget > 1.0 + 1e-9:
                    raise ConfigError(
                        f"{key}.d2_beta={self.d2_beta_at(budget)} + {key}.budget={budget} > 1; d2_beta may be at "
                        f"most {1 - budget:.3g} for this budget"
                    )


@dataclass
class EvaluateConfig(ClassifierTrainingConfig):
    """Train a fresh model on the coreset with ground-truth labels for a fixed number of steps (method.md §7)."""

    steps: int = 40000
    # >0 also tests every this many steps and reports the best-of-run accuracy beside the final one (the reference
    # code's "Best acc", what the paper's numbers are: the paper experiments set 800 for the comparison)
    test_every: int = 0
    seeds: list = field(default_factory=lambda: [0])
    # trainings (seeds x methods x budgets) run at once, each in its own worker process on the same device: one
    # small training cannot fill a GPU; the results are those of running them one by one
    concurrent: int = 1

    def validate(self, key: str = "evaluate") -> None:
        super().validate(key)
        _int_at_least(f"{key}.steps", self.steps, 1)
        _int_at_least(f"{key}.concurrent", self.concurrent, 1)
        _int_at_least(f"{key}.test_every", self.test_every, 0)
        if not self.seeds:
            raise ConfigError(f"{key}.seeds is empty; give at least one seed, e.g. [0]")
        for s in self.seeds:
            _int_at_least(f"{key}.seeds[]", s, 0)


@dataclass
class TrainerConfig:
    """Lightning Trainer settings shared by every training stage."""

    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "auto"  # auto: bf16-mixed where the device computes bf16 natively, else 32-true
    deterministic: bool = True
    enable_progress_bar: bool = True
    num_workers: int = 0
    benchmark: bool = False  # cudnn.benchmark: pick the fastest convolution kernels for fixed shapes (GPU)
    # fp32 matrix products (torch.set_float32_matmul_precision): "high" lets a GPU use TF32 tensor cores (inputs
    # rounded to a 10-bit mantissa, sums in fp32; about 1e-3 relative error per product), "highest" is full fp32
    # (torch's default). It changes the numbers, so it is keyed; the embedding stage keys it when not "highest"
    matmul_precision: str = "highest"
    # DDP: how long a rank waits in a collective; the others wait while rank 0 alone builds the kNN graph
    ddp_timeout_min: float = 120.0
    # DDP: batch-norm statistics over the global batch (as on one device) rather than each rank's B/W examples
    sync_batchnorm: bool = True

    def validate(self, key: str = "trainer") -> None:
        from elfs.infra.distributed import SPAWNING_STRATEGIES

        _int_at_least(f"{key}.num_nodes", self.num_nodes, 1)
        _int_at_least(f"{key}.num_workers", self.num_workers, 0)
        _number_in(f"{key}.ddp_timeout_min", self.ddp_timeout_min, 1.0, math.inf)
        check_choice(f"{key}.matmul_precision", self.matmul_precision, {"highest", "high", "medium"})
        if self.strategy in SPAWNING_STRATEGIES:
            raise ConfigError(
                f"{key}.strategy={self.strategy!r} starts new processes for every fit; the pipeline keeps one process "
                f"per device for the whole run: use strategy=ddp (trainer=ddp), or auto"
            )


@dataclass
class LoggerConfig:
    """wandb (offline unless WANDB_MODE says otherwise), csv, or none."""

    name: str = "wandb"  # wandb | csv | none
    project: str = "elfs"
    entity: str | None = None  # the W&B team or user; None = the logged-in account's default
    group: str | None = None  # None = one group per sweep ('<name>/<sweep folder>'), none for a single run
    job_type: str = "train"  # a sweep's summary run is "summary" (elfs/tables/aggregate.py)
    mode: str = "${oc.env:WANDB_MODE,offline}"
    tags: list = field(default_factory=list)

    def validate(self, key: str = "logger") -> None:
        check_choice(f"{key}.name", self.name, {"wandb", "csv", "none"})
        if self.name == "wandb":
            check_choice(f"{key}.mode (or WANDB_MODE)", self.mode, {"online", "offline", "disabled"})


@dataclass
class PathsConfig:
    root_dir: str = "${oc.env:ELFS_ROOT,${elfs.cwd:}}"  # not ${hydra:runtime.cwd}: -m resolves it before Hydra
    data_dir: str = "${paths.root_dir}/data"
    cache_dir: str = "${oc.env:ELFS_CACHE_DIR,${paths.root_dir}/outputs/cache}"
    output_dir: str = "${hydra:runtime.output_dir}"

    def validate(self, key: str = "paths") -> None:
        return None  # whether the folders can be written is checked in preflight, where they are created


# Label-free values the Hydra task can return to a sweeper (elfs/cli/main.py `objective`); "none" returns nothing.
OBJECTIVES = ("beta_search/val_acc", "none")
#: the cached stages (elfs/stages/), by the names their entries live under in the cache folder
STAGES = ("embed", "knn", "cluster", "prototypes", "zcore", "dynamics", "beta_search", "evaluate")


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
    progress_every_s: float = 10.0  # without a terminal (a SLURM log): one plain progress line at most this often
    # debug=smoke: conf/debug/<name>.yaml, last in the defaults list so it shrinks any experiment; it sets this name
    debug: str | None = None
    plan: bool = False  # compose and validate every job, print its stages, trainings and cost, exit before any data
    # plan=true: price the trainings at the rates of this gpu_check.json (experiments/gpu_check.py); default: the
    # one in <root>/outputs/ when present. Read by the plan only: no stage sees it, so no cache key holds it
    plan_rates: str | None = None
    # what the Hydra task returns to a sweeper (Optuna, Ax): a label-free quantity, one of OBJECTIVES above
    optimized_metric: str = "beta_search/val_acc"
    # stages computed afresh (once per run) even when the cache holds their entry, e.g. [evaluate]; later stages
    # are keyed by an entry's key, not its bytes, so list them too to recompute them from the new one
    recompute: list = field(default_factory=list)

    def validate(self) -> None:
        """Every group's own range checks, then the checks that span groups."""
        for f in dataclasses.fields(self):
            node = getattr(self, f.name)
            if dataclasses.is_dataclass(node):
                node.validate(f.name)
        _int_at_least("seed", self.seed, 0)
        _number_in("progress_every_s", self.progress_every_s, 0.0, math.inf)
        check_choice("optimized_metric", self.optimized_metric, OBJECTIVES)
        for stage in self.recompute:
            check_choice("recompute[]", stage, STAGES)
        if self.plan_rates is not None and not os.path.isfile(os.path.expanduser(str(self.plan_rates))):
            raise ConfigError(
                f"plan_rates={self.plan_rates!r} is not a file; give the gpu_check.json of experiments/gpu_check.py"
            )
        if self.cluster.knn_k > self.knn.k:
            raise ConfigError(f"cluster.knn_k={self.cluster.knn_k} exceeds knn.k={self.knn.k}; it must be <= knn.k")
        devices = self.trainer.devices
        if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
            self.check_global_batches(devices * self.trainer.num_nodes)

    def check_global_batches(self, world: int) -> None:
        """Every batch size is global: it must split evenly across the ``world`` DDP processes (preflight calls this
        again with the process count of trainer.devices=-1 / auto, which needs torch to count)."""
        for key in ("cluster", "dynamics", "evaluate"):
            bs = getattr(self, key).batch_size
            if bs % world:
                raise ConfigError(
                    f"{key}.batch_size={bs} is the global batch, split across trainer.devices={self.trainer.devices!r} "
                    f"x trainer.num_nodes={self.trainer.num_nodes} = {world} processes; make it a multiple of {world}"
                )


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
    """Register the schema that conf/config.yaml extends, so every group node is typed by its dataclass, and the
    ``elfs.cwd`` resolver behind ``paths.root_dir`` (cached: a sweep and its jobs, also on SLURM, see one value) and
    ``elfs.job_name`` behind a sweep job's folder (elfs/infra/job_names.py)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="elfs_schema", node=ElfsConfig)
    if not OmegaConf.has_resolver("elfs.cwd"):
        OmegaConf.register_new_resolver("elfs.cwd", os.getcwd, use_cache=True)
    if not OmegaConf.has_resolver("elfs.job_name"):
        from elfs.infra.job_names import job_name

        OmegaConf.register_new_resolver("elfs.job_name", job_name)


# --------------------------------------------------------------------------------- DictConfig -> dataclasses


def _unknown_keys(cfg: DictConfig, schema: type) -> list[tuple[str, list[str]]]:
    """Keys that the schema does not declare, at the top level and inside each group (Hydra's `+key=value`
    adds them even to typed nodes), each with the keys that would be valid there."""
    from omegaconf import OmegaConf

    out = []
    top = sorted(f.name for f in dataclasses.fields(schema))
    for key in map(str, cfg.keys()):
        if key not in top:
            out.append((key, top))
        elif key in GROUPS and OmegaConf.is_dict(cfg._get_node(key)):
            valid = sorted(f.name for f in dataclasses.fields(GROUPS[key]))
            out.extend((f"{key}.{sub}", valid) for sub in map(str, cfg[key].keys()) if sub not in valid)
    return out


def unknown_key_message(key: str, valid: list[str]) -> str:
    """'<key> is not a known setting (did you mean ...?); valid keys in <group>: ...' for a dotted key."""
    hint = difflib.get_close_matches(key.rsplit(".", 1)[-1], valid, n=1)
    where = key.rsplit(".", 1)[0] if "." in key else "the top level"
    return (
        f"{key} is not a known setting{f' (did you mean {hint[0]!r}?)' if hint else ''}; "
        f"valid keys in {where}: {', '.join(valid)}"
    )


def to_typed(cfg: DictConfig | ElfsConfig, schema: type = ElfsConfig) -> ElfsConfig:
    """The composed config as dataclasses, after refusing keys the schema does not know, wherever they came from
    (a `+key=value` override, an experiment file, a local file), with a did-you-mean hint."""
    if isinstance(cfg, schema):
        return cfg
    unknown = _unknown_keys(cfg, schema)
    if unknown:
        raise ConfigError(unknown_key_message(*unknown[0]))
    from omegaconf import OmegaConf

    typed = OmegaConf.to_object(cfg)
    if not isinstance(typed, schema):  # a plain dict: the schema was not part of the composition
        raise ConfigError(f"the config is not typed by {schema.__name__}; compose it from conf/config.yaml")
    return typed


def to_dict(cfg: Any) -> dict[str, Any]:
    """A stage config as plain data (for checkpoints and cache keys), with its class name under "_type"."""
    return {"_type": type(cfg).__name__, **dataclasses.asdict(cfg)}


def from_dict(data: Any) -> Any:
    """Inverse of :func:`to_dict`; a dataclass instance passes through unchanged."""
    if dataclasses.is_dataclass(data):
        return data
    data = dict(data)
    name = data.pop("_type", None)
    classes = {c.__name__: c for c in (*GROUPS.values(), ClassifierTrainingConfig)}
    if name not in classes:
        raise ValueError(f"unknown config type {name!r}; expected one of {sorted(classes)}")
    return classes[name](**data)


# ------------------------------------------------------------------------------------------ budget and beta


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


def as_beta(value: Any) -> float | None:
    """selection.beta: None for "auto" (search) and "reference" (per pruning rate), else a fraction in [0, 1)."""
    valid = "it must be 'auto', 'reference' or a fraction in [0, 1)"
    if isinstance(value, str) and value.lower() in ("auto", "reference"):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"selection.beta={value!r} is not valid; {valid}") from None
    if math.isnan(f) or math.isinf(f):
        raise ConfigError(f"selection.beta={value} is not a number; {valid}")
    if f < 0:
        raise ConfigError(f"selection.beta={value} is negative; {valid}")
    return f


def pruning_percent(budget: float) -> int:
    """A budget's pruning rate in whole percent (budget 0.1 -> 90), as reference_beta is keyed."""
    return int(round(100 * (1.0 - float(budget))))


def at_rate(table: Any, budget: float) -> Any:
    """A per-rate table's value at ``budget``'s pruning rate (keys: whole percents, as numbers or as text, since a
    config read back from JSON has text keys); None where the table has no such rate."""
    rate = pruning_percent(budget)
    for key in (rate, str(rate)):
        if key in table:
            return table[key]
    return None


def _check_reference_beta(key: str, table: Any, budgets: list[float], name: str = "beta") -> None:
    """{name}=reference: its table must give a fraction for the pruning rate of every budget."""
    ref = name.replace("beta", "reference_beta")
    for budget in budgets:
        rate = pruning_percent(budget)
        if at_rate(table, budget) is None:
            raise ConfigError(
                f"{key}.{name}=reference has no {key}.{ref} for pruning rate {rate} % (budget={budget}); it gives "
                f"rates {sorted(table)}: add '{key}.{ref}.{rate}=<fraction>' or give a fixed {key}.{name}"
            )
        _number_in(f"{key}.{ref}.{rate}", at_rate(table, budget), 0.0, 1.0 - budget)


__all__ = [
    "BackboneConfig",
    "ClassifierTrainingConfig",
    "ClusterConfig",
    "ConfigError",
    "DatasetConfig",
    "DynamicsConfig",
    "ElfsConfig",
    "EvaluateConfig",
    "GROUPS",
    "KnnConfig",
    "LoggerConfig",
    "PathsConfig",
    "SelectionConfig",
    "TrainerConfig",
    "as_beta",
    "as_budgets",
    "check_choice",
    "from_dict",
    "register_configs",
    "to_dict",
    "to_typed",
]
