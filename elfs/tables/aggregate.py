"""Aggregate run folders (a -m sweep, or any set of them) into one table that cannot mix arms.

Every evaluation in every results.json becomes one record keyed by everything that decides it: dataset, budget,
the arm (method; whose labels scored it, so the supervised reference never merges with a label-free method), the
score, the clustering, the encoder, beta (fixed value, or "auto" for the search), the evaluation protocol, and
every other setting upstream of that arm's coreset. An evaluation that several jobs share (random beside each
encoder, the full-data reference in every job) has one cache key and is counted once. Output, into the folder:
summary.csv / .md / .tex / .txt (mean ± std and n, final-checkpoint and best-of-run accuracy, the paper's numbers
beside the best-of-run column, which is the metric the paper reports) and summary.png (accuracy against pruning
rate per arm, the paper's points, a full-data line).

A job that failed (its folder holds failed.json instead of results.json) is listed in a final "Failed jobs"
section of summary.md / summary.txt; the other jobs are aggregated as usual.

Runs automatically at the end of `python -m elfs.train -m ...` (a Hydra callback, which also logs the table and
plot to one W&B run of the sweep's group, job_type "summary"), or by hand:
`python -m elfs.aggregate DIR [DIR ...] [--out DIR]`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback

from elfs.tables.paper import paper_encoder, paper_full_data, paper_reference, paper_source

#: the columns every summary row has (beside n and the accuracies); the arm identity
KEY_COLUMNS = ("dataset", "budget", "arm", "score", "labels", "cluster", "backbone", "beta")
#: our arm -> the paper's row of the same method (paper_results.yaml); ccs on pseudo-labels has no paper row
PAPER_ROW = {
    "double_end": "elfs",
    "random": "random",
    "supervised_ccs": "supervised_ccs",
    "d2": "d2",
    "prototypicality": "prototypicality",
}


def _frozen(settings: dict[str, Any]) -> tuple:
    return tuple(sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in settings.items()))


def _records_of(res: dict[str, Any], job: str) -> list[dict[str, Any]]:
    """One record per (arm, budget, evaluation seed) of one results.json."""
    out = []
    ev = res["evaluate"]
    entries = [(r["budget"], arm, m) for r in res["results"] for arm, m in r["methods"].items()]
    if res.get("full_data"):
        entries.append((1.0, "full", res["full_data"]))
    for budget, arm, m in entries:
        beta_spec: Any = None
        if m.get("beta") is not None:  # searched (auto) or fixed
            searched = (
                m.get("method") in ("double_end", "ccs") and (m.get("settings", {}).get("selection.beta")) == "auto"
            )
            beta_spec = "auto" if searched else m["beta"]
        keys = m.get("eval_keys") or [None] * len(m["final_acc"])
        bests = m.get("best_acc") or m.get("best_acc_secondary") or [None] * len(m["final_acc"])
        for seed, acc, best, key in zip(m.get("seeds", ev["seeds"]), m["final_acc"], bests, keys, strict=True):
            out.append(
                {
                    "job": job,
                    "dataset": res["dataset"],
                    "budget": float(budget),
                    "arm": arm,
                    "score": m.get("score"),
                    "labels": m.get("labels"),
                    "uses_ground_truth": bool(m.get("uses_ground_truth", False)),
                    "cluster": m.get("cluster"),
                    "backbone": m.get("backbone"),
                    "beta": beta_spec,
                    "beta_used": m.get("beta"),
                    "model": ev["model"],
                    "steps": ev["steps"],
                    "settings": m.get("settings", {}),
                    "seed": seed,
                    "eval_key": key,
                    "acc": acc,
                    "best": best,
                    "labels_accuracy": (res.get("clustering") or {}).get("mixed_labels", {}).get("accuracy"),
                }
            )
    return out


def collect(dirs: list[Path] | Path) -> tuple[list[dict[str, Any]], int]:
    """Every evaluation below ``dirs``, each counted once (by its cache key); also how many duplicates were
    dropped (the same training reached from several jobs)."""
    dirs = [Path(dirs)] if isinstance(dirs, (str, Path)) else [Path(d) for d in dirs]
    seen: set[str] = set()
    rows, dropped = [], 0
    paths = sorted({p.resolve() for d in dirs for p in d.glob("**/results.json")})
    for path in paths:
        res = json.loads(path.read_text())
        if not res.get("labelled", True):
            continue
        for r in _records_of(res, str(path.parent)):
            if r["eval_key"] is not None:
                if r["eval_key"] in seen:
                    dropped += 1
                    continue
                seen.add(r["eval_key"])
            rows.append(r)
    return rows, dropped


def failed_jobs(dirs: list[Path] | Path) -> list[dict[str, Any]]:
    """Every job folder below ``dirs`` holding a failed.json: {"job": folder, "overrides", "error", "type"}."""
    dirs = [Path(dirs)] if isinstance(dirs, (str, Path)) else [Path(d) for d in dirs]
    out = []
    for path in sorted({p.resolve() for d in dirs for p in d.glob("**/failed.json")}):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            record = {"error": f"unreadable failed.json: {e}", "type": type(e).__name__}
        out.append(
            {
                "job": str(path.parent),
                "overrides": record.get("overrides", []),
                "error": record.get("error"),
                "type": record.get("type"),
                "user_error": bool(record.get("user_error")),
            }
        )
    return out


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    a = np.asarray(values, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std (ddof=1) and n per arm identity; columns for the settings that differ between rows of an arm."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        key = tuple(r[c] for c in KEY_COLUMNS) + (r["model"], r["steps"], _frozen(r["settings"]))
        groups[key].append(r)
    # settings that take more than one value among the groups of one arm are what the sweep varied
    by_arm: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rs in groups.values():
        by_arm[rs[0]["arm"]].append(rs[0]["settings"])
    varied: dict[str, list[str]] = {}
    for arm, settings in by_arm.items():
        keys = sorted({k for s in settings for k in s})
        varied[arm] = [
            k
            for k in keys
            if len({json.dumps(s.get(k), default=str) for s in settings}) > 1
            and k not in ("backbone.name", "cluster.method", "selection.score", "selection.beta", "selection.labels")
        ]
    out = []
    for rs in groups.values():
        r0 = rs[0]
        acc_mean, acc_std = _mean_std([r["acc"] for r in rs])
        bests = [r["best"] for r in rs if r["best"] is not None]
        best_mean, best_std = _mean_std(bests) if len(bests) == len(rs) else (None, None)
        chosen = sorted({r["beta_used"] for r in rs if r["beta_used"] is not None})
        pruning = round(1.0 - r0["budget"], 6)
        paper_key = PAPER_ROW.get(r0["arm"])
        if r0["arm"] == "full":
            paper = paper_full_data(r0["dataset"])
        else:
            paper = paper_reference(r0["dataset"], pruning).get(paper_key) if paper_key else None
        out.append(
            {
                **{c: r0[c] for c in KEY_COLUMNS},
                "pruning_rate": pruning,
                "uses_ground_truth": r0["uses_ground_truth"],
                "beta_chosen": ",".join(f"{b:g}" for b in chosen) if chosen else None,
                "varied": ",".join(f"{k}={r0['settings'].get(k)}" for k in varied.get(r0["arm"], [])) or None,
                "model": r0["model"],
                "steps": r0["steps"],
                "n": len(rs),
                "acc_mean": acc_mean,
                "acc_std": acc_std,
                "best_mean": best_mean,
                "best_std": best_std,
                "paper": paper,
                "delta_vs_paper": None if paper is None or best_mean is None else round(100 * best_mean - paper, 2),
            }
        )
    _paper_once(out)
    out.sort(
        key=lambda s: (
            s["dataset"],
            s["pruning_rate"],
            s["uses_ground_truth"] or s["arm"] == "full",  # the label-using references last
            s["arm"],
            str(s["backbone"]),
            str(s["cluster"]),
            str(s["score"]),
            str(s["beta"]),
            str(s["varied"]),
        )
    )
    return out


def diagnostic_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The mixed-labels diagnostic: per regime (evaluation model), budget and replaced fraction, the labels'
    accuracy and the diagnostic arm's final accuracy minus random's (means over seeds; std of the arm's)."""
    rand: dict[tuple, list[float]] = defaultdict(list)
    diag: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["arm"] == "random":
            rand[(r["dataset"], r["model"], r["budget"])].append(r["acc"])
        elif str(r["arm"]).startswith("diagnostic_") and r["labels_accuracy"] is not None:
            replaced = r["settings"].get("selection.mixed_replaced")
            diag[(r["dataset"], r["model"], r["budget"], replaced, r["arm"])].append(r)
    out = []
    for (dataset, model, budget, replaced, arm), rs in sorted(diag.items(), key=lambda kv: str(kv[0])):
        if (dataset, model, budget) not in rand:
            continue
        mean, std = _mean_std([r["acc"] for r in rs])
        base, base_std = _mean_std(rand[(dataset, model, budget)])
        out.append(
            {
                "dataset": dataset,
                "regime": model,
                "arm": arm,
                "budget": budget,
                "replaced": replaced,
                "labels_accuracy": float(np.mean([r["labels_accuracy"] for r in rs])),
                "n": len(rs),
                "acc_mean": mean,
                "acc_std": std,
                "random_mean": base,
                "random_std": base_std,
                "diff": mean - base,
            }
        )
    return out


