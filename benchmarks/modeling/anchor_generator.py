"""Detectron2's ``DefaultAnchorGenerator``: anchors at ``offset + stride * j`` on each feature map.

torchvision's ``AnchorGenerator`` derives the stride from the padded image size divided by the feature size
(integer division) and rounds the anchor sizes. On an 800x1067 image the C4 feature map has 67 columns and
that stride becomes 15, so the right-most anchors sit about 66 px left of the features that predict them.
Here the stride is the backbone's, whatever the image size, and the sizes are exact.
"""
import math

import torch
from torch import nn


def generate_cell_anchors(sizes, aspect_ratios) -> torch.Tensor:
    """XYXY anchors centred on 0, sizes outer and aspect ratios (height / width) inner, as Detectron2 orders them."""
    anchors = []
    for size in sizes:
        area = float(size) ** 2
        for aspect_ratio in aspect_ratios:
            w = math.sqrt(area / aspect_ratio)
            h = aspect_ratio * w
            anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return torch.tensor(anchors, dtype=torch.float32)


def broadcast_per_level(params, num_levels: int) -> list:
    """One list per feature map: a single list applies to every map (Detectron2's ``_broadcast_params``)."""
    params = [list(p) for p in params]
    if len(params) == 1:
        return params * num_levels
    if len(params) != num_levels:
        raise ValueError(f"one list for all {num_levels} feature maps or one per map, got {len(params)}: {params}")
    return params


class DefaultAnchorGenerator(nn.Module):
    """One set of cell anchors per feature map; ``forward`` returns float32 anchors (H*W*A x 4) per map."""

    def __init__(self, sizes, aspect_ratios, strides, offset: float = 0.0):
        super().__init__()
        if not (len(sizes) == len(aspect_ratios) == len(strides)):
            raise ValueError(f"one list of anchor sizes and of aspect ratios per feature map (strides {strides}), "
                             f"got {sizes} and {aspect_ratios}")
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"anchor offset must be in [0, 1), got {offset}")
        self.strides = list(strides)
        self.offset = offset
        for level, (level_sizes, level_ratios) in enumerate(zip(sizes, aspect_ratios)):
            self.register_buffer(f"cell_anchors_{level}", generate_cell_anchors(level_sizes, level_ratios),
                                 persistent=False)
        self.num_anchors = [len(level_sizes) * len(level_ratios) for level_sizes, level_ratios in
                            zip(sizes, aspect_ratios)]

    def grid_anchors(self, level: int, grid_size) -> torch.Tensor:
        cell_anchors = getattr(self, f"cell_anchors_{level}")
        stride, (height, width) = self.strides[level], grid_size
        device = cell_anchors.device
        shifts_x = torch.arange(width, device=device, dtype=torch.float32) * stride + self.offset * stride
        shifts_y = torch.arange(height, device=device, dtype=torch.float32) * stride + self.offset * stride
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shifts = torch.stack((shift_x.reshape(-1), shift_y.reshape(-1)) * 2, dim=1)
        return (shifts[:, None, :] + cell_anchors[None, :, :]).reshape(-1, 4)

    def forward(self, features) -> list:
        return [self.grid_anchors(level, feature.shape[-2:]) for level, feature in enumerate(features)]
