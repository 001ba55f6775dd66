"""torchvision <-> Detectron2 ResNet names, and the ``.pkl`` file Detectron2 loads.

The renaming is MoCo's ``convert-pretrain-to-detectron2.py``: ``conv1 -> stem.conv1``,
``bn1 -> stem.conv1.norm``, ``layer{1..4} -> res{2..5}``, ``bnK -> convK.norm``,
``downsample.0 -> shortcut``, ``downsample.1 -> shortcut.norm``. It is written as explicit name
tables rather than string replacements so that it is a bijection (the reverse is the same table)
and so that a name outside the backbone is an error instead of a key Detectron2 silently skips.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

import torch

from .canonical import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD, RESNET_ARCHS, check_backbone, infer_arch
from .io import CheckpointError, atomic_write, refuse_to_overwrite, require_suffix
from .report import OutputFile, WriterOutput

__all__ = [
    "to_detectron2_names",
    "from_detectron2_names",
    "from_detectron2_name",
    "write_detectron2_pkl",
    "detectron2_overlay",
    "to_detectron2",
]

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

_DROPPED_REASON = (
    "BatchNorm step counter: Detectron2's FrozenBN has none, its BN/SyncBN restart it from 0 when a checkpoint lacks it"
)


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


def _rename_all(state_dict: Mapping[str, object], direction: _Direction) -> tuple[dict[str, str], dict[str, str]]:
    """(old name -> new name, dropped name -> reason); a name outside the backbone raises CheckpointError."""
    names, dropped, unknown = {}, {}, []
    for name in state_dict:
        if direction.drops_bn_counters and name.endswith(".num_batches_tracked"):
            dropped[name] = _DROPPED_REASON
            continue
        new_name = direction.rename(name)
        if new_name is None:
            unknown.append(name)
        else:
            names[name] = new_name
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise CheckpointError(f"{len(unknown)} tensors have no {direction.target} ResNet name: {shown}")
    return names, dropped


def to_detectron2_names(state_dict: Mapping[str, object]) -> dict[str, object]:
    """torchvision backbone names -> Detectron2 names (``num_batches_tracked`` dropped, see _DROPPED_REASON)."""
    names, _ = _rename_all(state_dict, _TO_DETECTRON2)
    return {new: state_dict[old] for old, new in names.items()}


def from_detectron2_names(state_dict: Mapping[str, object]) -> dict[str, object]:
    """Detectron2 ResNet names (``stem.*``, ``res2..5.*``) -> torchvision names; the exact inverse."""
    names, _ = _rename_all(state_dict, _FROM_DETECTRON2)
    return {new: state_dict[old] for old, new in names.items()}


def from_detectron2_name(name: str) -> str | None:
    """The torchvision name of one Detectron2 ResNet name, None outside the ResNet.

    Unlike ``from_detectron2_names`` it also maps BatchNorm counters, which Detectron2's .pkl files
    (and so the name table) lack but its trained .pth files have: they follow their running_mean.
    """
    if name.endswith(".num_batches_tracked"):
        running_mean = _FROM_DETECTRON2.rename(name.removesuffix("num_batches_tracked") + "running_mean")
        return None if running_mean is None else running_mean.removesuffix("running_mean") + "num_batches_tracked"
    return _FROM_DETECTRON2.rename(name)


def _pkl_writer(state_dict: Mapping[str, torch.Tensor], names: Mapping[str, str]) -> Callable[[BinaryIO], None]:
    """Serializer of ``{"model": {Detectron2 name: float32 array}, "__author__", "matching_heuristics": True}``.

    ``matching_heuristics`` makes Detectron2 match by longest name suffix, which places ``res5`` in
    the C4 RoI head and ``res2..5`` under the FPN's ``backbone.bottom_up``. Pickle protocol 4:
    numpy 2 then names ``numpy._core.multiarray._reconstruct``, which numpy >= 1.26 also resolves,
    whereas protocol 5 would need ``numpy._core.numeric``, which numpy 1.x lacks (numpy/numpy#28340).
    """
    model = {new: state_dict[old].detach().cpu().float().numpy() for old, new in names.items()}
    payload = {"model": model, "__author__": "transferlab", "matching_heuristics": True}
    return lambda file: pickle.dump(payload, file, protocol=4)


_PKL_SUFFIX = ((".pkl",), "Detectron2 unpickles a checkpoint only when its name ends in .pkl")


def write_detectron2_pkl(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source_path: str | os.PathLike | None = None,
) -> dict[str, str]:
    """Write a canonical backbone as the ``.pkl`` Detectron2's DetectionCheckpointer loads as-is.

    Returns the dropped names with the reason. ``source_path``, when given, must not be ``path``.
    ``convert(..., to="detectron2")`` writes the same file plus the config overlay it needs.
    """
    require_suffix(path, *_PKL_SUFFIX)
    if source_path is not None:
        refuse_to_overwrite(path, source_path)
    check_backbone(state_dict, infer_arch(state_dict))
    names, dropped = _rename_all(state_dict, _TO_DETECTRON2)
    atomic_write(path, _pkl_writer(state_dict, names))
    return dropped


def detectron2_overlay(weights: str | os.PathLike, meta: Mapping[str, object]) -> str:
    """The YAML overlay that makes Detectron2 use torchvision-style weights as they were trained.

    It holds what MoCo's ``detection/configs/*_moco.yaml`` hold. Getting any of these wrong is not an
    error in Detectron2, it only costs AP, so the settings travel with the weights.
    """
    arch = str(meta["arch"])
    bottleneck = RESNET_ARCHS[arch][0] == "bottleneck"
    recorded = meta.get("pixel_mean") is not None and meta.get("pixel_std") is not None
    mean = meta["pixel_mean"] if recorded else IMAGENET_PIXEL_MEAN
    std = meta["pixel_std"] if recorded else IMAGENET_PIXEL_STD
    method = f", {meta['method']}" if meta.get("method") else ""
    source = f" from {meta['converted_from']}" if meta.get("converted_from") else ""
    weights = os.path.abspath(weights)
    example = "pascal_voc_R_50_C4_24k.yaml" if bottleneck else "coco_R_50_FPN_1x.yaml"
    lines = [
        f"# Detectron2 config overlay for {os.path.basename(weights)}, written by transferlab{source}",
        f"# ({meta.get('source_format') or 'canonical'} checkpoint, {arch}{method}).",
        "#",
        "# The .pkl holds torchvision-style weights. These settings make Detectron2 use them as they were",
        "# trained, as facebookresearch/moco detection/configs/*_moco.yaml and Base-RCNN-C4-BN.yaml do: RGB input,",
        "# the pretraining's mean/std on the 0-255 scale, the stride in the 3x3 convs, SyncBN, nothing frozen.",
        "# A mismatch here never fails; it silently costs AP.",
        "#",
        "# Detectron2 reads one --config-file: start this file with a _BASE_ line naming your task config, e.g.",
        f'#   _BASE_: "/path/to/transferlab/configs/detectron2/{example}"',
        "# transferlab's configs/detectron2/*_moco.yaml already hold these settings (for ResNet-50); with one of",
        f"# them, pass MODEL.WEIGHTS {weights}",
        "#",
    ]
    if bottleneck:
        lines += [
            "# C4 models: ROI_HEADS.NAME below is MoCo's res5 head with an extra BN after res5. Detectron2 does not",
            "# ship it: the training script must register it, as facebookresearch/moco detection/train_net.py does",
            "# (@ROI_HEADS_REGISTRY.register() class Res5ROIHeadsExtraNorm(Res5ROIHeads)). Stock tools/train_net.py",
            "# stops with \"No object named 'Res5ROIHeadsExtraNorm' found in 'ROI_HEADS' registry\" (moco#121).",
            "# The extra BN is not in the checkpoint; it starts from its initialisation, as in MoCo.",
            "# FPN models: delete ROI_HEADS (FPN uses StandardROIHeads).",
        ]
    else:
        lines += [
            f"# {arch}: Detectron2 builds the C4 RoI head's res5 from bottleneck blocks, so a {arch} fits only an",
            "# FPN model; its RESNETS keys below (DEPTH, RES2_OUT_CHANNELS) override the config's ResNet-50 ones.",
        ]
    if not recorded:
        lines.append("# The checkpoint records no pixel mean/std: these are torchvision's ImageNet statistics.")
    lines += [
        "MODEL:",
        f"  WEIGHTS: {json.dumps(weights)}",
        f"  PIXEL_MEAN: {json.dumps([float(v) for v in mean])}",
        f"  PIXEL_STD: {json.dumps([float(v) for v in std])}",
        "  BACKBONE:",
        "    FREEZE_AT: 0",
        "  RESNETS:",
        f"    DEPTH: {int(arch.removeprefix('resnet'))}",
        "    STRIDE_IN_1X1: False  # torchvision strides in the 3x3 conv; MSRA weights stride in the 1x1",
        '    NORM: "SyncBN"',
    ]
    if bottleneck:
        lines += ["  ROI_HEADS:", '    NAME: "Res5ROIHeadsExtraNorm"']
    else:
        lines.append("    RES2_OUT_CHANNELS: 64  # Detectron2's requirement for ResNet-18/34")
    lines += ["INPUT:", '  FORMAT: "RGB"', ""]
    return "\n".join(lines)


def to_detectron2(path: Path, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, object]) -> WriterOutput:
    """Detectron2 .pkl (stem, res2..res5, matching_heuristics) for R50-C4 and FPN, plus its YAML overlay."""
    require_suffix(path, *_PKL_SUFFIX)
    names, dropped = _rename_all(state_dict, _TO_DETECTRON2)
    overlay = detectron2_overlay(path, meta)
    files = [
        OutputFile(os.fspath(path), "Detectron2 checkpoint", _pkl_writer(state_dict, names)),
        OutputFile.text(path.with_suffix(".yaml"), "Detectron2 config overlay (input format, pixel mean/std, "
                        "STRIDE_IN_1X1, SyncBN, the C4 head to register)", overlay),
    ]
    return WriterOutput(files, names, dropped)
