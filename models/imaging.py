"""Decode scan files into float32 arrays in [0, 1] without losing bit depth.

This is the only decoder in CargoScan: training, enrollment, evaluation and screening all
call :func:`load_scan`, so a scan reads the same wherever it is used.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "TIFF"})
DEFAULT_MAX_IMAGE_PIXELS = 150_000_000

# RGB files whose channels differ by no more than this (in 8-bit steps) hold grey content
# stored as colour, as the cargo scanners' JPEGs do.
_GREY_TOLERANCE = 2.0 / 255.0

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
    """A decoded scan: ``pixels`` is float32 in [0, 1], shape (H, W) for grey or (H, W, 3)."""

    pixels: np.ndarray
    source_mode: str
    bit_depth: int

    @property
    def is_grey(self) -> bool:
        return self.pixels.ndim == 2

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def load_scan(path: str | os.PathLike[str], max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> DecodedScan:
    """Decode the first frame of a JPEG, PNG or TIFF scan, honouring its EXIF orientation.

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
                image.load()
                image = ImageOps.exif_transpose(image)
                return _to_array(image)
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
    rgba = np.asarray(image.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0

    rgb = rgba[..., :3]
    if has_alpha:
        alpha = rgba[..., 3:4]
        rgb = rgb * alpha + (1.0 - alpha)

    if _is_grey_content(rgb):
        return DecodedScan(np.ascontiguousarray(rgb[..., 0]), mode, 8)
    return DecodedScan(np.ascontiguousarray(rgb), mode, 8)


def _is_grey_content(rgb: np.ndarray) -> bool:
    # A strided sample keeps the check cheap on 4000x1200 container scans.
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 250_000)))
    sample = rgb[::step, ::step]
    spread = sample.max(axis=2) - sample.min(axis=2)
    return float(spread.max()) <= _GREY_TOLERANCE
