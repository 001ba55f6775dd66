"""Reader of facebookresearch/moco v1/v2 checkpoints (``main_moco.py``; MoCo v3 is ``mocov3.py``)."""

from __future__ import annotations

from ..canonical import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD
from .base import ReadResult, _entries_around, _find_weights


def read_moco(obj: object) -> ReadResult | None:
    """facebookresearch/moco v1/v2 (``main_moco.py``): the query encoder minus its head is the backbone.

    ``{"epoch", "arch", "state_dict": {"module.encoder_q.*", "module.encoder_k.*", "module.queue",
    "module.queue_ptr"}, "optimizer"}``; v2 has an MLP head ``fc.0``/``fc.2``, v1 a single ``fc``.
    """
    found = _find_weights(obj, "state_dict")
    if found is None:
        return None
    weights, weights_key = found
    prefix = "module." if any(key.startswith("module.encoder_q.") for key in weights) else ""
    query, key_encoder = f"{prefix}encoder_q.", f"{prefix}encoder_k."
    # torchvision names right under encoder_q; OpenSelfSup's encoder_q.0 (backbone) / .1 (neck) is mmselfsup's
    if not any(key.startswith((f"{query}conv1.", f"{query}layer")) for key in weights):
        return None
    mlp_head = f"{query}fc.0.weight" in weights
    head_reason = "MLP projection head (MoCo v2)" if mlp_head else "projection fc to the embedding (MoCo v1)"
    other_reasons = {
        f"{prefix}queue": "queue of negative keys",
        f"{prefix}queue_ptr": "queue pointer",
    }
    ignored, info, unexplained = _entries_around(obj, weights_key)
    state_dict = {}
    for key, value in weights.items():
        if key.startswith(query):
            name = key[len(query):]
            if name.startswith("fc."):
                ignored[key] = head_reason
            else:
                state_dict[name] = value
        elif key.startswith(key_encoder):
            ignored[key] = "key encoder (momentum copy of the query encoder)"
        elif key in other_reasons:
            ignored[key] = other_reasons[key]
        else:
            state_dict[key] = value
    meta = {
        **info,
        "method": "mocov2" if mlp_head else "mocov1",
        # main_moco.py normalizes with torchvision's ImageNet mean/std
        "pixel_mean": list(IMAGENET_PIXEL_MEAN),
        "pixel_std": list(IMAGENET_PIXEL_STD),
    }
    return ReadResult(state_dict, ignored, "moco", meta, unexplained)
