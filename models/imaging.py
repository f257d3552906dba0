"""Decode scan files into float32 arrays in [0, 1] without losing bit depth.

This is the only decoder in CargoScan: training, enrollment, evaluation and screening all
call :func:`load_scan`, so a scan reads the same wherever it is used.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "TIFF"})
DEFAULT_MAX_IMAGE_PIXELS = 150_000_000

# RGB files whose channels differ by no more than this many 8-bit steps hold grey content
# stored as colour, as the cargo scanners' JPEGs do.
_GREY_TOLERANCE = 2

# Effective bit depths tried for 16-bit containers, smallest first. Detectors commonly write
# 10-, 12- or 14-bit data into 16-bit samples; scaling by the container's 65535 would leave
# such a scan almost black.
_SIXTEEN_BIT_DEPTHS = (10, 12, 14, 16)


class ScanReadError(Exception):
    """A scan file that cannot be screened; ``reason`` is stored with the failed scan."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DecodedScan:
    """A decoded scan: ``pixels`` is float32 in [0, 1], shape (H, W) for grey or (H, W, 3).

    ``full_size`` is the file's (width, height) after orientation when draft decoding made
    ``pixels`` smaller than the file. Otherwise it is None, and the pixels have the file's size.
    """

    pixels: np.ndarray
    source_mode: str
    bit_depth: int
    full_size: tuple[int, int] | None = None

    @property
    def is_grey(self) -> bool:
        return self.pixels.ndim == 2

    @property
    def width(self) -> int:
        return self.full_size[0] if self.full_size else int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return self.full_size[1] if self.full_size else int(self.pixels.shape[0])


@dataclass(frozen=True)
class DecodeTarget:
    """The square network input a scan is decoded for, so JPEG decoding can skip detail.

    ``size`` is the input side in pixels. With ``keep_aspect`` (letterbox resizing) only the
    longer side is fitted to ``size``, and without it (stretch resizing) each side is.
    ``oversampling`` is the least number of decoded pixels per input pixel along each fitted
    side that draft decoding keeps for the antialiased resize to average.
    """

    size: int
    keep_aspect: bool = False
    oversampling: int = 2


def load_scan(
    path: str | os.PathLike[str],
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    target: DecodeTarget | None = None,
) -> DecodedScan:
    """Decode the first frame of a JPEG, PNG or TIFF scan, honouring its EXIF orientation.

    With a ``target``, a large JPEG is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
    (Pillow's draft mode), never below the target's oversampling. Other formats are decoded in
    full. ``width`` and ``height`` always report the file's full size.

    Raises :class:`ScanReadError` with a one-line reason for a missing, empty, truncated,
    oversized, unsupported or undecodable file.
    """
    path = Path(path)
    _check_file(path)

    with warnings.catch_warnings():
        # The pixel limit below replaces Pillow's global decompression-bomb warning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            # Pillow gets an open file, not the path: given a path, it memory-maps an
            # uncompressed TIFF strip at the already-rotated size (seen with Pillow 13.0.0),
            # which scrambles the pixels of a TIFF whose orientation tag is 5 to 8.
            with open(path, "rb") as stream, Image.open(stream) as image:
                _check_header(image, max_image_pixels)
                full_size = _oriented_size(image) if target is not None else None
                drafted = target is not None and _draft(image, target)
                image.load()
                # In place, because the default copies every unrotated scan once more.
                ImageOps.exif_transpose(image, in_place=True)
                scan = _to_array(image)
                return replace(scan, full_size=full_size) if drafted else scan
        except ScanReadError:
            raise
        except Image.DecompressionBombError as error:
            raise ScanReadError(f"image is over the pixel limit: {error}") from error
        except UnidentifiedImageError as error:
            raise ScanReadError("not a readable image file (unknown or corrupt format)") from error
        except (OSError, SyntaxError, ValueError) as error:
            raise ScanReadError(f"truncated or corrupt image data: {error}") from error


def _check_file(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError as error:
        raise ScanReadError("file not found") from error
    except OSError as error:
        raise ScanReadError(f"file cannot be read: {error.strerror}") from error

    if not path.is_file():
        raise ScanReadError("not a regular file")
    if size == 0:
        raise ScanReadError("empty file (0 bytes)")


def _check_header(image: Image.Image, max_image_pixels: int) -> None:
    if image.format not in SUPPORTED_FORMATS:
        supported = ", ".join(sorted(SUPPORTED_FORMATS - {"MPO"}))
        raise ScanReadError(f"unsupported image format {image.format}; supported: {supported}")

    width, height = image.size
    if width < 1 or height < 1:
        raise ScanReadError(f"image has no pixels ({width}x{height})")
    if width * height > max_image_pixels:
        raise ScanReadError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{max_image_pixels} (raise max_image_pixels to screen it)"
        )


