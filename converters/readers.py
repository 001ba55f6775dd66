"""Readers: one small function per checkpoint layout, and ``load_backbone`` which tries them.

A reader takes the loaded object and returns None when the layout is not its own; otherwise it
maps every backbone tensor to its torchvision name and explains every other tensor in ``ignored``
(source key -> reason). Tensors it cannot explain are passed through under their own names, so
``check_backbone`` names them as unexpected; entries around the weights that hold tensors no rule
explains go to ``unexplained``. Supporting a new format is adding one function to ``READERS``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .canonical import (
    CANONICAL_FORMAT,
    CANONICAL_META_KEYS,
    CANONICAL_VERSION,
    IMAGENET_PIXEL_MEAN,
    IMAGENET_PIXEL_STD,
    RESNET_ARCHS,
    backbone_mismatches,
    check_backbone,
    expected_backbone_keys,
    expected_backbone_shapes,
    infer_arch,
)
from .detectron2 import from_detectron2_name
from .io import CheckpointError, load_pickle_file, load_safetensors_file, load_torch_file

__all__ = [
    "ReadResult",
    "PartialBackboneWarning",
    "READERS",
    "FORMAT_ALIASES",
    "read_canonical",
    "read_transferlab_detector",
    "read_moco",
    "read_torchvision",
    "read_timm",
    "read_mocov3",
    "read_mmselfsup",
    "read_vissl",
    "read_detectron2",
    "read_lightning",
    "load_backbone",
]


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


class PartialBackboneWarning(UserWarning):
    """``load_backbone(allow_partial=True)`` dropped tensors no rule explains or lacks backbone tensors."""


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


# ---------------------------------------------------------------------------------------------
# readers


def read_canonical(obj: object) -> ReadResult | None:
    """transferlab's own layout (see converters.canonical)."""
    if not (isinstance(obj, Mapping) and obj.get("format") == CANONICAL_FORMAT):
        return None
    if obj.get("version") != CANONICAL_VERSION:
        raise CheckpointError(
            f"canonical checkpoint version {obj.get('version')!r}; this reader knows version {CANONICAL_VERSION}"
        )
    if not isinstance(obj.get("state_dict"), Mapping) or not isinstance(obj.get("meta"), Mapping):
        raise CheckpointError("canonical checkpoint without its 'state_dict' and 'meta' dicts")
    ignored, _, unexplained = _entries_around(obj, "state_dict", handled=("format", "version", "arch", "meta"))
    return ReadResult(dict(obj["state_dict"]), ignored, "canonical", dict(obj["meta"]), unexplained)


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


def read_torchvision(obj: object, source_format: str = "torchvision") -> ReadResult | None:
    """A torchvision ResNet state dict, bare or under ``state_dict``/``model``, with or without ``fc``.

    Covers torchvision's released weights, pytorch/examples ImageNet checkpoints (``module.`` from
    DataParallel/DDP), torchvision's reference training scripts, and timm's ResNets (same names).
    """
    if not isinstance(obj, Mapping):
        return None
    for weights_key in ("state_dict", "model", "state_dict_ema", None):
        weights = obj if weights_key is None else obj.get(weights_key)
        if isinstance(weights, Mapping) and weights and all(isinstance(key, str) for key in weights):
            if all(key.startswith("module.") for key in weights):
                weights = {key[len("module."):]: value for key, value in weights.items()}
            if "conv1.weight" in weights and any(key.startswith("layer1.") for key in weights):
                break
    else:
        return None
    ignored, info, unexplained = _entries_around(obj, weights_key)
    declared = info.get("arch")
    if isinstance(declared, str) and declared.split(".")[0] in RESNET_ARCHS:
        info["arch"] = declared.split(".")[0]  # timm records tagged names: "resnet50.a1_in1k"
    state_dict = {}
    for name, value in weights.items():
        if name.startswith("fc."):
            ignored[name] = "classifier"
        else:
            state_dict[name] = value
    return ReadResult(state_dict, ignored, source_format, info, unexplained)