def crossing(points: list[tuple[float, float]]) -> float | None:
    """The labels' accuracy where ELFS − random crosses 0 going up (linear between the measured points), or None."""
    pts = sorted(points)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if y0 < 0 <= y1:
            return x0 + (x1 - x0) * (-y0) / (y1 - y0)
    return None


def write_diagnostic(diag: list[dict[str, Any]], out: Path) -> None:
    """when_elfs_helps.md (the table and the crossing per regime and budget) and .png (the curves)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "DIAGNOSTIC (reads ground truth): the proxy and the beta search trained on labels of a controlled accuracy.",
        "",
        "| regime | budget | replaced | labels acc (%) | arm (%) | random (%) | arm − random |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {d['regime']} | {d['budget']:g} | {d['replaced']} | {100 * d['labels_accuracy']:.1f} | "
        f"{_pm(d['acc_mean'], d['acc_std'])} | {_pm(d['random_mean'], d['random_std'])} | {100 * d['diff']:+.2f} |"
        for d in diag
    ]
    regimes = sorted({d["regime"] for d in diag})
    fig, axes = plt.subplots(1, len(regimes), figsize=(6 * len(regimes), 4.5), squeeze=False)
    lines += ["", "Crossing (labels' accuracy above which the arm beats random):", ""]
    for ax, regime in zip(axes[0], regimes, strict=True):
        for i, budget in enumerate(sorted({d["budget"] for d in diag if d["regime"] == regime})):
            pts = [d for d in diag if d["regime"] == regime and d["budget"] == budget]
            pts.sort(key=lambda d: d["labels_accuracy"])
            xs, ys = [100 * d["labels_accuracy"] for d in pts], [100 * d["diff"] for d in pts]
            ax.errorbar(xs, ys, yerr=[100 * d["acc_std"] for d in pts], marker="o", capsize=3, color=f"C{i}",
                        label=f"budget {budget:g}")  # fmt: skip
            cross = crossing(list(zip(xs, ys, strict=True)))
            where = "none in the measured range" if cross is None else f"{cross:.1f} %"
            lines.append(f"- {regime}, budget {budget:g}: {where}")
        ax.axhline(0, color="k", linewidth=1)
        ax.set_xlabel("pseudo-label accuracy (%)")
        ax.set_ylabel("ELFS − random, test accuracy (points)")
        ax.set_title(f"{regime} (diagnostic: reads ground truth)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "when_elfs_helps.png", dpi=120)
    plt.close(fig)
    (out / "when_elfs_helps.md").write_text("\n".join(lines) + "\n")


def _paper_once(summary: list[dict[str, Any]]) -> None:
    """A paper number belongs beside the rows of its own encoder; where the source states none, beside one row of
    each cell only (the first encoder in name order), marked ``paper_encoder_unstated``, the others cleared."""
    stated = paper_encoder()
    seen: set[tuple] = set()
    for s in sorted(summary, key=lambda s: (str(s["backbone"]), str(s["varied"]))):
        s["paper_encoder_unstated"] = False
        if s["paper"] is None or s["arm"] == "full":
            continue
        if stated is not None:
            if s["backbone"] not in (None, stated):
                s["paper"] = s["delta_vs_paper"] = None
            continue
        cell = (s["dataset"], s["pruning_rate"], s["arm"])
        if cell in seen:
            s["paper"] = s["delta_vs_paper"] = None
        else:
            seen.add(cell)
            s["paper_encoder_unstated"] = True


# ------------------------------------------------------------------------------------------------ formatting


def _pm(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else f"{100 * mean:.2f} ± {100 * std:.2f}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _arm_label(s: dict[str, Any]) -> str:
    """The arm as a reader says it: a ground-truth arm says so."""
    return f"{s['arm']} (uses labels)" if s["uses_ground_truth"] or s["arm"] == "full" else s["arm"]


def _unstated(s: dict[str, Any]) -> str:
    return " (encoder unstated)" if s.get("paper_encoder_unstated") else ""


def _columns(summary: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(header, cell function) of the columns worth showing: constant identity columns are left out."""
    cols: list[tuple[str, Any]] = []
    for c in ("dataset", "backbone", "cluster", "score", "labels"):
        if len({str(s[c]) for s in summary}) > 1:
            cols.append((c, lambda s, c=c: _cell(s[c])))
    cols += [
        ("budget", lambda s: _cell(s["budget"])),
        ("prune", lambda s: f"{100 * s['pruning_rate']:.0f}%"),
        ("arm", _arm_label),
        ("β", lambda s: _cell(s["beta"]) + (f" ({s['beta_chosen']})" if s["beta"] == "auto" else "")),
    ]
    if any(s["varied"] for s in summary):
        cols.append(("varied", lambda s: _cell(s["varied"])))
    cols += [
        ("n", lambda s: str(s["n"])),
        ("final acc (%)", lambda s: _pm(s["acc_mean"], s["acc_std"])),
        ("best-of-run (%)", lambda s: _pm(s["best_mean"], s["best_std"])),
        ("paper (%)", lambda s: "-" if s["paper"] is None else f"{s['paper']:.1f}" + _unstated(s)),
        ("Δ best − paper", lambda s: "-" if s["delta_vs_paper"] is None else f"{s['delta_vs_paper']:+.1f}"),
    ]
    return cols


