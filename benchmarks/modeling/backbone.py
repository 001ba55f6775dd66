"""ResNet backbones from a torchvision ResNet. R50-C4: the stem and res2-res4 as the trunk (stride 16), res5 as
the per-RoI head, with optional extra norm after it (MoCo's ``Res5ROIHeadsExtraNorm``). R50-FPN: the stem and
res2-res5 as the FPN's bottom-up path (``fpn.py``).

Parameter names stay torchvision's, so canonical checkpoints load by name; res5 lives in
``roi_heads.res5`` as in Detectron2's C4 models and in ``backbone.bottom_up`` in its FPN models.
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
ALL_STAGES = ("layer1", "layer2", "layer3", "layer4")
C4_STRIDE = 16


def stage_channels(resnet: torchvision.models.ResNet, stage: str) -> int:
    """Output channels of a stage (``layer1`` = res2 ...), for basic and bottleneck blocks alike."""
    return getattr(resnet, stage)[-1].conv1.in_channels


class ResNetTrunk(nn.Module):
    """Stem + the first stages of a torchvision ResNet; ``FREEZE_AT`` k freezes the stem and res2..res{k}.

    With ``out_features`` None (R50-C4) it returns the last stage's output; with a list of ``res2``..``res5``
    names (the FPN's bottom-up path) a dict of those stages' outputs.
    """

    def __init__(self, resnet: torchvision.models.ResNet, freeze_at: int, stages=TRUNK_STAGES, out_features=None):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.stages = tuple(stages)
        for name in self.stages:
            setattr(self, name, getattr(resnet, name))
        if freeze_at >= 1:
            self.conv1 = freeze_module(self.conv1)
            self.bn1 = freeze_module(self.bn1)
        for index, name in enumerate(self.stages, start=2):
            if freeze_at >= index:
                setattr(self, name, freeze_module(getattr(self, name)))
        self.out_features = list(out_features) if out_features is not None else None
        self.out_channels = stage_channels(resnet, self.stages[-1])
        self.stride = 2 ** (len(self.stages) + 1)
        self.feature_channels = {f"res{i}": stage_channels(resnet, name) for i, name in enumerate(self.stages, 2)}

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        if self.out_features is None:
            for name in self.stages:
                x = getattr(self, name)(x)
            return x
        outputs = {}
        for index, name in enumerate(self.stages, start=2):
            x = getattr(self, name)(x)
            outputs[f"res{index}"] = x
        return {name: outputs[name] for name in self.out_features}


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


def build_resnet_bottom_up(depth: int, norm: str, freeze_at: int, out_features) -> ResNetTrunk:
    """Stem and res2..res5 returning ``out_features`` (the FPN's bottom-up path, Detectron2's ``bottom_up``)."""
    resnet = RESNET_BUILDERS[depth](weights=None, norm_layer=norm_layer(norm))
    return ResNetTrunk(resnet, freeze_at, ALL_STAGES, out_features)
