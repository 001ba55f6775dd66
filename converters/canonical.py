"""The canonical checkpoint: a torchvision-named ResNet backbone plus the metadata transfer needs.

Layout (a dict saved with ``torch.save``, readable with ``weights_only=True``)::

    {"format": "transferlab.canonical", "version": 1, "arch": "resnet50",
     "state_dict": {"conv1.weight", "bn1.*", "layer1.0.conv1.weight", ..., "layer4.2.bn3.*"},  # no fc
     "meta": {"arch", "method", "pretrain_data", "pixel_mean", "pixel_std", "config", "parent", "step", ...},
     "train_state": {...}}  # optional: whatever a pretraining loop needs to resume; readers ignore it

``pixel_mean``/``pixel_std`` are RGB on the 0-255 scale (what Detectron2's PIXEL_MEAN/STD expect).
"""

from __future__ import annotations

import functools
import numbers
import os
import re
import types
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
import torchvision

from .io import CheckpointError, atomic_torch_save

__all__ = [
    "CANONICAL_FORMAT",
    "CANONICAL_VERSION",
    "CANONICAL_META_KEYS",
    "RESNET_ARCHS",
    "IMAGENET_PIXEL_MEAN",
    "IMAGENET_PIXEL_STD",
    "canonical_checkpoint",
    "save_canonical",
    "expected_backbone_shapes",
    "expected_backbone_keys",
    "infer_arch",
    "BackboneMismatch",
    "backbone_mismatches",
    "check_backbone",
]

CANONICAL_FORMAT = "transferlab.canonical"
CANONICAL_VERSION = 1
CANONICAL_META_KEYS = ("arch", "method", "pretrain_data", "pixel_mean", "pixel_std", "config", "parent", "step")

# torchvision's ImageNet normalization on the 0-255 scale, RGB.
IMAGENET_PIXEL_MEAN = (123.675, 116.28, 103.53)
IMAGENET_PIXEL_STD = (58.395, 57.12, 57.375)

# arch -> (block type, blocks per stage layer1..layer4), as torchvision builds them.
RESNET_ARCHS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}

_PREVIEW = 5


def _preview(names: list[str]) -> str:
    shown = ", ".join(names[:_PREVIEW])
    return f"{shown} (+{len(names) - _PREVIEW} more)" if len(names) > _PREVIEW else shown


@functools.cache
def expected_backbone_shapes(arch: str) -> Mapping[str, tuple[int, ...]]:
    """Name -> shape of every tensor in torchvision's ``arch`` state dict except ``fc``.

    Built on the meta device, so it costs no memory; cached because every check needs it.
    """
    if arch not in RESNET_ARCHS:
        raise ValueError(f"unknown arch {arch!r}; supported: {', '.join(RESNET_ARCHS)}")
    with torch.device("meta"):
        model = getattr(torchvision.models, arch)(weights=None)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items() if not name.startswith("fc.")}
    return types.MappingProxyType(shapes)


def expected_backbone_keys(arch: str) -> list[str]:
    """torchvision state-dict names of the ``arch`` backbone (``fc`` excluded), in torchvision's order."""
    return list(expected_backbone_shapes(arch))


_BLOCK_KEY = re.compile(r"layer([1-4])\.(\d+)\.")


def infer_arch(state_dict: Mapping[str, object]) -> str:
    """resnet18/34/50/101/152 from the blocks per stage and the first block's conv (3x3 basic, 1x1 bottleneck)."""
    first_conv = state_dict.get("layer1.0.conv1.weight")
    if first_conv is None:
        raise CheckpointError("cannot infer the ResNet depth: 'layer1.0.conv1.weight' is missing")
    kernel = tuple(first_conv.shape[-2:])
    block = {(1, 1): "bottleneck", (3, 3): "basic"}.get(kernel)
    if block is None:
        raise CheckpointError(f"'layer1.0.conv1.weight' has kernel {kernel}; a ResNet block has 1x1 or 3x3")
    blocks_per_stage = [0, 0, 0, 0]
    for name in state_dict:
        match = _BLOCK_KEY.match(name)
        if match:
            stage, index = int(match.group(1)) - 1, int(match.group(2))
            blocks_per_stage[stage] = max(blocks_per_stage[stage], index + 1)
    spec = (block, tuple(blocks_per_stage))
    for arch, arch_spec in RESNET_ARCHS.items():
        if arch_spec == spec:
            return arch
    raise CheckpointError(
        f"not a torchvision ResNet: {block} blocks {tuple(blocks_per_stage)} per stage match none of "
        + ", ".join(f"{arch} {counts}" for arch, (kind, counts) in RESNET_ARCHS.items() if kind == block)
    )


