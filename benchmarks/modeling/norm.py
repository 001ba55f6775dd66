"""Normalization choices of the transfer protocols: SyncBN (MoCo), BN, FrozenBN (Detectron2's ImageNet default)."""
import logging

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from ..engine.distributed import differentiable_all_reduce, get_world_size, is_distributed

logger = logging.getLogger("transferlab")

NORM_CHOICES = ("SyncBN", "naiveSyncBN", "BN", "FrozenBN")
# Norms of the layers a detector adds (FPN.NORM, ROI_BOX_HEAD.NORM, ROI_MASK_HEAD.NORM): "" for none, as in
# Detectron2, and GroupNorm with 32 groups (Detectron2's "GN") besides the backbone's choices.
HEAD_NORM_CHOICES = ("", "GN", *NORM_CHOICES)
GN_GROUPS = 32


class NaiveSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose batch statistics are pooled over all processes with plain all-reduces.

    Works on any backend (gloo on CPUs included, where ``nn.SyncBatchNorm`` does not run) and weights
    each process by its sample count, so ranks with different numbers of RoIs, or none, are handled.
    In one process it is exactly ``nn.BatchNorm2d``.
    """

    def forward(self, input):
        if not self.training or not is_distributed():
            return super().forward(input)
        channels = input.shape[1]
        x = input.float()
        count = x.numel() // channels
        sums = differentiable_all_reduce(torch.cat([x.sum(dim=[0, 2, 3]), x.new_full((1,), float(count))]))
        total = sums[-1].detach()
        if total.item() == 0:
            return input + 0.0 * sum(p.sum() for p in self.parameters())
        mean = sums[:channels] / total
        # the variance from squares about the global mean: E[x^2] - mean^2 loses float32 digits in its
        # cancellation, and its gradient amplifies the loss through a deep stack of BNs
        centered = x - mean.view(1, -1, 1, 1)
        var = differentiable_all_reduce((centered * centered).sum(dim=[0, 2, 3])) / total
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            # momentum None is BN's cumulative average, which precise BN relies on
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            unbiased = var * total / (total - 1).clamp_min(1.0)
            self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
            self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        out = centered * (self.weight * torch.rsqrt(var + self.eps)).view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(input.dtype)


def resolve_norm(norm: str, device: torch.device) -> str:
    """The norm that actually runs here: SyncBN needs several processes, ``nn.SyncBatchNorm`` needs CUDA."""
    if norm not in NORM_CHOICES:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORM_CHOICES)}")
    if norm in ("SyncBN", "naiveSyncBN") and get_world_size() == 1:
        logger.info("%s in a single process is plain BN (batch statistics over this process's batch).", norm)
        return "BN"
    if norm == "SyncBN" and device.type != "cuda":
        logger.info("SyncBN on %s: using naiveSyncBN (all-reduce of batch statistics over gloo).", device.type)
        return "naiveSyncBN"
    return norm


def norm_layer(norm: str):
    """A ``num_features -> module`` factory, as torchvision's ResNet takes for ``norm_layer``."""
    return {
        "SyncBN": nn.SyncBatchNorm,
        "naiveSyncBN": NaiveSyncBatchNorm,
        "BN": nn.BatchNorm2d,
        "FrozenBN": FrozenBatchNorm2d,
    }[norm]


def resolve_head_norm(norm: str, device: torch.device) -> str:
    """``resolve_norm`` for the added layers; "" (no norm) and "GN" need no process group and run as they are."""
    if norm not in HEAD_NORM_CHOICES:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(map(repr, HEAD_NORM_CHOICES))}")
    return norm if norm in ("", "GN") else resolve_norm(norm, device)


def head_norm_layer(norm: str):
    """``norm_layer`` for a resolved head norm, None for "" (the conv then keeps its bias, as in Detectron2)."""
    if norm == "":
        return None
    if norm == "GN":
        return lambda channels: nn.GroupNorm(GN_GROUPS, channels)
    return norm_layer(norm)


def freeze_module(module: nn.Module) -> nn.Module:
    """Stop training a module: no gradients, and its BatchNorms become FrozenBN (as Detectron2's FREEZE_AT does)."""
    for param in module.parameters():
        param.requires_grad_(False)
    return convert_to_frozen_bn(module)


def convert_to_frozen_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        converted = convert_to_frozen_bn(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


class ConvNormReLU(nn.Conv2d):
    """3x3 conv, optional norm, ReLU: Detectron2's ``Conv2d(..., norm=, activation=relu)`` with its parameter names
    (``<name>.weight``, ``<name>.norm.*``; a bias only without norm) and its ``c2_msra_fill`` initialisation."""

    def __init__(self, in_channels: int, out_channels: int, norm: str):
        super().__init__(in_channels, out_channels, kernel_size=3, padding=1, bias=norm == "")
        factory = head_norm_layer(norm)
        self.norm = factory(out_channels) if factory is not None else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x):
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return torch.relu(x)
