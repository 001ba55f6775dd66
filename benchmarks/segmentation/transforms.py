"""mmsegmentation's Cityscapes training pipeline (``configs/_base_/datasets/cityscapes.py``) on numpy and OpenCV,
as mmseg runs it: ``RandomResize`` (keep ratio, scale x U(ratio range)), ``RandomCrop`` with ``cat_max_ratio``,
``RandomFlip``, ``PhotoMetricDistortion``; and the test-time ``Resize`` (keep ratio).

Images are HxWx3 uint8 RGB arrays and labels HxW uint8 arrays (255 = ignore). The draws come from the torch RNG,
which ``benchmarks.engine.sampler.SeededSamples`` seeds per sample, so a resumed run sees the same crops.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


def _coin() -> bool:
    """mmseg's ``random.randint(2)``: True half of the time."""
    return bool(torch.randint(2, ()).item())


def rescale_size(height: int, width: int, scale) -> tuple[int, int]:
    """mmcv's ``rescale_size`` (keep ratio): the largest size with long side <= max(scale), short <= min(scale)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize(image: np.ndarray, label: np.ndarray | None, size: tuple[int, int]):
    """Bilinear for the image, nearest for the label: mmcv's ``imresize`` defaults as mmseg's Resize uses them."""
    height, width = size
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if label is not None:
        label = cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)
    return image, label


def random_resize(image, label, scale, ratio_range):
    """``RandomResize(scale, ratio_range, keep_ratio=True)``: the target scale times a ratio drawn in the range."""
    ratio = _uniform(*ratio_range)
    target = (int(scale[0] * ratio), int(scale[1] * ratio))
    return resize(image, label, rescale_size(*image.shape[:2], target))


def _crop_box(height: int, width: int, crop_size) -> tuple[int, int, int, int]:
    crop_h, crop_w = crop_size
    top = int(torch.randint(max(height - crop_h, 0) + 1, ()).item())
    left = int(torch.randint(max(width - crop_w, 0) + 1, ()).item())
    return top, min(top + crop_h, height), left, min(left + crop_w, width)


def random_crop(image, label, crop_size, cat_max_ratio: float, ignore_label: int):
    """``RandomCrop(crop_size, cat_max_ratio)``: up to 10 re-draws until no class holds ``cat_max_ratio`` of the
    crop's labelled pixels (and it has more than one class); after 10 misses the 11th draw is kept, as mmseg does.
    A side smaller than the crop is kept whole (the batch is padded to the crop size later)."""
    box = _crop_box(*label.shape, crop_size)
    if cat_max_ratio < 1.0:
        for _ in range(10):
            top, bottom, left, right = box
            classes, counts = np.unique(label[top:bottom, left:right], return_counts=True)
            counts = counts[classes != ignore_label]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            box = _crop_box(*label.shape, crop_size)
    top, bottom, left, right = box
    return image[top:bottom, left:right], label[top:bottom, left:right]


def _convert(image: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(image.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(image: np.ndarray, brightness_delta: int = 32, contrast_range=(0.5, 1.5),
                           saturation_range=(0.5, 1.5), hue_delta: int = 18) -> np.ndarray:
    """mmseg's ``PhotoMetricDistortion``: each step with probability 1/2, contrast before or after the colour
    steps (a coin), saturation and hue in OpenCV's uint8 HSV (hue in [0, 180)), every step rounding to uint8."""
    if _coin():
        image = _convert(image, beta=_uniform(-brightness_delta, brightness_delta))
    contrast_first = _coin()
    if contrast_first and _coin():
        image = _convert(image, alpha=_uniform(*contrast_range))
    if _coin():
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., 1] = _convert(hsv[..., 1], alpha=_uniform(*saturation_range))
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if _coin():
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        shift = int(torch.randint(-hue_delta, hue_delta, ()).item())
        hsv[..., 0] = (hsv[..., 0].astype(int) + shift) % 180
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not contrast_first and _coin():
        image = _convert(image, alpha=_uniform(*contrast_range))
    return image
