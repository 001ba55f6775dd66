"""Detectron2's ``MaskRCNNConvUpsampleHead`` (no convs on C4's res5 features, NUM_CONV 4 on the FPN's pooled
features), its loss and inference."""
import torch
import torch.nn.functional as F
from torch import nn

from .norm import ConvNormReLU


class MaskRCNNConvUpsampleHead(nn.Module):
    """``num_conv`` 3x3 convs (``mask_fcn1..``, with ``norm``), a 2x deconvolution and ReLU, then one 1x1 mask logit
    map per class; names and initialisation (``c2_msra_fill``, predictor std 0.001) are Detectron2's."""

    def __init__(self, in_channels: int, conv_dim: int, num_classes: int, num_conv: int = 0, norm: str = ""):
        super().__init__()
        self.num_conv = num_conv
        for k in range(num_conv):
            self.add_module(f"mask_fcn{k + 1}", ConvNormReLU(in_channels if k == 0 else conv_dim, conv_dim, norm))
        self.deconv = nn.ConvTranspose2d(in_channels if num_conv == 0 else conv_dim, conv_dim, kernel_size=2,
                                         stride=2)
        self.predictor = nn.Conv2d(conv_dim, num_classes, kernel_size=1)
        nn.init.kaiming_normal_(self.deconv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.deconv.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x):
        for k in range(self.num_conv):
            x = getattr(self, f"mask_fcn{k + 1}")(x)
        return self.predictor(F.relu(self.deconv(x)))


def mask_rcnn_loss(mask_logits, proposal_boxes: list, gt_classes: list, gt_masks: list, gt_indices: list):
    """Mean per-pixel BCE of the true class's logits against each foreground RoI's target: the matched object's
    mask cropped to the RoI at the logits' resolution (``gt_masks[i].crop_and_resize``: polygons rasterised in
    the box, bitmasks by aligned RoIAlign >= 0.5, as Detectron2 makes them)."""
    size = mask_logits.shape[-1]
    targets = [masks.crop_and_resize(boxes, indices, size).to(mask_logits.device)
               for boxes, masks, indices in zip(proposal_boxes, gt_masks, gt_indices) if len(boxes)]
    if not targets:
        return mask_logits.sum() * 0.0
    classes = torch.cat(gt_classes)
    logits = mask_logits[torch.arange(classes.numel(), device=classes.device), classes]
    return F.binary_cross_entropy_with_logits(logits.float(), torch.cat(targets).float(), reduction="mean")


def mask_rcnn_inference(mask_logits, pred_classes: list) -> list:
    """Per image, each detection's mask probabilities for its predicted class (R x 1 x M x M)."""
    classes = torch.cat(pred_classes)
    probs = mask_logits[torch.arange(classes.numel(), device=classes.device), classes][:, None].float().sigmoid()
    return list(probs.split([len(c) for c in pred_classes]))
