"""Shared test helpers (not a test module): random networks whose outputs actually depend on the input."""

from __future__ import annotations

import torch

from xraylens.models import create_model, head_layer


def lively_model(name: str = "mobilenet_v2") -> torch.nn.Module:
    """A random network whose outputs vary with the input (random BN statistics would flatten them)."""
    torch.manual_seed(0)
    model = create_model(name).train()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batch
    x = (torch.rand(8, 1, 64, 64) - 0.449) / 0.226
    with torch.no_grad():
        model(x)
        model.eval()
        head = head_layer(model, name)
        torch.nn.init.normal_(head.weight, std=0.05)
        head.bias.sub_(model(x).mean())  # logits spread around 0: probabilities well inside (0, 1)
    return model


def tiny_checkpoint(path, size: int = 32, name: str = "mobilenet_v2"):
    """A slim xraylens checkpoint of :func:`lively_model` at ``size`` px, written to ``path``."""
    from xraylens.config import ModelConfig
    from xraylens.data.preprocess import Preprocessing
    from xraylens.models import CheckpointMeta, save_checkpoint

    meta = CheckpointMeta(model=ModelConfig(name=name), preprocessing=Preprocessing.for_channels(size, 1))
    return save_checkpoint(path, lively_model(name), meta)
