"""Networks: one factory over torchvision, timm and the spatial MIL model; checkpoints that describe themselves.

The package's rooms: ``factory`` (``create_model``, the registry), the
builders per family (``torchvision_nets``, ``timm_nets``, ``mil``, ``global_local``), ``pooling``,
``weights`` (where pretrained weights come from, with checksums) and
``checkpoints``. Importing it builds nothing and downloads nothing.
"""

from xraylens.models.architecture import Architecture, get_submodule
from xraylens.models.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    LIGHTNING_PREFIX,
    CheckpointError,
    CheckpointMeta,
    LoadedModel,
    load_checkpoint,
    save_checkpoint,
)
from xraylens.models.factory import (
    ARCHITECTURES,
    MODEL_NAMES,
    architecture,
    backbone_parameters,
    backbone_tail,
    create_model,
    create_model_from_config,
    has_feature_split,
    has_logit_parts,
    head_layer,
    head_parameters,
    preprocessing_for,
    target_layer,
)
from xraylens.models.global_local import GlobalLocalMIL
from xraylens.models.mil import SpatialMIL
from xraylens.models.pooling import POOLINGS, GlobalPool
from xraylens.models.weights import PretrainedWeightsError

__all__ = [
    "ARCHITECTURES", "CHECKPOINT_FORMAT", "CHECKPOINT_FORMAT_VERSION", "LIGHTNING_PREFIX", "MODEL_NAMES", "POOLINGS",
    "Architecture", "CheckpointError", "CheckpointMeta", "GlobalLocalMIL", "GlobalPool", "LoadedModel", "PretrainedWeightsError",
    "SpatialMIL", "architecture", "backbone_parameters", "backbone_tail", "create_model", "create_model_from_config", "get_submodule",
    "has_feature_split", "has_logit_parts", "head_layer", "head_parameters", "load_checkpoint", "preprocessing_for", "save_checkpoint",
    "target_layer",
]
