"""Reader of transferlab's fine-tuned DeepLab-v3 models (``model_final.pth`` of ``--task cityscapes_deeplabv3``)."""

from __future__ import annotations

from .base import ReadResult, _entries_around, _find_weights, _module_reasons, _split_backbone
from .transferlab_detector import _TRANSFERLAB_TRAINING_STATE

# mmseg's EncoderDecoder parts besides the backbone, as benchmarks/modeling/deeplab.py names them
SEGMENTATION_HEADS = {
    "decode_head": "segmentation decode head (ASPP, mmseg's names)",
    "auxiliary_head": "auxiliary segmentation head (FCN, mmseg's names)",
}


def read_transferlab_segmenter(obj: object) -> ReadResult | None:
    """transferlab's fine-tuned segmenters: ``{"model": {"backbone.*", "decode_head.*", "auxiliary_head.*"},
    "iteration", "rng_states", "optimizer", "scheduler"}``; the backbone has torchvision's names under ``backbone.``,
    the heads and the training state are ignored."""
    found = _find_weights(obj, "model")
    if found is None or found[1] is None:
        return None
    weights, weights_key = found
    if "backbone.conv1.weight" not in weights or not any(key.startswith("decode_head.") for key in weights):
        return None
    state_dict, ignored = _split_backbone(weights, "backbone.", _module_reasons(SEGMENTATION_HEADS))
    around, info, unexplained = _entries_around(obj, weights_key, _TRANSFERLAB_TRAINING_STATE)
    info["note"] = "backbone of a transferlab DeepLab-v3: backbone.*"
    return ReadResult(state_dict, {**ignored, **around}, "transferlab_segmenter", info, unexplained)
