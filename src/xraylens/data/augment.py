"""Training-time augmentation on the letterboxed square, before normalisation.

Why these transforms: the MURA paper trains with random rotations (up to 30
degrees) and horizontal flips; a mild zoom and brightness/contrast jitter
cover the spread of detector exposure and positioning between hospitals.
Evaluation never augments (``train_transform`` is only built for the training
set), so validation numbers describe the images as they are.

A box mask (``train.box_fraction``) goes through the same draw as its image:
rotation, zoom and flip move it (nearest-neighbour, so it stays 0/1), the
intensity jitter leaves it alone.

Randomness comes from torch's generator, which the DataLoader seeds per
worker from the run seed (Lightning's ``seed_everything(workers=True)``), so a
run is repeatable without any global seeding here.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from xraylens.config import AugmentConfig


class SquareAugment:
    """(S, S) float32 in [0, 1] -> (S, S) float32 in [0, 1], randomly rotated, zoomed, flipped and jittered.

    Rotation and zoom fill with black (0), the letterbox padding colour, so the
    network never sees a new kind of border.
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg
        steps: list[v2.Transform] = []
        if cfg.rotation_degrees > 0 or cfg.zoom > 0:
            scale = (1.0 - cfg.zoom, 1.0 + cfg.zoom) if cfg.zoom > 0 else None
            steps.append(v2.RandomAffine(degrees=cfg.rotation_degrees, scale=scale, fill=0.0,
                                         interpolation=v2.InterpolationMode.BILINEAR))
        if cfg.hflip:
            steps.append(v2.RandomHorizontalFlip(p=0.5))
        if cfg.brightness > 0 or cfg.contrast > 0:
            steps.append(v2.ColorJitter(brightness=cfg.brightness or None, contrast=cfg.contrast or None))
        self.pipeline = v2.Compose(steps) if steps else None

    def __call__(self, square: torch.Tensor) -> torch.Tensor:
        if self.pipeline is None:
            return square
        out = self.pipeline(square.unsqueeze(0))  # (1, S, S): torchvision wants a channel axis
        return out.squeeze(0).clamp_(0.0, 1.0)

    def with_mask(self, square: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The square and its (S, S) box mask, moved by one and the same random draw."""
        if self.pipeline is None:
            return square, mask
        image, moved = self.pipeline(square.unsqueeze(0), tv_tensors.Mask(mask.unsqueeze(0)))
        return image.squeeze(0).clamp_(0.0, 1.0), moved.as_subclass(torch.Tensor).squeeze(0)

    def __repr__(self) -> str:
        return f"SquareAugment({self.cfg})"


def train_transform(cfg: AugmentConfig) -> SquareAugment | None:
    """The training set's square transform, or ``None`` when every augmentation is switched off."""
    augment = SquareAugment(cfg)
    return augment if augment.pipeline is not None else None
