"""Reader of OpenSelfSup, mmselfsup and mmpretrain checkpoints (HPT's releases included)."""

from __future__ import annotations

from collections.abc import Mapping

from .base import ReadResult, _entries_around, _module_reasons, _split_backbone, _wrapper_entries
from .transferlab_segmenter import SEGMENTATION_HEADS

_MM_PARTS = {
    "neck": "neck (projection MLP, pretraining only)",
    "head": "head (loss, predictor or classifier)",
    "encoder_q": "the backbone and neck again, inside the query encoder OpenSelfSup wraps them in",
    "online_net": "the backbone and neck again, inside the online network OpenSelfSup wraps them in",
    "encoder_k": "key encoder (momentum copy)",
    "target_net": "target network (momentum copy)",
    "queue": "queue of negative keys",
    "queue_ptr": "queue pointer",
    "queue2": "queue of negative keys (dense)",
    "queue2_ptr": "queue pointer",
    "memory_bank": "memory bank of past embeddings",
    "data_preprocessor": "input normalization buffers",
    **SEGMENTATION_HEADS,  # mmsegmentation's EncoderDecoder checkpoints
}


def read_mmselfsup(obj: object) -> ReadResult | None:
    """OpenSelfSup, mmselfsup and mmpretrain checkpoints (mmcv/mmengine runners), HPT's releases included, and
    mmsegmentation's (their decode and auxiliary heads ignored).

    ``{"meta", "state_dict": {"backbone.*", "neck.*", "head.*", ...}, "optimizer", ...}``; the mm
    ResNet uses torchvision's names. OpenSelfSup's MoCo/BYOL also save the backbone a second time
    inside ``encoder_q``/``online_net`` (the same module) and a momentum copy.
    """
    if not (isinstance(obj, Mapping) and isinstance(obj.get("meta"), Mapping)):
        return None
    weights = obj.get("state_dict")
    if not (isinstance(weights, Mapping) and any(str(key).startswith("backbone.") for key in weights)):
        return None
    state_dict, ignored = _split_backbone(weights, "backbone.", _module_reasons(_MM_PARTS))
    around, info, unexplained = _entries_around(obj, "state_dict", handled=("meta",))
    meta_ignored, mm_meta, meta_unexplained = _wrapper_entries(obj["meta"], path="meta.")
    mm_meta["config"] = mm_meta.pop("cfg", mm_meta.get("config"))  # mmengine names the config text cfg
    return ReadResult(
        state_dict,
        {**ignored, **around, **meta_ignored},
        "mmselfsup",
        {**mm_meta, **info},
        {**unexplained, **meta_unexplained},
    )
