"""mmsegmentation / mmdetection checkpoints: ``{"state_dict": {"backbone.<torchvision name>"}, "meta"}``.

OpenMMLab's ``ResNet`` (``style='pytorch'``, basic 7x7 stem) names its tensors as torchvision does
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``downsample.0``), so the conversion is the ``backbone.``
prefix that OpenMMLab models use; ``init_cfg=dict(type='Pretrained', prefix='backbone.')`` strips
it again when the backbone is initialised. Each writer also writes the config that does that,
because the defaults do not fit: mmseg's DeepLab-v3 uses ``ResNetV1c``, whose deep stem
(``stem.0``..``stem.8``) would load nothing from a torchvision-style backbone and only log a warning.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .canonical import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD, RESNET_ARCHS
from .io import require_suffix
from .report import OutputFile, WriterOutput

__all__ = ["mmseg_config", "mmdet_config", "to_mmseg", "to_mmdet"]

PREFIX = "backbone."


def _header(what: str, checkpoint: str, meta: Mapping[str, object]) -> list[str]:
    method = f", {meta['method']}" if meta.get("method") else ""
    source = f" from {meta['converted_from']}" if meta.get("converted_from") else ""
    return [
        f"# {what}, with the backbone initialised from",
        f"# {checkpoint}",
        f"# Written by transferlab{source}",
        f"# ({meta.get('source_format') or 'canonical'} checkpoint, {meta['arch']}{method}).",
    ]


def _preprocessor(meta: Mapping[str, object]) -> str:
    """Pixel statistics on the 0-255 scale, RGB, as the weights were pretrained (torchvision's when unrecorded)."""
    mean = meta.get("pixel_mean") or IMAGENET_PIXEL_MEAN
    std = meta.get("pixel_std") or IMAGENET_PIXEL_STD
    return f"data_preprocessor=dict(mean={[float(v) for v in mean]}, std={[float(v) for v in std]}, bgr_to_rgb=True)"


def _backbone(checkpoint: str, arch: str, extra: str = "") -> list[str]:
    return [
        "    backbone=dict(",
        "        # torchvision-style weights have the basic 7x7 stem (conv1/bn1); ResNetV1c's deep stem would load",
        "        # nothing from them",
        "        type='ResNet',",
        f"        depth={int(arch.removeprefix('resnet'))},",
        "        style='pytorch',",
        *([f"        {extra}"] if extra else []),
        f"        init_cfg=dict(type='Pretrained', checkpoint={checkpoint!r}, prefix={PREFIX!r})),",
    ]


def mmseg_config(checkpoint: str | os.PathLike, meta: Mapping[str, object]) -> str:
    """mmseg 1.x DeepLab-v3 R-D8 config on Cityscapes 512x1024, 40k iterations, initialised from ``checkpoint``.

    mmseg's own recipe is what the Exemplar paper fine-tuned with; only the backbone type and its
    initialisation change (and the head widths for ResNet-18/34, as mmseg's R-18-D8 config sets them).
    """
    arch, checkpoint = str(meta["arch"]), os.path.abspath(checkpoint)
    lines = _header("mmsegmentation 1.x config: DeepLab-v3 R-D8 on Cityscapes 512x1024, 40k iterations",
                    checkpoint, meta)
    lines += [
        "# Save it in mmsegmentation's configs/deeplabv3/ (the _base_ path is relative to that directory; mmseg 0.x",
        "# names the base deeplabv3_r50-d8_512x1024_40k_cityscapes.py) and train with tools/train.py on this file.",
        "_base_ = './deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py'",
        "model = dict(",
        "    pretrained=None,  # drops the base config's ImageNet ResNetV1c weights, which exclude init_cfg",
        f"    {_preprocessor(meta)},",
        *_backbone(checkpoint, arch),
    ]
    if RESNET_ARCHS[arch][0] == "basic":  # mmseg's deeplabv3_r18-d8 head widths
        lines += ["    decode_head=dict(in_channels=512, channels=128),",
                  "    auxiliary_head=dict(in_channels=256, channels=64),"]
    lines += [")", ""]
    return "\n".join(lines)


def mmdet_config(checkpoint: str | os.PathLike, meta: Mapping[str, object]) -> str:
    """mmdet 3.x Mask R-CNN R-FPN 1x on COCO with SyncBN and nothing frozen, initialised from ``checkpoint``.

    This is mmselfsup's detection benchmark (configs/benchmarks/mmdetection/coco/
    mask-rcnn_r50_fpn_ms-1x_coco.py), i.e. the MoCo fine-tuning protocol on an FPN.
    """
    arch, checkpoint = str(meta["arch"]), os.path.abspath(checkpoint)
    lines = _header("mmdetection 3.x config: Mask R-CNN R-FPN 1x on COCO, SyncBN, nothing frozen, multi-scale train",
                    checkpoint, meta)
    lines += [
        "# As mmselfsup's configs/benchmarks/mmdetection/coco/mask-rcnn_r50_fpn_ms-1x_coco.py. Inside an mmdetection",
        "# checkout, write the _base_ as '../mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'.",
        "# R50-C4 (MoCo's C4 protocol) needs mmselfsup's ResLayerExtraNorm shared head (custom_imports of",
        "# mmselfsup.models.utils.res_layer_extra_norm), initialised from this file too: its tensors are named",
        f"# layer4.*, so roi_head.shared_head.init_cfg=dict(type='Pretrained', checkpoint=..., prefix={PREFIX!r}).",
        "_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'",
        "norm_cfg = dict(type='SyncBN', requires_grad=True)",
        "model = dict(",
        f"    {_preprocessor(meta)},",
        *_backbone(checkpoint, arch, extra="frozen_stages=-1, norm_cfg=norm_cfg, norm_eval=False,"),
    ]
    in_channels = "in_channels=[64, 128, 256, 512], " if RESNET_ARCHS[arch][0] == "basic" else ""
    lines += [
        f"    neck=dict({in_channels}norm_cfg=norm_cfg),",
        "    roi_head=dict(",
        "        bbox_head=dict(type='Shared4Conv1FCBBoxHead', norm_cfg=norm_cfg),",
        "        mask_head=dict(norm_cfg=norm_cfg)))",
        "train_pipeline = [",
        "    dict(type='LoadImageFromFile'),",
        "    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),",
        "    dict(type='RandomChoiceResize', keep_ratio=True,",
        "         scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)]),",
        "    dict(type='RandomFlip', prob=0.5),",
        "    dict(type='PackDetInputs'),",
        "]",
        "train_dataloader = dict(dataset=dict(pipeline=train_pipeline))",
        "",
    ]
    return "\n".join(lines)


def _openmmlab(path: Path, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, object],
               config: str, engine: str) -> WriterOutput:
    require_suffix(path)
    written = {name: PREFIX + name for name in state_dict}
    checkpoint = {"state_dict": {PREFIX + name: tensor for name, tensor in state_dict.items()}, "meta": dict(meta)}
    files = [
        OutputFile(os.fspath(path), f"{engine} checkpoint", lambda file: torch.save(checkpoint, file)),
        OutputFile.text(path.with_suffix(".py"), f"{engine} config initialising the backbone from it", config),
    ]
    return WriterOutput(files, written)


def to_mmseg(path: Path, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, object]) -> WriterOutput:
    """mmsegmentation .pth (state_dict backbone.*, meta) plus a DeepLab-v3 config with the basic-stem ResNet."""
    return _openmmlab(path, state_dict, meta, mmseg_config(path, meta), "mmsegmentation")


def to_mmdet(path: Path, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, object]) -> WriterOutput:
    """mmdetection .pth (state_dict backbone.*, meta) plus a Mask R-CNN R-FPN config with SyncBN."""
    return _openmmlab(path, state_dict, meta, mmdet_config(path, meta), "mmdetection")
