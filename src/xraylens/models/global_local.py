"""A global-local network for tiny findings, in the spirit of GMIC (Shen et al., Medical Image Analysis 2021).

Why: the spatial MIL model (:mod:`xraylens.models.mil`) scores every cell of a
stride-16 map with a 1x1 classifier, so a cell never sees the shape of a
fracture line beyond its own receptive field, at the backbone's coarse scale.
GMIC adds a second look: the global network's saliency map says *where*, the
K most salient regions are cropped from the input and read again, enlarged,
by a local network, whose patch embeddings are pooled by gated-attention MIL
(Ilse et al. 2018) and fused with the global evidence.

The parts, one small module each as in GMIC's own code:

* global network: the ImageNet backbone cut at stride 16 plus the instance
  classifier of the spatial MIL model; its cell map, top-k pooled, is the
  global logit and the model's ``saliency``;
* :class:`PatchRetrieval`: the K hottest cells, greedily, each suppressing its
  neighbourhood so the crops do not all land on one spot (not differentiable,
  as in GMIC);
* crops: ``torchvision.ops.roi_align`` on the input image, enlarged
  ``LOCAL_SCALE`` times (exports to ONNX as RoiAlign);
* :class:`LocalHead` over a second backbone: a patch embedding per crop and
  gated attention over the K patches -> the local logit;
* fusion: a linear map of the global and local logits (GMIC fuses embeddings;
  three parameters are what a few thousand images can fit).

Training supervises all three logits (GMIC's loss): :meth:`GlobalLocalMIL.forward_parts`.
The prediction is the fused one. Crops move as the global map learns, so the
backbones' features cannot be cached (``train.backbone=cached``); frozen
backbones with trainable heads (``frozen``) and full fine-tuning work.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torchvision.ops import roi_align

from xraylens.models.architecture import Architecture
from xraylens.models.mil import MIL_HIDDEN, instance_classifier, stride16_backbone
from xraylens.models.pooling import GlobalPool
from xraylens.models.timm_nets import TF_MEAN, TF_STD

PATCHES = 4  # crops per image (GMIC reads 6 on mammograms of 2944 x 1920 px)
CROP_FRACTION = 3 / 16  # crop side / input side: 96 px of a 512 px letterbox (6 x 6 global cells)
LOCAL_SCALE = 2  # crops are enlarged this much for the local network: stride 8 on the original image

GLOBAL_LOCAL_ARCHITECTURES: dict[str, Architecture] = {
    "gmic_efficientnet_lite0": Architecture(
        "backbone.conv_stem", "head", "backbone.blocks.4", family="gmic", classic_cam=False, native_map=True,
        mean=TF_MEAN, std=TF_STD, library_name="tf_efficientnet_lite0", extra_stems=("local_backbone.conv_stem",)),
}


class GlobalLocalOutput(NamedTuple):
    logit: torch.Tensor  # (B, 1) fused: the prediction
    global_logit: torch.Tensor  # (B, 1) top-k pooled cell map
    local_logit: torch.Tensor  # (B, 1) attention-pooled crops
    cells: torch.Tensor  # (B, h, w) global instance logits: the saliency map
    boxes: torch.Tensor  # (B, K, 4) crops read by the local network, x0 y0 x1 y1 in input pixels
    attention: torch.Tensor  # (B, K) the local network's weight of each crop


class PatchRetrieval(nn.Module):
    """(B, h, w) cell map -> (B, K, 4) square crops around the K hottest cells, at most one per neighbourhood."""

    def __init__(self, patches: int = PATCHES, crop_fraction: float = CROP_FRACTION) -> None:
        super().__init__()
        self.patches = patches
        self.crop_fraction = crop_fraction

    def crop_side(self, size: int) -> float:
        """Side in input pixels of every crop taken from a ``size`` px input."""
        return max(1.0, round(self.crop_fraction * size))

    @torch.no_grad()
    def forward(self, cells: torch.Tensor, size: int) -> torch.Tensor:
        b, h, w = cells.shape
        stride = size / w
        crop = self.crop_side(size)
        radius = max(1, int(crop / stride) // 2)  # cells a crop covers on either side of its centre
        rows = torch.arange(h, device=cells.device)[None, :, None]  # (1, h, 1)
        cols = torch.arange(w, device=cells.device)[None, None, :]  # (1, 1, w)
        free = cells.detach().float()
        boxes = []
        for _ in range(self.patches):
            flat = free.flatten(1).argmax(1)  # (B,)
            r, c = flat // w, flat % w
            near = ((rows - r[:, None, None]).abs() <= radius) & ((cols - c[:, None, None]).abs() <= radius)
            free = free.masked_fill(near, float("-inf"))  # the next crop goes elsewhere
            centre_x = ((c.float() + 0.5) * stride).clamp(crop / 2, size - crop / 2)
            centre_y = ((r.float() + 0.5) * stride).clamp(crop / 2, size - crop / 2)
            boxes.append(torch.stack([centre_x - crop / 2, centre_y - crop / 2,
                                      centre_x + crop / 2, centre_y + crop / 2], dim=1))
        return torch.stack(boxes, dim=1)  # (B, K, 4)


def crop_patches(images: torch.Tensor, boxes: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, S, S) images, (B, K, 4) boxes -> (B*K, C, side, side) bilinear crops (RoiAlign)."""
    b, k, _ = boxes.shape
    index = torch.arange(b, device=boxes.device, dtype=boxes.dtype).repeat_interleave(k)[:, None]
    rois = torch.cat([index, boxes.reshape(b * k, 4)], dim=1).to(images.dtype)
    return roi_align(images, rois, output_size=side, spatial_scale=1.0, sampling_ratio=2, aligned=True)


