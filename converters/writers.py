"""Writers: one small function per output format, and ``convert``, which reads any checkpoint and writes one.

A writer turns a torchvision-named backbone and its meta into a ``WriterOutput``: the files to
write (the checkpoint and, where an engine needs settings that match the weights, a config next
to it) and, for every tensor, its key in the output or why the format has no place for it.
``convert`` checks that account and that no file would replace the input before anything is
written. Supporting a new format is adding one function to ``WRITERS``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import safetensors.torch
import torch

from .canonical import CANONICAL_META_KEYS, canonical_checkpoint
from .detectron2 import to_detectron2
from .io import CheckpointError, atomic_write, refuse_to_overwrite, require_suffix
from .openmmlab import to_mmdet, to_mmseg
from .readers import load_backbone
from .report import CoverageReport, OutputFile, SourceSummary, WriterOutput

__all__ = ["WRITERS", "to_canonical", "to_torchvision", "to_safetensors", "convert"]

def _same_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    return {name: name for name in state_dict}


def to_canonical(path: Path, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, object]) -> WriterOutput:
    """transferlab's canonical checkpoint: torchvision names without fc, plus meta (always the whole backbone)."""
    require_suffix(path)
    try:
        checkpoint = canonical_checkpoint(state_dict, meta)
    except CheckpointError as err:
        raise CheckpointError(f"{os.fspath(path)}: a canonical checkpoint holds the whole backbone; {err}") from None
    file = OutputFile(os.fspath(path), "canonical checkpoint", lambda f: torch.save(checkpoint, f))
    return WriterOutput([file], _same_names(state_dict))


def to_torchvision(path: Path, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, object]) -> WriterOutput:
    """Plain torchvision ResNet state dict without fc, for ``resnet50().load_state_dict(sd, strict=False)``."""
    require_suffix(path)
    checkpoint = dict(state_dict)
    file = OutputFile(os.fspath(path), "torchvision state dict", lambda f: torch.save(checkpoint, f))
    return WriterOutput([file], _same_names(state_dict))


def to_safetensors(path: Path, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, object]) -> WriterOutput:
    """safetensors file of the torchvision-named backbone (no fc), meta as JSON string metadata; holds no code."""
    require_suffix(path, (".safetensors",), "readers pick the safetensors loader by this suffix")
    # safetensors refuses views and tensors that share storage; clones have neither
    tensors = {name: tensor.clone(memory_format=torch.contiguous_format) for name, tensor in state_dict.items()}
    metadata = {"format": "pt"}  # what Hugging Face loaders check
    metadata.update({key: value if isinstance(value, str) else json.dumps(value)
                     for key, value in meta.items() if value is not None})
    file = OutputFile(os.fspath(path), "safetensors file",
                      lambda f: f.write(safetensors.torch.save(tensors, metadata)))
    return WriterOutput([file], _same_names(state_dict))


WRITERS = {
    "canonical": to_canonical,
    "torchvision": to_torchvision,
    "safetensors": to_safetensors,
    "detectron2": to_detectron2,
    "mmseg": to_mmseg,
    "mmdet": to_mmdet,
}


def _output_meta(source: str | os.PathLike, meta: Mapping[str, object]) -> dict[str, object]:
    """What every output records: the canonical meta keys and where the weights came from."""
    return {
        **{key: meta.get(key) for key in CANONICAL_META_KEYS},
        "source_format": meta["source_format"],
        "converted_from": os.path.abspath(source),
    }


def convert(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    to: str,
    from_: str | None = None,
    arch: str | None = None,
    allow_partial: bool = False,
    force: bool = False,
) -> CoverageReport:
    """Read ``in_path`` (any layout ``load_backbone`` reads, or the one ``from_`` names) and write it as ``to``.

    Returns the coverage report. Nothing is written unless every tensor is accounted for and no
    output file (the checkpoint or the config next to it) is the input file. ``allow_partial``
    converts a checkpoint that lacks backbone tensors or holds tensors no rule explains;
    ``load_backbone`` then warns (PartialBackboneWarning) and the report names each one. An existing
    config next to the output (Detectron2's ``.yaml``, mmseg/mmdet's ``.py``) is replaced only with
    ``force``: people edit those files, while the checkpoint itself is rewritten like any output.
    """
    if to not in WRITERS:
        raise CheckpointError(f"unknown output format {to!r}; output formats: {', '.join(WRITERS)}")
    refuse_to_overwrite(out_path, in_path)
    state_dict, meta = load_backbone(in_path, format=from_, arch=arch, allow_partial=allow_partial)
    output = WRITERS[to](Path(out_path), state_dict, _output_meta(in_path, meta))
    report = CoverageReport(
        source=SourceSummary.from_meta(in_path, state_dict, meta),
        target_format=to,
        files={file.path: file.description for file in output.files},
        written=output.written,
        dropped=output.dropped,
    )
    for file in output.files:
        refuse_to_overwrite(file.path, in_path)
    for file in output.files[1:]:  # the checkpoint comes first, then the configs written next to it
        if os.path.exists(file.path) and not force:
            raise FileExistsError(f"{file.path} exists ({file.description}, possibly edited since it was written); "
                                  "pass --force (force=True) to replace it")
    for file in output.files:
        atomic_write(file.path, file.write)
    return report
