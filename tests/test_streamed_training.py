"""Training and evaluating image models on a STREAMED source (a folder decoded batch by batch in DataLoader
workers): it learns, it is bit-identical to the in-memory path on the same decoded pixels (0 and 2 workers), it
holds no pixels of the whole set, it resumes exactly, the paper's ResNet-34 runs on it, and the pipeline and the
data checks route streamed sources to it. Real images: scikit-learn's digits and sample photos, written as files."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from elfs.config import ClassifierTrainingConfig, DynamicsConfig, to_typed
from elfs.data.folder import scan_folder
from elfs.dynamics import ImageFacts, evaluate_accuracy, train_classifier
from elfs.errors import ConfigError, DataError
from elfs.infra.runtime import Runtime

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_IMAGES = 400  # digits written as 8x8 grey PNGs; index i of the folder is digit i (names sort in order)
SIZE = 12  # decode size: 8x8 -> bicubic 12x12 RGB
SGD = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, min_lr=1e-4)


def _cfg(cls=ClassifierTrainingConfig, *, model="small_cnn", width=8, batch_size=32, image_size=SIZE, **kw):
    return cls(model=model, width=width, batch_size=batch_size, image_size=image_size, **{**SGD, **kw})


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory) -> tuple[Path, np.ndarray]:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    root = tmp_path_factory.mktemp("digits")
    for i in range(N_IMAGES):
        Image.fromarray(np.clip(d.images[i] * 16, 0, 255).astype(np.uint8)).save(root / f"d{i:04d}.png")
    return root, d.target[:N_IMAGES].astype(np.int64)


@pytest.fixture(scope="module")
def source(digit_folder):
    src, skipped = scan_folder(digit_folder[0])
    assert len(src) == N_IMAGES and not skipped
    return src, digit_folder[1]


@pytest.fixture(scope="module")
def decoded(source) -> np.ndarray:
    """Exactly the pixels the streamed path decodes, held in memory: the reference for bit-identity."""
    src, _ = source
    return np.stack([src.load_rgb(i, SIZE) for i in range(len(src))])


def _image_kwargs(src) -> dict:
    mean, std = src.channel_stats()
    return dict(images=ImageFacts(crop_padding=2, hflip=True, mean=mean, std=std))


class _DatasetProbe(L.Callback):
    """Keeps the training DataLoader's dataset, to inspect what it holds."""

    dataset = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.dataset = trainer.train_dataloader.dataset


def _largest_array(obj, depth: int = 3) -> int:
    """Number of elements of the largest numpy array / tensor reachable from `obj` through attributes,
    dataclass fields, tuples, lists and dicts (to `depth` levels)."""
    if isinstance(obj, np.ndarray):
        return int(obj.size)
    if isinstance(obj, torch.Tensor):
        return int(obj.numel())
    if depth == 0 or isinstance(obj, (str, bytes, int, float, Path)) or obj is None:
        return 0
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (tuple, list)):
        children = list(obj)
    else:
        children = list(getattr(obj, "__dict__", {}).values())
    return max([_largest_array(c, depth - 1) for c in children], default=0)


# ------------------------------------------------------------------------------------------- training
def test_streamed_small_cnn_learns(source):
    src, y = source
    train, test = np.arange(300), np.arange(300, N_IMAGES)
    r = train_classifier(src, y, train, _cfg(), num_classes=10, steps=200, seed=0, **_image_kwargs(src))
    assert r.steps == 200
    acc = evaluate_accuracy(r.module, src, y, indices=test)  # held-out images, streamed too
    assert acc > 0.6, acc  # chance is 0.1


@pytest.fixture(scope="module")
def in_memory_scores(source, decoded):
    src, y = source
    idx = np.arange(0, N_IMAGES, 2)[:150]  # a subset: examples outside it must stay unrecorded
    cfg = _cfg(DynamicsConfig, el2n_epochs=1)
    r = train_classifier(decoded, y, idx, cfg, num_classes=10, epochs=2, seed=3, record=True, **_image_kwargs(src))
    return idx, cfg, r.scores


@pytest.mark.parametrize("num_workers", [0, 2])
def test_streamed_equals_in_memory_and_holds_no_pixels(source, in_memory_scores, num_workers):
    src, y = source
    idx, cfg, ref = in_memory_scores
    probe = _DatasetProbe()
    r = train_classifier(
        src,
        y,
        idx,
        cfg,
        num_classes=10,
        epochs=2,
        seed=3,
        record=True,
        runtime=Runtime(trainer_kwargs={"callbacks": [probe]}, num_workers=num_workers),
        **_image_kwargs(src),
    )
    assert set(r.scores) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(r.scores[k], ref[k], err_msg=k)
    assert np.isfinite(ref["aum"][idx]).all() and np.isnan(np.delete(ref["aum"], idx)).all()
    # O(batch) memory: the training dataset keeps the file list, labels and indices, at most one value per file
    assert type(probe.dataset).__name__ == "_StreamedImageDataset" and probe.dataset.source is src
    assert _largest_array(probe.dataset) <= len(src) < len(idx) * 3 * SIZE * SIZE


