"""Turn a pipeline's results dict into results.json, a printed table and PNG plots in the run folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from elfs.tables.paper import paper_reference, paper_source


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _aligned(rows: list[list[str]]) -> list[str]:
    """Rows of cells as right-aligned text columns, each two characters wider than its widest cell."""
    widths = [max(len(c) for c in col) + 2 for col in zip(*rows, strict=True)]
    return ["".join(cell.rjust(w) for cell, w in zip(cells, widths, strict=True)) for cells in rows]


def _beta_cell(row: dict[str, Any]) -> str:
    """The chosen beta, '*' when it sits at the edge of the grid, '-' for methods without one."""
    beta = row.get("beta")
    return "-" if beta is None else f"{beta:g}{'*' if row.get('beta_at_edge') else ''}"


def _timing_line(results: dict[str, Any]) -> str:
    stages = "  ".join(f"{k} {v:.1f}" for k, v in results["stage_seconds"].items())
    return f"wall time per stage (s): {stages}  | total {results['total_seconds']:.1f}"


def format_selection(results: dict[str, Any]) -> str:
    """The summary of a run without labels: what was kept per budget and where the lists are."""
    clusters = "" if results["selection"]["method"] == "zcore" else f", {results['num_clusters']} clusters"
    lines = [
        f"elfs on {results['dataset']} (N={results['n_train']} readable images, no labels{clusters}), "
        f"backbone {results['backbone']}"
        f"{'' if results['pretrained'] else ' (random weights)'}"
    ]
    body = [["budget", "prune", "beta", "kept", "images to annotate"]]
    for row in results["results"]:
        body.append(
            [
                f"{row['budget']:g}",
                f"{row['pruning_rate']:.0%}",
                _beta_cell(row),
                str(row["n_kept"]),
                f"annotate_{row['budget']:g}.txt",
            ]
        )
    lines += _aligned(body)
    sel = results["selection"]
    how = _how_scored(sel)
    lines.append(
        f"{sel['method']} {how}; one row per image in selection.csv; {results['n_skipped']} file(s) skipped "
        "(skipped.csv)"
    )
    lines.append(_timing_line(results))
    return "\n".join(lines)


def _how_scored(sel: dict) -> str:
    """What the selection ranked by, in words."""
    from elfs.select import METHOD_INPUTS

    need = METHOD_INPUTS.get(str(sel.get("method")))
    if need == "zcore":
        return "on ZCore's coverage and redundancy scores of the embeddings (no clustering, no training)"
    if need in ("prototypes", "graph"):
        return "on each image's distance to its k-means centroid of the embeddings"
    if need == "none":
        return "at random"
    return f"on {sel['score']} from the proxy's training dynamics on pseudo-labels"


def _split_labels(sel: dict) -> str:
    return {"mixed": "mixed-label", "ground_truth": "ground-truth"}.get(str(sel.get("labels")), "pseudo-label")


def format_table(results: dict[str, Any]) -> str:
    """A plain-text summary: pseudo-label quality, chosen beta and accuracy per budget and method."""
    if not results.get("labelled", True):
        return format_selection(results)
    lines = _head_lines(results)
    methods = list(dict.fromkeys(m for r in results["results"] for m in r["methods"]))
    sel = results["selection"]
    score_of = {m: a.get("score") for r in results["results"] for m, a in r["methods"].items()}
    label = {
        m: f"{m}({score_of[m]})" if score_of.get(m) in ("aum", "aum_prob_sum", "forgetting", "el2n") else m
        for m in methods
    }
    label[sel.get("arm", sel["method"])] = label.get(sel.get("arm", sel["method"]), sel["method"]) + "*"
    cols = ["budget", "prune", "beta"] + [label.get(m, m) for m in methods]
    seeds = len(results["evaluate"]["seeds"])
    body = []
    for row in results["results"]:
        cells = [
            f"{row['budget']:g}",
            f"{row['pruning_rate']:.0%}",
            _beta_cell(row),
        ]
        for m in methods:
            r = row["methods"].get(m)
            if r is None:
                cells.append("-")
                continue
            cells.append(f"{100 * r['acc_mean']:.1f}" + (f" ± {100 * r['acc_std']:.1f}" if seeds > 1 else ""))
        body.append(cells)
    paper = [paper_reference(results["dataset"], row["pruning_rate"]) for row in results["results"]]
    if any(paper):  # the paper's figure values beside ours, where it has the cell
        cols += ["paper elfs", "paper random"]
        for cells, ref in zip(body, paper, strict=True):
            cells += [f"{ref[m]:.1f}" if m in ref else "-" for m in ("elfs", "random")]
    lines += _aligned([cols, *body])
    lines += _foot_lines(results, seeds, any(paper))
    return "\n".join(lines)


def _head_lines(results: dict[str, Any]) -> list[str]:
    """The run's data and encoder, and the pseudo-labels' quality against the ground truth (a diagnostic)."""
    lines = [
        f"elfs on {results['dataset']} (N={results['n_train']}, C={results['num_classes']}), "
        f"backbone {results['backbone']}{'' if results['pretrained'] else ' (random weights)'}"
    ]
    c = results["clustering"]
    if "pseudo_labels" in c:  # only when a method needed the clustering
        pl = c["pseudo_labels"]
        km = c.get("kmeans")
        lines.append(
            f"pseudo-labels vs ground truth (diagnostic): ACC {_pct(pl['acc'])}  NMI {_pct(pl['nmi'])}  "
            f"ARI {_pct(pl['ari'])}"
            + (f"   | k-means: ACC {_pct(km['acc'])}  NMI {_pct(km['nmi'])}  ARI {_pct(km['ari'])}" if km else "")
        )
    return lines


def _foot_lines(results: dict[str, Any], seeds: int, paper: bool) -> list[str]:
    """Full data, what the starred arm is, how the accuracy was measured, the paper's source and the timings."""
    lines = []
    sel = results["selection"]
    full = results.get("full_data")
    if full:
        lines.append(
            f"full data (all {results['n_train']} training images, uses labels): {100 * full['acc_mean']:.1f}"
            + (f" ± {100 * full['acc_std']:.1f}" if seeds > 1 else "")
            + ("" if full.get("best_mean") is None else f"; best of run {100 * full['best_mean']:.1f}")
        )
    if sel.get("labels") == "mixed":
        lines.append(
            f"* {sel.get('arm')}: a DIAGNOSTIC; it selects with ground truth partly replaced by the clustering's labels"
        )
    elif sel.get("uses_ground_truth"):
        lines.append(f"* {sel.get('arm')}: a supervised reference; it selects with the ground-truth labels")
    lines.append(
        f"test accuracy (%) after {results['evaluate']['steps']} steps of {results['evaluate']['model']}"
        + (f" ({results['evaluate']['precision']})" if results["evaluate"].get("precision") else "")
        + f", final checkpoint, {seeds} seed(s)"
        + (
            f"; beta chosen on a 90/10 {_split_labels(sel)} split"
            if any(r.get("beta_source") == "search" for r in results["results"])
            else ""
        )
        + (
            " (* = the largest beta of the grid: the validation curve still rising there)"
            if any(r.get("beta_at_edge") for r in results["results"])
            else ""
        )
    )
    if paper:
        lines.append(
            f"paper columns: {paper_source()}; the paper reports best-of-run accuracy, we report the final one"
        )
    lines.append(_timing_line(results))
    return lines


