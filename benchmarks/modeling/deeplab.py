"""DeepLab-v3 R50-D8 as mmsegmentation defines it (``configs/_base_/models/deeplabv3_r50-d8.py``), on torchvision
parts, with mmseg's parameter names so that a fine-tuned model moves to mmseg whole.

- Backbone: a torchvision ResNet with the basic 7x7 stem (mmseg ``ResNet``, ``deep_stem=False``: what
  self-supervised checkpoints hold) and output stride 8: strides (1, 2, 1, 1), dilations (1, 1, 2, 4) with mmseg's
  ``contract_dilation`` (the first block of a dilated stage uses half the dilation). torchvision's
  ``replace_stride_with_dilation=[False, True, True]`` builds exactly that (layer3: 1 then 2, layer4: 2 then 4,
  1x1 downsampling at stride 1) with the stride in the 3x3 conv (mmseg ``style='pytorch'``), and its names are
  mmseg's (``conv1``, ``bn1``, ``layerN.i.{conv,bn}{1,2,3}``, ``downsample.{0,1}``).
- ``decode_head``: mmseg's ``ASPPHead`` on res5 (2048 channels): image pooling (``image_pool.1``), four ASPP
  branches (1x1, then 3x3 at dilations 12, 24, 36; ``aspp_modules.N``) of 512 channels, concatenated, a 3x3
  ``bottleneck``, dropout 0.1 and the 1x1 ``conv_seg``.
- ``auxiliary_head``: mmseg's ``FCNHead`` on res4 (1024 channels): one 3x3 conv of 256 (``convs.0``), dropout 0.1,
  ``conv_seg``; its loss weighs 0.4.
- Every conv-norm-ReLU is mmcv's ``ConvModule`` (``.conv`` without bias, ``.bn``); initialised as mmcv does:
  Kaiming normal (fan_out) convs, unit norms, ``conv_seg`` N(0, 0.01).

Logits come out at 1/8 of the input and are resized bilinearly (``align_corners=False``) to the label size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .backbone import RESNET_BUILDERS
from .norm import norm_layer

# (strides of stages 1-4, dilations) that torchvision's replace_stride_with_dilation can build, with mmseg's names
OUTPUT_STRIDES = {
    8: ((1, 2, 1, 1), (1, 1, 2, 4), [False, True, True]),  # R50-D8
    16: ((1, 2, 2, 1), (1, 1, 1, 2), [False, False, True]),  # R50-D16
}


class ConvModule(nn.Module):
    """mmcv's ConvModule: conv (no bias) -> norm -> ReLU, parameters under ``conv`` and ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: str, dilation: int = 1):
        super().__init__()
        padding = 0 if kernel_size == 1 else dilation * (kernel_size // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False)
        self.bn = norm_layer(norm)(out_channels)
        self.activate = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x):
        return self.activate(self.bn(self.conv(x)))


class SegmentationHead(nn.Module):
    """mmseg's BaseDecodeHead ending: Dropout2d, then the 1x1 classifier ``conv_seg``."""

    def __init__(self, channels: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0.0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def cls_seg(self, x):
        return self.conv_seg(self.dropout(x))


class ASPPHead(SegmentationHead):
    def __init__(self, in_channels: int, channels: int, dilations, num_classes: int, dropout: float, norm: str):
        super().__init__(channels, num_classes, dropout)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvModule(in_channels, channels, 1, norm))
        self.aspp_modules = nn.ModuleList(
            ConvModule(in_channels, channels, 1 if dilation == 1 else 3, norm, dilation) for dilation in dilations)
        self.bottleneck = ConvModule((len(dilations) + 1) * channels, channels, 3, norm)

    def forward(self, x):
        pooled = F.interpolate(self.image_pool(x), size=x.shape[2:], mode="bilinear", align_corners=False)
        branches = [pooled] + [branch(x) for branch in self.aspp_modules]
        return self.cls_seg(self.bottleneck(torch.cat(branches, dim=1)))


class FCNHead(SegmentationHead):
    """mmseg's FCNHead with ``concat_input=False``: ``num_convs`` 3x3 ConvModules, then the classifier."""

    def __init__(self, in_channels: int, channels: int, num_convs: int, num_classes: int, dropout: float, norm: str):
        super().__init__(channels, num_classes, dropout)
        self.convs = nn.Sequential(*(ConvModule(in_channels if i == 0 else channels, channels, 3, norm)
                                     for i in range(num_convs)))

    def forward(self, x):
        return self.cls_seg(self.convs(x))


