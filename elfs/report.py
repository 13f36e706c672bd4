"""Turn a pipeline's results dict into results.json, a printed table and PNG plots in the run folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from elfs.paper import paper_reference, paper_source


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
    lines = [
        f"elfs on {results['dataset']} (N={results['n_train']} readable images, no labels, "
        f"{results['num_clusters']} clusters), backbone {results['backbone']}"
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
    lines.append(
        f"{sel['method']} on {sel['score']} from the proxy's training dynamics on pseudo-labels; "
        f"one row per image in selection.csv; {results['n_skipped']} file(s) skipped (skipped.csv)"
    )
    lines.append(_timing_line(results))
    return "\n".join(lines)


def format_table(results: dict[str, Any]) -> str:
    """A plain-text summary: pseudo-label quality, chosen beta and accuracy per budget and method."""
    if not results.get("labelled", True):
        return format_selection(results)
    lines = []
    c = results["clustering"]
    head = (
        f"elfs on {results['dataset']} (N={results['n_train']}, C={results['num_classes']}), "
        f"backbone {results['backbone']}{'' if results['pretrained'] else ' (random weights)'}"
    )
    lines.append(head)
    pl = c["pseudo_labels"]
    km = c.get("kmeans")
    lines.append(
        f"pseudo-labels vs ground truth (diagnostic): ACC {_pct(pl['acc'])}  NMI {_pct(pl['nmi'])}  "
        f"ARI {_pct(pl['ari'])}"
        + (f"   | k-means: ACC {_pct(km['acc'])}  NMI {_pct(km['nmi'])}  ARI {_pct(km['ari'])}" if km else "")
    )
    methods = list(results["results"][0]["methods"]) if results["results"] else []
    sel = results["selection"]
    label = {sel["method"]: f"{sel['method']}({sel['score']})"}
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
            r = row["methods"][m]
            cells.append(f"{100 * r['acc_mean']:.1f}" + (f" ± {100 * r['acc_std']:.1f}" if seeds > 1 else ""))
        body.append(cells)
    paper = [paper_reference(results["dataset"], row["pruning_rate"]) for row in results["results"]]
    if any(paper):  # the paper's figure values beside ours, where it has the cell
        cols += ["paper elfs", "paper random"]
        for cells, ref in zip(body, paper, strict=True):
            cells += [f"{ref[m]:.1f}" if m in ref else "-" for m in ("elfs", "random")]
    lines += _aligned([cols, *body])
    lines.append(
        f"test accuracy (%) after {results['evaluate']['steps']} steps of {results['evaluate']['model']}, "
        f"final checkpoint, {seeds} seed(s); beta chosen on a 90/10 pseudo-label split"
        + (
            " (* = at the edge of the grid: extend beta_grid)"
            if any(r.get("beta_at_edge") for r in results["results"])
            else ""
        )
    )
    if any(paper):
        lines.append(
            f"paper columns: {paper_source()}; the paper reports best-of-run accuracy, we report the final one"
        )
    lines.append(_timing_line(results))
    return "\n".join(lines)


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
    if rows and rows[0]["methods"]:  # a run without labels evaluates nothing: no accuracy plot
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for m in rows[0]["methods"]:
            xs = [100 * r["pruning_rate"] for r in rows]
            ys = [100 * r["methods"][m]["acc_mean"] for r in rows]
            es = [100 * r["methods"][m]["acc_std"] for r in rows]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=m)
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
