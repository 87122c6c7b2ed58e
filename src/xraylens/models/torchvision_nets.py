"""torchvision classifiers with a one-logit head: the MURA paper's DenseNet-169 and the usual baselines."""

from __future__ import annotations

import torch
from torch import nn

from xraylens.models.architecture import Architecture, get_submodule, one_logit_linear, set_submodule
from xraylens.models.pooling import GlobalPool
from xraylens.models.weights import download_torchvision_weights, fit_state_dict, read_state_dict

TORCHVISION_ARCHITECTURES: dict[str, Architecture] = {
    "mobilenet_v2": Architecture("features.0.0", "classifier.1", "features.18", head_dropout="classifier.0"),
    "densenet121": Architecture("features.conv0", "classifier", "features.norm5",
                                cam_activation=torch.relu),
    "densenet169": Architecture("features.conv0", "classifier", "features.norm5",
                                cam_activation=torch.relu),
    "resnet18": Architecture("conv1", "fc", "layer4", pool_module="avgpool"),
    "resnet50": Architecture("conv1", "fc", "layer4", pool_module="avgpool"),
    "efficientnet_b0": Architecture("features.0.0", "classifier.1", "features.8", head_dropout="classifier.0",
                                    pool_module="avgpool"),
    "convnext_tiny": Architecture("features.0.0", "classifier.2", "features.7", cam_exact=False,
                                  pool_module="avgpool"),
}


def build_torchvision(name: str, arch: Architecture, *, pretrained: bool, weights_path: str | None,
                      dropout: float, pooling: str) -> nn.Module:
    """torchvision's network with ImageNet weights (optional) and a one-logit head; stem still RGB."""
    import torchvision

    model = torchvision.models.get_model(name, weights=None)
    if weights_path is not None:
        model.load_state_dict(fit_state_dict(model, read_state_dict(weights_path), str(weights_path)))
    elif pretrained:
        model.load_state_dict(download_torchvision_weights(name))
    head = get_submodule(model, arch.head)
    assert isinstance(head, nn.Linear)
    set_submodule(model, arch.head, one_logit_linear(head.in_features))
    if arch.head_dropout is not None:
        set_submodule(model, arch.head_dropout, nn.Dropout(p=dropout))
    if pooling != "avg":
        _replace_pooling(model, arch, pooling)
    return model


def _replace_pooling(model: nn.Module, arch: Architecture, pooling: str) -> None:
    if arch.pool_module is not None:
        set_submodule(model, arch.pool_module, GlobalPool(pooling))
        return
    features = get_submodule(model, "features")
    assert isinstance(features, nn.Sequential)
    # forward() then average-pools a 1x1 map (a no-op); densenet's ReLU after ``features`` must
    # come before the pooling, and is a no-op on the non-negative result when applied again.
    if arch.cam_activation is torch.relu:
        features.add_module("pool", nn.Sequential(nn.ReLU(), GlobalPool(pooling, fresh_output=True)))
    else:
        features.add_module("pool", GlobalPool(pooling))
