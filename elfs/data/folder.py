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
        return FolderImages(
            self.root, tuple(self.paths[i] for i in index.tolist()), self.sizes[index], self.mtimes[index], self.name
        )

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """ImageNet statistics: a streamed set is never read whole just to normalise a proxy's inputs."""
        return [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

    def load_rgb(self, i: int, size: int | None = None) -> np.ndarray:
        """Decode image ``i`` to H x W x 3 uint8; with ``size``, shorter side resized to it and centre-cropped."""
        return decode_image(self.full_path(i), size)


def decode_image(path: Path | str, size: int | None = None, *, resample: str = "bicubic") -> np.ndarray:
    """Open one image with PIL as RGB uint8 (palette, grey, alpha and 16-bit images included); with ``size``,
    resize the shorter side to ``size`` and take the centre ``size`` x ``size`` crop. Raises on a corrupt file."""
    from PIL import Image

    method = Image.Resampling.BICUBIC if resample == "bicubic" else Image.Resampling.BILINEAR
    with Image.open(path) as im:
        if size is not None:
            im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when much larger (fast on big photos)
        im = im.convert("RGB")
        if size is not None:
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            im = im.resize((nw, nh), method)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).copy()


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
    because they are not images. Raises DataError for a missing or empty folder or one without any image."""
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
        paths.append(rel)
        sizes.append(st.st_size)
        mtimes.append(st.st_mtime_ns)
    if not paths:
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
