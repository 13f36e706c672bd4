"""Streaming image sources: every image under a folder (or listed in a text file), never all in memory.

The folder is listed once (paths, sizes, modification times); images are decoded in DataLoader workers only
when a stage needs pixels (the embedding stage, thumbnails for the contact sheet). What the pipeline keeps
afterwards is O(N·d): embeddings, neighbours, scores. A file that is not an image, or that cannot be decoded,
is skipped and listed in the run folder, never fatal.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elfs.errors import DataError

#: extensions read as images (case-insensitive); any other file is listed as skipped
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
#: files sampled for the content part of the fingerprint (first bytes of each, evenly spread over the list)
FINGERPRINT_SAMPLES = 64
FINGERPRINT_BYTES = 65536


@dataclass(frozen=True)
class FolderImages:
    """Image files in a fixed order (sorted relative paths) with their sizes and modification times."""

    root: Path
    paths: tuple[str, ...]  # relative to root, '/'-separated
    sizes: np.ndarray  # int64 bytes
    mtimes: np.ndarray  # int64 ns
    name: str

    def __len__(self) -> int:
        return len(self.paths)

    def full_path(self, i: int) -> Path:
        return self.root / self.paths[i]

    def __getstate__(self) -> dict:
        """Pickled (to DataLoader workers, DDP ranks) without the set it was cut from: that may be a whole listing."""
        return {k: v for k, v in self.__dict__.items() if k != "_cut_from"}

    def _memo(self, name: str, compute):
        if name not in self.__dict__:
            self.__dict__[name] = compute()
        return self.__dict__[name]

    def fingerprint(self) -> str:
        """Cheap at 1.28 M files: the file list, sizes and modification times, plus the first bytes of a sample
        of files; it changes when any file is added, removed, renamed, resized or touched."""

        def compute() -> str:
            h = hashlib.sha256()
            h.update(f"{len(self.paths)}\n".encode())
            for p, s, m in zip(self.paths, self.sizes.tolist(), self.mtimes.tolist(), strict=True):
                h.update(f"{p}\t{s}\t{m}\n".encode())
            n = len(self.paths)
            for i in sorted(set(np.linspace(0, n - 1, min(n, FINGERPRINT_SAMPLES)).astype(int).tolist())):
                try:
                    with open(self.full_path(i), "rb") as f:
                        h.update(f.read(FINGERPRINT_BYTES))
                except OSError as e:
                    h.update(f"unreadable:{e.errno}".encode())
            return h.hexdigest()[:16]

        return self._memo("_fingerprint", compute)

    def subset(self, index: np.ndarray) -> FolderImages:
        """The images at ``index`` (e.g. the decodable ones), in that order."""
        index = np.asarray(index, dtype=np.int64)
        out = FolderImages(
            self.root, tuple(self.paths[i] for i in index.tolist()), self.sizes[index], self.mtimes[index], self.name
        )
        out.__dict__["_cut_from"] = self  # what it was cut from: lets a message name the files that were dropped
        return out

    def decode_report(self, examples: int = 5) -> tuple[int, int, list[tuple[str, str]], int]:
        """(decodable, total, up to ``examples`` (path, reason) of files that cannot be decoded, how many more):
        for messages about a small set only. Every file here is decoded (at a small draft scale); when all of them
        decode and this set was cut from a larger one by dropping undecodable files (the embedding stage does
        that), the dropped files are counted and a few are decoded again to say why."""
        bad = [(p, why) for p in self.paths if (why := probe_image(self.root / p)) is not None]
        total, more = len(self.paths), max(0, len(bad) - examples)
        parent = self.__dict__.get("_cut_from")
        if not bad and parent is not None and len(parent) > len(self):
            kept = set(self.paths)
            missing = [p for p in parent.paths if p not in kept]
            sample = [(p, probe_image(parent.root / p)) for p in missing[:examples]]
            if all(why is not None for _, why in sample):  # dropped because they do not decode, not cut by size
                bad, total, more = sample, len(parent), len(missing) - len(sample)
        decodable = total - len(bad) - more
        return decodable, total, bad[:examples], more

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """ImageNet statistics: a streamed set is never read whole just to normalise a proxy's inputs."""
        return [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

    def load_rgb(self, i: int, size: int | None = None) -> np.ndarray:
        """Decode image ``i`` to H x W x 3 uint8; with ``size``, shorter side resized to it and centre-cropped."""
        return decode_image(self.full_path(i), size)


def decode_image(path: Path | str, size: int | None = None, *, resample: str = "bicubic") -> np.ndarray:
    """Open one image as a person sees it, as RGB uint8: EXIF orientation applied, any Pillow mode converted
    (:func:`to_rgb`: CMYK, 16-bit and float greyscale scaled to 8 bits, transparency composited on white); with
    ``size``, the shorter side resized to ``size`` and the centre ``size`` x ``size`` crop taken. Raises on a
    corrupt or truncated file."""
    from PIL import Image, ImageOps

    method = Image.Resampling.BICUBIC if resample == "bicubic" else Image.Resampling.BILINEAR
    with Image.open(path) as im:
        if size is not None:
            # JPEG: decode at a reduced DCT scale (1/2, 1/4, 1/8) whose both sides are still >= size, so the
            # resize below still downsamples (fast on big photos, same picture up to the resampling filter)
            im.draft("RGB", (size, size))
        im.load()  # a truncated or corrupt file fails here, before any EXIF handling can hide it
        try:
            im = ImageOps.exif_transpose(im)  # rotated / mirrored as the camera said it was held
        except Exception:  # noqa: BLE001 - a malformed EXIF block: keep the pixels as stored
            pass
        im = to_rgb(im)
        if size is not None:
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            im = im.resize((nw, nh), method)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).copy()