def read_timm(obj: object) -> ReadResult | None:
    """timm ResNets: bare (hub weights) or timm train.py's ``{"state_dict", "state_dict_ema", "args", ...}``.

    timm's resnet18..152 use torchvision's names, fc included, so auto-detection reports them as
    ``torchvision``; naming this format labels them ``timm``. The trained weights are read, not the EMA.
    """
    return read_torchvision(obj, source_format="timm")


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
}


def read_mmselfsup(obj: object) -> ReadResult | None:
    """OpenSelfSup, mmselfsup and mmpretrain checkpoints (mmcv/mmengine runners), HPT's releases included.

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


# Tried in this order when the format is not given: layouts with unique markers first, the Lightning
# prefix search (which reads any state dict holding one ResNet) last.
READERS = {
    "canonical": read_canonical,
    "transferlab_detector": read_transferlab_detector,
    "moco": read_moco,
    "torchvision": read_torchvision,
    "timm": read_timm,
    "mocov3": read_mocov3,
    "mmselfsup": read_mmselfsup,
    "vissl": read_vissl,
    "detectron2": read_detectron2,
    "lightning": read_lightning,
}

# Other names people know these layouts by: ``format="hpt"`` reads what ``format="mmselfsup"`` reads.
FORMAT_ALIASES = {
    "mocov1": "moco",
    "mocov2": "moco",
    "openselfsup": "mmselfsup",
    "mmpretrain": "mmselfsup",
    "hpt": "mmselfsup",
    "solo-learn": "lightning",
    "lightly": "lightning",
}


# ---------------------------------------------------------------------------------------------
# load_backbone


def _arrays_to_tensors(value: object) -> object:
    """numpy arrays from ``.pkl`` files become tensors, so readers see one tensor type."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        return torch.from_numpy(value if value.flags.writeable else value.copy())
    if isinstance(value, Mapping):
        return {key: _arrays_to_tensors(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_arrays_to_tensors(item) for item in value)
    return value


def _load_checkpoint_file(path: str | os.PathLike) -> tuple[object, dict[str, str]]:
    """The file's object and, for safetensors, its string metadata; the suffix picks the safe loader."""
    suffix = Path(path).suffix.lower()
    if suffix == ".pkl":
        return _arrays_to_tensors(load_pickle_file(path)), {}
    if suffix == ".safetensors":
        return load_safetensors_file(path)
    return load_torch_file(path), {}


def _accepted_formats() -> str:
    aliases = ", ".join(f"{alias} = {name}" for alias, name in FORMAT_ALIASES.items())
    return f"{', '.join(READERS)} (aliases: {aliases})"


def _read(obj: object, format: str | None) -> ReadResult:
    readers = READERS if format is None else {format: READERS[format]}
    for read in readers.values():
        result = read(obj)
        if result is not None:
            return result
    layout = f"top-level keys {sorted(map(str, obj))[:10]}" if isinstance(obj, Mapping) else type(obj).__name__
    expected = "no reader recognises this layout" if format is None else f"not a {format!r} checkpoint"
    raise CheckpointError(f"{expected} ({layout}); accepted formats: {_accepted_formats()}")


def _as_cpu_float(state_dict: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """Detached CPU tensors, floating point as float32; integer buffers (num_batches_tracked) stay as they are."""
    converted = {}
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{name!r} is a {type(value).__name__}, not a tensor")
        value = value.detach().cpu()
        converted[name] = value.float() if value.is_floating_point() else value
    return converted


def _arch_of(state_dict: Mapping[str, torch.Tensor], arch: str | None, allow_partial: bool) -> str:
    """The arch the tensors show; a partial backbone too incomplete to show one takes the requested ``arch``."""
    try:
        return infer_arch(state_dict)
    except CheckpointError:
        if allow_partial and arch is not None:
            return arch
        raise


def _fill_num_batches_tracked(state_dict: dict[str, torch.Tensor], arch: str) -> dict[str, str]:
    """Add the BN counters older files lack, as BatchNorm itself does when loading them; report each one."""
    filled = {}
    for name in expected_backbone_keys(arch):
        counter_of_present_bn = name.endswith(".num_batches_tracked") and (
            name.removesuffix("num_batches_tracked") + "running_mean" in state_dict
        )
        if counter_of_present_bn and name not in state_dict:
            state_dict[name] = torch.tensor(0, dtype=torch.long)
            filled[name] = "absent from the source; set to 0 as BatchNorm does for old checkpoints"
    return filled


def _drop_unmatched(
    state_dict: dict[str, torch.Tensor], unexplained: Mapping[str, str], arch: str
) -> tuple[dict[str, str], dict[str, str]]:
    """For ``allow_partial``: remove what check_backbone refuses; (dropped -> reason, missing -> reason)."""
    dropped = {key: f"{content} outside the weights that no rule explains" for key, content in unexplained.items()}
    mismatch = backbone_mismatches(state_dict, arch)
    expected = expected_backbone_shapes(arch)
    for name in mismatch.unexpected:
        dropped[name] = "no rule maps it to a backbone tensor"
        del state_dict[name]
    for name in mismatch.wrong_shape:
        dropped[name] = f"shape {tuple(state_dict.pop(name).shape)}, the {arch} backbone needs {expected[name]}"
    missing = {
        name: "absent from the checkpoint; the target model keeps its own initialisation"
        for name in expected
        if name not in state_dict
    }
    return dropped, missing


def _partial_warning(path: str | os.PathLike, dropped: Mapping[str, str], missing: Mapping[str, str]) -> str:
    parts = []
    if dropped:
        parts.append(f"dropped {len(dropped)} tensors no rule explains: {', '.join(dropped)}")
    if missing:
        parts.append(f"{len(missing)} backbone tensors missing: {', '.join(missing)}")
    return f"{os.fspath(path)}: partial backbone (allow_partial): " + "; ".join(parts)


def load_backbone(
    path: str | os.PathLike, format: str | None = None, arch: str | None = None, *, allow_partial: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Read any supported checkpoint into torchvision-named backbone tensors plus metadata.

    ``format`` names one reader or alias (default: try them in order); ``arch`` is checked against
    the arch the tensors show. A tensor no rule explains and a missing backbone tensor are errors;
    ``allow_partial`` (the CLI's ``--allow-partial``) drops the one and accepts the other with a
    PartialBackboneWarning naming each. The meta always holds the canonical meta keys (None when
    unknown) and ``source_format``, ``num_tensors``, ``ignored`` (source key -> reason),
    ``filled``, ``dropped`` and ``missing`` (name -> reason; empty unless ``allow_partial``).
    """
    format = FORMAT_ALIASES.get(format, format)
    if format is not None and format not in READERS:
        raise CheckpointError(f"unknown checkpoint format {format!r}; accepted formats: {_accepted_formats()}")
    obj, file_metadata = _load_checkpoint_file(path)
    try:
        result = _read(obj, format)
        if result.unexplained and not allow_partial:
            described = ", ".join(f"{key!r} ({content})" for key, content in result.unexplained.items())
            raise CheckpointError(f"tensors outside the weights that no rule explains: {described}")
        state_dict = _as_cpu_float(result.state_dict)
        inferred = _arch_of(state_dict, arch, allow_partial)
        for source, declared in (("requested", arch), ("the file declares", result.meta.get("arch"))):
            if declared is not None and declared != inferred:
                raise CheckpointError(f"{source} arch {declared!r} but the tensors are a {inferred}")
        filled = _fill_num_batches_tracked(state_dict, inferred)
        if allow_partial:
            dropped, missing = _drop_unmatched(state_dict, result.unexplained, inferred)
        else:
            check_backbone(state_dict, inferred)
            dropped, missing = {}, {}
    except CheckpointError as err:
        raise CheckpointError(f"{os.fspath(path)}: {err}") from None
    if dropped or missing:
        warnings.warn(PartialBackboneWarning(_partial_warning(path, dropped, missing)), stacklevel=2)
    meta = {key: None for key in CANONICAL_META_KEYS}
    meta.update(result.meta)
    meta.update(
        arch=inferred,
        source_format=result.source_format,
        num_tensors=len(state_dict),
        ignored=result.ignored,
        filled=filled,
        dropped=dropped,
        missing=missing,
    )
    if file_metadata:
        meta["file_metadata"] = file_metadata
    return state_dict, meta
