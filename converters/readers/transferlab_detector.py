"""Reader of transferlab's fine-tuned detectors, R50-C4 and R50-FPN (``model_final.pth`` of tools/transfer.py)."""

from __future__ import annotations

from .base import ReadResult, _entries_around, _find_weights, _split
from .detectron2 import _detectron2_part_reason

# transferlab's R50-C4 detector: the trunk under backbone. with torchvision's names, res5 (torchvision's layer4)
# in the RoI head, as benchmarks/detection builds it; its heads carry Detectron2's names.
_TRANSFERLAB_TRUNK = ("conv1", "bn1", "layer1", "layer2", "layer3")
_TRANSFERLAB_RES5 = "roi_heads.res5."
# transferlab's R50-FPN: the whole ResNet under backbone.bottom_up. with torchvision's names, the pyramid
# (torchvision's FeaturePyramidNetwork) under backbone.fpn.
_TRANSFERLAB_FPN_BOTTOM_UP = "backbone.bottom_up."
_TRANSFERLAB_FPN_REASON = "feature pyramid (lateral and output convs), not part of the ResNet"
_TRANSFERLAB_TRAINING_STATE = {"rng_states": "random-number generator states of every process (for resuming)"}


def _transferlab_detector_name(key: str) -> str | None:
    if key.startswith(_TRANSFERLAB_FPN_BOTTOM_UP):
        return key[len(_TRANSFERLAB_FPN_BOTTOM_UP):]
    if key.startswith("backbone.") and key.split(".")[1] in _TRANSFERLAB_TRUNK:
        return key[len("backbone."):]
    if key.startswith(_TRANSFERLAB_RES5):
        block, _, rest = key[len(_TRANSFERLAB_RES5):].partition(".")
        return f"layer4.{block}.{rest}" if block.isdigit() else None
    return None


def _transferlab_detector_part(key: str) -> str | None:
    """Detectron2's reasons (heads, the extra norm after res5); files written before the RPN became
    ``proposal_generator.`` name it ``rpn.``; the R50-FPN's pyramid is ``backbone.fpn.``."""
    if key.startswith("backbone.fpn."):
        return _TRANSFERLAB_FPN_REASON
    return _detectron2_part_reason("proposal_generator." + key[len("rpn."):] if key.startswith("rpn.") else key)


def read_transferlab_detector(obj: object) -> ReadResult | None:
    """transferlab's fine-tuned detectors (``model_final.pth``, ``model_<iter>.pth`` of tools/transfer.py).

    R50-C4: ``{"model": {"backbone.conv1.*", "backbone.layer1..3.*", "roi_heads.res5.0..*", "roi_heads.res5.norm.*",
    "proposal_generator.*", "roi_heads.box_predictor.*", ...}, "iteration", "rng_states", "optimizer",
    "scheduler"}``: the trunk and res5 are the backbone; heads, the extra norm and training state are ignored.
    R50-FPN: the ResNet under ``backbone.bottom_up.``, the pyramid under ``backbone.fpn.`` (ignored with the heads).
    """
    found = _find_weights(obj, "model")
    if found is None or found[1] is None:
        return None
    weights, weights_key = found
    c4 = "backbone.conv1.weight" in weights and any(key.startswith(f"{_TRANSFERLAB_RES5}0.") for key in weights)
    fpn = f"{_TRANSFERLAB_FPN_BOTTOM_UP}conv1.weight" in weights and any(k.startswith("backbone.fpn.") for k in weights)
    if not (c4 or fpn):
        return None
    state_dict, ignored = _split(weights, _transferlab_detector_name, _transferlab_detector_part)
    around, info, unexplained = _entries_around(obj, weights_key, _TRANSFERLAB_TRAINING_STATE)
    where = ("trunk from backbone.*, layer4 from roi_heads.res5.*" if c4
             else "the ResNet from backbone.bottom_up.* (R50-FPN)")
    info["note"] = f"backbone of a transferlab detector: {where}"
    return ReadResult(state_dict, {**ignored, **around}, "transferlab_detector", info, unexplained)
