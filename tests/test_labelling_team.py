"""What a labelling team does with `elfs-select`, as they type it: a nested folder of real photos in several Pillow
modes (one EXIF-rotated, one unreadable), budgets that grow, then a second round that excludes what was labelled."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image


def _photo_folder(root: Path) -> dict[str, Path]:
    """300 real digit photos in nested folders, some saved as CMYK JPEG, 16-bit grey, palette, RGBA and grey PNGs,
    plus an unreadable JPEG and a twin pair: one upright, one stored turned with an EXIF orientation tag."""
    from elfs.data.demo import write_demo_folder

    paths = write_demo_folder(root / "raw", n=300)
    for i, p in enumerate(paths):
        rgb = Image.open(p).convert("RGB").resize((32, 32), Image.Resampling.BICUBIC)
        sub = root / "photos" / f"batch{i % 3}" / ("deep" if i % 5 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        kind = i % 6
        if kind == 0:
            rgb.convert("CMYK").save(sub / f"{i:03d}.jpg", quality=95)
        elif kind == 1:
            grey = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
            Image.fromarray(grey).save(sub / f"{i:03d}.png")  # "I;16": 16-bit grey
        elif kind == 2:
            rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(sub / f"{i:03d}.png")
        elif kind == 3:
            rgb.convert("RGBA").save(sub / f"{i:03d}.png")
        elif kind == 4:
            rgb.convert("L").save(sub / f"{i:03d}.png")
        else:
            rgb.save(sub / f"{i:03d}.png")
    twin = Image.open(paths[7]).convert("RGB").resize((32, 32))
    twin = Image.fromarray(np.asarray(twin)[:, ::-1].copy())  # an asymmetric picture: turned, it is another one
    out = {"upright": root / "photos" / "upright.png", "turned": root / "photos" / "turned.png"}
    twin.save(out["upright"])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored pixels are to be turned 90° clockwise to be seen upright
    twin.transpose(Image.Transpose.ROTATE_90).save(out["turned"], exif=exif)
    (root / "photos" / "batch1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return out


def _elfs_select(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "elfs.select", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


@pytest.mark.slow
def test_sets_that_grow_then_a_second_round_without_what_was_labelled(tmp_path):
    twins = _photo_folder(tmp_path)
    first = _elfs_select(["photos", "--budget", "0.1", "0.3", "--nested", "--clusters", "10", "--out", "r1"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "r1"
    import csv

    rows = list(csv.DictReader(open(run / "selection.csv", encoding="utf-8")))
    assert all(Path(r["filepath"]).is_absolute() and Path(r["filepath"]).is_file() for r in rows)
    assert {r["score_name"] for r in rows} == {"aum"} and all(r["score"] for r in rows)
    assert "broken.jpg" not in {Path(r["filepath"]).name for r in rows}
    skipped = (run / "skipped.csv").read_text()
    assert "broken.jpg" in skipped

    lists = {b: (run / f"annotate_{b}.txt").read_text().split("\n")[:-1] for b in ("0.1", "0.3")}
    assert all(Path(p).is_file() for p in lists["0.1"] + lists["0.3"])
    assert set(lists["0.1"]) < set(lists["0.3"]), "the 10 % set is not inside the 30 % set"
    new = (run / "annotate_0.3_new.txt").read_text().split("\n")[:-1]
    assert set(new) == set(lists["0.3"]) - set(lists["0.1"])
    summary = json.loads((run / "selection.json").read_text())
    assert summary["nested"] is True

    tasks = json.loads((run / "labelstudio_0.1.json").read_text())
    assert len(tasks) == len(lists["0.1"]) and {t["data"]["filepath"] for t in tasks} == set(lists["0.1"])
    links = sorted((run / "selected_0.1").iterdir())
    assert len(links) == len(lists["0.1"]) and all(p.resolve().is_file() for p in links)

    page = _Links()
    page.feed((run / "report.html").read_text(encoding="utf-8"))
    relative = [u for u in page.links if not re.match(r"^(data:|https?:|#)", u)]
    assert relative and all((run / unquote(u)).exists() for u in relative), relative

    ids = (run / "embeddings_ids.txt").read_text().split("\n")[:-1]
    emb = np.load(run / "embeddings.npy")
    assert emb.dtype == np.float16 and os.stat(run / "embeddings.npy").st_nlink >= 2  # a hard link to the cache's
    row = {name: emb[ids.index(f"{name}.png")] for name in ("upright", "turned")}
    # decoded as a person sees it: equal up to float32 noise (1e-4) and float16's rounding (2^-10 relatively)
    np.testing.assert_allclose(row["turned"], row["upright"], rtol=2e-3, atol=1e-4)

    labelled = tmp_path / "labelled.txt"
    labelled.write_text("\n".join(lists["0.1"]) + "\n")
    second = _elfs_select(["photos", "--budget", "0.1", "--exclude", str(labelled), "--out", "r2"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    proposed = (tmp_path / "r2" / "annotate_0.1.txt").read_text().split("\n")[:-1]
    assert len(proposed) == len(lists["0.1"]) and not set(proposed) & set(lists["0.1"])
    assert twins["upright"].is_file()