def _finish(fig, ax, xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    """Label, save and close one figure."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_results(results: dict[str, Any], run_dir: Path) -> list[Path]:
    """accuracy_vs_pruning.png (every method) and beta_curves.png (the label-free beta search), if any."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    rows = sorted(results["results"], key=lambda r: r["pruning_rate"])
    arms = list(dict.fromkeys(m for r in rows for m in r["methods"]))
    if arms:  # a run without labels evaluates nothing: no accuracy plot
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for m in arms:
            pts = [r for r in rows if m in r["methods"]]
            xs = [100 * r["pruning_rate"] for r in pts]
            ys = [100 * r["methods"][m]["acc_mean"] for r in pts]
            es = [100 * r["methods"][m]["acc_std"] for r in pts]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=m)
        if results.get("full_data"):
            ax.axhline(100 * results["full_data"]["acc_mean"], color="k", linestyle="--", label="full data")
        out.append(
            _finish(
                fig,
                ax,
                "pruning rate (%)",
                "test accuracy (%)",
                f"{results['dataset']} / {results['backbone']}",
                run_dir / "accuracy_vs_pruning.png",
            )
        )

    curves = [r for r in rows if r.get("beta_curve")]
    if curves:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for r in curves:
            ax.plot(
                r["beta_curve"]["betas"],
                [100 * v for v in r["beta_curve"]["val_acc"]],
                marker="o",
                label=f"budget {r['budget']:g} (chosen β={r['beta']:g})",
            )
        out.append(
            _finish(
                fig,
                ax,
                "β (fraction of hardest examples dropped)",
                "pseudo-label validation accuracy (%)",
                "label-free β search (90/10 split)",
                run_dir / "beta_curves.png",
            )
        )
    return out


def write_report(results: dict[str, Any], run_dir: Path) -> tuple[str, list[Path]]:
    """Write results.json (atomically) and the plots; return the table text and the files written."""
    run_dir = Path(run_dir)
    tmp = run_dir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=float))
    os.replace(tmp, run_dir / "results.json")
    plots = plot_results(results, run_dir)
    table = format_table(results)
    (run_dir / "results.txt").write_text(table + "\n")
    return table, [run_dir / "results.json", run_dir / "results.txt", *plots]
