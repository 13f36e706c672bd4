"""Every check of the user's input, in one place, run before the work it protects.

``check_config`` runs before anything is loaded (value ranges, registry names, files the config points to,
backbone weights, writable folders); ``check_data`` runs right after the data is loaded, before the first
expensive stage (sizes, classes, whether k, the number of clusters and each budget fit N). Both raise
:class:`~elfs.errors.UserError` subclasses naming the key, the value and what would be valid.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from elfs.config import ElfsConfig, check_choice
from elfs.data.types import is_streamed
from elfs.errors import ConfigError, DataError, UnavailableError

log = logging.getLogger(__name__)


def check_names(conf: ElfsConfig) -> None:
    """Names that must match a registry, checked against elfs/infra/names.py (the registries' own names, without torch
    or Lightning: a typo is refused in a second, not after 7 s of imports)."""
    from elfs.data import DATASETS
    from elfs.infra.names import BACKBONE_NAMES, CLUSTER_METHODS, HARD_END, HEAD_IMPLS, MODEL_INPUTS, PSEUDO_LABEL_RULES
    from elfs.method.knn import KNN_BACKENDS
    from elfs.select import METHOD_INPUTS

    check_choice("dataset.name", conf.dataset.name, DATASETS)
    check_choice("backbone.name", conf.backbone.name, BACKBONE_NAMES)
    check_choice("knn.backend", conf.knn.backend, KNN_BACKENDS)
    check_choice("cluster.method", conf.cluster.method, CLUSTER_METHODS)
    check_choice("cluster.rule", conf.cluster.rule, PSEUDO_LABEL_RULES)
    check_choice("cluster.head_impl", conf.cluster.head_impl, HEAD_IMPLS)
    check_choice("dynamics.model", conf.dynamics.model, MODEL_INPUTS)
    check_choice("evaluate.model", conf.evaluate.model, MODEL_INPUTS)
    check_choice("selection.method", conf.selection.method, METHOD_INPUTS)
    check_choice("selection.score", conf.selection.score, HARD_END)
    for b in conf.selection.baselines:
        check_choice("selection.baselines[]", b, METHOD_INPUTS)


def check_writable(key: str, folder: str | os.PathLike, hint: str = "") -> Path:
    """Create ``folder`` if needed and prove it can be written; a ConfigError names the setting otherwise."""
    p = Path(folder).expanduser()
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(
            f"{key}={str(folder)!r} cannot be written ({e.strerror or e}); point {key} at a writable folder{hint}"
        ) from None
    return p


def check_devices(conf: ElfsConfig) -> None:
    """A run that asks for a GPU and cannot get one stops here with one message, instead of computing on the CPU."""
    asked = (("trainer.accelerator", conf.trainer.accelerator), ("backbone.device", conf.backbone.device))
    wants = [k for k, v in asked if str(v).lower().startswith(("gpu", "cuda"))]
    if not wants:
        return
    import torch

    if not torch.cuda.is_available():
        built = (
            f"torch {torch.__version__} built for CUDA {torch.version.cuda}"
            if torch.version.cuda
            else (f"torch {torch.__version__} built without CUDA")
        )
        raise UnavailableError(
            f"{wants[0]} asks for a GPU, but none is usable ({built}; no device visible, or a driver too old for "
            f"that CUDA); on a CPU use trainer=default (accelerator=auto), or fix the driver / CUDA_VISIBLE_DEVICES"
        )


def check_processes(conf: ElfsConfig) -> None:
    """Checks that need the number of DDP processes, also when trainer.devices is -1 / "auto" (counted from the
    visible devices): every global batch splits evenly, and torch.compile is not combined with SyncBatchNorm."""
    from elfs.infra.distributed import planned_processes

    t = conf.trainer
    world = planned_processes(t.devices, t.accelerator, t.num_nodes)
    if world == 1:
        return
    check_slurm_tasks(world, t.devices)
    conf.check_global_batches(world)
    compiled = [k for k in ("dynamics", "evaluate") if getattr(conf, k).compile]
    if compiled and t.sync_batchnorm:
        raise ConfigError(
            f"{compiled[0]}.compile=true with trainer.sync_batchnorm=true under DDP ({world} processes): torch.compile "
            f"fails on SyncBatchNorm; set {compiled[0]}.compile=false or trainer.sync_batchnorm=false"
        )


def check_slurm_tasks(world: int, devices: object) -> None:
    """Inside a SLURM job (as Lightning detects one: SLURM_NTASKS set, not an interactive allocation) every DDP
    process must be a task srun started: Lightning then starts no process itself, so a run outside srun, or with
    fewer tasks than processes, would wait for ranks that never come. Refused at once, saying how to launch it."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return
    ntasks = os.environ.get("SLURM_NTASKS")
    per_node = devices if isinstance(devices, int) and devices > 0 else world
    launch = (
        f"launch it with one task per process (srun --ntasks-per-node={per_node} elfs ... inside the allocation), "
        f"or submit it with +launcher=slurm_ddp; one process: trainer.devices=1"
    )
    if "SLURM_STEP_ID" not in os.environ:
        raise ConfigError(
            f"trainer=ddp wants {world} processes, but this runs inside a SLURM job outside srun "
            f"(SLURM_NTASKS={ntasks}, no job step), where no other rank will start: {launch}"
        )
    if str(ntasks) != str(world):
        raise ConfigError(
            f"trainer=ddp wants {world} processes, but srun started SLURM_NTASKS={ntasks} task(s): {launch}"
        )


