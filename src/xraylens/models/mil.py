"""Spatial multiple-instance learning: every location of a native-resolution feature map is an instance.

Why: a hairline fracture is a few pixels of a 512 px radiograph. Shrinking the
image to 224 px averages it away, and global average pooling dilutes what is
left. Here an ImageNet backbone reads the image at native resolution down to
stride 16 (a 32 x 32 grid at 512 px), a 1x1 instance classifier scores every
location, and top-k pooling (GMIC's top-t%, Shen et al. 2021) turns the
hottest locations into the image's logit. The instance map is the model's own
explanation (``saliency``), no gradients needed; ``explain --method saliency``
and ``explain-eval`` score it beside Grad-CAM.

The split into ``features`` and ``classify_features`` is what makes the CPU
recipe fast: with the backbone frozen, features are computed once per image
and only the small head is trained (``train.backbone=cached``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from xraylens.models.architecture import Architecture
from xraylens.models.pooling import GlobalPool
from xraylens.models.timm_nets import TF_MEAN, TF_STD, timm_backbone

MIL_HIDDEN = 128  # instance classifier width: measured enough on frozen Lite0 features (README)

def _lite0_mil(cam_layer: str = "backbone.blocks.4") -> Architecture:
    return Architecture("backbone.conv_stem", "head", cam_layer, family="mil", classic_cam=False,
                        native_map=True, mean=TF_MEAN, std=TF_STD, library_name="tf_efficientnet_lite0")


MIL_ARCHITECTURES: dict[str, Architecture] = {
    # EfficientNet-Lite0 (ImageNet weights install offline) cut after blocks.4: 112 channels at stride 16
    "mil_efficientnet_lite0": _lite0_mil(),
    # the same weights with blocks.3's stride turned into dilation (DeepLab's atrous trick): stride 8, a
    # 64 x 64 grid at 512 px, for boxes around findings a few pixels wide (4x the cells and feature memory)
    "mil_efficientnet_lite0_stride8": _lite0_mil(),
    # the stride-16 model reading blocks 2, 3 and 4 at once (40 + 80 + 112 channels; blocks.2's stride-8
    # map averaged 2 x 2 onto the same 32 x 32 grid): shallower features of local contrast beside the
    # deeper ones, for small lucent lesions (README, "What learns"); the CAM layer is the stacked map
    "mil_efficientnet_lite0_multiscale": _lite0_mil("backbone.stacked"),
}
_CUT = {"tf_efficientnet_lite0": 5}  # blocks kept: 0..4 (stride 16)
FEATURE_STRIDE = {"mil_efficientnet_lite0": 16, "mil_efficientnet_lite0_stride8": 8,
                  "mil_efficientnet_lite0_multiscale": 16}
UNCUTTABLE = ("this model stacks the maps of stages at different strides before the cut, so no one stored "
              "tensor holds them; partial fine-tuning (train.trainable_stages) needs a cut where they meet")
STACKED_BLOCKS = {"mil_efficientnet_lite0_multiscale": {2: 1, 3: 0, 4: 0}}  # block -> 2x2 halvings onto the grid


def max_trainable_stages(name: str) -> int:
    """The most backbone stages partial fine-tuning can train in MIL model ``name``, read without building it.

    A stacked trunk keeps at least one frozen stage, whose map is what its cut stores.
    """
    return _CUT[MIL_ARCHITECTURES[name].library_name] - (name in STACKED_BLOCKS)


class SpatialMIL(nn.Module):
    """(B, C, S, S) -> (B, 1) logit; ``saliency`` gives the (B, S/16, S/16) instance logits behind it (S/8
    dilated or stacked)."""

    def __init__(self, backbone: nn.Module, channels: int, *, hidden: int = MIL_HIDDEN, dropout: float = 0.2,
                 pooling: str = "topk") -> None:
        super().__init__()
        self.backbone = backbone
        self.head = instance_classifier(channels, hidden, dropout)
        self.pool = GlobalPool(pooling, flatten=True)

    def features(self, x: torch.Tensor, tail: int = 0) -> torch.Tensor:
        """(B, C, S, S) -> (B, K, h, w) backbone features: what ``train.backbone=cached`` stores.

        ``tail`` > 0 stops before the last ``tail`` stages (partial fine-tuning,
        ``train.trainable_stages``): those are run by :meth:`classify_features`.
        """
        if tail == 0:
            return self.backbone(x)
        if isinstance(self.backbone, StackedTrunk):
            return self.backbone.cut(x, tail)
        x = self.backbone.bn1(self.backbone.conv_stem(x))
        for stage in self.stages()[: len(self.backbone.blocks) - tail]:
            x = stage(x)
        return x

    def stages(self, last: int | None = None) -> list[nn.Module]:
        """The backbone's stages (timm's ``blocks``), or only the ``last`` ones."""
        stages = list(self.backbone.blocks)
        if last is None:
            return stages
        return stages[len(stages) - last :] if last > 0 else []

    def classify_features(self, features: torch.Tensor, tail: int = 0) -> torch.Tensor:
        """(B, K, h, w) features (taken ``tail`` stages early) -> (B, 1) logits."""
        return self.classify_with_map(features, tail)[0]

    def classify_with_map(self, features: torch.Tensor, tail: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1) logits and the (B, h, w) instance logits they pool: what box supervision trains."""
        if isinstance(self.backbone, StackedTrunk):
            features = self.backbone.finish(features, tail) if tail else features
        else:
            for stage in self.stages(tail):
                features = stage(features)
        cells = self.head(features)
        return self.pool(cells), cells[:, 0]

    def saliency(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) -> (B, h, w) instance logits: where the model finds the abnormality.

        A stacked backbone is read on its finest stage's grid (:meth:`StackedTrunk.fine`): a finer map
        from the same head. Other backbones give the grid their logit pools.
        """
        features = self.backbone.fine(x) if isinstance(self.backbone, StackedTrunk) else self.backbone(x)
        return self.head(features)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify_features(self.features(x))


def instance_classifier(channels: int, hidden: int, dropout: float) -> nn.Sequential:
    """1x1 convolutions scoring every cell: (B, channels, h, w) -> (B, 1, h, w); starts near logit 0.

    The near-zero last layer (std 0.01) against PyTorch's default init, four paired runs (README): 0.835
    vs 0.864 and 0.869 vs 0.854 (sweep, realistic 1000, seeds 0 and 1), 0.827 vs 0.852 (CLI, same data),
    0.938 vs 0.910 (the demo): neither is better beyond one run's spread, so the measured default stays.
    """
    head = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Dropout2d(dropout), nn.Conv2d(hidden, 1, 1))
    nn.init.normal_(head[3].weight, std=0.01)
    nn.init.zeros_(head[3].bias)
    return head


class StackedTrunk(nn.Module):
    """The backbone's stem and stages, returning several stages' maps stacked along channels on one grid.

    Why: a lytic lesion is a small lucent patch inside a bone, and frozen
    ImageNet features caught it far better with the shallower stages beside
    blocks.4 (README, "Stacking shallower blocks": blocks.3 bought most of it,
    blocks.2 a little more). Finer maps are averaged 2 x 2 (``halvings`` times,
    rounding up as the strided convolutions do) onto the last map's grid.
    """

    def __init__(self, conv_stem: nn.Module, bn1: nn.Module, blocks: nn.Sequential,
                 halvings: dict[int, int]) -> None:
        super().__init__()
        self.conv_stem, self.bn1, self.blocks = conv_stem, bn1, blocks
        self.halvings = dict(halvings)
        self.stacked = nn.Identity()  # the stacked map, named so CAM methods can hook it

    def _stage_maps(self, x: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        """(halvings, map) of each stacked stage, at the stage's own stride."""
        x = self.bn1(self.conv_stem(x))
        maps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.halvings:
                maps.append((self.halvings[i], x))
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stacked(torch.cat([_halve(m, halvings) for halvings, m in self._stage_maps(x)], 1))

    def cut(self, x: torch.Tensor, tail: int) -> torch.Tensor:
        """What partial fine-tuning stores, ``tail`` stages before the end: one tensor for :meth:`finish`.

        The raw map of the last frozen stage (the trainable stages' input), after the maps of the stacked
        stages before it, already on the grid. Those must share the raw map's size (for blocks 2-4 every
        cut does: blocks.2 pooled and blocks.3 are both stride 16), else :data:`UNCUTTABLE`.
        """
        frozen = self._frozen(tail)
        x = self.bn1(self.conv_stem(x))
        maps = []
        for i, block in enumerate(self.blocks[:frozen]):
            x = block(x)
            if i in self.halvings and i < frozen - 1:
                maps.append(_halve(x, self.halvings[i]))
        if any(m.shape[-2:] != x.shape[-2:] for m in maps):
            raise ValueError(f"a cut {tail} stages before the end: {UNCUTTABLE}")
        return torch.cat([*maps, x], 1)

    def finish(self, features: torch.Tensor, tail: int) -> torch.Tensor:
        """:meth:`cut`'s tensor -> the stacked map, running the last ``tail`` stages (the trainable ones)."""
        frozen = self._frozen(tail)
        done = [i for i in self.halvings if i < frozen - 1]
        widths = [_out_channels(self.blocks[i]) for i in done]
        *maps, x = torch.split(features, [*widths, features.shape[1] - sum(widths)], dim=1)
        maps = list(maps)
        if frozen - 1 in self.halvings:
            maps.append(_halve(x, self.halvings[frozen - 1]))
        for i in range(frozen, len(self.blocks)):
            x = self.blocks[i](x)
            if i in self.halvings:
                maps.append(_halve(x, self.halvings[i]))
        return self.stacked(torch.cat(maps, 1))

    def _frozen(self, tail: int) -> int:
        """Stages before the trainable ``tail``: at least one, so :meth:`cut` stores a stage's map."""
        if not 0 < tail < len(self.blocks):
            raise ValueError(f"a stacked trunk of {len(self.blocks)} stages trains 1 to {len(self.blocks) - 1} "
                             f"of them, not {tail}")
        return len(self.blocks) - tail

    def fine(self, x: torch.Tensor) -> torch.Tensor:
        """The stacked map on the finest stage's grid (stride 8 for blocks 2-4): what the saliency map reads.

        Why: a stride-16 cell is 16 px, and many realistic fracture boxes are
        3-12 px thin, so the coarse map's peak (a cell's centre) often lands a
        few pixels beside a line the model found (16 % of fracture films at
        realistic 3000). The trained head read at stride 8 moved explain-eval's
        pointing game from 53 % to 60 % on those fractures, hardware 86 % ->
        97 % (README, "Per kind, and a finer native map"). A stage that is
        pooled 2 x 2 for the grid is averaged over a centred window of that
        extent instead (3 x 3 for one halving, stride 1), so the head sees the
        statistics it was trained on; coarser stages are interpolated
        bilinearly. Classification still pools the coarse grid.
        """
        maps = self._stage_maps(x)
        finest = max(halvings for halvings, _ in maps)
        size = next(m.shape[-2:] for halvings, m in maps if halvings == finest)
        out = []
        for halvings, m in maps:
            if halvings:
                window = 2**halvings + 1
                m = F.avg_pool2d(m, window, stride=1, padding=window // 2, count_include_pad=False)
            if m.shape[-2:] != size:
                m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            out.append(m)
        return torch.cat(out, 1)


def _halve(m: torch.Tensor, halvings: int) -> torch.Tensor:
    """``m`` averaged 2 x 2 ``halvings`` times, rounding up as the strided convolutions do."""
    for _ in range(halvings):
        m = F.avg_pool2d(m, 2, ceil_mode=True)
    return m


def stride16_backbone(library: str, *, pretrained: bool, weights_path: str | None,
                      stride: int = 16) -> tuple[nn.Module, int]:
    """The timm backbone (with its ImageNet weights, if asked) cut at stride 16, and its output channels.

    ``stride=8`` dilates the stride-16 stages instead of striding (same weights, a finer map).
    """
    if stride not in (8, 16):
        raise ValueError(f"feature stride must be 8 or 16, got {stride}")
    full = timm_backbone(library, pretrained=pretrained, weights_path=weights_path, output_stride=stride)
    kept = nn.Sequential(*list(full.blocks.children())[: _CUT[library]])
    return nn.Sequential(OrderedDict(conv_stem=full.conv_stem, bn1=full.bn1, blocks=kept)), _out_channels(kept)


def build_mil(name: str, arch: Architecture, *, pretrained: bool, weights_path: str | None,
              dropout: float, pooling: str) -> nn.Module:
    """The stride-16 (or dilated stride-8, or stacked multi-stage) backbone plus the MIL head."""
    backbone, channels = stride16_backbone(arch.library_name, pretrained=pretrained, weights_path=weights_path,
                                           stride=FEATURE_STRIDE[name])
    if name in STACKED_BLOCKS:
        halvings = STACKED_BLOCKS[name]
        channels = sum(_out_channels(backbone.blocks[i]) for i in halvings)
        backbone = StackedTrunk(backbone.conv_stem, backbone.bn1, backbone.blocks, halvings)
    return SpatialMIL(backbone, channels, dropout=dropout, pooling=pooling)


def _out_channels(stage: nn.Module) -> int:
    return [m for m in stage.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
