"""torchvision <-> Detectron2 ResNet names, and the ``.pkl`` file Detectron2 loads.

The renaming is MoCo's ``convert-pretrain-to-detectron2.py``: ``conv1 -> stem.conv1``,
``bn1 -> stem.conv1.norm``, ``layer{1..4} -> res{2..5}``, ``bnK -> convK.norm``,
``downsample.0 -> shortcut``, ``downsample.1 -> shortcut.norm``. It is written as explicit name
tables rather than string replacements so that it is a bijection (the reverse is the same table)
and so that a name outside the backbone is an error instead of a key Detectron2 silently skips.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from typing import NamedTuple

import torch

from .canonical import check_backbone, infer_arch
from .io import CheckpointError, atomic_write

__all__ = ["to_detectron2_names", "from_detectron2_names", "write_detectron2_pkl"]

_BN_PARAMS = ("weight", "bias", "running_mean", "running_var")
_STEM = {"conv1.weight": "stem.conv1.weight", **{f"bn1.{p}": f"stem.conv1.norm.{p}" for p in _BN_PARAMS}}
# names inside one residual block, torchvision -> Detectron2
_BLOCK = {
    **{f"conv{k}.weight": f"conv{k}.weight" for k in (1, 2, 3)},
    **{f"bn{k}.{p}": f"conv{k}.norm.{p}" for k in (1, 2, 3) for p in _BN_PARAMS},
    "downsample.0.weight": "shortcut.weight",
    **{f"downsample.1.{p}": f"shortcut.norm.{p}" for p in _BN_PARAMS},
}
_TORCHVISION_BLOCK = re.compile(r"layer(?P<stage>[1-4])\.(?P<index>\d+)\.(?P<rest>.+)")
_DETECTRON2_BLOCK = re.compile(r"res(?P<stage>[2-5])\.(?P<index>\d+)\.(?P<rest>.+)")

_DROPPED_REASON = "BatchNorm step counter; Detectron2's norm layers have no such buffer"


class _Direction(NamedTuple):
    stem: Mapping[str, str]
    block: Mapping[str, str]
    source_block: re.Pattern
    stage_prefix: str
    stage_offset: int
    target: str
    drops_bn_counters: bool  # num_batches_tracked exists in torchvision only

    def rename(self, name: str) -> str | None:
        if name in self.stem:
            return self.stem[name]
        match = self.source_block.fullmatch(name)
        if match is None or match["rest"] not in self.block:
            return None
        stage = int(match["stage"]) + self.stage_offset
        return f"{self.stage_prefix}{stage}.{match['index']}.{self.block[match['rest']]}"


_TO_DETECTRON2 = _Direction(
    _STEM, _BLOCK, _TORCHVISION_BLOCK, stage_prefix="res", stage_offset=1, target="Detectron2", drops_bn_counters=True
)
_FROM_DETECTRON2 = _Direction(
    {d2: tv for tv, d2 in _STEM.items()},
    {d2: tv for tv, d2 in _BLOCK.items()},
    _DETECTRON2_BLOCK,
    stage_prefix="layer",
    stage_offset=-1,
    target="torchvision",
    drops_bn_counters=False,
)


def _rename_all(state_dict: Mapping[str, object], direction: _Direction) -> tuple[dict[str, object], dict[str, str]]:
    """(renamed tensors, dropped name -> reason); a name outside the backbone raises CheckpointError."""
    renamed, dropped, unknown = {}, {}, []
    for name, value in state_dict.items():
        if direction.drops_bn_counters and name.endswith(".num_batches_tracked"):
            dropped[name] = _DROPPED_REASON
            continue
        new_name = direction.rename(name)
        if new_name is None:
            unknown.append(name)
        else:
            renamed[new_name] = value
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise CheckpointError(f"{len(unknown)} tensors have no {direction.target} ResNet name: {shown}")
    return renamed, dropped


def to_detectron2_names(state_dict: Mapping[str, object]) -> dict[str, object]:
    """torchvision backbone names -> Detectron2 names (``num_batches_tracked`` dropped: Detectron2 has none)."""
    return _rename_all(state_dict, _TO_DETECTRON2)[0]


def from_detectron2_names(state_dict: Mapping[str, object]) -> dict[str, object]:
    """Detectron2 ResNet names (``stem.*``, ``res2..5.*``) -> torchvision names; the exact inverse."""
    return _rename_all(state_dict, _FROM_DETECTRON2)[0]


def write_detectron2_pkl(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source_path: str | os.PathLike | None = None,
) -> dict[str, str]:
    """Write a canonical backbone as the ``.pkl`` Detectron2's DetectionCheckpointer loads as-is.

    ``{"model": {name: float32 numpy array}, "__author__": "transferlab", "matching_heuristics": True}``;
    ``matching_heuristics`` makes Detectron2 match by longest name suffix, which places ``res5`` in
    the C4 RoI head and ``res2..5`` under the FPN's ``backbone.bottom_up``. Pickle protocol 4:
    numpy 2 then names ``numpy._core.multiarray._reconstruct``, which numpy >= 1.26 also resolves,
    whereas protocol 5 would need ``numpy._core.numeric``, which numpy 1.x lacks (numpy/numpy#28340).
    Returns the dropped names with the reason. ``source_path``, when given, must not be ``path``.
    """
    if not os.fspath(path).endswith(".pkl"):
        raise ValueError(f"{os.fspath(path)}: Detectron2 unpickles a checkpoint only when its name ends in .pkl")
    if source_path is not None and os.path.exists(path) and os.path.samefile(path, source_path):
        raise ValueError(f"{os.fspath(path)}: refusing to overwrite the input checkpoint")
    check_backbone(state_dict, infer_arch(state_dict))
    renamed, dropped = _rename_all(state_dict, _TO_DETECTRON2)
    model = {name: tensor.detach().cpu().float().numpy() for name, tensor in renamed.items()}
    payload = {"model": model, "__author__": "transferlab", "matching_heuristics": True}
    atomic_write(path, lambda file: pickle.dump(payload, file, protocol=4))
    return dropped
