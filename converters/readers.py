"""Readers: one small function per checkpoint layout, and ``load_backbone`` which tries them.

A reader takes the loaded object and returns None when the layout is not its own; otherwise it
maps every backbone tensor to its torchvision name and explains every other tensor in ``ignored``
(source key -> reason). Tensors it cannot explain are passed through under their own names, so
``check_backbone`` names them as unexpected. Supporting a new format is adding one function to
``READERS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .canonical import (
    CANONICAL_FORMAT,
    CANONICAL_META_KEYS,
    CANONICAL_VERSION,
    IMAGENET_PIXEL_MEAN,
    IMAGENET_PIXEL_STD,
    check_backbone,
    expected_backbone_keys,
    infer_arch,
)
from .io import CheckpointError, load_pickle_file, load_safetensors_file, load_torch_file

__all__ = ["ReadResult", "READERS", "read_canonical", "read_moco", "read_torchvision", "load_backbone"]


@dataclass
class ReadResult:
    """What a reader found: torchvision-named tensors, the source keys it skipped and why, and metadata."""

    state_dict: dict[str, torch.Tensor]
    ignored: dict[str, str]
    source_format: str
    meta: dict[str, object]


# Entries that training scripts save next to the weights, and why a backbone does not need them.
TRAINING_STATE_ENTRIES = {
    "optimizer": "optimizer state",
    "lr_scheduler": "learning-rate scheduler state",
    "scheduler": "learning-rate scheduler state",
    "scaler": "mixed-precision loss scaler state",
    "best_acc1": "best validation accuracy",
    "model_ema": "moving-average copy of the weights (the trained weights are read)",
    "train_state": "training state for resuming pretraining",
}


def _count_tensors(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return 1
    if isinstance(value, Mapping):
        return sum(_count_tensors(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_count_tensors(item) for item in value)
    return 0


def _wrapper_entries(entries: Mapping[str, object]) -> tuple[dict[str, str], dict[str, object]]:
    """Account for the top-level entries around the weights: (ignored key -> reason, scalar info).

    Known training state is ignored with its reason, scalars (epoch, arch, ...) become metadata,
    and an unknown entry holding tensors is an error: silently dropping weights is how a wrong
    checkpoint ends up "converted".
    """
    ignored: dict[str, str] = {}
    info: dict[str, object] = {}
    unexplained = []
    for key, value in entries.items():
        num_tensors = _count_tensors(value)
        if key in TRAINING_STATE_ENTRIES:
            ignored[key] = TRAINING_STATE_ENTRIES[key]
        elif num_tensors:
            unexplained.append(f"{key!r} ({num_tensors} tensors)")
        elif value is None or isinstance(value, (str, int, float, bool)):
            info[key] = value
        else:
            ignored[key] = "non-tensor entry"
    if unexplained:
        raise CheckpointError(f"tensors outside the weights that no rule explains: {', '.join(unexplained)}")
    return ignored, info


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
    ignored, _ = _wrapper_entries(
        {key: value for key, value in obj.items() if key not in ("format", "version", "arch", "state_dict", "meta")}
    )
    return ReadResult(dict(obj["state_dict"]), ignored, "canonical", dict(obj["meta"]))


def read_moco(obj: object) -> ReadResult | None:
    """facebookresearch/moco v1/v2 (``main_moco.py``): the query encoder minus its head is the backbone.

    ``{"epoch", "arch", "state_dict": {"module.encoder_q.*", "module.encoder_k.*", "module.queue",
    "module.queue_ptr"}, "optimizer"}``; v2 has an MLP head ``fc.0``/``fc.2``, v1 a single ``fc``.
    """
    weights = obj.get("state_dict") if isinstance(obj, Mapping) else None
    if not isinstance(weights, Mapping):
        return None
    prefix = "module." if any(key.startswith("module.encoder_q.") for key in weights) else ""
    query, key_encoder = f"{prefix}encoder_q.", f"{prefix}encoder_k."
    if not any(key.startswith(query) for key in weights):
        return None
    mlp_head = f"{query}fc.0.weight" in weights
    head_reason = "MLP projection head (MoCo v2)" if mlp_head else "projection fc to the embedding (MoCo v1)"
    other_reasons = {
        f"{prefix}queue": "queue of negative keys",
        f"{prefix}queue_ptr": "queue pointer",
    }
    ignored, info = _wrapper_entries({k: v for k, v in obj.items() if k != "state_dict"})
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
    return ReadResult(state_dict, ignored, "moco", meta)


def read_torchvision(obj: object) -> ReadResult | None:
    """A torchvision ResNet state dict, bare or under ``state_dict``/``model``, with or without ``fc``.

    Covers torchvision's released weights, pytorch/examples ImageNet checkpoints (``module.`` from
    DataParallel/DDP) and torchvision's reference training scripts.
    """
    if not isinstance(obj, Mapping):
        return None
    for weights_key in ("state_dict", "model", None):
        weights = obj if weights_key is None else obj.get(weights_key)
        if isinstance(weights, Mapping) and weights and all(isinstance(key, str) for key in weights):
            if all(key.startswith("module.") for key in weights):
                weights = {key[len("module."):]: value for key, value in weights.items()}
            if "conv1.weight" in weights and any(key.startswith("layer1.") for key in weights):
                break
    else:
        return None
    if weights_key is None:
        ignored, info = {}, {}
    else:
        ignored, info = _wrapper_entries({k: v for k, v in obj.items() if k != weights_key})
    state_dict = {}
    for name, value in weights.items():
        if name.startswith("fc."):
            ignored[name] = "classifier"
        else:
            state_dict[name] = value
    return ReadResult(state_dict, ignored, "torchvision", info)


READERS = {
    "canonical": read_canonical,
    "moco": read_moco,
    "torchvision": read_torchvision,
}


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


def _as_cpu_float(state_dict: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """Detached CPU tensors, floating point as float32; integer buffers (num_batches_tracked) stay as they are."""
    converted = {}
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{name!r} is a {type(value).__name__}, not a tensor")
        value = value.detach().cpu()
        converted[name] = value.float() if value.is_floating_point() else value
    return converted


def _fill_num_batches_tracked(state_dict: dict[str, torch.Tensor], arch: str) -> dict[str, str]:
    """Add the BN counters older files lack, as BatchNorm itself does when loading them; report each one."""
    filled = {}
    for name in expected_backbone_keys(arch):
        if name.endswith(".num_batches_tracked") and name not in state_dict:
            state_dict[name] = torch.tensor(0, dtype=torch.long)
            filled[name] = "absent from the source; set to 0 as BatchNorm does for old checkpoints"
    return filled


def load_backbone(
    path: str | os.PathLike, format: str | None = None, arch: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """Read any supported checkpoint into torchvision-named backbone tensors plus metadata.

    ``format`` names one reader (default: try them in order); ``arch`` is checked against the arch
    the tensors show. The meta always holds the canonical meta keys (None when unknown) and
    ``source_format``, ``num_tensors``, ``ignored`` (source key -> reason) and ``filled``.
    """
    if format is not None and format not in READERS:
        raise CheckpointError(f"unknown checkpoint format {format!r}; accepted formats: {', '.join(READERS)}")
    obj, file_metadata = _load_checkpoint_file(path)
    readers = READERS if format is None else {format: READERS[format]}
    try:
        for read in readers.values():
            result = read(obj)
            if result is not None:
                break
        else:
            layout = f"top-level keys {sorted(map(str, obj))[:10]}" if isinstance(obj, Mapping) else type(obj).__name__
            expected = "no reader recognises this layout" if format is None else f"not a {format!r} checkpoint"
            raise CheckpointError(f"{expected} ({layout}); accepted formats: {', '.join(READERS)}")
        state_dict = _as_cpu_float(result.state_dict)
        inferred = infer_arch(state_dict)
        for source, declared in (("requested", arch), ("the file declares", result.meta.get("arch"))):
            if declared is not None and declared != inferred:
                raise CheckpointError(f"{source} arch {declared!r} but the tensors are a {inferred}")
        filled = _fill_num_batches_tracked(state_dict, inferred)
        check_backbone(state_dict, inferred)
    except CheckpointError as err:
        raise CheckpointError(f"{os.fspath(path)}: {err}") from None
    meta = {key: None for key in CANONICAL_META_KEYS}
    meta.update(result.meta)
    meta.update(
        arch=inferred,
        source_format=result.source_format,
        num_tensors=len(state_dict),
        ignored=result.ignored,
        filled=filled,
    )
    if file_metadata:
        meta["file_metadata"] = file_metadata
    return state_dict, meta
