"""The segmenter as mmseg's ``EncoderDecoder`` runs it: normalise, pad a training batch to the crop size, and at
test time resize (keep ratio) to the test scale, predict the whole image or sliding windows, and resize the logits
back to the image's original size."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.deeplab import segmentation_loss
from .transforms import rescale_size


class Segmenter(nn.Module):
    """Wraps a ``DeepLabV3`` with the pixel statistics; ``forward(images, labels)`` gives the losses in training,
    ``predict(image)`` the logits of one image at its original size."""

    def __init__(self, model: nn.Module, pixel_mean, pixel_std, crop_size, ignore_label: int,
                 aux_loss_weight: float):
        super().__init__()
        self.model = model
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.crop_size = tuple(crop_size)
        self.ignore_label = ignore_label
        self.aux_loss_weight = aux_loss_weight

    def normalize(self, image):
        return (image.to(self.pixel_mean.device).float() - self.pixel_mean) / self.pixel_std

    def forward(self, images, labels):
        """mmseg's SegDataPreProcessor: each image normalised, then padded bottom-right to the crop size (0 for
        the image, the ignore label for its labels), then the decode and auxiliary losses."""
        height = max(self.crop_size[0], *(image.shape[-2] for image in images))
        width = max(self.crop_size[1], *(image.shape[-1] for image in images))
        batch = self.pixel_mean.new_zeros(len(images), 3, height, width)
        targets = torch.full((len(images), height, width), self.ignore_label, dtype=torch.long,
                             device=self.pixel_mean.device)
        for slot, target, image, label in zip(batch, targets, images, labels):
            slot[:, : image.shape[-2], : image.shape[-1]].copy_(self.normalize(image))
            target[: label.shape[-2], : label.shape[-1]].copy_(label.to(target.device))
        if batch.device.type == "cpu":  # oneDNN's faster layout, as the detectors use it
            batch = batch.contiguous(memory_format=torch.channels_last)
        logits, aux = self.model(batch)
        losses = {"loss_sem_seg": segmentation_loss(logits, targets, self.ignore_label)}
        if aux is not None:
            losses["loss_aux"] = self.aux_loss_weight * segmentation_loss(aux, targets, self.ignore_label)
        return losses

    @torch.no_grad()
    def predict(self, image, test_scale, mode: str = "whole", slide_crop=None, slide_stride=None):
        """Logits ``[classes, H, W]`` (float32) of one uint8 image ``[3, H, W]`` at its own size."""
        height, width = image.shape[-2:]
        resized_size = rescale_size(height, width, test_scale)
        x = self.normalize(image)[None]
        if resized_size != (height, width):
            x = F.interpolate(x, size=resized_size, mode="bilinear", align_corners=False)
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        logits = (self._slide(x, slide_crop, slide_stride) if mode == "slide" else self.model(x)[0]).float()
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)[0]

    def _slide(self, x, crop, stride):
        """mmseg's ``slide_inference``: overlapping windows (the last ones flush with the border), logits averaged
        where windows overlap."""
        crop_h, crop_w = crop
        stride_h, stride_w = stride
        _, _, height, width = x.shape
        rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
        cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
        total, count = None, x.new_zeros(1, 1, height, width)
        for row in range(rows):
            for col in range(cols):
                y2, x2 = min(row * stride_h + crop_h, height), min(col * stride_w + crop_w, width)
                y1, x1 = max(y2 - crop_h, 0), max(x2 - crop_w, 0)
                logits = self.model(x[:, :, y1:y2, x1:x2])[0].float()
                if total is None:
                    total = logits.new_zeros(1, logits.shape[1], height, width)
                total[:, :, y1:y2, x1:x2] += logits
                count[:, :, y1:y2, x1:x2] += 1
        return total / count
