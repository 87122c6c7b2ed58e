"""What the rest of xraylens may ask of any network: where its parts live, and how it sees its input.

Training, explanation, export and serving never ask which library a model
came from. They ask its :class:`Architecture`: the dotted path of the stem
(folded to one channel for grayscale), of the trainable head (the part a
frozen-backbone recipe trains), of the default CAM layer, and which input
normalisation its starting weights expect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

# ImageNet statistics (torchvision's); TF ports such as EfficientNet-Lite expect 0.5 / 0.5 instead.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Architecture:
    """Where the parts of one registered network live (dotted attribute paths)."""

    stem: str  # first convolution (adapted for one-channel input)
    head: str  # the trainable head: a one-logit nn.Linear, or the MIL instance classifier
    target_layer: str  # default CAM layer: the last spatial feature map the head reads
    family: str = "torchvision"  # "torchvision", "timm", "mil" or "gmic": which builder makes it
    head_dropout: str | None = None  # nn.Dropout right before the head, if any
    # Modules between target_layer output and global pooling (for the classic CAM):
    # densenet applies ReLU after ``features``; others feed the pooled map straight to the head.
    cam_activation: Callable[[torch.Tensor], torch.Tensor] | None = None
    cam_exact: bool = True  # False where a normalisation sits between pooling and the head
    # The global-average-pooling module, or None where torchvision pools inside ``forward``
    # (then other pooling is appended to ``features`` and forward's pooling sees a 1x1 map).
    pool_module: str | None = None
    classic_cam: bool = True  # False where the head is not one linear map of the pooled features
    native_map: bool = False  # the model's own saliency map (``model.saliency(x)``), e.g. spatial MIL
    mean: tuple[float, float, float] = IMAGENET_MEAN  # what the ImageNet weights were trained with
    std: tuple[float, float, float] = IMAGENET_STD
    library_name: str = ""  # the name in torchvision / timm when it differs from ours
    extra_stems: tuple[str, ...] = ()  # further first convolutions that read the image (a global-local model's)


def get_submodule(model: nn.Module, dotted: str) -> nn.Module:
    return model.get_submodule(dotted)


def set_submodule(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def one_logit_linear(in_features: int) -> nn.Linear:
    """A fresh one-logit head, initialised small so the first steps do not swamp pretrained features."""
    head = nn.Linear(in_features, 1)
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    return head