def _round_u8(x: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(x, 0.0, 255.0) + 0.5).astype(np.uint8)


def to_rgb(im):
    """Any Pillow image as 8-bit RGB, the way an image viewer shows it.

    CMYK: R = (255-C)(255-K)/255 (likewise G from M, B from Y; no ICC colour management). 16-bit greyscale
    ("I;16*", and "I", which Pillow uses for 16-bit PNGs): v / 257, so 65535 is white (Pillow's own convert
    clips everything above 255 to white). Float ("F"): [0, 1] scaled to 255 when the values lie in it, else
    taken as 0-255 and clipped. Transparency ("RGBA", "LA", "PA", premultiplied "RGBa"/"La", a palette or grey
    image with a transparent colour): composited on white. "1", "L", "P", "YCbCr", ...: Pillow's conversion."""
    from PIL import Image

    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode == "CMYK":
        c = np.asarray(im, dtype=np.float64)
        ink = 255.0 - c[..., :3]
        return Image.fromarray(_round_u8(ink * (255.0 - c[..., 3:]) / 255.0), "RGB")
    if mode.startswith("I;16") or mode == "I":
        v = np.asarray(im).astype(np.float64)
        grey = _round_u8(np.clip(v, 0, 65535) / 257.0)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")
    if mode == "F":
        v = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if v.size and v.min() >= 0.0 and v.max() <= 1.0:
            v = v * 255.0
        grey = _round_u8(v)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=2), "RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in im.info
    )
    if mode == "P" and getattr(im, "palette", None) is not None and im.palette.mode == "RGBA":
        has_alpha = True
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float64)
        a = rgba[..., 3:] / 255.0
        return Image.fromarray(_round_u8(rgba[..., :3] * a + 255.0 * (1.0 - a)), "RGB")
    return im.convert("RGB")


#: the side a file is decoded to when only checking that it decodes (JPEGs then decode at 1/8 scale: cheap)
PROBE_SIZE = 16


def failure_reason(e: BaseException, path: Path | str | None = None) -> str:
    """A short reason for a file that cannot be decoded, without its path (the message names the file)."""
    msg = (str(e).splitlines() or [""])[0]
    if path is not None:
        for form in (repr(str(path)), str(path)):
            msg = msg.replace(f" {form}", "").replace(form, "")
    msg = msg.strip().rstrip(":").strip()
    return (msg or type(e).__name__)[:200]


def probe_image(path: Path | str) -> str | None:
    """None when ``path`` decodes (at a small size: JPEGs at a reduced scale), else why not: an empty file, not
    an image Pillow knows, truncated, ... (what a user needs to fix it)."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
        decode_image(path, PROBE_SIZE)
    except Exception as e:  # noqa: BLE001 - any failure to decode is a reason to report
        return failure_reason(e, path)
    return None


def _listing_from_file(list_file: Path) -> tuple[Path, list[Path]]:
    """Paths listed one per line in a text file (blank lines and '#' comments ignored); relative lines are
    relative to the file's folder."""
    base = list_file.parent
    files = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            files.append(p if p.is_absolute() else base / p)
    if not files:
        raise DataError(f"dataset.path={str(list_file)!r} lists no files")
    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    return root, files


