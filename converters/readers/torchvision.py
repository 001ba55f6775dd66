"""Readers of torchvision ResNet state dicts and of timm's ResNets, which use the same names."""

from __future__ import annotations

from collections.abc import Mapping

from ..canonical import RESNET_ARCHS
from .base import ReadResult, _entries_around


def read_torchvision(obj: object, source_format: str = "torchvision") -> ReadResult | None:
    """A torchvision ResNet state dict, bare or under ``state_dict``/``model``, with or without ``fc``.

    Covers torchvision's released weights, pytorch/examples ImageNet checkpoints (``module.`` from
    DataParallel/DDP), torchvision's reference training scripts, and timm's ResNets (same names).
    """
    if not isinstance(obj, Mapping):
        return None
    for weights_key in ("state_dict", "model", "state_dict_ema", None):
        weights = obj if weights_key is None else obj.get(weights_key)
        if isinstance(weights, Mapping) and weights and all(isinstance(key, str) for key in weights):
            if all(key.startswith("module.") for key in weights):
                weights = {key[len("module."):]: value for key, value in weights.items()}
            if "conv1.weight" in weights and any(key.startswith("layer1.") for key in weights):
                break
    else:
        return None
    ignored, info, unexplained = _entries_around(obj, weights_key)
    declared = info.get("arch")
    if isinstance(declared, str) and declared.split(".")[0] in RESNET_ARCHS:
        info["arch"] = declared.split(".")[0]  # timm records tagged names: "resnet50.a1_in1k"
    state_dict = {}
    for name, value in weights.items():
        if name.startswith("fc."):
            ignored[name] = "classifier"
        else:
            state_dict[name] = value
    return ReadResult(state_dict, ignored, source_format, info, unexplained)


def read_timm(obj: object) -> ReadResult | None:
    """timm ResNets: bare (hub weights) or timm train.py's ``{"state_dict", "state_dict_ema", "args", ...}``.

    timm's resnet18..152 use torchvision's names, fc included, so auto-detection reports them as
    ``torchvision``; naming this format labels them ``timm``. The trained weights are read, not the EMA.
    """
    return read_torchvision(obj, source_format="timm")