def format_summary(summary: list[dict[str, Any]]) -> str:
    """Plain text, right-aligned columns (what the sweep prints)."""
    cols = _columns(summary)
    cells = [[h for h, _ in cols]] + [[f(s) for _, f in cols] for s in summary]
    widths = [max(len(r[i]) for r in cells) + 2 for i in range(len(cols))]
    return "\n".join("".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells)


def format_markdown(summary: list[dict[str, Any]]) -> str:
    cols = _columns(summary)
    lines = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f(s) for _, f in cols) + " |" for s in summary]
    return "\n".join(lines)


def format_latex(summary: list[dict[str, Any]]) -> str:
    """A booktabs tabular; ± and β as LaTeX math."""
    cols = _columns(summary)

    def tex(x: str) -> str:
        x = x.replace("\\", "\\textbackslash{}")
        for ch in "&%$#_{}":
            x = x.replace(ch, "\\" + ch)
        return x.replace("±", "$\\pm$").replace("β", "$\\beta$").replace("Δ", "$\\Delta$").replace("−", "-")

    lines = [
        "\\begin{tabular}{" + "l" * len(cols) + "}",
        "\\toprule",
        " & ".join(tex(h) for h, _ in cols) + " \\\\",
        "\\midrule",
    ]
    lines += [" & ".join(tex(f(s)) for _, f in cols) + " \\\\" for s in summary]
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines)