def scan_folder(path: str | os.PathLike, name: str = "folder") -> tuple[FolderImages, list[tuple[str, str]]]:
    """Every image file under ``path`` (recursive, symlinked folders not followed, hidden files ignored), or the
    files listed in ``path`` when it is a .txt file. Returns the images and the (path, reason) of files skipped
    because they are not images, cannot be read or are empty (0 bytes); a file that is corrupt or truncated is
    found out when it is decoded (the embedding stage lists it; :meth:`FolderImages.decode_report` for
    messages). Raises DataError for a missing or empty folder or one without any image."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"dataset.path={str(path)!r} does not exist")
    if p.is_file():
        if p.suffix.lower() != ".txt":
            raise DataError(f"dataset.path={str(path)!r} is a file; give a folder of images or a .txt list of paths")
        root, files = _listing_from_file(p)
        entries = sorted(files, key=lambda f: f.relative_to(root).as_posix())
    else:
        root = p
        entries = []
        for dirpath, dirnames, filenames in os.walk(p):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            entries.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
        entries.sort(key=lambda f: f.relative_to(root).as_posix())  # one canonical order: the relative path
        if not entries:
            raise DataError(
                f"dataset.path={str(path)!r} is an empty folder; it must hold images "
                f"({', '.join(IMAGE_EXTENSIONS)}), in sub-folders or not"
            )
    paths, sizes, mtimes, skipped = [], [], [], []
    for f in entries:
        rel = f.relative_to(root).as_posix()
        if f.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append((rel, f"not an image (extension {f.suffix or 'none'!r})"))
            continue
        try:
            st = f.stat()
        except OSError as e:
            skipped.append((rel, f"cannot be read ({e.strerror})"))
            continue
        if st.st_size == 0:  # free to tell from the listing; other undecodable files are found when decoded
            skipped.append((rel, "empty file (0 bytes)"))
            continue
        paths.append(rel)
        sizes.append(st.st_size)
        mtimes.append(st.st_mtime_ns)
    if not paths:
        unreadable = [(p, why) for p, why in skipped if not why.startswith("not an image")]
        if unreadable:
            listed = ", ".join(f"{p} ({why})" for p, why in unreadable[:5])
            more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
            raise DataError(
                f"dataset.path={str(path)!r} holds {len(entries)} file(s) but no readable image: {listed}{more}"
            )
        raise DataError(
            f"dataset.path={str(path)!r} holds {len(entries)} file(s) but no image ({', '.join(IMAGE_EXTENSIONS)})"
        )
    images = FolderImages(
        root.resolve(), tuple(paths), np.asarray(sizes, dtype=np.int64), np.asarray(mtimes, dtype=np.int64), name
    )
    return images, skipped


def scan_class_folders(
    path: str | os.PathLike, name: str = "imagefolder"
) -> tuple[FolderImages, np.ndarray, list[str], list[tuple[str, str]]]:
    """torchvision's ImageFolder layout: ``path/<class>/**/<image>``. Returns the images, their class indices
    (classes sorted by folder name), the class names, and the skipped files (non-images, files outside a class
    folder). The labels are for evaluation and diagnostics only; the label-free stages never see them."""
    images, skipped = scan_folder(path, name)
    top = [p.split("/", 1)[0] if "/" in p else "" for p in images.paths]
    outside = [i for i, t in enumerate(top) if not t]
    skipped += [(images.paths[i], "not inside a class folder") for i in outside]
    inside = np.asarray([i for i, t in enumerate(top) if t], dtype=np.int64)
    if inside.size == 0:
        raise DataError(f"dataset.path={str(path)!r} has no class sub-folders with images (layout: <class>/<image>)")
    classes = sorted({top[i] for i in inside.tolist()})
    lookup = {c: k for k, c in enumerate(classes)}
    labels = np.asarray([lookup[top[i]] for i in inside.tolist()], dtype=np.int64)
    return images.subset(inside), labels, classes, skipped
