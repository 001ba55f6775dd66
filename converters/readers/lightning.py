"""Reader of PyTorch Lightning checkpoints (solo-learn, lightly, ...): the one submodule holding a ResNet.

The backbone is found by its prefix; the other modules' roles (momentum/teacher copies, projectors,
predictors, classifiers, queues) are recognised by their names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..canonical import expected_backbone_keys, infer_arch
from ..io import CheckpointError
from .base import ReadResult, _backbone_name, _entries_around, _find_weights, _indexes_children, _split_backbone

_COPY = re.compile(r"(?:^|_)(?:momentum|teacher|target|ema|key|k)(?:_|$)")
# Roles of the other modules of a self-supervised LightningModule, recognised by name; first rule wins.
_ROLES = (
    (_COPY, "momentum/teacher copy (a moving average of the trained network)"),
    (re.compile(r"classifier|classification|^linear$|^fc$"), "classifier (online linear probe)"),
    (re.compile(r"pred"), "predictor (pretraining only)"),
    (re.compile(r"proj|head|neck|prototype"), "projection head or prototypes (pretraining only)"),
    (re.compile(r"queue|bank"), "queue or memory bank of past embeddings"),
    (re.compile(r"loss|criterion"), "loss-function state (e.g. DINO's center)"),
)


def _role_reason(key: str) -> str | None:
    """Why a key is not the backbone, from the outermost module whose name says its role."""
    for component in key.split("."):
        for pattern, reason in _ROLES:
            if pattern.search(component):
                return reason
    return None


def _holds_complete_resnet(weights: Mapping[str, object], prefix: str) -> bool:
    children = _indexes_children(weights, prefix)
    names = ((_backbone_name(key, prefix, children), value) for key, value in weights.items())
    view = {name: value for name, value in names if name is not None}
    try:
        arch = infer_arch(view)
    except CheckpointError:
        return False
    return all(name in view for name in expected_backbone_keys(arch) if not name.endswith(".num_batches_tracked"))


def _backbone_prefix(weights: Mapping[str, object]) -> str | None:
    """The one prefix holding a complete ResNet (momentum/teacher copies never count); two are an error.

    If no prefix holds a complete ResNet, a single incomplete one is taken, so that the missing
    tensors are named (or dropped under ``allow_partial``).
    """
    candidates = set()
    for key in weights:
        for probe in ("layer1.0.conv1.weight", "4.0.conv1.weight"):
            prefix = key[: -len(probe)]
            if key.endswith(probe) and (not prefix or prefix.endswith(".")):
                if not any(_COPY.search(component) for component in prefix.split(".")):
                    candidates.add(prefix)
    complete = sorted(prefix for prefix in candidates if _holds_complete_resnet(weights, prefix))
    chosen = complete or sorted(candidates)
    if len(chosen) > 1:
        kind = "a complete ResNet" if complete else "part of a ResNet"
        raise CheckpointError(
            f"ambiguous backbone: the prefixes {', '.join(map(repr, chosen))} each hold {kind} and none is a "
            "momentum/teacher copy; save the one backbone you mean on its own"
        )
    return chosen[0] if chosen else None


def read_lightning(obj: object) -> ReadResult | None:
    """PyTorch Lightning (solo-learn, lightly, ...): the backbone is the submodule holding a ResNet.

    The prefix (``backbone.``, ``model.``, ``encoder.``, ``model.backbone.``, ``student_backbone.``,
    ...) is the one holding a complete torchvision ResNet, by name or, as lightly's examples build
    it, as ``nn.Sequential(*resnet.children())``. Momentum/teacher copies never count and two
    candidates are an error. Projectors, predictors, classifiers, queues and copies are ignored.
    Bare state dicts (e.g. .safetensors) read too.
    """
    found = _find_weights(obj, "state_dict")
    if found is None:
        return None
    weights, weights_key = found
    prefix = _backbone_prefix(weights)
    if prefix is None:
        return None
    state_dict, ignored = _split_backbone(weights, prefix, _role_reason)
    around, info, unexplained = _entries_around(obj, weights_key)
    return ReadResult(state_dict, {**ignored, **around}, "lightning", {**info, "backbone_prefix": prefix}, unexplained)