def test_the_pixel_probe_sees_an_in_memory_set(source, decoded):
    """Control for the check above: the in-memory dataset does hold the whole set's pixels."""
    src, y = source
    probe = _DatasetProbe()
    train_classifier(
        decoded,
        y,
        np.arange(64),
        _cfg(),
        num_classes=10,
        steps=1,
        seed=0,
        runtime=Runtime(trainer_kwargs={"callbacks": [probe]}),
    )
    assert _largest_array(probe.dataset) == 64 * 3 * SIZE * SIZE


def test_streamed_evaluation_equals_in_memory(source, decoded):
    src, y = source
    r = train_classifier(src, y, np.arange(200), _cfg(), num_classes=10, steps=30, seed=1, **_image_kwargs(src))
    val = np.arange(200, N_IMAGES, 3)
    a = evaluate_accuracy(r.module, decoded, y, indices=val)
    assert a == evaluate_accuracy(r.module, src, y, indices=val, batch_size=16, num_workers=2)
    assert a == evaluate_accuracy(r.module, decoded[val], y[val])
    assert evaluate_accuracy(r.module, src, y) == evaluate_accuracy(r.module, decoded, y)


def test_streamed_resume_from_epoch_checkpoint_is_exact(source, tmp_path, interrupt_at_epoch):
    src, y = source
    idx = np.arange(120)
    kw = dict(num_classes=10, seed=5, record=True, epochs=4, **_image_kwargs(src))
    cfg = _cfg(DynamicsConfig, el2n_epochs=2)
    ref = train_classifier(src, y, idx, cfg, **kw).scores
    with pytest.raises(SystemExit):  # Lightning turns the KeyboardInterrupt into sys.exit(1)
        interrupted = Runtime(trainer_kwargs={"callbacks": [interrupt_at_epoch(2)]}, checkpoint_dir=str(tmp_path))
        train_classifier(src, y, idx, cfg, runtime=interrupted, **kw)
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 1
    resumed = train_classifier(src, y, idx, cfg, runtime=Runtime(checkpoint_dir=str(tmp_path)), **kw).scores
    for k in ref:
        np.testing.assert_array_equal(resumed[k], ref[k], err_msg=k)


