"""The million-image folder on a laptop-class CPU: write N synthetic JPEG photos, run `elfs-select` on them as a user
would, print per-stage throughput and peak memory, and extrapolate each stage to a larger folder.

    python experiments/bench_folder.py --n 100000 --sizes 20000 100000 --target 1000000

1. Writes N JPEGs of about 500 x 375 (landscape and portrait, 4 sizes; 20 kinds of procedural scenes, so the
   folder has structure to cluster) into --dir, in worker processes; a folder that already holds them is reused.
   Every --copy-every-th photo (default 20: 5 %) is a near-copy of the one before it (elfs.data.planted: JPEG
   re-encoded, resized, cropped a few percent, brightness shifted, in turn), and the run's duplicates.csv is
   scored against them (recall: planted pairs found in one group; precision: listed rows that are planted pairs;
   proposable twice: planted pairs neither of which duplicates.csv lists as a copy).
2. For each size in --sizes (the first n images, given to `elfs-select` as a list file), runs
   `elfs-select LIST --budget 0.1 0.3 --clusters 20 --out OUT` in a fresh cache and working folder, and samples
   the resident memory of its whole process tree (DataLoader workers included: PSS and RSS) every 0.25 s.
3. Prints per stage: seconds, images/s, peak memory while it ran, and extrapolates each stage to --target from the
   largest run by the work its algorithm does at each size with elfs-select's own settings (read from the configs),
   beside the ratio measured between the two largest runs:
     data, embed, select: N (listing; decode + encoder per image; ranking);
     knn: N^2 exact up to knn.approx_above, N^1.5 above it (IVF: 4 sqrt(N) cells, nprobe of them searched);
     cluster: TEMI steps, 60 epochs of N / batch until cluster.max_steps caps them (then constant);
     dynamics: images seen, epochs x N, the epochs shrinking once dynamics.max_steps binds (DynamicsConfig);
     beta_search: constant (a fixed number of steps per candidate; the held-out pass is small);
     other: the line through the two largest runs (a fixed start-up plus writing the answer per image: CSV, lists,
     exports, embeddings.npy, report; thumbnails are a fixed number).
   Peak memory: the line through the two largest runs, per stage, as the process tree's PSS (each page shared by the
   tree's processes counted once; the RSS summed over them, which counts the forked workers' shared pages again, is
   printed beside it). Then whether the goals at --target (8 GiB peak,
   3 hours on 2 cores) are met, and the near-duplicates' recall and precision at each size.
Writes OUT/bench_folder.json; `--report OUT/bench_folder.json` prints its table again (no run). Never run by the test
suite (it takes most of an hour at 100,000 images here).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

#: (width, height) of the synthetic photos: about 500 x 375, both orientations
SIZES = ((500, 375), (375, 500), (480, 360), (512, 384))
KINDS = 20
#: what a million photos should take on 2 CPU cores: peak resident memory of the process tree, and hours
GOAL_PEAK_GIB, GOAL_HOURS = 8.0, 3.0


def stage_work() -> dict[str, object]:
    """Each stage's work as a function of N with elfs-select's settings (experiment/folder_select); None = the
    line through the two largest runs."""
    from omegaconf import OmegaConf

    from elfs.config import ClusterConfig, DynamicsConfig, KnnConfig

    conf = Path(__file__).resolve().parents[1] / "conf"

    def load(cls, group):
        return cls(**OmegaConf.to_container(OmegaConf.load(conf / group)))

    knn, temi = load(KnnConfig, "knn/auto.yaml"), load(ClusterConfig, "cluster/temi_cpu.yaml")
    proxy = load(DynamicsConfig, "dynamics/mlp.yaml")
    return {
        "data": lambda n: n,
        "embed": lambda n: n,
        "knn": lambda n: float(n) ** (1.5 if n > knn.approx_above else 2.0),
        "cluster": lambda n: min(temi.epochs * max(1, n // temi.batch_size), temi.max_steps or math.inf),
        "dynamics": lambda n: proxy.epochs_for(n) * n,
        "beta_search": lambda n: 1.0,
        "select": lambda n: n,
        "other": None,
        "knn_exact": lambda n: n <= knn.approx_above,  # which regime a size is in (not a stage)
    }


def _photo(i: int) -> tuple[np.ndarray, int]:
    """Synthetic photo ``i``: a two-colour gradient sky, a horizon, a few soft shapes and sensor noise, in the
    palette and layout of kind ``i % KINDS``; deterministic in ``i``."""
    from PIL import Image, ImageDraw, ImageFilter

    kind = i % KINDS
    rng = np.random.default_rng(1_000_003 * kind + 7)  # the kind's palette and layout
    top, bottom, ink = rng.integers(0, 256, (3, 3))
    horizon = rng.uniform(0.3, 0.7)
    shapes = int(rng.integers(2, 6))
    r = np.random.default_rng(i)  # this photo's own variation
    w, h = SIZES[int(r.integers(len(SIZES)))]
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    sky = (1 - t) * top + t * bottom + r.normal(0, 8, (1, 1, 3))
    img = np.broadcast_to(sky, (h, w, 3)).copy()
    cut = int(h * (horizon + r.normal(0, 0.04)))
    img[cut:] = img[cut:] * 0.55 + ink * 0.25
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(shapes):
        cx, cy = r.uniform(0, w), r.uniform(0, h)
        rx, ry = r.uniform(0.05, 0.25) * w, r.uniform(0.05, 0.25) * h
        colour = tuple(int(c) for c in np.clip(ink + r.normal(0, 25, 3), 0, 255))
        (draw.ellipse if kind % 2 else draw.rectangle)((cx - rx, cy - ry, cx + rx, cy + ry), fill=colour)
    im = im.filter(ImageFilter.GaussianBlur(1.2))
    noisy = np.asarray(im, dtype=np.int16) + r.integers(-6, 7, (h, w, 1), dtype=np.int16)
    return np.clip(noisy, 0, 255).astype(np.uint8), kind


def copy_of(i: int, period: int) -> int | None:
    """The photo that photo ``i`` is a planted near-copy of (the one before it, every ``period``-th), or None."""
    return i - 1 if period and i % period == period - 1 else None


def _pixels(i: int, period: int) -> np.ndarray:
    """Photo ``i``: a synthetic photo, or a near-copy (JPEG, resize, crop, brightness in turn) of the one before."""
    from elfs.data.planted import COPY_KINDS, near_copy

    j = copy_of(i, period)
    if j is None:
        return _photo(i)[0]
    return near_copy(_photo(j)[0], COPY_KINDS[(i // period) % len(COPY_KINDS)], np.random.default_rng(i))


def _write(args: tuple[Path, int, int, int]) -> int:
    from PIL import Image

    root, start, stop, period = args
    for i in range(start, stop):
        path = root / f"{i // 1000:04d}" / f"img_{i:07d}.jpg"
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = _pixels(i, period)
        tmp = path.with_suffix(".part")
        Image.fromarray(pixels).save(tmp, "JPEG", quality=88)
        os.replace(tmp, path)  # a killed writer leaves no half-written .jpg
    return stop - start


def write_photos(root: Path, n: int, workers: int, period: int = 0) -> float:
    """The first ``n`` photos under ``root`` (subfolders of 1,000), every ``period``-th a near-copy of the one
    before (0: none); returns seconds spent writing."""
    t0 = time.perf_counter()
    chunks = [(root, s, min(n, s + 1000), period) for s in range(0, n, 1000)]
    with ProcessPoolExecutor(workers) as pool:
        done = 0
        for k in pool.map(_write, chunks):
            done += k
            if done % 10000 == 0 or done == n:
                print(f"photos: {done}/{n}", file=sys.stderr, flush=True)
    return time.perf_counter() - t0


def list_file(root: Path, n: int, where: Path) -> Path:
    """A text file with the absolute paths of the first ``n`` photos (what `elfs-select` accepts for a folder)."""
    out = where / f"photos_{n}.txt"
    out.write_text("".join(f"{root / f'{i // 1000:04d}' / f'img_{i:07d}.jpg'}\n" for i in range(n)))
    return out


def _tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) bytes of ``pid`` and all its descendants (Linux /proc). The RSS sum counts a page every process
    shares (forked DataLoader workers share the parent's torch and encoder) once per process; PSS
    (/proc/PID/smaps_rollup) splits each shared page among its sharers, so the tree's PSS is what it holds."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2 :].split()
            children.setdefault(int(fields[1]), []).append(int(d))
            rss[int(d)] = int(fields[21]) * page
        except (OSError, ValueError, IndexError):
            continue
    total_rss = total_pss = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        total_rss += rss.get(p, 0)
        total_pss += _pss(p, rss.get(p, 0))
        todo += children.get(p, [])
    return total_rss, total_pss


def _pss(pid: int, rss: int) -> int:
    """Proportional set size of ``pid`` in bytes (its RSS where smaps_rollup cannot be read)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss


def _stage_spans(cache: Path) -> list[tuple[str, float, float, dict]]:
    """(stage, start, end, meta) of every entry the run computed: its meta.json is written when it is done (its
    mtime is the end) and records the seconds it took."""
    spans = []
    for meta_path in cache.glob("*/*/meta.json"):
        meta = json.loads(meta_path.read_text())
        end = meta_path.stat().st_mtime
        spans.append((meta_path.parent.parent.name, end - float(meta.get("wall_seconds", 0.0)), end, meta))
    return sorted(spans, key=lambda s: s[1])


def duplicate_scores(csv_path: Path, n: int, period: int) -> dict:
    """Recall (planted pairs found in one group) and precision (rows of duplicates.csv whose image and
    representative are one planted pair) of the near-duplicates elfs-select found, and how many planted pairs it
    could still propose twice (neither listed as a copy: a pair split between groups is not)."""
    import csv

    def index(p: str) -> int:
        return int(Path(p).stem.split("_")[1])

    truth = {frozenset((copy_of(i, period), i)) for i in range(n) if copy_of(i, period) is not None}
    if not csv_path.exists():
        return {"planted": len(truth), "found": 0, "rows": 0, "proposable_twice": len(truth)}
    groups: dict[str, set[int]] = {}
    rows, copies = [], set()
    with open(csv_path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            a, b = index(r["path"]), index(r["representative"])
            groups.setdefault(r["group"], set()).update((a, b))
            rows.append(frozenset((a, b)))
            copies.add(a)
    found = sum(any(t <= g for g in groups.values()) for t in truth)
    right = sum(r in truth for r in rows)
    twice = sum(not (t & copies) for t in truth)
    return {
        "planted": len(truth),
        "found": found,
        "recall": round(found / len(truth), 4) if truth else None,
        "rows": len(rows),
        "precision": round(right / len(rows), 4) if rows else None,
        "groups": len(groups),
        "proposable_twice": twice,
    }


def stage_peaks(samples: list[tuple[float, ...]], spans: list[tuple], col: int) -> dict[str, float]:
    """The largest ``samples[i][col]`` (bytes) while each stage of ``spans`` ran, in GiB; "other" for the samples
    outside every stage (start-up, choosing the coresets, writing the answer)."""
    peaks: dict[str, float] = {}
    inside = set()
    for stage, a, b, _ in spans:
        window = [i for i, s in enumerate(samples) if a <= s[0] <= b]
        inside.update(window)
        if window:
            peaks[stage] = max(peaks.get(stage, 0.0), max(samples[i][col] for i in window) / 2**30)
    rest = [s[col] for i, s in enumerate(samples) if i not in inside]
    if rest:
        peaks["other"] = max(rest) / 2**30
    return {k: round(v, 3) for k, v in peaks.items()}


def run_select(list_path: Path, n: int, work: Path, budgets: list[str], clusters: int, period: int = 0) -> dict:
    """`elfs-select` on ``list_path`` in a fresh folder and cache: per-stage seconds (results.json), the peak memory
    of the process tree while each stage ran (stage spans from the cache entries), and the rest of the wall time
    (start-up, choosing the coresets, writing the answer: CSV, lists, exports, report)."""
    cwd = work / f"run_{n}"
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir(parents=True)
    env = {**os.environ, "ELFS_CACHE_DIR": str(cwd / "cache"), "WANDB_MODE": "disabled"}
    cmd = ["elfs-select", str(list_path), "--budget", *budgets, "--clusters", str(clusters), "--out", "out"]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.time()
    with (cwd / "elfs-select.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        samples: list[tuple[float, int, int]] = []  # (time, RSS, PSS) of the process tree
        while proc.poll() is None:
            samples.append((time.time(), *_tree_memory(proc.pid)))
            time.sleep(0.25)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"elfs-select exited {proc.returncode} at n={n}; see {cwd / 'elfs-select.log'}")
    results = json.loads((cwd / "out" / "results.json").read_text())
    spans = _stage_spans(cwd / "cache")
    seconds = dict(results["stage_seconds"])
    seconds["other"] = round(wall - sum(seconds.values()), 2)
    knn_meta = [m for s, _, _, m in spans if s == "knn"]
    dups = duplicate_scores(cwd / "out" / "duplicates.csv", n, period)
    return {
        "duplicates": dups,
        "n": n,
        "wall_seconds": round(wall, 1),
        "stage_seconds": seconds,
        "peak_gib": stage_peaks(samples, spans, 1),
        "peak_pss_gib": stage_peaks(samples, spans, 2),
        "peak_gib_overall": round(max((s[1] for s in samples), default=0) / 2**30, 3),
        "peak_pss_gib_overall": round(max((s[2] for s in samples), default=0) / 2**30, 3),
        "knn_backend": knn_meta[0]["config"]["knn"]["backend"] if knn_meta else None,
    }


def report(runs: list[dict], target: int) -> dict:
    """Per-stage table of the runs, the growth measured between the two largest beside the work model's, and the
    extrapolation to ``target`` (seconds by the work model from the largest run; memory as a + b N)."""
    work = stage_work()
    big = runs[-1]
    small = runs[-2] if len(runs) > 1 else None
    stages = list(big["stage_seconds"])
    has_pss = all("peak_pss_gib" in r for r in runs)  # bench_folder.json files from before PSS was sampled lack it
    mem_key = "peak_pss_gib" if has_pss else "peak_gib"
    head = " ".join(f"{r['n']:>9,d}: s   img/s  RSS   PSS " for r in runs)
    print(f"\n{'stage':12s} {head}  growth meas/model   at {target:,d}: time, PSS (RSS sum)")
    total = 0.0
    extrapolated: dict[str, dict[str, float]] = {}
    for s in stages:
        cells = []
        for r in runs:
            sec = r["stage_seconds"].get(s, 0.0)
            rate = f"{r['n'] / sec:7.0f}" if sec >= 0.05 else "      -"
            pss = r.get("peak_pss_gib", {}).get(s, float("nan"))
            cells.append(f"{sec:12.1f} {rate} {r['peak_gib'].get(s, float('nan')):5.2f} {pss:5.2f}")
        model = work.get(s, lambda n: n)
        measured = expected = None
        if small is not None and small["stage_seconds"].get(s, 0) > 0.5 and big["stage_seconds"].get(s, 0) > 0.5:
            measured = big["stage_seconds"][s] / small["stage_seconds"][s]
            expected = model(big["n"]) / model(small["n"]) if model is not None else None
            if s == "knn" and work["knn_exact"](small["n"]) != work["knn_exact"](big["n"]):
                expected = None  # exact at one size, IVF at the other: no single growth to compare
        if model is None:
            sec = _line(small, big, "stage_seconds", s, target)
        else:
            sec = big["stage_seconds"].get(s, 0.0) * model(target) / model(big["n"])
        mem, rss = _line(small, big, mem_key, s, target), _line(small, big, "peak_gib", s, target)
        extrapolated[s] = {"seconds": sec, "peak_gib": mem, "peak_rss_sum_gib": rss}
        total += sec
        shown = f"{measured:5.2f}x" if measured is not None else "   -  "
        shown_model = "line " if model is None else (f"{expected:5.2f}x" if expected is not None else "   -  ")
        print(
            f"{s:12s} "
            + " ".join(cells)
            + f"   {shown} / {shown_model}   {sec / 60:7.1f} min {mem:6.1f} ({rss:.1f}) GiB"
        )

    def largest(key: str) -> float:
        return max((v[key] for v in extrapolated.values() if v[key] == v[key]), default=0.0)  # NaN: not sampled

    peak, rss_peak = largest("peak_gib"), largest("peak_rss_sum_gib")
    print(f"{'total':12s} " + " ".join(f"{r['wall_seconds']:12.1f}{'':19s}" for r in runs) + f"{total / 3600:13.2f} h")
    what = "PSS of the process tree" if has_pss else "RSS summed over the process tree"
    print(f"peak memory at {target:,d}: {peak:.1f} GiB ({what}: the largest stage's, linear in N through the runs)")
    if has_pss:
        print(f"  the RSS summed over the tree's processes, shared pages counted once per process: {rss_peak:.1f} GiB")
    embed_share = extrapolated.get("embed", {}).get("seconds", 0.0) / total if total else 0.0
    print(f"the embedding stage's share at {target:,d}: {100 * embed_share:.0f} % of the time")
    goals = {"peak_gib": (peak, GOAL_PEAK_GIB), "hours": (total / 3600, GOAL_HOURS)}
    print(
        f"goals at {target:,d}: "
        + ", ".join(f"{k} {v:.2f} <= {g:g}: {'met' if v <= g else 'NOT met'}" for k, (v, g) in goals.items())
    )
    for r in runs:
        print(f"near-duplicates at {r['n']:,d}: {json.dumps(r.get('duplicates'))}")
    return {
        "extrapolated": extrapolated,
        "extrapolated_hours": total / 3600,
        "extrapolated_peak_gib": peak,
        "extrapolated_peak_measure": "pss" if has_pss else "rss_sum",
        "extrapolated_peak_rss_sum_gib": rss_peak,
        "embed_share": embed_share,
        "goals_met": {k: v <= g for k, (v, g) in goals.items()},
    }


def _line(small: dict | None, big: dict, field: str, stage: str, target: int) -> float:
    """``field`` (peak memory, or seconds) of ``stage`` at ``target`` images: the line through the two largest runs
    (a fixed part: the interpreter, torch, the encoder; a part per image: embeddings, neighbours, scores), else in
    proportion to N from the largest; NaN where the stage was too short to be sampled."""
    if stage not in big[field]:
        return float("nan")
    y1 = big[field][stage]
    if small is None or stage not in small[field]:
        return y1 * target / big["n"]
    slope = max(0.0, (y1 - small[field][stage]) / (big["n"] - small["n"]))
    return y1 + slope * (target - big["n"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="photos written (the largest size run)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="folder sizes run (default: --n)")
    p.add_argument("--target", type=int, default=1_000_000, help="folder size extrapolated to")
    p.add_argument("--dir", type=Path, default=Path("outputs/bench_folder/photos"))
    p.add_argument("--work", type=Path, default=Path("outputs/bench_folder"))
    p.add_argument("--budget", nargs="+", default=["0.1", "0.3"])
    p.add_argument("--clusters", type=int, default=20)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes writing photos")
    p.add_argument(
        "--copy-every", type=int, default=20, help="every this many-th photo is a near-copy of the one before (0: none)"
    )
    p.add_argument("--report", type=Path, default=None, help="print the table of a bench_folder.json, run nothing")
    a = p.parse_args()
    if a.report is not None:
        report(json.loads(a.report.read_text())["runs"], a.target)
        return
    sizes = sorted(a.sizes or [a.n])
    if sizes[-1] > a.n:
        p.error(f"--sizes {sizes} go beyond the {a.n} photos written (--n)")
    if shutil.which("elfs-select") is None:  # before writing photos for an hour
        p.error("elfs-select is not on PATH: activate the environment elfs is installed in (pip install -e .)")
    root, work = a.dir.resolve(), a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    wrote = write_photos(root, a.n, a.workers, a.copy_every)
    mb = sum(f.stat().st_size for f in root.rglob("*.jpg")) / 2**20
    print(f"photos: {a.n} in {root} ({mb:.0f} MiB), {wrote:.0f} s to write/check", file=sys.stderr)
    runs = []
    for n in sizes:
        runs.append(run_select(list_file(root, n, work), n, work, a.budget, a.clusters, a.copy_every))
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    summary = {"cpus": os.cpu_count(), "torch_threads": _torch_threads(), "runs": runs, **report(runs, a.target)}
    (work / "bench_folder.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {work / 'bench_folder.json'}")


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