def check_config(conf: ElfsConfig, *, weights: bool = True, devices: bool = True) -> None:
    """Everything that can be checked before loading data: ranges, names, devices, input files, weights."""
    conf.validate()
    check_names(conf)
    if devices:
        check_devices(conf)
    if conf.trainer.num_nodes > 1:
        from elfs.infra.distributed import launched_externally

        if not launched_externally():
            raise ConfigError(
                f"trainer.num_nodes={conf.trainer.num_nodes} needs a cluster launcher to start the other nodes' "
                f"ranks (+launcher=slurm_ddp, srun or torchrun); started by hand, use trainer.num_nodes=1"
            )
    if devices:
        check_processes(conf)
    if conf.dataset.name == "npz":
        p = conf.dataset.path
        if not p or not Path(p).expanduser().is_file():
            raise ConfigError(f"dataset.path={p!r} {_not_a_file(p)}; {_NPZ_NEEDS}")
    if weights and conf.backbone.pretrained:
        from elfs.method.backbones import check_weights_available

        b = conf.backbone
        check_weights_available(b.name, model=b.model, weights=b.weights)


_NPZ_NEEDS = "dataset=npz needs an .npz file with x_train, y_train, x_test, y_test (a folder of images: dataset=folder)"


def _not_a_file(path: str | None) -> str:
    """Why ``path`` is not a file, in words: empty, a folder, or nothing there."""
    if not path:
        return "is empty"
    return "is a folder, not a file" if Path(path).expanduser().is_dir() else "does not exist"


def check_paths(conf: ElfsConfig) -> None:
    """The cache and the run folder must be writable before any work is paid for."""
    check_writable("paths.cache_dir", conf.paths.cache_dir, " (or set ELFS_CACHE_DIR)")
    check_writable("paths.output_dir", conf.paths.output_dir, " (hydra.run.dir, or hydra.sweep.dir with -m)")


#: the fewest images elfs selects from. Below this a coreset saves almost nothing (annotating all of them costs
#: under 20 labels); the beta search's 10% validation split would hold a single image; and elfs-select's default
#: 10 clusters would get under 2 images each, so no image could have even one neighbour of its own kind.
MIN_IMAGES = 20
#: neighbours kept when a small folder forces knn.k down (TEMI pairs each image with one of its first knn_k)
MIN_NEIGHBOURS = 2


def _refuse_too_few(ds, n: int) -> None:
    """One line saying how many images are needed, and, for a folder, how many of its files decode and why the
    others do not (the files are decoded here: there are fewer than MIN_IMAGES of them, or a few dropped ones)."""
    if not is_streamed(ds.train):
        raise DataError(f"dataset {ds.name!r} has {n} training images; elfs needs at least {MIN_IMAGES}")
    decodable, total, bad, more = ds.train.decode_report()
    head = f"elfs-select needs at least {MIN_IMAGES} images; this folder has {decodable}"
    if not bad:
        raise DataError(head)
    why = ", ".join(f"{p} ({reason})" for p, reason in bad) + (f" and {more} more" if more else "")
    raise DataError(f"{head} that can be decoded ({decodable} of {total} images could be decoded: {why})")


