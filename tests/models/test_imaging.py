"""Tests for models.imaging.load_scan: bit depth, pixel modes, formats and unreadable files.

Every image is written into tmp_path by the test that reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from models.imaging import DEFAULT_MAX_IMAGE_PIXELS, DecodedScan, ScanReadError, load_scan

ORIENTATION_TAG = 0x0112


def _ramp16(width: int = 256, height: int = 8, top: int = 65535) -> np.ndarray:
    row = np.linspace(0, top, width).round().astype(np.uint16)
    return np.tile(row, (height, 1))


def _noise8(shape: tuple[int, ...] = (64, 64), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _save(array: np.ndarray, path: Path, **options) -> Path:
    Image.fromarray(array).save(path, **options)
    return path


def _reason(path: Path, **options) -> str:
    with pytest.raises(ScanReadError) as caught:
        load_scan(path, **options)
    return caught.value.reason


# --- 16-bit and high-bit-depth data ---------------------------------------------------


@pytest.fixture
def ramp16_png(tmp_path: Path) -> Path:
    image = Image.fromarray(_ramp16())
    assert image.mode == "I;16"
    image.save(tmp_path / "ramp16.png")
    return tmp_path / "ramp16.png"


def test_ramp16_dtype_and_shape(ramp16_png):
    scan = load_scan(ramp16_png)
    assert scan.pixels.dtype == np.float32
    assert scan.pixels.shape == (8, 256)
    assert scan.bit_depth == 16


def test_ramp16_increases_along_x(ramp16_png):
    pixels = load_scan(ramp16_png).pixels
    assert (np.diff(pixels, axis=1) >= 0).all()
    assert pixels[0, -1] > pixels[0, 0]


def test_ramp16_spans_unit_range(ramp16_png):
    pixels = load_scan(ramp16_png).pixels
    assert pixels.min() == pytest.approx(0.0, abs=1e-6)
    assert pixels.max() == pytest.approx(1.0, abs=1e-6)


def test_ramp16_keeps_many_levels(ramp16_png):
    pixels = load_scan(ramp16_png).pixels
    assert len(np.unique(pixels)) > 200


def test_ramp16_not_saturated(ramp16_png):
    pixels = load_scan(ramp16_png).pixels
    assert (pixels >= 1.0).mean() < 0.01


def test_ramp16_naive_convert_clips(ramp16_png):
    # Pillow's own conversion clips 16-bit values to 255 instead of scaling them, so almost
    # the whole ramp turns white. load_scan must not decode this way.
    with Image.open(ramp16_png) as image:
        naive = np.asarray(image.convert("L"))
    assert (naive == 255).mean() > 0.9


def test_twelve_bit_not_crushed(tmp_path):
    path = _save(_ramp16(top=4095), tmp_path / "ramp12.png")
    scan = load_scan(path)
    assert scan.bit_depth == 12
    assert scan.pixels.max() == pytest.approx(1.0, abs=1e-6)
    assert scan.pixels.mean() > 0.4


@pytest.mark.parametrize("bits", [10, 12, 14, 16])
def test_sixteen_bit_container_depth(tmp_path, bits):
    path = _save(_ramp16(top=2**bits - 1), tmp_path / f"ramp{bits}.png")
    assert load_scan(path).bit_depth == bits


def test_float_tiff_in_unit_range_kept(tmp_path):
    values = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8)
    path = _save(values, tmp_path / "unit.tif")
    pixels = load_scan(path).pixels
    np.testing.assert_allclose(pixels, values)


def test_float_tiff_other_units_rescaled(tmp_path):
    values = np.linspace(-50.0, 1000.0, 64, dtype=np.float32).reshape(8, 8)
    path = _save(values, tmp_path / "counts.tif")
    pixels = load_scan(path).pixels
    assert pixels.min() == pytest.approx(0.0, abs=1e-6)
    assert pixels.max() == pytest.approx(1.0, abs=1e-6)


def test_float_tiff_nan_rejected(tmp_path):
    values = np.zeros((8, 8), dtype=np.float32)
    values[3, 3] = np.nan
    path = _save(values, tmp_path / "nan.tif")
    assert "NaN" in _reason(path)


# --- files that cannot be screened ----------------------------------------------------


def _truncated(fmt: str, suffix: str):
    def make(tmp_path: Path) -> Path:
        whole = _save(_noise8(), tmp_path / f"whole{suffix}", format=fmt)
        data = whole.read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: int(len(data) * 0.95)])
        return cut

    return make


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    return path


def _text_as_png(tmp_path: Path) -> Path:
    path = tmp_path / "notes.png"
    path.write_text("this is a text file, not an image\n")
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "missing.png"


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "folder.png"
    path.mkdir()
    return path


def _bmp(tmp_path: Path) -> Path:
    return _save(_noise8(), tmp_path / "scan.bmp", format="BMP")


def _gif(tmp_path: Path) -> Path:
    return _save(_noise8(), tmp_path / "scan.gif", format="GIF")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(_empty, "empty", id="empty"),
        pytest.param(_text_as_png, "not a readable image", id="text-as-png"),
        pytest.param(_truncated("PNG", ".png"), "truncated", id="truncated-png"),
        pytest.param(_truncated("JPEG", ".jpg"), "truncated", id="truncated-jpeg"),
        pytest.param(_truncated("TIFF", ".tif"), "truncated", id="truncated-tiff"),
        pytest.param(_missing, "not found", id="missing"),
        pytest.param(_directory, "not a regular file", id="directory"),
        pytest.param(_bmp, "unsupported image format BMP", id="bmp"),
        pytest.param(_gif, "unsupported image format GIF", id="gif"),
    ],
)
def test_unreadable_file_reason(tmp_path, make, expected):
    assert expected in _reason(make(tmp_path))


def test_scan_read_error_message_is_reason(tmp_path):
    with pytest.raises(ScanReadError) as caught:
        load_scan(tmp_path / "missing.png")
    assert str(caught.value) == caught.value.reason


def test_over_pixel_limit_rejected(tmp_path):
    path = _save(_noise8((100, 100)), tmp_path / "big.png")
    reason = _reason(path, max_image_pixels=5000)
    assert "over the limit of 5000" in reason
    assert "max_image_pixels" in reason


def test_under_pixel_limit_decodes(tmp_path):
    path = _save(_noise8((70, 70)), tmp_path / "fits.png")
    assert load_scan(path, max_image_pixels=5000).pixels.shape == (70, 70)


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory) -> Path:
    # 20000 x 20000 = 4e8 pixels of one value compress to about 50 kB.
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (20000, 20000), 0).save(path)
    return path


@pytest.fixture
def no_pixel_decoding(monkeypatch):
    """Make any attempt to decode pixel data fail the test."""

    def fail_on_load(self):
        raise AssertionError(f"pixel data of a {self.size} image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail_on_load)


def test_bomb_file_is_small(bomb_png):
    assert bomb_png.stat().st_size < 200_000


def test_bomb_rejected_at_default_limit(bomb_png, no_pixel_decoding):
    assert 20000 * 20000 > DEFAULT_MAX_IMAGE_PIXELS
    assert "limit" in _reason(bomb_png)


def test_bomb_rejected_at_lower_limit(bomb_png, no_pixel_decoding):
    assert "limit" in _reason(bomb_png, max_image_pixels=1_000_000)


# --- pixel modes ----------------------------------------------------------------------


def test_mode_l(tmp_path):
    grey = _noise8((16, 24))
    scan = load_scan(_save(grey, tmp_path / "l.png"))
    assert scan.source_mode == "L"
    assert scan.bit_depth == 8
    np.testing.assert_allclose(scan.pixels, grey / 255.0, atol=1e-7)


def test_decoded_scan_geometry(tmp_path):
    scan = load_scan(_save(_noise8((16, 24)), tmp_path / "l.png"))
    assert isinstance(scan, DecodedScan)
    assert scan.width == 24
    assert scan.height == 16
    assert scan.is_grey


def test_rgb_grey_content_is_2d(tmp_path):
    grey = _noise8((16, 24))
    scan = load_scan(_save(np.stack([grey] * 3, axis=-1), tmp_path / "grey_rgb.png"))
    assert scan.source_mode == "RGB"
    assert scan.pixels.shape == (16, 24)
    np.testing.assert_allclose(scan.pixels, grey / 255.0, atol=1e-7)


@pytest.mark.parametrize("offset, grey", [(2, True), (3, False)])
def test_grey_tolerance_in_8bit_steps(tmp_path, offset, grey):
    # JPEG chroma rounding leaves grey scans with channels a step or two apart.
    base = (_noise8((16, 24)) // 2).astype(np.uint8)
    rgb = np.stack([base, base, base], axis=-1)
    rgb[3, 5, 2] += offset
    scan = load_scan(_save(rgb, tmp_path / "near_grey.png"))
    assert scan.is_grey == grey
    expected = base / 255.0 if grey else rgb / 255.0
    np.testing.assert_allclose(scan.pixels, expected, atol=1e-7)


def test_rgb_pseudocolour_is_3d(tmp_path):
    colour = _noise8((16, 24, 3))
    scan = load_scan(_save(colour, tmp_path / "colour.png"))
    assert scan.pixels.shape == (16, 24, 3)
    assert not scan.is_grey
    np.testing.assert_allclose(scan.pixels, colour / 255.0, atol=1e-7)


def test_rgba_transparent_is_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    pixels = load_scan(_save(rgba, tmp_path / "rgba.png")).pixels
    assert pixels.shape == (4, 4)
    assert pixels[0, 0] == pytest.approx(1.0)
    assert pixels[1, 1] == pytest.approx(0.0)


def test_rgba_colour_transparent_is_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    pixels = load_scan(_save(rgba, tmp_path / "rgba.png")).pixels
    assert pixels.shape == (4, 4, 3)
    np.testing.assert_allclose(pixels[0, 0], [1.0, 1.0, 1.0])


def test_palette_grey(tmp_path):
    grey = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (4, 1))
    path = tmp_path / "palette.png"
    Image.fromarray(grey).convert("P").save(path)
    with Image.open(path) as image:
        assert image.mode == "P"
    pixels = load_scan(path).pixels
    np.testing.assert_allclose(pixels, grey / 255.0, atol=1e-7)


def test_palette_colour(tmp_path):
    colour = np.zeros((4, 8, 3), dtype=np.uint8)
    colour[..., 0] = 200
    colour[..., 2] = 40
    path = tmp_path / "palette.png"
    Image.fromarray(colour).convert("P").save(path)
    pixels = load_scan(path).pixels
    assert pixels.shape == (4, 8, 3)


def test_mode_la_transparent_is_white(tmp_path):
    grey_alpha = np.zeros((4, 4, 2), dtype=np.uint8)
    grey_alpha[..., 1] = 255
    grey_alpha[0, 0, 1] = 0
    path = tmp_path / "la.png"
    Image.fromarray(grey_alpha, mode="LA").save(path)
    scan = load_scan(path)
    assert scan.source_mode == "LA"
    assert scan.pixels[0, 0] == pytest.approx(1.0)
    assert scan.pixels[1, 1] == pytest.approx(0.0)


def test_mode_1(tmp_path):
    bits = _noise8((8, 16)) > 127
    scan = load_scan(_save(bits, tmp_path / "bits.png"))
    assert scan.source_mode == "1"
    assert scan.bit_depth == 1
    np.testing.assert_array_equal(scan.pixels, bits.astype(np.float32))


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(_noise8((16, 16, 3))).convert("CMYK").save(path, quality=95)
    scan = load_scan(path)
    assert scan.source_mode == "CMYK"
    assert scan.pixels.shape == (16, 16, 3)
    assert scan.pixels.min() >= 0.0
    assert scan.pixels.max() <= 1.0


def test_one_pixel_image(tmp_path):
    path = tmp_path / "one.png"
    Image.new("L", (1, 1), 77).save(path)
    pixels = load_scan(path).pixels
    assert pixels.shape == (1, 1)
    assert pixels[0, 0] == pytest.approx(77 / 255)


def test_constant_image(tmp_path):
    path = tmp_path / "constant.png"
    Image.new("L", (12, 9), 77).save(path)
    pixels = load_scan(path).pixels
    assert len(np.unique(pixels)) == 1
    assert pixels[0, 0] == pytest.approx(77 / 255)


# --- TIFF variants ---------------------------------------------------------------------


def test_tiff_big_endian_matches_little(tmp_path):
    ramp = _ramp16(width=64, height=4)
    little = _save(ramp, tmp_path / "little.tif")
    big = tmp_path / "big.tif"
    Image.frombytes("I;16B", (64, 4), ramp.astype(">u2").tobytes()).save(big)
    with Image.open(big) as image:
        assert image.mode == "I;16B"
    np.testing.assert_array_equal(load_scan(big).pixels, load_scan(little).pixels)


@pytest.mark.parametrize("compression", ["tiff_lzw", "tiff_adobe_deflate"])
def test_tiff_compressed(tmp_path, compression):
    ramp = _ramp16(width=64, height=4)
    plain = _save(ramp, tmp_path / "plain.tif")
    packed = _save(ramp, tmp_path / "packed.tif", compression=compression)
    with Image.open(packed) as image:
        assert image.info["compression"] == compression
    np.testing.assert_array_equal(load_scan(packed).pixels, load_scan(plain).pixels)


def test_tiff_multipage_first_page(tmp_path):
    path = tmp_path / "pages.tif"
    first, second = Image.new("L", (8, 8), 10), Image.new("L", (8, 8), 200)
    first.save(path, save_all=True, append_images=[second])
    with Image.open(path) as image:
        assert image.n_frames == 2
    assert load_scan(path).pixels[0, 0] == pytest.approx(10 / 255)


# --- orientation ------------------------------------------------------------------------


def _orientation6_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6
    return exif


@pytest.mark.parametrize(
    ("suffix", "options"),
    [
        pytest.param(".png", {"exif": _orientation6_exif()}, id="png-exif"),
        pytest.param(".tif", {"tiffinfo": {ORIENTATION_TAG: 6}}, id="tiff"),
        pytest.param(".tif", {"tiffinfo": {ORIENTATION_TAG: 6}, "compression": "tiff_lzw"}, id="tiff-lzw"),
    ],
)
def test_orientation_6_rotates(tmp_path, suffix, options):
    stored = _noise8((10, 30))
    path = _save(stored, tmp_path / f"rotated{suffix}", **options)
    pixels = load_scan(path).pixels

    # Orientation 6 means the stored rows must be turned 90 degrees clockwise for display.
    expected = np.rot90(stored, k=-1) / 255.0
    assert pixels.shape == (30, 10)
    np.testing.assert_allclose(pixels, expected, atol=1e-7)


def test_orientation_6_jpeg_swaps_size(tmp_path):
    path = _save(_noise8((10, 30)), tmp_path / "rotated.jpg", exif=_orientation6_exif())
    scan = load_scan(path)
    assert scan.width == 10
    assert scan.height == 30


# --- real scanner files ------------------------------------------------------------------


@pytest.mark.data
@pytest.mark.parametrize(
    ("folder", "pattern", "ndim"),
    [
        pytest.param("sixray/positive", "*.jpg", None, id="sixray"),
        pytest.param("cargo/mixed_goods", "*.jp*g", 2, id="cargo-grey"),
        pytest.param("hums/negative", "*.tif", None, id="hums-rgba-tiff"),
        pytest.param("hums/raw16", "*_hi.tif", 2, id="hums-raw16"),
    ],
)
def test_real_scan_decodes(data_root, folder, pattern, ndim):
    files = sorted((data_root / folder).glob(pattern))
    assert files, f"no {pattern} files in {data_root / folder}"

    scan = load_scan(files[0])
    assert scan.pixels.dtype == np.float32
    assert scan.pixels.min() >= 0.0
    assert scan.pixels.max() <= 1.0
    if ndim is not None:
        assert scan.pixels.ndim == ndim


@pytest.mark.data
def test_real_hums_raw16_is_sixteen_bit(data_root):
    path = sorted((data_root / "hums/raw16").glob("*_hi.tif"))[0]
    scan = load_scan(path)
    assert scan.source_mode.startswith("I;16")
    assert len(np.unique(scan.pixels)) > 256


@pytest.mark.data
def test_real_hums_rgba_source(data_root):
    path = sorted((data_root / "hums/negative").glob("*.tif"))[0]
    assert load_scan(path).source_mode == "RGBA"
