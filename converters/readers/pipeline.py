"""``load_backbone``: load a file safely, pick its reader (``READERS``, in order) and check the backbone."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..canonical import (
    CANONICAL_META_KEYS,
    backbone_mismatches,
    check_backbone,
    expected_backbone_keys,
    expected_backbone_shapes,
    infer_arch,
)
from ..io import CheckpointError, load_pickle_file, load_safetensors_file, load_torch_file
from .base import ReadResult
from .canonical import read_canonical
from .detectron2 import read_detectron2
from .lightning import read_lightning
from .mmselfsup import read_mmselfsup
from .moco import read_moco
from .mocov3 import read_mocov3
from .torchvision import read_timm, read_torchvision
from .transferlab_detector import read_transferlab_detector
from .transferlab_segmenter import read_transferlab_segmenter
from .vissl import read_vissl


class PartialBackboneWarning(UserWarning):
    """``load_backbone(allow_partial=True)`` dropped tensors no rule explains or lacks backbone tensors."""


# Tried in this order when the format is not given: layouts with unique markers first, the Lightning
# prefix search (which reads any state dict holding one ResNet) last.
READERS = {
    "canonical": read_canonical,
    "transferlab_detector": read_transferlab_detector,
    "transferlab_segmenter": read_transferlab_segmenter,
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
