"""Reader of Detectron2 checkpoints: the ``.pkl`` it loads and trained ``.pth`` models (FPN or C4).

The ResNet names are mapped by ``converters.detectron2``, the one table both directions use.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..detectron2 import from_detectron2_name
from ..io import CheckpointError
from .base import ReadResult, _entries_around, _find_weights, _split

# Where a Detectron2 model keeps its ResNet: plain (the .pkl it loads), FPN bottom-up, C4 trunk and res5 head.
_DETECTRON2_BACKBONE_PREFIXES = ("backbone.bottom_up.", "backbone.", "roi_heads.", "")
_DETECTOR_HEADS = (
    "proposal_generator.", "roi_heads.", "backbone.fpn_", "backbone.top_block.", "sem_seg_head.", "head."
)
_DETECTRON2_PARTS = (
    ("roi_heads.res5.norm.", "extra BatchNorm after res5 (MoCo's Res5ROIHeadsExtraNorm), not part of the ResNet"),
    ("pixel_mean", "detector input normalization (its channel order is in the config, not the weights)"),
    ("pixel_std", "detector input normalization (its channel order is in the config, not the weights)"),
    *((prefix, "detector head, not backbone") for prefix in _DETECTOR_HEADS),
)


def _detectron2_part_reason(key: str) -> str | None:
    return next((reason for prefix, reason in _DETECTRON2_PARTS if key.startswith(prefix)), None)


def _detectron2_backbone_name(key: str) -> str | None:
    for prefix in _DETECTRON2_BACKBONE_PREFIXES:
        if key.startswith(prefix):
            name = from_detectron2_name(key[len(prefix):])
            if name is not None:
                return name
    return None


def read_detectron2(obj: object) -> ReadResult | None:
    """Detectron2 ``.pkl`` (``{"model": numpy arrays, "__author__", ...}``) and trained ``.pth`` models.

    Plain names (``stem.conv1``, ``res2.0.conv1.norm``, ``shortcut.norm``) as MoCo's converter writes
    them; a trained model has them under ``backbone.bottom_up.`` (FPN) or ``backbone.`` with res5 in
    ``roi_heads.res5.`` (C4), and its detector heads are ignored. The weights do not record
    RESNETS.STRIDE_IN_1X1: they are read as torchvision's ResNet (stride in the 3x3 conv), right for
    MoCo-style overlays and wrong for models trained from MSRA's Caffe2 weights.
    """
    if isinstance(obj, Mapping) and (obj.get("__author__") == "Caffe2" or "blobs" in obj or "conv1_w" in obj):
        raise CheckpointError(
            "Caffe2/Detectron weights (Caffe2 names such as conv1_w, as in MSRA's R-50.pkl): their ResNet puts the "
            "stride in the 1x1 conv and expects BGR input, so they are no torchvision ResNet; not supported"
        )
    found = _find_weights(obj, "model")
    if found is None:
        return None
    weights, weights_key = found
    stem_found = any(f"{prefix}stem.conv1.weight" in weights for prefix in _DETECTRON2_BACKBONE_PREFIXES)
    if not (stem_found or (weights_key is not None and "__author__" in obj)):
        return None
    state_dict, ignored = _split(weights, _detectron2_backbone_name, _detectron2_part_reason)
    around, info, unexplained = _entries_around(obj, weights_key)
    info["note"] = "read with the stride in the 3x3 conv (RESNETS.STRIDE_IN_1X1 False); the weights do not record it"
    return ReadResult(state_dict, {**ignored, **around}, "detectron2", info, unexplained)
