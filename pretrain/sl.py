"""Supervised pretraining (SL): a ResNet trained with cross-entropy on the labels, as ImageNet-supervised
checkpoints are. The baseline of Wang et al. 2022 ("Revisiting the Transferability of Supervised Pretraining:
an MLP Perspective", §5.1: SGD, cosine lr 0.4 at batch 1024, following He et al. 2016); only the encoder
without its classifier transfers (Fig. 3).

The model keeps torchvision's names (``encoder.conv1.weight``, ..., the classifier as ``encoder.fc``), so
the backbone is the encoder's state dict without ``fc.``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .moco import build_resnet_encoder


class Supervised(nn.Module):
    """Cross-entropy on ``encoder(images)``, the class logits; the head that makes them is ``encoder.fc``."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """``{"loss": cross-entropy, "acc1": top-1 accuracy in percent on this batch (detached)}``."""
        logits = self.encoder(images)
        # In fp32 even under autocast: log-softmax over many classes loses digits in bf16/fp16.
        with torch.autocast(logits.device.type, enabled=False):
            loss = F.cross_entropy(logits.float(), labels)
        acc1 = (logits.detach().argmax(dim=1) == labels).float().mean() * 100
        return {"loss": loss, "acc1": acc1}

    def backbone_state_dict(self) -> dict:
        """The encoder in torchvision names without the head (``fc.``): what transfers downstream."""
        return {name: tensor for name, tensor in self.encoder.state_dict().items() if not name.startswith("fc.")}


def convert_sync_bn(cfg, model: nn.Module) -> nn.Module:
    """``model`` with every BatchNorm a ``torch.nn.SyncBatchNorm`` if MODEL.SYNC_BN, else ``model`` unchanged.

    For the training loop to call before wrapping the model in DDP. Batch statistics then pool over all
    processes, which matters only under torchrun (in one process SyncBatchNorm normalises like BN); the
    parameter and buffer names stay, so checkpoints do not change. nn.SyncBatchNorm needs CUDA (or XPU) inputs
    when it syncs: under torchrun on CPUs (gloo) it raises at the first forward.
    """
    if not cfg.MODEL.SYNC_BN:
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def build_sl(cfg, num_classes: int) -> Supervised:
    """SL: a torchvision ``cfg.MODEL.ARCH`` (random init) whose ``fc`` is Linear(width, num_classes)."""
    return Supervised(build_resnet_encoder(cfg.MODEL.ARCH, num_classes))
