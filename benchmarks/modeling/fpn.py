"""Detectron2's R-FPN backbone: the ResNet's res2..res5 into ``torchvision.ops.FeaturePyramidNetwork`` (p2..p5,
lateral 1x1 and output 3x3 convs, nearest 2x top-down, sum fusion) and p6 = max-pool(kernel 1, stride 2) of p5
(Detectron2's ``LastLevelMaxPool``, which torchvision's is too).

torchvision initialises the FPN's convs with ``kaiming_uniform_(a=1)`` and zero bias, which is Detectron2's
``c2_xavier_fill``; the convs have a bias only without norm, as Detectron2's (``use_bias = norm == ""``).
The input batch is padded to a multiple of 32 (``size_divisibility``) so each level is exactly half the one
below, as Detectron2's FPN requires.
"""
from collections import OrderedDict

from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .backbone import ResNetTrunk
from .norm import head_norm_layer

FPN_SIZE_DIVISIBILITY = 32


class FPNBackbone(nn.Module):
    """``bottom_up`` (torchvision-named ResNet) + ``fpn``; returns ``{"p2": ..., "p6": ...}``."""

    size_divisibility = FPN_SIZE_DIVISIBILITY

    def __init__(self, bottom_up: ResNetTrunk, in_features, out_channels: int, norm: str):
        super().__init__()
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        self.fpn = FeaturePyramidNetwork([bottom_up.feature_channels[name] for name in self.in_features],
                                         out_channels, extra_blocks=LastLevelMaxPool(),
                                         norm_layer=head_norm_layer(norm))
        levels = [int(name[len("res"):]) for name in self.in_features]
        self.out_features = [f"p{level}" for level in levels] + [f"p{levels[-1] + 1}"]
        self.strides = {name: 2 ** int(name[1:]) for name in self.out_features}
        self.out_channels = out_channels

    def forward(self, x):
        bottom_up = self.bottom_up(x)
        outputs = self.fpn(OrderedDict((name, bottom_up[name]) for name in self.in_features))
        return dict(zip(self.out_features, outputs.values()))