def _failed_entries(failed: list[dict[str, Any]], out: Path) -> list[tuple[str, str]]:
    """(job folder, error) per failed job; the folder relative to ``out`` where it lies below it."""
    entries = []
    for f in failed:
        job, root = Path(f["job"]), Path(out).resolve()
        error = f["error"] or "(no message)"
        if f["type"] and not error.startswith(f"{f['type']}:"):
            error += f" ({f['type']})"
        entries.append((str(job.relative_to(root) if job.is_relative_to(root) else job), error))
    return entries


def format_failed(failed: list[dict[str, Any]], out: Path, *, markdown: bool = False) -> str:
    """The final "Failed jobs" section of summary.md (markdown) or summary.txt; empty when none failed."""
    if not failed:
        return ""
    entries = _failed_entries(failed, out)
    if markdown:
        return f"\n## Failed jobs ({len(entries)})\n\n" + "".join(f"- `{job}`: {err}\n" for job, err in entries)
    return f"\nFailed jobs ({len(entries)}):\n" + "".join(f"  {job}: {err}\n" for job, err in entries)


def plot_summary(summary: list[dict[str, Any]], path: Path) -> Path | None:
    """Accuracy against pruning rate per arm (best-of-run where every point has it, else final), one panel per
    dataset, with the paper's points (hollow, same colour) and the full-data line (ours dashed, paper dotted)."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({s["dataset"] for s in summary})
    if not datasets:
        return None
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        rows = [s for s in summary if s["dataset"] == dataset]
        use_best = all(s["best_mean"] is not None for s in rows)
        metric = "best_mean" if use_best else "acc_mean"
        spread = "best_std" if use_best else "acc_std"
        lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for s in rows:
            if s["arm"] != "full":
                name = " ".join(x for x in (_arm_label(s), s["backbone"] or "", s["varied"] or "") if x)
                if s["beta"] not in (None, "auto") and s["arm"] in ("double_end", "ccs"):
                    name += f" β={s['beta']:g}"
                lines[name].append(s)
        for i, (name, pts) in enumerate(sorted(lines.items())):
            pts.sort(key=lambda s: s["pruning_rate"])
            colour = f"C{i % 10}"
            ax.errorbar(
                [100 * s["pruning_rate"] for s in pts],
                [100 * s[metric] for s in pts],
                yerr=[100 * s[spread] for s in pts],
                marker="o",
                capsize=3,
                color=colour,
                label=name,
            )
            # the summary's own paper cells: an unstated encoder's number stands beside one line only
            paper_pts = [(100 * s["pruning_rate"], s["paper"]) for s in pts if s["paper"] is not None]
            if paper_pts:
                ax.scatter(*zip(*paper_pts, strict=True), marker="s", facecolors="none", edgecolors=colour)
        for s in rows:
            if s["arm"] == "full":
                ax.axhline(100 * s[metric], color="k", linestyle="--", linewidth=1, label="full data (ours)")
                break
        paper_full = paper_full_data(dataset)
        if paper_full is not None:
            ax.axhline(paper_full, color="k", linestyle=":", linewidth=1, label="full data (paper)")
        ax.set_xlabel("pruning rate (%)")
        ax.set_ylabel(f"test accuracy (%), {'best of run' if use_best else 'final checkpoint'}")
        ax.set_title(f"{dataset} (squares: paper)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def aggregate(dirs: list[Path] | Path, out: Path | None = None) -> list[dict[str, Any]]:
    """Write summary.{csv,md,tex,txt,png} into ``out`` (default: the first folder), with the failed jobs (each
    with a failed.json) as a final section of summary.md and summary.txt; return the summary rows."""
    dirs = [Path(dirs)] if isinstance(dirs, (str, Path)) else [Path(d) for d in dirs]
    out = Path(out) if out is not None else dirs[0]
    rows, dropped = collect(dirs)
    summary = summarise(rows)
    failed = failed_jobs(dirs)
    if not summary:
        if failed:  # every job failed: the summary is the list of failures
            _write_failed_only(failed, out)
        return summary
    out.mkdir(parents=True, exist_ok=True)
    fields = [k for k in summary[0]]
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(summary)
    note = (
        f"{len(rows)} evaluation(s) from {len({r['job'] for r in rows})} job(s); {dropped} shared evaluation(s) "
        f"counted once. Paper columns: {paper_source()}, best-of-run accuracy, compared with our best-of-run column."
    )
    diag = diagnostic_summary(rows)
    if diag:
        write_diagnostic(diag, out)
    md_failed, txt_failed = format_failed(failed, out, markdown=True), format_failed(failed, out)
    (out / "summary.md").write_text(format_markdown(summary) + "\n\n" + note + "\n" + md_failed)
    (out / "summary.tex").write_text(format_latex(summary) + "\n")
    (out / "summary.txt").write_text(format_summary(summary) + "\n" + note + "\n" + txt_failed)
    plot_summary(summary, out / "summary.png")
    return summary


def _write_failed_only(failed: list[dict[str, Any]], out: Path) -> None:
    """summary.md / summary.txt of a set of jobs that all failed: no table, the failures."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text("No job finished." + "\n" + format_failed(failed, out, markdown=True))
    (out / "summary.txt").write_text("No job finished." + "\n" + format_failed(failed, out))


