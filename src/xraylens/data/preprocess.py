"""The one preprocessing path from a decoded radiograph to a network input, and back.

Training, evaluation, explanation, inference and ONNX all go through here, so a
model sees exactly the same geometry and intensities everywhere. The
``Letterbox`` remembers how an image was resized and padded so a heatmap made
on the network input can be mapped back onto the original image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from xraylens.data.contrast import local_contrast

if TYPE_CHECKING:  # torch is imported lazily so the ONNX runtime path can run without it
    import torch

# ImageNet statistics; for one channel the mean of the three (what a folded RGB stem expects).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """Travels inside every checkpoint and ONNX file: size, channels, local contrast and normalisation."""

    size: int = 128
    in_channels: int = 1
    mean: tuple[float, ...] = (0.449,)
    std: tuple[float, ...] = (0.226,)
    clahe_clip: float = 0.0  # CLAHE on the letterboxed square before normalising (data.contrast); 0 = off

    @classmethod
    def for_channels(cls, size: int, in_channels: int, mean: tuple[float, ...] = IMAGENET_MEAN,
                     std: tuple[float, ...] = IMAGENET_STD, clahe_clip: float = 0.0) -> Preprocessing:
        """RGB statistics (ImageNet's by default); one channel gets their mean, what a folded stem expects."""
        if in_channels == 3:
            return cls(size=size, in_channels=3, mean=tuple(mean), std=tuple(std), clahe_clip=clahe_clip)
        if in_channels == 1:
            return cls(size=size, in_channels=1, mean=(round(sum(mean) / 3, 3),), std=(round(sum(std) / 3, 3),),
                       clahe_clip=clahe_clip)
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            size=int(data["size"]),
            in_channels=int(data["in_channels"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            clahe_clip=float(data.get("clahe_clip", 0.0)),  # checkpoints from before the option: off
        )


@dataclass(frozen=True)
class Letterbox:
    """How an (orig_h, orig_w) image was scaled by ``scale`` and padded into a ``size`` square."""

    orig_h: int
    orig_w: int
    size: int
    scale: float
    top: int
    left: int
    new_h: int
    new_w: int

    def to_original(self, heatmap: np.ndarray) -> np.ndarray:
        """Crop the padding off a (size, size) map and resize it to (orig_h, orig_w)."""
        if heatmap.shape[-2:] != (self.size, self.size):
            heatmap = cv2.resize(heatmap.astype(np.float32), (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        crop = heatmap[self.top : self.top + self.new_h, self.left : self.left + self.new_w]
        return cv2.resize(crop.astype(np.float32), (self.orig_w, self.orig_h), interpolation=cv2.INTER_LINEAR)

    def box_to_original(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Map an (x0, y0, x1, y1) box on the network input to original pixel coordinates."""
        x0, y0, x1, y1 = box
        fx = lambda x: min(max((x - self.left) / self.scale, 0.0), float(self.orig_w))  # noqa: E731
        fy = lambda y: min(max((y - self.top) / self.scale, 0.0), float(self.orig_h))  # noqa: E731
        return fx(x0), fy(y0), fx(x1), fy(y1)

    def box_to_input(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Map an original-pixel (x0, y0, x1, y1) box onto the network input."""
        x0, y0, x1, y1 = box
        return (x0 * self.scale + self.left, y0 * self.scale + self.top,
                x1 * self.scale + self.left, y1 * self.scale + self.top)


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Aspect-preserving resize so the long side is ``size``, centred on a black square.

    Black padding matches a radiograph's background, so the network learns nothing
    from the pad. Area interpolation when shrinking keeps thin lucent lines as a
    faint trace instead of aliasing them away at random.
    """
    if image.ndim != 2:
        raise ValueError(f"letterbox expects a 2-D grayscale image, got shape {image.shape}")
    geometry = letterbox_geometry(*image.shape, size)
    interp = cv2.INTER_AREA if geometry.scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (geometry.new_w, geometry.new_h), interpolation=interp)
    canvas = np.zeros((size, size), dtype=image.dtype)
    canvas[geometry.top : geometry.top + geometry.new_h, geometry.left : geometry.left + geometry.new_w] = resized
    return canvas, geometry


def letterbox_geometry(height: int, width: int, size: int) -> Letterbox:
    """Where :func:`letterbox` puts an image of this size, known from its header alone (no decoding)."""
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    return Letterbox(height, width, size, scale, (size - new_h) // 2, (size - new_w) // 2, new_h, new_w)


def normalize(square: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """(S, S) in [0, 1] (float) or uint8 -> normalised (C, S, S) float32 array (numpy only, for ONNX)."""
    square = local_contrast(square, prep.clahe_clip)
    x = square.astype(np.float32) / 255.0 if square.dtype == np.uint8 else square.astype(np.float32, copy=False)
    mean = np.asarray(prep.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(prep.std, np.float32).reshape(-1, 1, 1)
    return (np.broadcast_to(x, (prep.in_channels, *x.shape)) - mean) / std


def to_tensor(square: np.ndarray, prep: Preprocessing) -> torch.Tensor:
    """(S, S) in [0, 1] (float) or uint8 -> normalised (C, S, S) float32 tensor."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(local_contrast(square, prep.clahe_clip)))
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    x = x.unsqueeze(0).expand(prep.in_channels, -1, -1)
    mean = torch.tensor(prep.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32).view(-1, 1, 1)
    return (x - mean) / std


def prepare(image: np.ndarray, prep: Preprocessing) -> tuple[torch.Tensor, Letterbox]:
    """Decoded 2-D image in [0, 1] -> ((C, S, S) network input, geometry to map results back)."""
    square, geometry = letterbox(image.astype(np.float32, copy=False), prep.size)
    return to_tensor(square, prep), geometry


def denormalize(x: torch.Tensor, prep: Preprocessing) -> np.ndarray:
    """(C, S, S) network input -> (S, S) float image in [0, 1] for overlays."""
    import torch

    mean = torch.tensor(prep.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std = torch.tensor(prep.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x * std + mean).mean(0).clamp(0, 1).cpu().numpy()
