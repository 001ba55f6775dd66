"""Reader of VISSL checkpoints (the trunk's ``_feature_blocks``)."""

from __future__ import annotations

from collections.abc import Mapping

from ..io import CheckpointError
from .base import ReadResult, _find_weights, _split_backbone, _wrapper_entries

_VISSL_STATE = {
    "loss": "loss state (e.g. MoCo's key encoder and queue, SwAV's queue)",
    "criterion": "loss state (e.g. MoCo's key encoder and queue, SwAV's queue)",
    "meters": "evaluation meter state",
    "ema_meters": "evaluation meter state",
    "hooks": "training hook state",
    "ema_model": "moving-average copy of the model (the trained weights are read)",
    "amp": "mixed-precision state",
    "heads": "heads (projection, prototypes or classifier), not part of the trunk",
}


def read_vissl(obj: object) -> ReadResult | None:
    """VISSL: the trunk at ``["classy_state_dict"]["base_model"]["model"]["trunk"]``; heads ignored.

    The trunk holds torchvision names under ``_feature_blocks.`` (``base_model._feature_blocks.``
    when it is a linear-evaluation feature extractor). A bare trunk (e.g. as .safetensors) reads too.
    """
    if not isinstance(obj, Mapping):
        return None
    ignored: dict[str, str] = {}
    info: dict[str, object] = {}
    unexplained: dict[str, str] = {}
    path = ""
    if "classy_state_dict" in obj:
        node = obj
        for level in ("classy_state_dict", "base_model", "model", "trunk"):
            if not isinstance(node.get(level), Mapping):
                raise CheckpointError(f"VISSL checkpoint without {path}{level}")
            level_ignored, level_info, level_unexplained = _wrapper_entries(
                {key: value for key, value in node.items() if key != level}, _VISSL_STATE, path
            )
            ignored.update(level_ignored)
            unexplained.update(level_unexplained)
            info = {**level_info, **info}  # the outermost level's values win
            node, path = node[level], f"{path}{level}."
        trunk = node
    else:
        found = _find_weights(obj)
        if found is None:
            return None
        trunk = obj
    features = "_feature_blocks."
    if any(str(key).startswith(f"base_model.{features}") for key in trunk):
        features = f"base_model.{features}"
    if path == "" and not any(key.startswith(features) for key in trunk):
        return None
    # a trunk holds nothing but the network: any key outside _feature_blocks is unexplained
    state_dict, trunk_ignored = _split_backbone(trunk, features, part_reason=lambda key: None)
    ignored.update({f"{path}{key}": reason for key, reason in trunk_ignored.items()})
    return ReadResult(state_dict, ignored, "vissl", info, unexplained)
