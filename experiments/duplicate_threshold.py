"""Where the near-duplicate thresholds come from: cosine similarity of planted near-copies (JPEG re-encoded, resized,
cropped by 1-4 % a side, brightness shifted by 10-15 %) to their original, against distinct look-alikes (another
writer's same digit; a photo tile shifted by half a tile) and every image's nearest distinct neighbour.

    python experiments/duplicate_threshold.py --digits 600 --copies 240 [backbone=... overrides]
    python experiments/duplicate_threshold.py --digits 0 --copies 45 --tile 64 --tiny

``--tiny`` compares the pixel signatures instead of the embedding, and also their aligned similarity (a copy
cropped by a few percent, elfs/method/duplicates.py) and the rule elfs-select applies with its thresholds.

Writes the folder with elfs.data.planted.write_planted_folder, embeds it with the encoder elfs-select composes
(efficientnet_lite0 unless overrides choose another), and prints the similarity distribution of each kind and the
threshold range that separates them. Never run by the test suite (a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--digits", type=int, default=600)
    p.add_argument("--copies", type=int, default=240)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--tiny", action="store_true", help="the pixel signatures' correlation instead of the embedding's")
    p.add_argument("--centre", action="store_true", help="subtract the mean embedding first")
    p.add_argument("--only", choices=["digits", "photos"], default=None, help="report one source only")
    p.add_argument("overrides", nargs="*", help="backbone overrides, e.g. backbone=dino_vits16")
    args = p.parse_args()

    from elfs.api import compose_selection
    from elfs.data.folder import scan_folder
    from elfs.data.planted import COPY_KINDS, write_planted_folder
    from elfs.method.embed import embed_folder
    from elfs.method.knn import l2_normalise

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        truth = write_planted_folder(root, digits=args.digits, copies=args.copies, seed=args.seed, tile=args.tile)
        cfg = compose_selection(root, budget=0.1, num_clusters=10, out=Path(tmp) / "out", overrides=args.overrides)
        b = cfg.backbone
        images = scan_folder(root)[0]
        emb, valid, _ = embed_folder(
            images, b.name, image_size=b.image_size, model=b.model, weights=b.weights, num_workers=0, progress=False
        )
        from elfs.data.folder import decode_image
        from elfs.method.embed import pixel_signature

        sig = pixel_signature(np.stack([decode_image(images.full_path(j), b.image_size) for j in valid.tolist()]))
    if args.tiny:
        from elfs.method.duplicates import plain_signature

        emb = plain_signature(sig)
    if args.centre:
        emb = emb - emb.mean(axis=0)
    x = l2_normalise(emb)
    pos = {p: i for i, p in enumerate(images.paths[j] for j in valid.tolist())}
    sims = x @ x.T
    np.fill_diagonal(sims, -1.0)
    same = np.zeros_like(sims, dtype=bool)
    by_kind: dict[str, list[float]] = {k: [] for k in COPY_KINDS}

    def keep(name: str) -> bool:
        return args.only is None or Path(name).name.startswith(args.only[0])

    for orig, copy in truth["groups"]:
        if not keep(orig):
            continue
        i, j = pos[orig], pos[copy]
        same[i, j] = same[j, i] = True
        by_kind[copy.rsplit("_", 1)[1].split(".")[0]].append(float(sims[i, j]))
    look = [float(sims[pos[a], pos[b]]) for a, b in truth["lookalikes"] if keep(a)]
    rows = [i for p, i in pos.items() if keep(p)]
    nearest_distinct = np.where(same, -1.0, sims).max(axis=1)[rows]

    def row(name: str, v) -> None:
        v = np.asarray(v)
        q = np.quantile(v, [0.0, 0.05, 0.5, 0.95, 1.0])
        print(f"{name:<26}{len(v):>6}  " + "  ".join(f"{t:.4f}" for t in q))

    print(f"encoder {b.name}{' ' + b.model if b.model else ''} at {b.image_size}px; {len(x)} images")
    print(f"{'cosine to the original':<26}{'n':>6}  min     p5      median  p95     max")
    for k, v in by_kind.items():
        row(f"copy: {k}", v)
    row("distinct look-alike", look)
    row("nearest distinct image", nearest_distinct)
    low = min(min(v) for v in by_kind.values())
    high = float(nearest_distinct.max())
    print(f"lowest copy {low:.4f}; highest distinct {high:.4f}: a threshold in ({high:.4f}, {low:.4f}] separates them")
    for t in (0.7, 0.75, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98):
        rec = np.mean([s >= t for v in by_kind.values() for s in v])
        fp = int((nearest_distinct >= t).sum())
        print(f"threshold {t:.2f}: copies found {rec:.3f}, images with a distinct neighbour above it {fp}")
    if args.tiny:
        aligned(sig, sims, same, pos, truth, rows, cfg.selection, row, keep)


def aligned(sig, sims, same, pos, truth, rows, s, row, keep) -> None:
    """The aligned similarity (elfs/method/duplicates.py) of each copy and of each image's 10 most alike distinct
    images, and elfs-select's rule: plain >= dedup_threshold, or plain >= dedup_crop_gate and aligned >=
    dedup_crop_threshold."""
    from elfs.method.duplicates import aligned_similarity

    def rule(plain: np.ndarray, al: np.ndarray) -> np.ndarray:
        return (plain >= s.dedup_threshold) | ((plain >= s.dedup_crop_gate) & (al >= s.dedup_crop_threshold))

    head = f"aligned (crop boxes down to {1 - s.dedup_max_crop:g} of a side)"
    print(f"{head}{' ' * 8}n  min     p5      median  p95     max")
    pairs = [(pos[o], pos[c], c.rsplit("_", 1)[1].split(".")[0]) for o, c in truth["groups"] if keep(o)]
    i, j = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    al = aligned_similarity(sig, i, j, s.dedup_max_crop)
    for kind in dict.fromkeys(p[2] for p in pairs):
        row(f"copy: {kind}", al[[p[2] == kind for p in pairs]])
    near = np.argsort(-np.where(same, -1.0, sims), axis=1)[:, :10][rows]  # the 10 most alike distinct images
    a, b = np.repeat(np.asarray(rows), near.shape[1]), near.ravel()
    dal = aligned_similarity(sig, a, b, s.dedup_max_crop)
    row("nearest distinct (aligned)", dal.reshape(len(rows), -1).max(axis=1))
    found = rule(sims[i, j], al)
    wrong = rule(sims[a, b], dal).reshape(len(rows), -1).any(axis=1)
    print(
        f"elfs-select's rule (plain >= {s.dedup_threshold:g}, or >= {s.dedup_crop_gate:g} and aligned >= "
        f"{s.dedup_crop_threshold:g}): copies found {found.mean():.3f} (missed: "
        f"{[p[2] for p, f in zip(pairs, found, strict=True) if not f]}), images with a distinct neighbour admitted "
        f"{int(wrong.sum())}"
    )


if __name__ == "__main__":
    main()