class DilatedResNet(nn.Module):
    """The stem and the four stages of a torchvision ResNet; returns res4 and res5."""

    def __init__(self, depth: int, output_stride: int, norm: str):
        super().__init__()
        resnet: torchvision.models.ResNet = RESNET_BUILDERS[depth](
            weights=None, norm_layer=norm_layer(norm),
            replace_stride_with_dilation=OUTPUT_STRIDES[output_stride][2])
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.res4_channels = resnet.layer3[-1].conv1.in_channels
        self.res5_channels = resnet.layer4[-1].conv1.in_channels

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        res4 = self.layer3(self.layer2(self.layer1(x)))
        return res4, self.layer4(res4)


class DeepLabV3(nn.Module):
    """``forward(batch)`` gives ``(logits, aux_logits)`` at the batch's size (``aux_logits`` None without the
    auxiliary head or in eval mode); ``batch`` is normalised NCHW."""

    def __init__(self, backbone: DilatedResNet, decode_head: ASPPHead, auxiliary_head: FCNHead | None):
        super().__init__()
        self.backbone = backbone
        self.decode_head = decode_head
        self.auxiliary_head = auxiliary_head

    def forward(self, batch):
        res4, res5 = self.backbone(batch)
        size = batch.shape[2:]
        logits = F.interpolate(self.decode_head(res5), size=size, mode="bilinear", align_corners=False)
        aux = None
        if self.auxiliary_head is not None and self.training:
            aux = F.interpolate(self.auxiliary_head(res4), size=size, mode="bilinear", align_corners=False)
        return logits, aux


def build_deeplabv3(model_cfg, norm: str) -> DeepLabV3:
    """The model a validated segmentation config describes; ``norm`` is the norm that runs here."""
    backbone = DilatedResNet(model_cfg.RESNETS.DEPTH, model_cfg.RESNETS.OUTPUT_STRIDE, norm)
    head_cfg, aux_cfg = model_cfg.DECODE_HEAD, model_cfg.AUXILIARY_HEAD
    decode_head = ASPPHead(backbone.res5_channels, head_cfg.CHANNELS, head_cfg.DILATIONS, model_cfg.NUM_CLASSES,
                           head_cfg.DROPOUT, norm)
    auxiliary_head = (FCNHead(backbone.res4_channels, aux_cfg.CHANNELS, aux_cfg.NUM_CONVS, model_cfg.NUM_CLASSES,
                              aux_cfg.DROPOUT, norm) if aux_cfg.ENABLED else None)
    return DeepLabV3(backbone, decode_head, auxiliary_head)


def segmentation_loss(logits, labels, ignore_label: int):
    """mmseg's CrossEntropyLoss with its default ``avg_non_ignore=False``: per-pixel cross entropy, ignored pixels
    counting 0, averaged over every pixel of the batch (``weight_reduce_loss`` -> ``loss.mean()``)."""
    return F.cross_entropy(logits.float(), labels, ignore_index=ignore_label, reduction="none").mean()


def load_backbone_weights(model: DeepLabV3, backbone_state: dict) -> int:
    """A canonical (torchvision-named) backbone into ``model.backbone``; every tensor must land and every backbone
    tensor be covered (the stem included: the basic stem is why mmseg's deep-stem default is not used)."""
    model_state = model.backbone.state_dict()
    unknown = [key for key in backbone_state if key not in model_state]
    if unknown:
        raise KeyError(f"{len(unknown)} backbone tensors have no place in the DeepLab-v3 backbone, e.g. {unknown[:5]}")
    missing = [key for key in model_state if key not in backbone_state]
    if missing:
        raise KeyError(f"{len(missing)} tensors of the DeepLab-v3 backbone are not in the checkpoint, "
                       f"e.g. {missing[:5]}")
    for key, value in backbone_state.items():
        if model_state[key].shape != value.shape:
            raise ValueError(f"backbone tensor {key!r} has shape {tuple(value.shape)}, the model's has "
                             f"{tuple(model_state[key].shape)}")
    model.backbone.load_state_dict(backbone_state)
    return len(backbone_state)
