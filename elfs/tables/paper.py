"""The paper's reported numbers (paper_results.yaml, package data beside this module), looked up for a dataset and
pruning rate."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

PAPER_RESULTS = Path(__file__).resolve().with_name("paper_results.yaml")


@lru_cache(maxsize=1)
def _load(path: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    p = Path(path)
    return OmegaConf.to_container(OmegaConf.load(p), resolve=True) if p.is_file() else {}


def _block(dataset: str, path: Path) -> dict[str, Any]:
    """The paper's entry for a run's dataset: by its key, or by one of its ``names`` (case-insensitive), which is
    how an ImageNet run names its data (the folder it reads, e.g. imagenet or ILSVRC2012); {} when none."""
    datasets = _load(str(path)).get("datasets", {})
    if dataset in datasets:
        return datasets[dataset] or {}
    name = str(dataset).lower()
    return next((b for b in datasets.values() if name in [str(n).lower() for n in (b or {}).get("names", [])]), {})


def paper_reference(dataset: str, pruning_rate: float, path: Path = PAPER_RESULTS) -> dict[str, float]:
    """{method: accuracy %} reported for this dataset at this pruning rate; {} when the paper has no such cell."""
    block = _block(dataset, path)
    if not block:
        return {}
    rates = [round(float(r), 6) for r in block["pruning_rates"]]
    key = round(float(pruning_rate), 6)
    if key not in rates:
        return {}
    i = rates.index(key)
    return {m: float(v[i]) for m, v in block["methods"].items() if v[i] is not None}


def paper_encoder(path: Path = PAPER_RESULTS) -> str | None:
    """The encoder the paper's numbers were made with, or None where the source does not state it."""
    return _load(str(path)).get("encoder")


def paper_source(path: Path = PAPER_RESULTS) -> str:
    return str(_load(str(path)).get("source", ""))


def paper_full_data(dataset: str, path: Path = PAPER_RESULTS) -> float | None:
    """The paper's full-data accuracy (%) for this dataset, or None."""
    value = _block(dataset, path).get("full_data")
    return None if value is None else float(value)
