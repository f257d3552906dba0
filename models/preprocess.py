"""Turn decoded scans into normalised network input: the one preprocessing path.

A :class:`PreprocessConfig` is saved inside every checkpoint, so training, enrollment,
evaluation and screening always resize and normalise a scan the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from models.imaging import DecodedScan
from models.intensity import INTENSITIES, Intensity, apply_intensity
from models.tiling import TileGeometry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LEGACY_DECODE_OVERSAMPLING = 2

ResizeMode = Literal["stretch", "letterbox"]
ScanMode = Literal["whole", "tiles"]


@dataclass(frozen=True)
class PreprocessConfig:
    """Resize and normalisation settings.

    ``stretch`` resizes to ``image_size`` x ``image_size`` as the CargoScan paper does, which
    keeps the aspect ratio as a (possibly misleading) cue. ``letterbox`` keeps the aspect
    ratio and pads to a square with ``fill`` (1.0 is open beam), which removes size cues.

    ``mode`` ``tiles`` embeds tiles instead of the whole scan: the scan is scaled to
    ``tile_scan_height`` px and cut into ``image_size`` px tiles every ``tile_stride`` px
    (see :mod:`models.tiling`), and ``resize_mode`` does not apply. ``intensity`` ``log``
    feeds the network log-transmission instead of transmission (see :mod:`models.intensity`).

    ``decode_oversampling`` is how many decoded pixels per network input pixel a large JPEG
    keeps when it is decoded at reduced scale (see :func:`models.imaging.load_scan`). At 1
    a cargo scan decodes in less than half the CPU time of 2, and the network input differs
    from a full decode by 1 to 2 steps of 255 on average (see ``docs/benchmarks.md``).
    """

    image_size: int = 224
    resize_mode: ResizeMode = "stretch"
    fill: float = 1.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    mode: ScanMode = "whole"
    tile_scan_height: int = 448
    tile_stride: int = 56
    intensity: Intensity = "linear"
    decode_oversampling: int = 1

    def __post_init__(self) -> None:
        if not 16 <= self.image_size <= 4096:
            raise ValueError(f"image_size must be between 16 and 4096 pixels, got {self.image_size}")
        if self.resize_mode not in ("stretch", "letterbox"):
            raise ValueError(f"resize_mode must be 'stretch' or 'letterbox', got {self.resize_mode!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need three values each, std positive; got {self.mean}, {self.std}")
        if self.intensity not in INTENSITIES:
            raise ValueError(f"intensity must be one of {INTENSITIES}, got {self.intensity!r}")
        if not 1 <= self.decode_oversampling <= 8:
            raise ValueError(f"decode_oversampling must be between 1 and 8, got {self.decode_oversampling}")
        if self.mode not in ("whole", "tiles"):
            raise ValueError(f"mode must be 'whole' or 'tiles', got {self.mode!r}")
        if self.mode == "tiles":
            # Building the geometry checks the tile settings against each other.
            _ = self.tiles

    @property
    def tiles(self) -> TileGeometry | None:
        """Return the tile geometry in tile mode, None in whole-scan mode."""
        if self.mode != "tiles":
            return None
        return TileGeometry(
            scan_height=self.tile_scan_height, tile_size=self.image_size, stride=self.tile_stride, fill=self.fill,
            intensity=self.intensity,
        )

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["mean"] = list(self.mean)
        values["std"] = list(self.std)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PreprocessConfig:
        known = {field.name for field in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown preprocessing settings {sorted(unknown)}; known: {sorted(known)}")

        values = dict(values)
        # Checkpoints written before the setting existed were trained on scans decoded with
        # an oversampling of 2, and must keep seeing the same input.
        values.setdefault("decode_oversampling", LEGACY_DECODE_OVERSAMPLING)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)


def to_unit_tensor(scan: DecodedScan, config: PreprocessConfig) -> torch.Tensor:
    """Resize a decoded scan in float with antialiasing; returns (3, S, S) float32 in [0, 1].

    Grey scans are replicated to three channels after resizing, which costs a third of the
    arithmetic of resizing three identical channels.
    """
    pixels = scan.pixels
    if pixels.ndim == 2:
        image = torch.from_numpy(np.ascontiguousarray(pixels))[None]
    elif pixels.ndim == 3 and pixels.shape[2] == 3:
        image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
    else:
        raise ValueError(f"expected pixels of shape (H, W) or (H, W, 3), got {tuple(pixels.shape)}")

    if config.resize_mode == "stretch":
        resized = _resize(image, config.image_size, config.image_size)
    else:
        resized = _letterbox(image, config.image_size, config.fill)

    resized = apply_intensity(resized.clamp_(0.0, 1.0), config.intensity)
    return resized.expand(3, -1, -1).contiguous() if resized.shape[0] == 1 else resized


def normalize(batch: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """Apply the mean and std to (N, 3, S, S) or (3, S, S) unit tensors; returns a new tensor."""
    if batch.dim() not in (3, 4) or batch.shape[-3] != 3:
        raise ValueError(f"expected (3, S, S) or (N, 3, S, S), got {tuple(batch.shape)}")

    mean = torch.tensor(config.mean, dtype=batch.dtype, device=batch.device).view(3, 1, 1)
    std = torch.tensor(config.std, dtype=batch.dtype, device=batch.device).view(3, 1, 1)
    return (batch - mean) / std


def preprocess(scan: DecodedScan, config: PreprocessConfig) -> torch.Tensor:
    """Resize and normalise one scan; returns (3, S, S) float32 network input."""
    return normalize(to_unit_tensor(scan, config), config)


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if image.shape[-2:] == (height, width):
        return image.clone()
    return F.interpolate(image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False)[0]


def _letterbox(image: torch.Tensor, size: int, fill: float) -> torch.Tensor:
    height, width = image.shape[-2:]
    scale = size / max(height, width)
    new_height = max(1, round(height * scale))
    new_width = max(1, round(width * scale))
    resized = _resize(image, new_height, new_width)

    canvas = torch.full((image.shape[0], size, size), fill, dtype=image.dtype)
    top = (size - new_height) // 2
    left = (size - new_width) // 2
    canvas[:, top : top + new_height, left : left + new_width] = resized
    return canvas