def test_resnet34_trains_on_streamed_photos(tmp_path):
    """The paper's ImageNet network on the streamed path: 3 photo crops of different shapes, decoded at 32 px."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images  # 427 x 640 x 3
    crops = [china[:200, :300], flower[100:400, 200:350], china[50:170, 400:520]]
    for i, c in enumerate(crops):
        Image.fromarray(c).save(tmp_path / f"p{i}.{'jpg' if i % 2 else 'png'}")
    src, _ = scan_folder(tmp_path)
    y = np.array([0, 1, 2])
    cfg = _cfg(model="resnet34", batch_size=3, image_size=32, lr=0.01, min_lr=1e-4)
    r = train_classifier(src, y, np.arange(3), cfg, num_classes=3, steps=2, seed=0, **_image_kwargs(src))
    assert r.steps == 2 and type(r.module.model).__name__ == "ResNet"
    batch = torch.stack([torch.from_numpy(src.load_rgb(i, 32)).permute(2, 0, 1) for i in range(3)])
    r.module.eval()
    logits = r.module(batch)
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()
    assert 0.0 <= evaluate_accuracy(r.module, src, y) <= 1.0


def test_streamed_misuse_is_refused(source, decoded):
    src, y = source
    kw = dict(num_classes=10, steps=1, seed=0)
    with pytest.raises(ValueError, match="image_size"):
        train_classifier(src, y, np.arange(8), _cfg(image_size=None), **kw)
    with pytest.raises(ValueError, match="takes embeddings"):
        train_classifier(src, y, np.arange(8), _cfg(model="mlp"), **kw)
    with pytest.raises(ValueError, match="image_size=16, but the in-memory images are 12x12"):
        train_classifier(decoded, y, np.arange(8), _cfg(image_size=16), **kw)
    with pytest.raises(ConfigError, match="train.image_size=4"):
        _cfg(image_size=4).validate("train")


# ------------------------------------------------------------------------------- pipeline and checks
def _conf(compose_cfg, root, *extra):
    return to_typed(
        compose_cfg(
            [
                "+experiment=digits_quick",
                "dataset=folder",
                f"dataset.path={root}",
                "cluster.num_clusters=10",
                "logger=none",
                "trainer.num_workers=0",
                *extra,
            ]
        )
    )


def test_check_data_routes_streamed_sources_to_image_models(compose_cfg, digit_folder):
    from elfs.pipeline import load_data
    from elfs.preflight import check_data

    root, _ = digit_folder
    conf = _conf(compose_cfg, root, "evaluate=small_cnn_cpu")
    ds = load_data(conf.dataset)
    with pytest.raises(ConfigError, match=r"dynamics.image_size=null, but dynamics.model='small_cnn'"):
        check_data(conf, ds)
    conf = dataclasses.replace(conf, dynamics=dataclasses.replace(conf.dynamics, image_size=SIZE))
    with pytest.raises(ConfigError, match="evaluate.image_size=null"):
        check_data(conf, ds)
    conf = dataclasses.replace(conf, evaluate=dataclasses.replace(conf.evaluate, image_size=SIZE))
    assert check_data(conf, ds) == 10
    with pytest.raises(DataError, match="dataset.crop_padding=12 is not smaller than dynamics.image_size=12"):
        check_data(conf, dataclasses.replace(ds, crop_padding=12))
    # in-memory images train at their own size: another image_size is a mistake, named
    mem = to_typed(compose_cfg(["+experiment=digits_quick", "dynamics.image_size=16"], sub="mem"))
    with pytest.raises(ConfigError, match="dynamics.image_size=16, but dataset 'digits' holds 8x8 images"):
        check_data(mem, load_data(mem.dataset))


def test_stages_train_on_the_streamed_source(compose_cfg, digit_folder, tmp_path):
    """stage_dynamics and stage_beta_search on a folder with an image proxy: _model_inputs hands over the source."""
    from elfs.cache import Artifact, ArtifactCache
    from elfs.pipeline import Context, load_data
    from elfs.stages.beta_search import stage_beta_search
    from elfs.stages.dynamics import stage_dynamics
    from elfs.stages.inputs import Labels
    from elfs.stages.inputs import model_inputs as _model_inputs
    from elfs.tracking import RunLoggers

    root, y = digit_folder
    conf = _conf(
        compose_cfg,
        root,
        "evaluate=small_cnn_cpu",
        f"dynamics.image_size={SIZE}",
        f"evaluate.image_size={SIZE}",
        "dynamics.width=8",
        "dynamics.epochs=2",
        "evaluate.width=8",
        "selection.search_steps=5",
    )
    free = load_data(conf.dataset).unlabelled()
    assert free.streamed
    emb = Artifact("embed", "e" * 16, tmp_path, {"train": np.zeros((N_IMAGES, 4), np.float32)}, {})
    assert _model_inputs("small_cnn", free, emb, "train") is free.train
    assert _model_inputs("mlp", free, emb, "train") is emb["train"]
    clus = Artifact("cluster", "c" * 16, tmp_path, {"pseudo_labels": y}, {"num_clusters": 10})
    ctx = Context(
        cfg=conf, cache=ArtifactCache(tmp_path / "cache"), run_dir=tmp_path, loggers=RunLoggers(conf.logger, tmp_path)
    )
    dyn = stage_dynamics(ctx, conf.dynamics, free, emb, Labels.pseudo(clus))
    assert dyn["aum"].shape == (N_IMAGES,) and np.isfinite(dyn["aum"]).all()
    assert (dyn["num_records"] == 2).all()
    betas = [0.0, 0.2]
    search = stage_beta_search(ctx, conf.selection, conf.evaluate, free, emb, Labels.pseudo(clus), dyn, 0.3, betas)
    assert search["betas"].tolist() == [0.0, 0.2] and ((search["val_acc"] >= 0) & (search["val_acc"] <= 1)).all()


def test_imagenet_experiment_composes_with_paper_settings(compose_cfg):
    from elfs.preflight import check_config

    conf = to_typed(compose_cfg(["+experiment=imagenet_dino"]))
    check_config(conf, weights=False, devices=False)
    assert conf.dataset.path.endswith("/imagenet") and conf.backbone.name == "dino_vitb16"
    assert (conf.cluster.method, conf.cluster.num_heads, conf.cluster.beta, conf.cluster.num_clusters) == (
        "temi",
        50,
        0.6,
        1000,
    )
    d, e = conf.dynamics, conf.evaluate
    assert (d.model, d.epochs, d.batch_size, d.lr, d.nesterov, d.weight_decay, d.image_size) == (
        "resnet34",
        60,
        256,
        0.1,
        False,
        1e-4,
        224,
    )
    assert d.crop == e.crop == "random_resized"  # RandomResizedCrop + Resize(256)/CenterCrop(224), as the paper
    assert (e.model, e.steps, e.batch_size, e.nesterov, e.weight_decay, e.test_every, e.image_size) == (
        "resnet34",
        300000,
        256,
        False,
        1e-4,
        5000,
        224,
    )