def _draft(image: Image.Image, target: DecodeTarget) -> bool:
    # Only 8-bit JPEGs have a DCT-domain reduction. PNG and TIFF (16-bit scans among them)
    # are decoded in full, bit for bit as without a target.
    if image.format not in ("JPEG", "MPO"):
        return False

    floor = target.size * target.oversampling
    width, height = image.size
    if target.keep_aspect:
        # The longer side stays at least ``floor``; the shorter one scales with it, so it
        # keeps the same oversampling of its own (smaller) share of the input.
        requested = (floor, 1) if width >= height else (1, floor)
    else:
        requested = (floor, floor)

    # Pillow picks the largest of 1/8, 1/4, 1/2 whose result is at least ``requested`` on
    # both sides (ceil(side / scale) >= requested), and leaves the image alone otherwise.
    if width < 2 * requested[0] or height < 2 * requested[1]:
        return False
    image.draft(image.mode, requested)
    return image.size != (width, height)


def _oriented_size(image: Image.Image) -> tuple[int, int]:
    # EXIF orientations 5 to 8 rotate by 90 degrees, so exif_transpose swaps the sides.
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _to_array(image: Image.Image) -> DecodedScan:
    mode = image.mode

    if mode == "1":
        return DecodedScan(np.asarray(image, dtype=np.float32), mode, 1)
    if mode == "L":
        return DecodedScan(np.asarray(image, dtype=np.float32) / 255.0, mode, 8)
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit(np.asarray(image), mode)
    if mode == "F":
        return _float_image(np.asarray(image, dtype=np.float32), mode)
    if mode in ("LA", "La"):
        return _composite_grey(image, mode)
    if mode in ("RGB", "RGBA", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        return _colour(image, mode)

    raise ScanReadError(f"unsupported pixel mode {mode}")


def _sixteen_bit(raw: np.ndarray, mode: str) -> DecodedScan:
    values = raw.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 65535:
        raise ScanReadError(f"{mode} image has values {low:.0f}..{high:.0f}, outside 0..65535")

    bit_depth = next(bits for bits in _SIXTEEN_BIT_DEPTHS if high <= 2**bits - 1)
    return DecodedScan(values / float(2**bit_depth - 1), mode, bit_depth)


def _float_image(values: np.ndarray, mode: str) -> DecodedScan:
    if not np.isfinite(values).all():
        raise ScanReadError("floating-point image contains NaN or infinite values")

    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        return DecodedScan(values, mode, 32)

    # Scanner floats in other units (counts, attenuation) are mapped linearly onto [0, 1].
    span = high - low if high > low else 1.0
    return DecodedScan((values - low) / span, mode, 32)


def _composite_grey(image: Image.Image, mode: str) -> DecodedScan:
    grey_alpha = np.asarray(image.convert("LA"), dtype=np.float32) / 255.0
    grey, alpha = grey_alpha[..., 0], grey_alpha[..., 1]

    # Transparent areas are treated as open beam (full transmission, white).
    return DecodedScan(grey * alpha + (1.0 - alpha), mode, 8)


def _colour(image: Image.Image, mode: str) -> DecodedScan:
    has_alpha = mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in image.info)
    if not has_alpha:
        return _opaque_colour(image, mode)

    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    alpha = rgba[..., 3:4]
    rgb = rgba[..., :3] * alpha + (1.0 - alpha)

    # Compositing over white can only bring channels closer, so grey stays grey.
    rgb8 = np.rint(rgb * 255.0).astype(np.uint8)
    if _is_grey_content(rgb8):
        return DecodedScan(np.ascontiguousarray(rgb[..., 0]), mode, 8)
    return DecodedScan(np.ascontiguousarray(rgb), mode, 8)


def _opaque_colour(image: Image.Image, mode: str) -> DecodedScan:
    # The test and the float conversion run on the 8-bit array, and a grey scan converts
    # one channel, not three: converting whole RGB scans to float cost more CPU than
    # decoding them.
    rgb8 = np.asarray(image if mode == "RGB" else image.convert("RGB"))
    if _is_grey_content(rgb8):
        return DecodedScan(_unit_float(rgb8[..., 0]), mode, 8)
    return DecodedScan(_unit_float(rgb8), mode, 8)


def _unit_float(values: np.ndarray) -> np.ndarray:
    return np.divide(values, np.float32(255.0), dtype=np.float32)


def _is_grey_content(rgb8: np.ndarray) -> bool:
    # A strided sample keeps the check cheap on 4000x1200 container scans.
    step = max(1, int(np.sqrt(rgb8.shape[0] * rgb8.shape[1] / 250_000)))
    sample = rgb8[::step, ::step].astype(np.int16)
    red, green, blue = sample[..., 0], sample[..., 1], sample[..., 2]

    # Pairwise channel differences give the same decision as max - min over the channel axis.
    # NumPy reduces them several times faster than it reduces a length-3 axis.
    for first, second in ((red, green), (red, blue), (green, blue)):
        if int(np.abs(first - second).max()) > _GREY_TOLERANCE:
            return False
    return True
