"""Every baseline's own defaults cite where its authors set them (the reference repository, file and line), and the
values composed from those files are the ones the reference's commands use."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[1] / "conf" / "selection"
#: baseline config -> (reference repository, the settings of its own that must each cite a file:line of it)
BASELINES = {
    "zcore": (
        "voxel51/zcore",
        ["zcore_samples", "zcore_dim", "zcore_neighbours", "zcore_exponent", "zcore_rand_init"],
    ),
    "d2": ("adymaharana/d2pruning", ["d2_mode", "d2_k", "d2_gamma", "d2_beta", "d2_strata"]),
    "supervised_ccs": ("haizhongzheng/Coverage-centric-coreset-selection", ["beta", "strata"]),
    "ccs": ("haizhongzheng/Coverage-centric-coreset-selection", ["strata"]),
}
CITATION = re.compile(r"#\s*(?P<repo>[\w.-]+/[\w.-]+)\s+(?P<file>[\w/.-]+\.(?:py|md|MD|sh)):(?P<line>\d+)")


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_default_cites_its_reference(name):
    repo, own = BASELINES[name]
    text = (CONF / f"{name}.yaml").read_text()
    for key in own:
        line = next((x for x in text.splitlines() if x.startswith(f"{key}:")), None)
        assert line is not None, f"{name}.yaml sets no {key}"
        cited = CITATION.search(line)
        assert cited and cited["repo"] == repo, f"{name}.yaml: {key} cites no line of {repo}: {line!r}"


def test_the_reference_values_are_the_authors():
    """The numbers the cited lines hold (read there by hand; the references are not reachable in CI)."""
    z = OmegaConf.load(CONF / "zcore.yaml")
    assert (z.zcore_samples, z.zcore_dim, z.zcore_neighbours, z.zcore_exponent, z.zcore_rand_init) == (
        1_000_000,
        2,
        1000,
        4.0,
        True,
    )
    d2 = OmegaConf.load(CONF / "d2.yaml")
    assert (d2.d2_k, d2.d2_gamma, d2.d2_beta, d2.d2_reference_beta[90]) == (5, 0.1, "reference", 0.4)
    ccs = OmegaConf.load(CONF / "supervised_ccs.yaml")
    assert ccs.beta == "reference" and ccs.reference_beta[90] == 0.3 and ccs.reference_beta[80] == 0.2
    # below the rates the READMEs give, the cut falls by 0.1 per 10 % of pruning rate, to 0 (the YAMLs say so)
    for table, top in ((d2.d2_reference_beta, 0.4), (ccs.reference_beta, 0.3)):
        for rate, beta in table.items():
            assert beta == pytest.approx(max(0.0, top - 0.1 * (90 - rate) / 10)), (rate, beta)


def test_reference_betas_reach_the_selection_per_budget(compose_cfg):
    from elfs.config import to_typed

    s = to_typed(compose_cfg(["selection=supervised_ccs", "selection.budget=[0.1,0.2,0.5]"], sub="a")).selection
    d2 = to_typed(compose_cfg(["selection=d2", "selection.budget=[0.1,0.3]"], sub="b")).selection
    assert [s.beta_at(b) for b in (0.1, 0.2, 0.5)] == [0.3, 0.2, 0.0] and not s.searched
    assert [d2.d2_beta_at(b) for b in (0.1, 0.3)] == [0.4, 0.2]
    searched = to_typed(compose_cfg(["selection=supervised_ccs", "selection.beta=auto"], sub="c")).selection
    assert searched.searched and searched.beta_at(0.1) is None


def test_a_rate_the_reference_table_lacks_is_refused_naming_it(compose_cfg):
    import pytest as _pytest

    from elfs.config import ConfigError, to_typed

    cfg = to_typed(compose_cfg(["selection=supervised_ccs", "selection.budget=0.15"], sub="d"))
    with _pytest.raises(ConfigError, match=r"no selection.reference_beta for pruning rate 85 %"):
        cfg.selection.validate()
    ok = to_typed(
        compose_cfg(["selection=supervised_ccs", "selection.budget=0.15", "+selection.reference_beta.85=0.25"], sub="e")
    )
    ok.selection.validate()
    assert ok.selection.beta_at(0.15) == 0.25
