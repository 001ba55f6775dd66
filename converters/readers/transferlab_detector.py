"""Reader of transferlab's fine-tuned R50-C4 detectors (``model_final.pth`` of tools/transfer.py)."""

from __future__ import annotations

from .base import ReadResult, _entries_around, _find_weights, _split
from .detectron2 import _detectron2_part_reason

# transferlab's R50-C4 detector: the trunk under backbone. with torchvision's names, res5 (torchvision's layer4)
# in the RoI head, as benchmarks/detection builds it; its heads carry Detectron2's names.
_TRANSFERLAB_TRUNK = ("conv1", "bn1", "layer1", "layer2", "layer3")
_TRANSFERLAB_RES5 = "roi_heads.res5."
_TRANSFERLAB_TRAINING_STATE = {"rng_states": "random-number generator states of every process (for resuming)"}


def _transferlab_detector_name(key: str) -> str | None:
    if key.startswith("backbone.") and key.split(".")[1] in _TRANSFERLAB_TRUNK:
        return key[len("backbone."):]
    if key.startswith(_TRANSFERLAB_RES5):
        block, _, rest = key[len(_TRANSFERLAB_RES5):].partition(".")
        return f"layer4.{block}.{rest}" if block.isdigit() else None
    return None


def _transferlab_detector_part(key: str) -> str | None:
    """Detectron2's reasons (heads, the extra norm after res5); files written before the RPN became
    ``proposal_generator.`` name it ``rpn.``."""
    return _detectron2_part_reason("proposal_generator." + key[len("rpn."):] if key.startswith("rpn.") else key)


def read_transferlab_detector(obj: object) -> ReadResult | None:
    """transferlab's fine-tuned detectors (``model_final.pth``, ``model_<iter>.pth`` of tools/transfer.py).

    ``{"model": {"backbone.conv1.*", "backbone.layer1..3.*", "roi_heads.res5.0..*", "roi_heads.res5.norm.*",
    "proposal_generator.*", "roi_heads.box_predictor.*", ...}, "iteration", "rng_states", "optimizer",
    "scheduler"}``: the trunk and res5 are the backbone; heads, the extra norm and training state are ignored.
    """
    found = _find_weights(obj, "model")
    if found is None or found[1] is None:
        return None
    weights, weights_key = found
    if "backbone.conv1.weight" not in weights or not any(key.startswith(f"{_TRANSFERLAB_RES5}0.") for key in weights):
        return None
    state_dict, ignored = _split(weights, _transferlab_detector_name, _transferlab_detector_part)
    around, info, unexplained = _entries_around(obj, weights_key, _TRANSFERLAB_TRAINING_STATE)
    info["note"] = "backbone of a transferlab detector: trunk from backbone.*, layer4 from roi_heads.res5.*"
    return ReadResult(state_dict, {**ignored, **around}, "transferlab_detector", info, unexplained)