class BackboneMismatch(NamedTuple):
    """What separates a state dict from an ``arch`` backbone, as torchvision names."""

    missing: list[str]
    unexpected: list[str]
    wrong_shape: list[str]


def _shape(value: object) -> tuple[int, ...]:
    return tuple(getattr(value, "shape", ()))


def backbone_mismatches(state_dict: Mapping[str, object], arch: str) -> BackboneMismatch:
    """The names ``check_backbone`` refuses; ``load_backbone(allow_partial=True)`` drops or lists them instead."""
    expected = expected_backbone_shapes(arch)
    present = [name for name in expected if name in state_dict]
    return BackboneMismatch(
        missing=[name for name in expected if name not in state_dict],
        unexpected=[name for name in state_dict if name not in expected],
        wrong_shape=[name for name in present if _shape(state_dict[name]) != expected[name]],
    )


def check_backbone(state_dict: Mapping[str, object], arch: str) -> None:
    """Every ``arch`` backbone tensor present with its torchvision shape, and nothing else.

    An unmatched tensor is an error, not a warning: engines that load by name skip mismatches
    with a log line and silently keep random weights.
    """
    expected = expected_backbone_shapes(arch)
    mismatch = backbone_mismatches(state_dict, arch)
    wrong_shape = [f"{name} {_shape(state_dict[name])} (expected {expected[name]})" for name in mismatch.wrong_shape]
    problems = [
        f"{len(names)} {label}: {_preview(names)}"
        for label, names in (
            ("missing", mismatch.missing),
            ("unexpected", mismatch.unexpected),
            ("with the wrong shape", wrong_shape),
        )
        if names
    ]
    if problems:
        raise CheckpointError(f"not a {arch} backbone: " + "; ".join(problems))


def _plain(value: object, where: str) -> object:
    """Meta as Python builtins only, which ``torch.load(weights_only=True)`` reads back.

    Paths become strings and numpy scalars/arrays become numbers/lists: pickled as numpy objects
    they would make the weights-only loader refuse the whole checkpoint.
    """
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
        return {key: _plain(item, f"{where}.{key}") for key, item in value.items()}
    raise TypeError(f"meta {where} is a {type(value).__name__}; use str/int/float/bool/None, lists or str-keyed dicts")


def _check_pixel_stats(meta: Mapping[str, object]) -> None:
    for key in ("pixel_mean", "pixel_std"):
        values = meta[key]
        if values is None:
            continue
        if len(values) != 3:
            raise ValueError(f"meta {key} needs 3 values (RGB), got {values}")
        if max(values) <= 1.0:
            raise ValueError(f"meta {key} {values} looks like the 0-1 scale; the canonical scale is 0-255")


def canonical_checkpoint(
    state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, object], train_state: object | None = None
) -> dict[str, object]:
    """Validate a backbone and build the canonical checkpoint dict (what ``save_canonical`` writes).

    Missing meta keys are stored as None; ``meta["arch"]``, when given, must match the tensors.
    """
    arch = infer_arch(state_dict)
    if meta.get("arch") not in (None, arch):
        raise CheckpointError(f"meta says arch {meta['arch']!r} but the tensors are a {arch}")
    check_backbone(state_dict, arch)
    full_meta = {key: None for key in CANONICAL_META_KEYS}
    full_meta.update(_plain(dict(meta), "meta"))
    full_meta["arch"] = arch
    _check_pixel_stats(full_meta)
    checkpoint = {
        "format": CANONICAL_FORMAT,
        "version": CANONICAL_VERSION,
        "arch": arch,
        # copies, so a view never drags its whole storage into the file
        "state_dict": {name: tensor.detach().to("cpu", copy=True) for name, tensor in state_dict.items()},
        "meta": full_meta,
    }
    if train_state is not None:
        checkpoint["train_state"] = train_state
    return checkpoint


def save_canonical(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    meta: Mapping[str, object],
    train_state: object | None = None,
) -> None:
    """Validate a backbone and write it atomically as a canonical checkpoint."""
    atomic_torch_save(canonical_checkpoint(state_dict, meta, train_state), path)
