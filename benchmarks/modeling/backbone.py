"""The R50-C4 backbone from a torchvision ResNet: the stem and res2-res4 as the trunk (stride 16), res5 as
the per-RoI head, with optional extra norm after it (MoCo's ``Res5ROIHeadsExtraNorm``).

Parameter names stay torchvision's, so canonical checkpoints load by name; res5 lives in
``roi_heads.res5`` as in Detectron2's C4 models.
"""
from collections import OrderedDict

import torchvision
from torch import nn

from .norm import freeze_module, norm_layer

RESNET_BUILDERS = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
    101: torchvision.models.resnet101,
    152: torchvision.models.resnet152,
}
TRUNK_STAGES = ("layer1", "layer2", "layer3")
C4_STRIDE = 16


class ResNetTrunk(nn.Module):
    """Stem + res2..res4 of a torchvision ResNet; ``FREEZE_AT`` k freezes the stem and res2..res{k}."""

    def __init__(self, resnet: torchvision.models.ResNet, freeze_at: int):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3
        if freeze_at >= 1:
            self.conv1 = freeze_module(self.conv1)
            self.bn1 = freeze_module(self.bn1)
        for index, name in enumerate(TRUNK_STAGES, start=2):
            if freeze_at >= index:
                setattr(self, name, freeze_module(getattr(self, name)))
        self.out_channels = resnet.layer3[-1].conv1.in_channels
        self.stride = C4_STRIDE

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))


def build_resnet_c4(depth: int, norm: str, freeze_at: int, extra_norm: bool):
    """``(trunk, res5, res5 channels)``; ``norm`` is the norm that runs here (see ``norm.resolve_norm``)."""
    resnet = RESNET_BUILDERS[depth](weights=None, norm_layer=norm_layer(norm))
    trunk = ResNetTrunk(resnet, freeze_at)
    channels = resnet.layer4[-1].conv1.in_channels
    blocks = [(str(i), block) for i, block in enumerate(resnet.layer4)]
    if extra_norm:
        blocks.append(("norm", norm_layer(norm)(channels)))
    res5 = nn.Sequential(OrderedDict(blocks))
    if freeze_at >= 5:
        res5 = freeze_module(res5)
    return trunk, res5, channels
