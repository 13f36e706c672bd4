"""Aggregate a multirun sweep: every job's results.json -> one table of mean ± std per (budget, beta, method).

Runs automatically at the end of `python -m elfs.train -m ...` (a Hydra callback), or by hand:
`python -m elfs.aggregate outputs/multiruns/<date>/<time>`.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per (job, budget, method, seed) from every results.json below sweep_dir."""
    rows = []
    for path in sorted(Path(sweep_dir).glob("**/results.json")):
        res = json.loads(path.read_text())
        for r in res["results"]:
            for method, m in r["methods"].items():
                beta = r.get("beta") if method in ("double_end", "ccs") else None
                for seed, acc in zip(res["evaluate"]["seeds"], m["final_acc"], strict=True):
                    rows.append(
                        {
                            "job": str(path.parent.relative_to(sweep_dir)),
                            "dataset": res["dataset"],
                            "backbone": res["backbone"],
                            "budget": r["budget"],
                            "method": method,
                            "beta": beta,
                            "beta_source": r.get("beta_source"),
                            "seed": seed,
                            "acc": acc,
                        }
                    )
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std (ddof=1) over seeds and repeated jobs, grouped by dataset, backbone, budget, method and beta."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        key = (r["dataset"], r["backbone"], r["budget"], r["method"], r["beta"])
        groups[key].append(r["acc"])
    out = []
    for (dataset, backbone, budget, method, beta), accs in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[0][2], kv[0][3], kv[0][4] or -1)
    ):
        a = np.asarray(accs, dtype=float)
        out.append(
            {
                "dataset": dataset,
                "backbone": backbone,
                "budget": budget,
                "pruning_rate": round(1 - budget, 6),
                "method": method,
                "beta": beta,
                "n": len(a),
                "acc_mean": float(a.mean()),
                "acc_std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            }
        )
    return out


def format_summary(summary: list[dict[str, Any]]) -> str:
    lines = [f"{'dataset':>10} {'budget':>7} {'method':>12} {'beta':>6} {'n':>3}  accuracy (%)"]
    for s in summary:
        beta = "-" if s["beta"] is None else f"{s['beta']:g}"
        lines.append(
            f"{s['dataset']:>10} {s['budget']:>7g} {s['method']:>12} {beta:>6} {s['n']:>3}  "
            f"{100 * s['acc_mean']:.2f} ± {100 * s['acc_std']:.2f}"
        )
    return "\n".join(lines)


def aggregate(sweep_dir: Path) -> list[dict[str, Any]]:
    """Write summary.csv and summary.txt into sweep_dir and return the summary rows."""
    sweep_dir = Path(sweep_dir)
    summary = summarise(collect(sweep_dir))
    if not summary:
        return summary
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    (sweep_dir / "summary.txt").write_text(format_summary(summary) + "\n")
    return summary


class AggregateOnMultirunEnd(Callback):
    """Hydra callback: after a sweep, aggregate its jobs' results into the sweep folder and print the table."""

    def on_multirun_end(self, config, **kwargs) -> None:
        summary = aggregate(Path(config.hydra.sweep.dir))
        if summary:
            print(
                "\nsweep summary ("
                + str(Path(config.hydra.sweep.dir) / "summary.csv")
                + ")\n"
                + format_summary(summary),
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python -m elfs.aggregate SWEEP_DIR (a folder holding jobs' results.json)", file=sys.stderr)
        return 2
    summary = aggregate(Path(argv[0]))
    if not summary:
        print(f"elfs: error: no results.json below {argv[0]}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
