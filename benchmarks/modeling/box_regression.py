"""Detectron2's ``Box2BoxTransform``: (dx, dy, dw, dh) deltas between boxes, always computed in float32.

Under autocast the predicted deltas arrive in fp16/bf16; decoding them in that precision quantises box
corners by about 2 px at 256-512 px (bf16 keeps 8 bits of mantissa). Detectron2 decodes in fp32, and so
does this, whatever the input dtypes.
"""
import math

import torch

# Largest log-ratio a width/height delta may have: boxes grow at most 1000/16 times (Detectron2's clamp).
SCALE_CLAMP = math.log(1000.0 / 16)


class Box2BoxTransform:
    def __init__(self, weights, scale_clamp: float = SCALE_CLAMP):
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def get_deltas(self, src_boxes: torch.Tensor, target_boxes: torch.Tensor) -> torch.Tensor:
        """Deltas that take each source box to its target box (both XYXY, same length)."""
        src_boxes, target_boxes = src_boxes.float(), target_boxes.float()
        src_widths = src_boxes[:, 2] - src_boxes[:, 0]
        src_heights = src_boxes[:, 3] - src_boxes[:, 1]
        src_ctr_x = src_boxes[:, 0] + 0.5 * src_widths
        src_ctr_y = src_boxes[:, 1] + 0.5 * src_heights
        target_widths = target_boxes[:, 2] - target_boxes[:, 0]
        target_heights = target_boxes[:, 3] - target_boxes[:, 1]
        target_ctr_x = target_boxes[:, 0] + 0.5 * target_widths
        target_ctr_y = target_boxes[:, 1] + 0.5 * target_heights
        wx, wy, ww, wh = self.weights
        return torch.stack((
            wx * (target_ctr_x - src_ctr_x) / src_widths,
            wy * (target_ctr_y - src_ctr_y) / src_heights,
            ww * torch.log(target_widths / src_widths),
            wh * torch.log(target_heights / src_heights),
        ), dim=1)

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Decode ``deltas`` (N x 4k, k boxes per row, e.g. one per class) relative to ``boxes`` (N x 4)."""
        deltas = deltas.float()
        boxes = boxes.float()
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.scale_clamp)
        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]
        pred = torch.stack((pred_ctr_x - 0.5 * pred_w, pred_ctr_y - 0.5 * pred_h,
                            pred_ctr_x + 0.5 * pred_w, pred_ctr_y + 0.5 * pred_h), dim=-1)
        return pred.reshape(deltas.shape)


def clip_boxes(boxes: torch.Tensor, image_size) -> torch.Tensor:
    """Clamp XYXY boxes into an image of ``(height, width)``, as Detectron2's ``Boxes.clip``."""
    height, width = image_size
    x1 = boxes[..., 0].clamp(min=0, max=width)
    y1 = boxes[..., 1].clamp(min=0, max=height)
    x2 = boxes[..., 2].clamp(min=0, max=width)
    y2 = boxes[..., 3].clamp(min=0, max=height)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def nonempty(boxes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Boxes wider and higher than ``threshold`` (Detectron2's ``Boxes.nonempty``)."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)