def _fit_neighbours(conf: ElfsConfig, n: int, num_clusters: int) -> None:
    """knn.k >= N on a folder or an unlabelled array: use about one cluster's worth of neighbours, N // clusters
    (at least MIN_NEIGHBOURS, below N): with that many kinds of ~N/clusters images each, more neighbours than that
    would mostly be of other kinds. cluster.knn_k, which reads the same graph, follows (D2 builds its own)."""
    k = min(n - 1, max(MIN_NEIGHBOURS, n // num_clusters))
    changed = [f"knn.k {conf.knn.k} -> {k}"]
    conf.knn.k = k
    if conf.cluster.knn_k > k:
        changed.append(f"cluster.knn_k {conf.cluster.knn_k} -> {k}")
        conf.cluster.knn_k = k
    log.warning(
        "only %d images for %d clusters: %s (one cluster's worth of neighbours)",
        n,
        num_clusters,
        "; ".join(changed),
    )


def check_data(conf: ElfsConfig, ds) -> int:
    """Checks that need the loaded data, run right after loading (and again on the decodable images of a
    streamed source, once they are known); returns the number of clusters to use. On a folder or an unlabelled
    array with no more images than knn.k, it lowers knn.k (and cluster.knn_k) in ``conf`` to fit,
    with one warning line; below MIN_IMAGES images it refuses in one line.

    ``ds`` is an elfs.data.Dataset (ground truth, when there is any, is read here only to count the classes).
    """
    from elfs.infra.names import MODEL_INPUTS
    from elfs.select import METHODS_USING_BETA

    n = len(ds.train)
    if n < MIN_IMAGES:
        _refuse_too_few(ds, n)
    if ds.truth is not None:
        classes = np.unique(ds.truth.train)
        if classes.size < 2:
            raise DataError(
                f"dataset {ds.name!r}: every training label is {int(classes[0])} (a single class); "
                f"selection needs at least 2 classes"
            )
    if ds.truth is None and conf.selection.reads_ground_truth:
        raise ConfigError(
            f"selection.labels=ground_truth (the supervised reference) needs labels, and dataset {ds.name!r} has "
            f"none; use selection.labels=pseudo"
        )
    if ds.truth is None and conf.selection.method == "full":
        raise ConfigError(
            f"selection.method=full keeps every image: it is a reference for labelled data, and dataset "
            f"{ds.name!r} has no labels to evaluate it with; choose a selection method (e.g. selection=elfs)"
        )
    image_models = [
        (key, t)
        for key, t in (("dynamics", conf.dynamics), ("evaluate", conf.evaluate))
        if MODEL_INPUTS[t.model] == "images"
    ]
    if not is_streamed(ds.train):
        h, w = ds.train.images.shape[1:3]
        if ds.crop_padding >= min(h, w):
            raise DataError(f"dataset.crop_padding={ds.crop_padding} is not smaller than the image size {h}x{w}")
        for key, t in image_models:
            if t.image_size is not None and (h, w) != (t.image_size, t.image_size):
                raise ConfigError(
                    f"{key}.image_size={t.image_size}, but dataset {ds.name!r} holds {h}x{w} images in memory, "
                    f"which train at their own size; set {key}.image_size=null"
                )
    else:  # streamed: an image model gets the images decoded at <key>.image_size, batch by batch
        for key, t in image_models:
            if t.image_size is None:
                raise ConfigError(
                    f"{key}.image_size=null, but {key}.model={t.model!r} trains on images and "
                    f"dataset={conf.dataset.name} streams them; set {key}.image_size (the side they are decoded "
                    f"to, e.g. 224 for ImageNet) or use a model over the embeddings ({key}=mlp)"
                )
            if ds.crop_padding >= t.image_size:
                raise DataError(
                    f"dataset.crop_padding={ds.crop_padding} is not smaller than {key}.image_size={t.image_size}"
                )
    if ds.num_classes is None and conf.cluster.num_clusters is None:
        raise ConfigError(
            f"cluster.num_clusters=null, and dataset {ds.name!r} has no labels to count classes from; set "
            f"cluster.num_clusters (roughly the number of kinds of images you expect; when unsure, err on the "
            f"high side: see the README)"
        )
    if ds.truth is None:
        for budget in conf.selection.budgets:
            if round(budget * n) >= n:
                raise ConfigError(
                    f"selection.budget={budget} keeps all {n} images; there is nothing to choose (give a "
                    f"fraction below {1 - 1 / n:.3g})"
                )
    num_clusters = conf.cluster.num_clusters or ds.num_classes
    if conf.knn.k >= n and not (is_streamed(ds.train) or ds.truth is None):
        raise ConfigError(f"knn.k={conf.knn.k} must be smaller than the number of training images ({n})")
    if not 2 <= num_clusters <= n:
        raise ConfigError(
            f"cluster.num_clusters={num_clusters} must be in [2, {n}] (the number of training "
            f"images){' (taken from the number of classes)' if conf.cluster.num_clusters is None else ''}"
        )
    if conf.knn.k >= n:  # a small folder (or unlabelled array): neighbour counts that fit it
        _fit_neighbours(conf, n, num_clusters)
    sel = conf.selection
    for budget in sel.budgets:
        if round(budget * n) < 1:
            raise ConfigError(
                f"selection.budget={budget} keeps round({budget} * {n}) = 0 images; "
                f"the smallest useful budget for N={n} is {1 / n:.3g}"
            )
    if sel.searched and sel.method in METHODS_USING_BETA:
        from elfs.select.beta_search import validation_size

        n_val = validation_size(n, sel.val_fraction, sel.min_val)
        if not 1 <= n_val <= n - 2:
            raise ConfigError(
                f"selection.val_fraction={sel.val_fraction} of N={n} gives {n_val} validation images "
                f"for the beta search; it needs between 1 and N-2"
            )
        n_fit = n - n_val
        for budget in sel.budgets:
            if round(budget * n_fit) < 1:
                raise ConfigError(
                    f"selection.budget={budget} keeps no image of the {n_fit} the beta search selects "
                    f"from; raise the budget or give a fixed selection.beta"
                )
    return int(num_clusters)
