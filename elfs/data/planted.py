"""Near-copies of a photo as real folders hold them (re-encoded, resized, cropped by a few percent, lightly colour
shifted), and a folder of real images with such copies planted among distinct look-alikes: what the near-duplicate
threshold is measured on (experiments/duplicate_threshold.py), tested on, and benchmarked with."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

#: the kinds of near-copy a folder holds: what each does to the original
COPY_KINDS = ("jpeg", "resize", "crop", "brightness")


def near_copy(pixels: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A near-copy of uint8 ``pixels`` (H x W x 3): ``jpeg`` re-encoded at quality 60-85, ``resize`` to 50-80 %
    of its size, ``crop`` 1-4 % off each side, ``brightness`` scaled by 0.85-0.9 or 1.1-1.15."""
    from PIL import Image, ImageEnhance

    im = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).convert("RGB")
    w, h = im.size
    if kind == "jpeg":
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(rng.integers(60, 86)))
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    elif kind == "resize":
        s = float(rng.uniform(0.5, 0.8))
        im = im.resize((max(8, round(w * s)), max(8, round(h * s))), Image.Resampling.BICUBIC)
    elif kind == "crop":
        fx, fy = rng.uniform(0.01, 0.04, 2), rng.uniform(0.01, 0.04, 2)
        im = im.crop((round(w * fx[0]), round(h * fy[0]), w - round(w * fx[1]), h - round(h * fy[1])))
    elif kind == "brightness":
        im = ImageEnhance.Brightness(im).enhance(float(rng.choice([rng.uniform(0.85, 0.9), rng.uniform(1.1, 1.15)])))
    else:
        raise ValueError(f"kind must be one of {list(COPY_KINDS)}, got {kind!r}")
    return np.asarray(im)


def lookalike_tile(photo: int, y: int, x: int, size: int, shift: float) -> np.ndarray:
    """A tile of sample photo ``photo`` at (y, x) moved by ``shift`` of its size: a neighbouring, distinct view."""
    from sklearn.datasets import load_sample_images

    ph = load_sample_images().images[photo]
    d = round(shift * size)
    y2, x2 = min(y + d, ph.shape[0] - size), min(x + d, ph.shape[1] - size)
    return ph[y2 : y2 + size, x2 : x2 + size]


def _upscaled(grey: np.ndarray, factor: int) -> np.ndarray:
    """A 28 x 28 digit as a ``factor`` times larger RGB photo (bicubic), the size near-copies are made of."""
    from PIL import Image

    im = Image.fromarray(np.squeeze(grey)).convert("RGB")
    return np.asarray(im.resize((im.width * factor, im.height * factor), Image.Resampling.BICUBIC))


def write_planted_folder(
    root: Path, *, digits: int = 0, copies: int = 48, seed: int = 0, upscale: int = 4, tile: int = 80
) -> dict[str, object]:
    """A folder of real images: ``digits`` MNIST digits (the demo data, ``upscale`` times larger) and sample-photo
    tiles, with
    ``copies`` near-copies (the kinds in turn) of originals drawn from both, and as many distinct look-alikes
    (another writer's same digit; a tile shifted by half its size), all as PNG. Returns {"groups": [[original, copy],
    ...], "lookalikes": [[original, look-alike], ...], "paths": every relative path} (paths relative to root)."""
    from PIL import Image

    from elfs.data.datasets import load_mnist5k

    rng = np.random.default_rng(seed)
    ds = load_mnist5k()
    mnist, label = ds.train.images, np.asarray(ds.truth.train)  # labels only to draw same-digit look-alikes
    pick = rng.choice(len(mnist), size=digits, replace=False)
    spare = np.setdiff1d(np.arange(len(mnist)), pick)
    originals: list[tuple[str, np.ndarray]] = []
    for j, i in enumerate(pick.tolist()):
        originals.append((f"digits/d{j:04d}.png", _upscaled(mnist[i], upscale)))
    from sklearn.datasets import load_sample_images

    size, sources = tile, []
    for p, ph in enumerate(load_sample_images().images):
        step = size * 3 // 2  # tiles apart by half a tile: a look-alike (half a tile over) is between
        for y in range(0, ph.shape[0] - size + 1, step):
            for x in range(0, ph.shape[1] - size + 1, step):
                if ph[y : y + size, x : x + size].std() < 20:  # plain sky: not a picture of its own
                    continue
                sources.append((p, y, x))
                originals.append((f"photos/p{p}_{y:03d}_{x:03d}.png", ph[y : y + size, x : x + size]))
    n_orig = len(originals)
    if copies > n_orig:
        raise ValueError(f"copies={copies} is more than the {n_orig} originals")
    chosen = rng.choice(n_orig, size=copies, replace=False)
    groups, lookalikes = [], []
    out = dict(originals)
    for c, o in enumerate(chosen.tolist()):
        name, pixels = originals[o]
        kind = COPY_KINDS[c % len(COPY_KINDS)]
        copy = f"copies/{Path(name).stem}_{kind}.png"  # PNG: the copy's pixels as they are
        out[copy] = near_copy(pixels, kind, rng)
        groups.append([name, copy])
        if o < digits:  # another writer's same digit
            same = spare[label[spare] == label[pick[o]]]
            j = int(rng.choice(same))
            spare = spare[spare != j]  # each look-alike a different image
            look = _upscaled(mnist[j], upscale)
        else:
            p, y, x = sources[o - digits]
            look = lookalike_tile(p, y, x, size, 1 / 2)
        lname = f"lookalikes/{Path(name).stem}_near.png"
        out[lname] = look
        lookalikes.append([name, lname])
    for rel, pixels in out.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
    return {"groups": groups, "lookalikes": lookalikes, "paths": sorted(out)}
