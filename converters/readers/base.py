"""What the readers share: ``ReadResult``, the account of the entries around the weights, and the split
of a backbone from the other parts of a state dict (by a name function or under a module prefix).

A reader takes the loaded object and returns None when the layout is not its own; otherwise it
maps every backbone tensor to its torchvision name and explains every other tensor in ``ignored``
(source key -> reason). Tensors it cannot explain are passed through under their own names, so
``check_backbone`` names them as unexpected; entries around the weights that hold tensors no rule
explains go to ``unexplained``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from ..io import CheckpointError


@dataclass
class ReadResult:
    """What a reader found: torchvision-named tensors, the source keys it skipped and why, and metadata.

    ``unexplained`` lists entries around the weights that hold tensors no rule explains (key -> what
    they hold); ``load_backbone`` refuses them unless it may drop them (``allow_partial``).
    """

    state_dict: dict[str, torch.Tensor]
    ignored: dict[str, str]
    source_format: str
    meta: dict[str, object]
    unexplained: dict[str, str] = field(default_factory=dict)


# Entries that training scripts save next to the weights, and why a backbone does not need them.
TRAINING_STATE_ENTRIES = {
    "optimizer": "optimizer state",
    "lr_scheduler": "learning-rate scheduler state",
    "scheduler": "learning-rate scheduler state",
    "scaler": "mixed-precision loss scaler state",
    "best_acc1": "best validation accuracy",
    "model_ema": "moving-average copy of the weights (the trained weights are read)",
    "train_state": "training state for resuming pretraining",
    # timm's train.py (args also in torchvision's reference scripts)
    "args": "command-line arguments of the training run",
    "amp_scaler": "mixed-precision loss scaler state",
    "state_dict_ema": "moving-average copy of the weights (the trained weights are read)",
    # PyTorch Lightning
    "optimizer_states": "optimizer state",
    "lr_schedulers": "learning-rate scheduler state",
    "callbacks": "callback state (e.g. ModelCheckpoint's best scores)",
    "loops": "training-loop progress",
    "hyper_parameters": "training hyper-parameters",
    "datamodule_hyper_parameters": "data-module hyper-parameters",
    # mmcv / mmengine runners
    "message_hub": "training logs and runtime information",
    "param_schedulers": "learning-rate scheduler state",
    "ema_state_dict": "moving-average copy of the weights (the trained weights are read)",
    # Detectron2's DefaultTrainer
    "trainer": "trainer state (optimizer, scheduler, hooks)",
}


def _count_tensors(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return 1
    if isinstance(value, Mapping):
        return sum(_count_tensors(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_count_tensors(item) for item in value)
    return 0


def _wrapper_entries(
    entries: Mapping[str, object], extra_reasons: Mapping[str, str] | None = None, path: str = ""
) -> tuple[dict[str, str], dict[str, object], dict[str, str]]:
    """Account for the entries around the weights: (ignored key -> reason, scalar info, unexplained key -> content).

    Known training state is ignored with its reason, scalars (epoch, arch, ...) become metadata,
    and an unknown entry holding tensors is unexplained: silently dropping weights is how a wrong
    checkpoint ends up "converted". ``path`` prefixes the reported keys of nested entries.
    """
    reasons = TRAINING_STATE_ENTRIES if extra_reasons is None else {**TRAINING_STATE_ENTRIES, **extra_reasons}
    ignored: dict[str, str] = {}
    info: dict[str, object] = {}
    unexplained: dict[str, str] = {}
    for key, value in entries.items():
        num_tensors = _count_tensors(value)
        if key in reasons:
            ignored[f"{path}{key}"] = reasons[key]
        elif num_tensors:
            unexplained[f"{path}{key}"] = f"{num_tensors} tensors"
        elif value is None or isinstance(value, (str, int, float, bool)):
            info[key] = value
        else:
            ignored[f"{path}{key}"] = "non-tensor entry"
    return ignored, info, unexplained


def _find_weights(obj: object, *weights_keys: str) -> tuple[Mapping[str, object], str | None] | None:
    """(weights, key): the first of ``weights_keys`` holding a str-keyed dict, else (``obj``, None) when
    ``obj`` itself is a flat dict of tensors (bare state dicts, .safetensors files); None otherwise."""
    if not isinstance(obj, Mapping):
        return None
    for key in weights_keys:
        weights = obj.get(key)
        if isinstance(weights, Mapping) and weights and all(isinstance(name, str) for name in weights):
            return weights, key
    if obj and all(isinstance(name, str) and isinstance(value, torch.Tensor) for name, value in obj.items()):
        return obj, None
    return None


def _entries_around(
    obj: Mapping[str, object],
    weights_key: str | None,
    extra_reasons: Mapping[str, str] | None = None,
    handled: tuple[str, ...] = (),
) -> tuple[dict[str, str], dict[str, object], dict[str, str]]:
    """``_wrapper_entries`` for everything in ``obj`` but the weights (nothing when ``obj`` is the bare weights)."""
    if weights_key is None:
        return {}, {}, {}
    skip = {weights_key, *handled}
    return _wrapper_entries({key: value for key, value in obj.items() if key not in skip}, extra_reasons)


# ---------------------------------------------------------------------------------------------
# a backbone under a module prefix (mmselfsup, MoCo v3, VISSL, Lightning modules)

_RESNET_MODULES = frozenset({"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"})
# nn.Sequential(*list(resnet.children())[:-1]), lightly's usual backbone, numbers torchvision's children.
_RESNET_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
_FC_REASON = "fc layer (classifier or projection head), not part of the backbone"


def _indexes_children(weights: Mapping[str, object], prefix: str) -> bool:
    return f"{prefix}layer1.0.conv1.weight" not in weights and f"{prefix}4.0.conv1.weight" in weights


def _backbone_name(key: str, prefix: str, children: bool) -> str | None:
    """The torchvision name of ``key`` if it belongs to the backbone under ``prefix``, else None."""
    if not key.startswith(prefix):
        return None
    module, dot, rest = key[len(prefix):].partition(".")
    if children:
        module = _RESNET_CHILDREN.get(module, module)
    if not prefix and module not in _RESNET_MODULES:  # a bare state dict holds the other modules too
        return None
    return f"{module}{dot}{rest}"


def _split(
    weights: Mapping[str, object],
    backbone_name: Callable[[str], str | None],
    part_reason: Callable[[str], str | None],
    fc_reason: str = _FC_REASON,
) -> tuple[dict[str, object], dict[str, str]]:
    """(torchvision-named tensors, ignored key -> reason); ``backbone_name(key)`` is None outside the backbone.

    Keys outside it are ignored with ``part_reason(key)``; one that has no reason is kept under its
    own name, so that ``check_backbone`` reports it. Two keys for one name are an error (one would be lost).
    """
    state_dict: dict[str, object] = {}
    ignored: dict[str, str] = {}
    sources: dict[str, str] = {}
    for key, value in weights.items():
        name = backbone_name(key)
        if name is None:
            reason = part_reason(key)
        else:
            reason = fc_reason if name.startswith("fc.") else None
        if reason is not None:
            ignored[key] = reason
            continue
        name = key if name is None else name
        if name in sources:
            raise CheckpointError(f"{sources[name]!r} and {key!r} both hold {name!r}")
        sources[name] = key
        state_dict[name] = value
    return state_dict, ignored


def _split_backbone(
    weights: Mapping[str, object],
    prefix: str,
    part_reason: Callable[[str], str | None],
    fc_reason: str = _FC_REASON,
) -> tuple[dict[str, object], dict[str, str]]:
    """``_split`` for the backbone under ``prefix``."""
    children = _indexes_children(weights, prefix)
    return _split(weights, lambda key: _backbone_name(key, prefix, children), part_reason, fc_reason)


def _module_reasons(reasons: Mapping[str, str]) -> Callable[[str], str | None]:
    """Reasons by the key's top-level module (after DDP's ``module.``), for formats whose parts have fixed names."""

    def reason(key: str) -> str | None:
        return reasons.get(key.removeprefix("module.").split(".")[0])

    return reason
