"""Detections back to the original image: boxes rescaled and clipped, masks pasted as Detectron2 pastes them.

torchvision's ``paste_masks_in_image`` expands each box by a pixel, truncates it to integers and resizes
the mask bilinearly into that; Detectron2 samples the mask at every pixel centre of the image with
``grid_sample`` in the box's exact (fractional) coordinates. Detectron2's notes put the difference at
about 0.5 mask AP, so this follows Detectron2.
"""
import torch
import torch.nn.functional as F

from .box_regression import clip_boxes, nonempty


def paste_masks_in_image(masks: torch.Tensor, boxes: torch.Tensor, image_shape, threshold: float = 0.5):
    """``masks`` (N x M x M probabilities) placed in their ``boxes`` (N x 4, XYXY) of an image ``(height,
    width)``: a bool N x H x W tensor, pixel (y, x) set when the bilinear sample at (x + 0.5, y + 0.5) is
    >= ``threshold``. Each mask is sampled only over the pixels around its box (Detectron2's CPU path)."""
    height, width = image_shape
    pasted = torch.zeros(len(masks), height, width, dtype=torch.bool, device=masks.device)
    boxes = boxes.float()
    for i, (mask, box) in enumerate(zip(masks.float(), boxes)):
        x0_int = int(torch.clamp(box[0].floor() - 1, min=0))
        y0_int = int(torch.clamp(box[1].floor() - 1, min=0))
        x1_int = int(torch.clamp(box[2].ceil() + 1, max=width))
        y1_int = int(torch.clamp(box[3].ceil() + 1, max=height))
        if x1_int <= x0_int or y1_int <= y0_int:
            continue
        img_y = torch.arange(y0_int, y1_int, device=masks.device, dtype=torch.float32) + 0.5
        img_x = torch.arange(x0_int, x1_int, device=masks.device, dtype=torch.float32) + 0.5
        img_y = (img_y - box[1]) / (box[3] - box[1]) * 2 - 1
        img_x = (img_x - box[0]) / (box[2] - box[0]) * 2 - 1
        grid = torch.stack(torch.broadcast_tensors(img_x[None, :], img_y[:, None]), dim=-1)
        sampled = F.grid_sample(mask[None, None], grid[None], align_corners=False)[0, 0]
        pasted[i, y0_int:y1_int, x0_int:x1_int] = sampled >= threshold
    return pasted


def detector_postprocess(detection: dict, resized_size, original_size, mask_threshold: float = 0.5) -> dict:
    """One image's detections (in the resized input) at its original resolution: boxes scaled and clipped, empty
    boxes dropped, masks pasted into bool full-image masks (Detectron2's ``detector_postprocess``)."""
    scale_y = original_size[0] / resized_size[0]
    scale_x = original_size[1] / resized_size[1]
    scale = torch.tensor([scale_x, scale_y, scale_x, scale_y], device=detection["boxes"].device)
    boxes = detection["boxes"].float() * scale
    boxes = clip_boxes(boxes, original_size)
    keep = nonempty(boxes)
    result = {"boxes": boxes[keep], "scores": detection["scores"][keep], "labels": detection["labels"][keep]}
    if "mask_probs" in detection:
        result["masks"] = paste_masks_in_image(detection["mask_probs"][keep][:, 0], result["boxes"],
                                               tuple(original_size), mask_threshold)
    return result
