"""Whole DeepLab-v3 models to and from mmsegmentation checkpoints.

transferlab's DeepLab-v3 carries mmseg's parameter names (``benchmarks/modeling/deeplab.py``), so a fine-tuned
``model_final.pth`` (``{"model": …, "iteration", "optimizer", …}``) and an mmseg 1.x checkpoint (``{"meta": …,
"state_dict": …}``, what mmengine's CheckpointHook writes and ``mmseg.apis.init_model`` reads) hold the same tensors
under the same keys. Export writes that layout with mmseg's ``meta["dataset_meta"]`` (classes and palette, which
``init_model`` takes from there); import loads either layout whole for ``--eval-only``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from converters.io import CheckpointError, atomic_torch_save, load_torch_file, refuse_to_overwrite

from .cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE


def _is_segmenter(weights) -> bool:
    return (isinstance(weights, Mapping) and "backbone.conv1.weight" in weights
            and any(str(key).startswith("decode_head.") for key in weights))


def segmenter_state(obj) -> dict | None:
    """The whole model's tensors of a transferlab DeepLab-v3 checkpoint or an mmseg one; None for anything else
    (a backbone, a detector). An mmseg model with the ResNetV1c deep stem is an error naming it: the model built
    here has the basic stem."""
    if not isinstance(obj, Mapping):
        return None
    for key in ("model", "state_dict"):
        weights = obj.get(key)
        if isinstance(weights, Mapping) and any(str(k).startswith("decode_head.") for k in weights):
            if any(str(k).startswith("backbone.stem.") for k in weights):
                raise CheckpointError("an mmseg model with ResNetV1c's deep stem (backbone.stem.*): this DeepLab-v3 "
                                      "has the basic 7x7 stem (backbone.conv1), as self-supervised checkpoints do")
            return dict(weights) if _is_segmenter(weights) else None
    return None


def read_segmenter(path) -> dict | None:
    return segmenter_state(load_torch_file(path))


def load_whole_segmenter(model: torch.nn.Module, state: dict, weights: str) -> None:
    """Every tensor, as mmseg's ``--eval-only``-style ``load_checkpoint`` with strict names would."""
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # torch's mismatch report: many lines and no file name
        raise CheckpointError(f"{weights} is a segmentation model that does not fit the one this config builds "
                              f"(classes, head widths, depth?): {' '.join(str(error).split())[:500]}") from error


def mmseg_checkpoint(state: Mapping[str, torch.Tensor], source: str, iteration: int | None) -> dict:
    meta = {
        "dataset_meta": {"classes": list(CITYSCAPES_CLASSES), "palette": [list(c) for c in CITYSCAPES_PALETTE]},
        "iter": iteration,
        "transferlab": {"converted_from": source,
                        "config": "configs/mmseg/deeplabv3_r50-d8_basic-stem_4xb2-40k_cityscapes-512x1024.py"},
    }
    return {"meta": meta, "state_dict": {key: value.detach().cpu() for key, value in state.items()}}


def export_mmseg(in_path, out_path) -> int:
    """Write the whole model of a transferlab DeepLab-v3 checkpoint as an mmseg checkpoint; returns the tensor
    count. Raises CheckpointError if ``in_path`` holds no whole DeepLab-v3."""
    refuse_to_overwrite(out_path, in_path)
    obj = load_torch_file(in_path)
    state = segmenter_state(obj)
    if state is None:
        raise CheckpointError(f"{in_path}: not a DeepLab-v3 model (no decode_head.* tensors)")
    iteration = obj.get("iteration") if isinstance(obj, Mapping) else None
    atomic_torch_save(mmseg_checkpoint(state, os.path.abspath(in_path), iteration), Path(out_path))
    return len(state)
