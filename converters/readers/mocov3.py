"""Reader of facebookresearch/moco-v3 ResNet checkpoints (``main_moco.py``; v1/v2 are ``moco.py``)."""

from __future__ import annotations

from ..canonical import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD
from .base import ReadResult, _entries_around, _find_weights, _module_reasons, _split_backbone

_MOCOV3_PARTS = {
    "momentum_encoder": "momentum encoder (moving average of the base encoder)",
    "predictor": "predictor MLP (pretraining only)",
}


def read_mocov3(obj: object) -> ReadResult | None:
    """facebookresearch/moco-v3 ResNets (``main_moco.py``): the base encoder minus its projection MLP.

    ``{"epoch", "arch", "state_dict": {"module.base_encoder.*", "module.momentum_encoder.*",
    "module.predictor.*"}, "optimizer", "scaler"}``; MoCo v3 keeps the projection MLP in ``fc``.
    """
    found = _find_weights(obj, "state_dict")
    if found is None:
        return None
    weights, weights_key = found
    prefix = next((p for p in ("module.base_encoder.", "base_encoder.") if any(k.startswith(p) for k in weights)), None)
    if prefix is None:
        return None
    state_dict, ignored = _split_backbone(
        weights, prefix, _module_reasons(_MOCOV3_PARTS), fc_reason="projection MLP (MoCo v3 keeps it in fc)"
    )
    around, info, unexplained = _entries_around(obj, weights_key)
    meta = {
        **info,
        "method": "mocov3",
        # main_moco.py normalizes with torchvision's ImageNet mean/std
        "pixel_mean": list(IMAGENET_PIXEL_MEAN),
        "pixel_std": list(IMAGENET_PIXEL_STD),
    }
    return ReadResult(state_dict, {**ignored, **around}, "mocov3", meta, unexplained)
