"""The Siamese embedder: a ResNet-18 trunk without its classifier, giving 512-d embeddings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

logger = logging.getLogger(__name__)

EMBEDDING_DIM = 512


class SiameseEmbedder(nn.Module):
    """Map (N, 3, H, W) float32 images to (N, 512) embeddings.

    Both images of a pair go through this one module, so the two branches of the Siamese
    network share every weight by construction.
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone = resnet18(weights=None)
        self.backbone.fc = nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
        return self.backbone(images)


@dataclass(frozen=True)
class WeightsOrigin:
    """The origin of the starting weights, recorded in the checkpoint and printed."""

    kind: str
    detail: str

    def describe(self) -> str:
        return f"{self.kind} ({self.detail})"


def build_embedder(weights: str = "none") -> tuple[SiameseEmbedder, WeightsOrigin]:
    """Create an embedder from ``imagenet``, ``none`` (random init) or a local weights file.

    ``imagenet`` uses torchvision's weights mechanism, which downloads into the torch hub
    cache unless the file is already there. A local file may hold a torchvision ResNet-18
    state dict (its ``fc`` layer is dropped) or a CargoScan checkpoint.
    """
    embedder = SiameseEmbedder()

    if weights == "none":
        return embedder, WeightsOrigin("random", "random initialisation, trained from scratch")

    if weights == "imagenet":
        try:
            state = ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as error:
            raise RuntimeError(
                "could not load torchvision's ImageNet ResNet-18 weights (no cached copy and the "
                f"download failed: {error}); pass --weights FILE with a local copy, or --weights none"
            ) from error
        _load_backbone_state(embedder, state)
        return embedder, WeightsOrigin("imagenet", "torchvision ResNet18_Weights.IMAGENET1K_V1")

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}; use 'imagenet', 'none' or a path to a file")

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and "preprocess" in state:
        embedder.load_state_dict(state["state_dict"], strict=True)
    else:
        _load_backbone_state(embedder, state)
    return embedder, WeightsOrigin("file", str(path))


def _load_backbone_state(embedder: SiameseEmbedder, state: dict[str, torch.Tensor]) -> None:
    backbone_state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    missing, unexpected = embedder.backbone.load_state_dict(backbone_state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"weights do not match ResNet-18: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    logger.info("loaded ResNet-18 backbone weights", extra={"tensors": len(backbone_state)})