class AggregateOnMultirunEnd(Callback):
    """Hydra callback: after a sweep, aggregate its jobs' results into the sweep folder, print the table, and log
    the table and plot to W&B (one more run of the sweep's group, job_type "summary") when the jobs use W&B."""

    last_sweep: Path | None = None  # read by elfs.train.cli: which jobs of the sweep failed (any launcher)

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        AggregateOnMultirunEnd.last_sweep = sweep
        summary = aggregate(sweep)
        if summary:
            print(f"\nsweep summary ({sweep / 'summary.md'})\n" + format_summary(summary), flush=True)
        try:
            log_summary_to_wandb(config, sweep, summary)
        except Exception as e:  # the jobs and the summary files are done: a W&B hiccup must not fail the sweep
            print(f"elfs: warning: the sweep summary was not logged to W&B: {e}", file=sys.stderr, flush=True)


def log_summary_to_wandb(config, sweep: Path, summary: list[dict[str, Any]]) -> None:
    """The sweep's summary as one W&B run (files under the sweep folder, as each job's under its own), in the
    jobs' project and group; nothing unless logger.name is wandb and WANDB_MODE is not disabled."""
    from dataclasses import replace

    from elfs.tracking import RunLoggers, sweep_group

    cfg = _logger_config(config)
    failed = failed_jobs(sweep)
    if cfg is None or cfg.name != "wandb" or cfg.mode == "disabled" or not (summary or failed):
        return
    cfg = replace(cfg, job_type="summary")
    group = sweep_group(config.get("name") or "elfs", sweep)
    run = RunLoggers(cfg, sweep, config={"sweep_dir": str(sweep)}, run_name="summary", group=group)
    try:
        run.log_sweep_summary(summary, sweep / "summary.png", failed)
    finally:
        run.finish()


def _logger_config(config):
    """The sweep's logger settings as a resolved LoggerConfig (None when the config has no logger group)."""
    from omegaconf import OmegaConf

    from elfs.config import LoggerConfig

    node = config.get("logger") if hasattr(config, "get") else None
    if node is None:
        return None
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(LoggerConfig), node))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m elfs.aggregate",
        description="Rebuild the summary tables and plot from any set of run folders (each holding results.json).",
    )
    p.add_argument("dirs", nargs="+", type=Path, help="folders searched recursively for results.json")
    p.add_argument("--out", type=Path, default=None, help="where summary.* go (default: the first folder)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        print(f"elfs: error: not a folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    summary = aggregate(args.dirs, args.out)
    failed = failed_jobs(args.dirs)
    if not summary:
        if failed:
            print(format_failed(failed, args.out or args.dirs[0]).strip(), file=sys.stderr)
        print(f"elfs: error: no labelled results.json below {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 2
    print(format_summary(summary) + format_failed(failed, args.out or args.dirs[0]).rstrip())
    print(f"written: {(args.out or args.dirs[0]) / 'summary.md'} (.csv, .tex, .txt, .png beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
