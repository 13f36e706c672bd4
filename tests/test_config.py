"""Every config composes and validates; typos, wrong types and bad values fail at start-up naming the key."""

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from elfs.config import ConfigError, as_budgets, to_typed
from elfs.preflight import check_config


def validate(cfg) -> None:
    """The checks `elfs` runs before loading any data (weights and GPUs excepted: tests run offline, on a CPU)."""
    check_config(to_typed(cfg), weights=False, devices=False)


CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["dataset", "backbone", "knn", "cluster", "dynamics", "selection", "evaluate", "trainer", "logger"]


def test_default_composes_and_validates(compose_cfg):
    cfg = compose_cfg()
    validate(cfg)
    assert cfg.dataset.name == "mnist5k" and cfg.backbone.name == "efficientnet_lite0"
    assert as_budgets(cfg.selection.budget) == [0.1, 0.3, 0.5]
    assert cfg.logger.mode in ("offline", "disabled", "online")


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes(compose_cfg, group):
    for f in sorted((CONF / group).glob("*.yaml")):
        cfg = compose_cfg([f"{group}={f.stem}"], sub=f.stem)
        if not (group == "dataset" and f.stem == "npz"):
            validate(cfg)


@pytest.mark.parametrize("exp", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_composes_with_plus_form(compose_cfg, exp):
    cfg = compose_cfg([f"+experiment={exp}"])
    validate(cfg)
    assert cfg.name == exp


def test_paper_experiment_uses_paper_settings(compose_cfg):
    cfg = compose_cfg(["+experiment=cifar10_dino"])
    assert (cfg.dataset.name, cfg.backbone.name, cfg.cluster.num_heads, cfg.cluster.beta) == (
        "cifar10",
        "dino_vitb16",
        50,
        0.6,
    )
    assert (cfg.dynamics.model, cfg.dynamics.epochs, cfg.evaluate.steps) == ("resnet18_cifar", 200, 40000)


@pytest.mark.parametrize("launcher", ["slurm", "slurm_ddp"])
def test_launcher_configs_compose(compose_cfg, launcher):
    cfg = compose_cfg([f"+launcher={launcher}", "+experiment=cifar10_dino"])
    validate(cfg)


@pytest.mark.parametrize("launcher", ["slurm", "slurm_ddp"])
def test_slurm_job_ends_all_ranks_when_one_fails(tmp_path, launcher):
    """The sbatch script submitit writes from our launcher config sets srun's --kill-on-bad-exit (its environment
    form) before the srun line: one rank that exits badly ends the others instead of leaving them in a collective
    until trainer.ddp_timeout_min."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from submitit.slurm.slurm import _make_sbatch_string

    from elfs.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"+launcher={launcher}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    launch = cfg.hydra.launcher
    script = _make_sbatch_string(
        command="python -m elfs.train",
        folder=tmp_path,
        ntasks_per_node=launch.tasks_per_node,
        gpus_per_node=launch.gpus_per_node,
        setup=list(launch.setup),
    ).splitlines()
    srun = next(i for i, line in enumerate(script) if line.startswith("srun "))
    assert "export SLURM_KILL_BAD_EXIT=1" in script[:srun]


def test_typo_fails_naming_the_key(compose_cfg):
    with pytest.raises(ConfigCompositionException) as e:
        compose_cfg(["selection.bugdet=0.1"])
    assert "bugdet" in str(e.value) + str(e.value.__cause__)


def test_wrong_type_fails_naming_the_key(compose_cfg):
    with pytest.raises((ConfigCompositionException, ValidationError)) as e:
        compose_cfg(["cluster.num_heads=many"])
    assert "num_heads" in str(e.value) + str(e.value.__cause__)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("dataset.name=imagenet22k", "dataset.name='imagenet22k'"),
        ("backbone.name=resnet9000", "backbone.name='resnet9000'"),
        ("selection.method=magic", "selection.method='magic'"),
        ("selection.score=vibes", "selection.score='vibes'"),
        ("selection.budget=1.5", "budget=1.5"),
        ("selection.budget=0", "budget=0"),
        ("selection.budget=-0.2", "budget=-0.2"),
        ("selection.beta=-0.1", "beta=-0.1"),
        ("selection.beta=0.95", "selection.beta=0.95 leaves no room for any selection.budget"),
        ("selection.labels=oracle", "selection.labels='oracle'"),
        ("selection.d2_gamma=-1", "selection.d2_gamma=-1"),
        ("selection.d2_beta=1.0", "selection.d2_beta=1.0"),
        ("selection.beta=abc", "beta='abc'"),
        ("selection.beta_grid=[0.95]", "beta_grid"),
        ("cluster.knn_k=500", "cluster.knn_k=500"),
        ("knn.backend=annoy", "knn.backend='annoy'"),
        ("evaluate.seeds=[]", "evaluate.seeds"),
        ("cluster.max_steps=0", "cluster.max_steps=0"),
        ("dynamics.max_steps=-5", "dynamics.max_steps=-5"),
        ("knn.approx_above=0", "knn.approx_above=0"),
    ],
)
def test_bad_values_are_refused_with_a_named_message(compose_cfg, override, needle):
    cfg = compose_cfg([override])
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert needle in str(e.value)


def test_budget_accepts_scalar_and_list(compose_cfg):
    assert as_budgets(compose_cfg(["selection.budget=0.2"]).selection.budget) == [0.2]
    assert as_budgets(compose_cfg(["selection.budget=[0.2,0.4]"], sub="b").selection.budget) == [0.2, 0.4]


def test_proxy_epochs_shrink_to_the_whole_epochs_within_max_steps():
    """dynamics.max_steps, by hand: 1,000,000 images at batch 256 take ceil(1e6 / 256) = 3907 steps an epoch, so
    40,000 steps hold 10 whole epochs; 100,000 images (391 an epoch) would fit 102, so the 30 configured stand."""
    from elfs.config import DynamicsConfig

    d = DynamicsConfig(epochs=30, batch_size=256, max_steps=40_000)
    assert d.epochs_for(1_000_000) == 10
    assert d.epochs_for(100_000) == 30
    assert DynamicsConfig(epochs=30, batch_size=256, max_steps=10).epochs_for(1_000_000) == 1  # at least one pass
    assert DynamicsConfig(epochs=30, batch_size=256).epochs_for(10**9) == 30  # no cap


def test_every_registry_implements_exactly_the_names_the_config_accepts():
    """elfs/infra/names.py (what a config may name, checked before torch loads) and the registries that implement the
    names agree: every encoder, model, head form, pseudo-label rule and score the config accepts exists."""
    import numpy as np
    import torch

    from elfs.cluster import pseudo_labels
    from elfs.cluster.module import make_heads
    from elfs.dynamics import TrainingDynamicsRecorder
    from elfs.infra import names
    from elfs.method.backbones import BACKBONES
    from elfs.models import build_model

    assert set(BACKBONES) == set(names.BACKBONE_NAMES)
    for model, consumes in names.MODEL_INPUTS.items():
        net = build_model(model, num_classes=3, in_dim=8 if consumes == "embeddings" else None)
        assert sum(p.numel() for p in net.parameters()) > 0
    for impl in names.HEAD_IMPLS:
        make_heads(impl, 2, 8, 16, 4, 3)
    assign, losses = np.array([[0, 1, 1], [1, 0, 0]]), np.array([0.5, 0.2])
    for rule in set(names.PSEUDO_LABEL_RULES) - {"aligned_mean"}:  # aligned_mean needs the heads themselves
        assert pseudo_labels(assign, losses, rule).shape == (3,)
    rec = TrainingDynamicsRecorder(4, 3)
    rec.update(torch.arange(4), torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), epoch=0)
    assert set(names.HARD_END) <= set(rec.scores())
