"""Photos decoded as a person sees them: EXIF orientation, every Pillow mode to 8-bit RGB (hand-checked pixel
values), JPEG draft decoding, and empty / truncated / corrupt files reported with a reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from elfs.data.folder import decode_image, probe_image, scan_folder


def _save(im: Image.Image, path, **kw):
    im.save(path, **kw)
    return path


def _pixel(path) -> tuple[int, int, int]:
    x = decode_image(path)
    assert x.dtype == np.uint8 and x.ndim == 3 and x.shape[2] == 3
    return tuple(int(v) for v in x[0, 0])


# (mode, how the 2x2 image is made and saved, expected RGB of its top-left pixel, worked by hand)
def _cmyk(tmp):  # C=0 M=128 Y=255 K=64: R = 255*191/255 = 191, G = 127*191/255 = 95.1, B = 0
    return _save(Image.new("CMYK", (2, 2), (0, 128, 255, 64)), tmp / "cmyk.tif")


def _i16(tmp):  # 16-bit grey 32896 (= 128 * 257): 128, not the clipped 255 of Pillow's own convert
    a = np.full((2, 2), 32896, dtype=np.uint16)
    return _save(Image.fromarray(a), tmp / "grey16.png")


def _i16_white(tmp):  # 65535 is white
    return _save(Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16)), tmp / "white16.png")


def _i32(tmp):  # mode "I" (32-bit int) holding 16-bit data: 1000 / 257 = 3.9 -> 4
    return _save(Image.fromarray(np.full((2, 2), 1000, dtype=np.int32), "I"), tmp / "grey32.tif")


def _float(tmp):  # "F" in [0, 1]: 0.5 * 255 = 127.5 -> 128
    return _save(Image.fromarray(np.full((2, 2), 0.5, dtype=np.float32), "F"), tmp / "float.tif")


def _palette_transparent(tmp):  # palette index 0 = red but transparent: on white, white
    im = Image.new("P", (2, 2), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    return _save(im, tmp / "pal.png", transparency=0)


def _palette_opaque(tmp):  # palette index 1 = blue, opaque (index 0 is the transparent one)
    im = Image.new("P", (2, 2), 1)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    return _save(im, tmp / "pal1.png", transparency=0)


def _rgba(tmp):  # (200, 100, 0) at alpha 128 on white: (200*128 + 255*127) / 255 = 227.4, 177.2, 127.0
    return _save(Image.new("RGBA", (2, 2), (200, 100, 0, 128)), tmp / "rgba.png")


def _la(tmp):  # grey 0 at alpha 64 on white: 255 * 191 / 255 = 191
    return _save(Image.new("LA", (2, 2), (0, 64)), tmp / "la.png")


def _grey(tmp):
    return _save(Image.new("L", (2, 2), 77), tmp / "grey.png")


def _bilevel(tmp):
    return _save(Image.new("1", (2, 2), 1), tmp / "one.png")


MODES = {
    "CMYK": (_cmyk, (191, 95, 0)),
    "I;16": (_i16, (128, 128, 128)),
    "I;16 white": (_i16_white, (255, 255, 255)),
    "I": (_i32, (4, 4, 4)),
    "F": (_float, (128, 128, 128)),
    "P transparent": (_palette_transparent, (255, 255, 255)),
    "P opaque": (_palette_opaque, (0, 0, 255)),
    "RGBA": (_rgba, (227, 177, 127)),
    "LA": (_la, (191, 191, 191)),
    "L": (_grey, (77, 77, 77)),
    "1": (_bilevel, (255, 255, 255)),
}


@pytest.mark.parametrize("case", list(MODES))
def test_every_mode_decodes_to_the_rgb_a_person_sees(tmp_path, case):
    make, expected = MODES[case]
    assert _pixel(make(tmp_path)) == expected


def test_exif_orientation_is_applied_before_resizing(tmp_path):
    """Stored 40 wide x 20 high, left half black; EXIF orientation 6 (rotate 90 degrees clockwise to view):
    shown 20 wide x 40 high with the black half on top."""
    a = np.full((20, 40, 3), 255, dtype=np.uint8)
    a[:, :20] = 0
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6
    path = _save(im, tmp_path / "rotated.jpg", exif=exif, quality=95)
    x = decode_image(path)
    assert x.shape == (40, 20, 3)
    assert x[:15].mean() < 30 and x[25:].mean() > 225
    y = decode_image(path, 10)  # shorter side 20 -> 10, centre crop of the 10 x 20 picture: top black, bottom white
    assert y.shape == (10, 10, 3) and y[:3].mean() < 60 and y[-3:].mean() > 195


def test_jpeg_draft_gives_the_same_picture(tmp_path):
    """A large JPEG decoded at a reduced DCT scale before resizing: within a few grey levels of a full decode."""
    from sklearn.datasets import load_sample_image

    photo = load_sample_image("flower.jpg")  # 427 x 640
    big = Image.fromarray(photo).resize((1280, 854), Image.Resampling.BICUBIC)
    path = _save(big, tmp_path / "big.jpg", quality=95)
    with Image.open(path) as im:
        im.draft("RGB", (64, 64))
        assert im.size == (160, 107)  # decoded at 1/8 scale, both sides still >= 64
    fast = decode_image(path, 64).astype(np.float64)
    with Image.open(path) as im:  # the same steps without draft
        full = im.convert("RGB")
        w, h = full.size
        nw, nh = max(64, round(w * 64 / h)), 64
        full = full.resize((nw, nh), Image.Resampling.BICUBIC)
        left = (nw - 64) // 2
        ref = np.asarray(full.crop((left, 0, left + 64, 64)), dtype=np.float64)
    assert fast.shape == ref.shape == (64, 64, 3)
    assert np.abs(fast - ref).mean() < 3.0


def test_empty_truncated_and_corrupt_files_are_skipped_with_a_reason(tmp_path):
    from sklearn.datasets import load_sample_image

    buf = io.BytesIO()
    Image.fromarray(load_sample_image("china.jpg")).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    (tmp_path / "good.jpg").write_bytes(data)
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "noise.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    images, skipped = scan_folder(tmp_path)
    assert skipped == [("empty.png", "empty file (0 bytes)")]  # free to tell at scan time
    assert list(images.paths) == ["good.jpg", "noise.jpg", "truncated.jpg"]
    assert probe_image(tmp_path / "good.jpg") is None
    assert probe_image(tmp_path / "noise.jpg") == "cannot identify image file"
    assert "truncated" in probe_image(tmp_path / "truncated.jpg")
    assert probe_image(tmp_path / "empty.png") == "empty file (0 bytes)"
    with pytest.raises(OSError, match="truncated"):
        decode_image(tmp_path / "truncated.jpg", 32)
    decodable, total, bad, more = images.decode_report()
    assert (decodable, total, more) == (1, 3, 0)
    assert bad == [("noise.jpg", "cannot identify image file"), ("truncated.jpg", bad[1][1])]
    # the embedding stage drops the undecodable files (FolderImages.subset); the report still names them
    decodable, total, bad, more = images.subset(np.array([0])).decode_report()
    assert (decodable, total, [p for p, _ in bad], more) == (1, 3, ["noise.jpg", "truncated.jpg"], 0)


def test_a_folder_of_only_empty_files_says_so(tmp_path):
    from elfs.errors import DataError

    for name in ("a.jpg", "b.png"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError, match=r"no readable image: a.jpg \(empty file \(0 bytes\)\), b.png"):
        scan_folder(tmp_path)