class LocalHead(nn.Module):
    """Crop features -> patch embeddings -> gated-attention MIL (Ilse et al. 2018) -> local logit."""

    def __init__(self, channels: int, hidden: int = MIL_HIDDEN, dropout: float = 0.2, pooling: str = "topk") -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Dropout2d(dropout))
        self.pool = GlobalPool(pooling, flatten=True)  # a crop's embedding: where its units are strongest
        self.attend_v = nn.Linear(hidden, hidden)
        self.attend_u = nn.Linear(hidden, hidden)
        self.attend_w = nn.Linear(hidden, 1)
        self.classify = nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor, patches: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B*K, C, h, w) -> (B, 1) logit and (B, K) attention over the crops."""
        h = self.pool(self.embed(features))  # (B*K, hidden)
        h = h.reshape(-1, patches, h.shape[-1])  # (B, K, hidden)
        gate = torch.tanh(self.attend_v(h)) * torch.sigmoid(self.attend_u(h))
        attention = self.attend_w(gate).squeeze(-1).softmax(dim=1)  # (B, K)
        bag = (attention.unsqueeze(-1) * h).sum(dim=1)  # (B, hidden)
        return self.classify(bag), attention


class GlobalLocalHeads(nn.Module):
    """Everything trainable on top of the two backbones: what ``train.backbone=frozen`` trains."""

    def __init__(self, channels: int, local_channels: int, hidden: int, dropout: float, pooling: str) -> None:
        super().__init__()
        self.cells = instance_classifier(channels, hidden, dropout)
        self.local = LocalHead(local_channels, hidden, dropout, pooling)
        # GMIC fuses the two looks' embeddings; with a few thousand images a linear map of the two logits
        # (3 parameters, starting as their mean) is what the data can fit, and says how much each look counts.
        self.fusion = nn.Linear(2, 1)
        nn.init.constant_(self.fusion.weight, 0.5)
        nn.init.zeros_(self.fusion.bias)


class GlobalLocalMIL(nn.Module):
    """(B, C, S, S) -> (B, 1) fused logit; ``forward_parts`` gives every logit, the map and the crops."""

    def __init__(self, backbone: nn.Module, local_backbone: nn.Module, channels: int, local_channels: int, *,
                 hidden: int = MIL_HIDDEN, dropout: float = 0.2, pooling: str = "topk",
                 patches: int = PATCHES) -> None:
        super().__init__()
        self.backbone = backbone
        self.local_backbone = local_backbone
        self.head = GlobalLocalHeads(channels, local_channels, hidden, dropout, pooling)
        self.pool = GlobalPool(pooling, flatten=True)
        self.retrieve = PatchRetrieval(patches)

    def forward_parts(self, x: torch.Tensor) -> GlobalLocalOutput:
        cells = self.head.cells(self.backbone(x))  # (B, 1, h, w)
        global_logit = self.pool(cells)  # (B, 1)
        size = x.shape[-1]
        boxes = self.retrieve(cells[:, 0], size)  # (B, K, 4)
        crops = crop_patches(x, boxes, int(LOCAL_SCALE * self.retrieve.crop_side(size)))  # (B*K, C, 2c, 2c)
        local_logit, attention = self.head.local(self.local_backbone(crops), self.retrieve.patches)
        logit = self.head.fusion(torch.cat([global_logit, local_logit], dim=1))
        return GlobalLocalOutput(logit, global_logit, local_logit, cells[:, 0], boxes, attention)

    def saliency(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, h, w) global instance logits: where the crops are taken from."""
        return self.head.cells(self.backbone(x))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(x).logit


def build_global_local(name: str, arch: Architecture, *, pretrained: bool, weights_path: str | None,
                       dropout: float, pooling: str) -> nn.Module:
    """Two copies of the ImageNet backbone cut at stride 16 (global and local), plus the heads."""
    (backbone, channels), (local, local_channels) = (
        stride16_backbone(arch.library_name, pretrained=pretrained, weights_path=weights_path) for _ in range(2))
    return GlobalLocalMIL(backbone, local, channels, local_channels, dropout=dropout, pooling=pooling)
