"""Detectron2's ``ROIPooler`` over several FPN levels: each RoI is pooled (aligned RoIAlign, ROIAlignV2) from the
level ``floor(4 + log2(sqrt(area) / 224 + 1e-8))`` clamped to the available levels (FPN paper eq. 1, Detectron2's
``assign_boxes_to_levels``).

On CPUs all RoIs of the batch over all levels are one sparse matrix product (``roi_align.py``): the levels'
features, flattened channels-last, are stacked into one (cells x C) matrix and each RoI's weights point into its
image's block of its level, so the pooled RoIs come out in their input order with no scatter, one backward
product, and gradients that reach the features as views (indexing one image's features would materialise a
full-size zero gradient per image and level). CUDA pools
level by level with torchvision's kernel and scatters the results, as Detectron2 does.
"""
import math

import torch
from torch import nn
from torchvision.ops import roi_align

from .roi_align import RoIAlign, interpolation_entries, sparse_matrix

CANONICAL_BOX_SIZE = 224
CANONICAL_LEVEL = 4
LEVEL_EPS = 1e-8  # Detectron2's: a box of exactly 224 * 2**k px lands on level 4 + k despite log2 rounding


def assign_boxes_to_levels(boxes: list, min_level: int, max_level: int, canonical_box_size: int = CANONICAL_BOX_SIZE,
                           canonical_level: int = CANONICAL_LEVEL) -> torch.Tensor:
    """For the boxes of all images concatenated, their level index counted from ``min_level``."""
    boxes = torch.cat([b.float() for b in boxes])
    sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_box_size + LEVEL_EPS))
    return levels.clamp(min=min_level, max=max_level).to(torch.int64) - min_level


def level_of_scale(scale: float) -> int:
    level = -math.log2(scale)
    if abs(level - round(level)) > 1e-6:
        raise ValueError(f"feature scale {scale} is not a power of 1/2")
    return round(level)


class ROIPooler(nn.Module):
    """Pool per-image boxes from the feature maps at ``scales`` (1/4, 1/8, ... consecutive levels, finest first)."""

    def __init__(self, output_size: int, scales, sampling_ratio: int):
        super().__init__()
        self.output_size, self.scales, self.sampling_ratio = output_size, list(scales), sampling_ratio
        levels = [level_of_scale(s) for s in self.scales]
        if levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"the pooled feature maps must be consecutive levels, finest first, got scales {scales}")
        self.min_level, self.max_level = levels[0], levels[-1]
        self.single = RoIAlign(output_size, self.scales[0], sampling_ratio, aligned=True) if len(levels) == 1 else None

    def forward(self, features: list, boxes: list) -> torch.Tensor:
        if self.single is not None:
            return self.single(features[0], boxes)
        levels = assign_boxes_to_levels(boxes, self.min_level, self.max_level)
        if features[0].device.type != "cpu":
            return self._pool_per_level(features, boxes, levels)
        out = self.output_size
        bins = out * out
        channels = features[0].shape[1]
        image_of_roi = torch.cat([torch.full((len(b),), i, dtype=torch.int64) for i, b in enumerate(boxes)])
        all_boxes = torch.cat(boxes).detach()
        with torch.autocast("cpu", enabled=False):  # float32, as autocast runs torchvision's roi_align
            indices, values, offset = [], [], 0
            for level, (feature, scale) in enumerate(zip(features, self.scales)):
                height, width = feature.shape[-2:]
                selected = torch.nonzero(levels == level, as_tuple=True)[0]
                if selected.numel():
                    (rows, cols), level_values = interpolation_entries(
                        all_boxes[selected], height, width, out, scale, self.sampling_ratio, True)
                    roi = selected[rows // bins]  # back to the RoI's place in the batch
                    indices.append(torch.stack([roi * bins + rows % bins,
                                                offset + image_of_roi[roi] * (height * width) + cols]))
                    values.append(level_values)
                offset += feature.shape[0] * height * width
            if not indices:
                indices, values = [torch.zeros(2, 0, dtype=torch.int64)], [torch.zeros(0)]
            matrix = sparse_matrix(torch.cat(indices, dim=1), torch.cat(values), (len(all_boxes) * bins, offset))
            # (cells, C): every level's channels-last features as (N*H*W, C) views, stacked; the gradient flows
            # back into them as views too
            cells = torch.cat([f.float().permute(0, 2, 3, 1).reshape(-1, channels) for f in features])
            pooled = (matrix @ cells).view(len(all_boxes), out, out, channels).permute(0, 3, 1, 2)
        return pooled.contiguous(memory_format=torch.channels_last)

    def _pool_per_level(self, features, boxes, levels):
        image_index = torch.cat([torch.full((len(b),), i, dtype=features[0].dtype, device=features[0].device)
                                 for i, b in enumerate(boxes)])
        rois = torch.cat([image_index[:, None], torch.cat(boxes).to(features[0].dtype)], dim=1)
        output = features[0].new_zeros(len(rois), features[0].shape[1], self.output_size, self.output_size)
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            selected = torch.nonzero(levels == level, as_tuple=True)[0]
            output.index_put_((selected,), roi_align(feature, rois[selected], self.output_size, scale,
                                                     self.sampling_ratio, True).to(output.dtype))
        return output
