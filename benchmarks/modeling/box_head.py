"""Detectron2's ``FastRCNNConvFCHead``: NUM_CONV 3x3 convs (with NORM) then NUM_FC fully connected layers, each
with ReLU, on the pooled RoI features; the FPN models' box head (2fc in Base-RCNN-FPN, 4conv1fc with SyncBN in
the self-supervised protocol). Names ``conv1..``, ``fc1..`` and the initialisation (``c2_msra_fill`` for the
convs, ``c2_xavier_fill`` = kaiming_uniform a=1 and zero bias for the fcs) are Detectron2's."""
import torch
from torch import nn

from .norm import ConvNormReLU


class FastRCNNConvFCHead(nn.Module):
    def __init__(self, in_channels: int, resolution: int, num_conv: int, conv_dim: int, num_fc: int, fc_dim: int,
                 norm: str):
        super().__init__()
        channels = in_channels
        self.num_conv, self.num_fc = num_conv, num_fc
        for k in range(num_conv):
            self.add_module(f"conv{k + 1}", ConvNormReLU(channels, conv_dim, norm))
            channels = conv_dim
        size = channels * resolution * resolution
        for k in range(num_fc):
            fc = nn.Linear(size, fc_dim)
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)
            self.add_module(f"fc{k + 1}", fc)
            size = fc_dim
        self.output_size = size

    def forward(self, x):
        for k in range(self.num_conv):
            x = getattr(self, f"conv{k + 1}")(x)
        # flattened in (C, H, W) order, as Detectron2 does, whatever the memory layout
        x = torch.flatten(x, start_dim=1)
        for k in range(self.num_fc):
            x = torch.relu(getattr(self, f"fc{k + 1}")(x))
        return x
