"""HPT's "Base" baseline (Reed et al. 2022): the base checkpoint unchanged except for its BN running statistics,
re-estimated on the target data with no gradient step, so that a transfer from it measures what adapting only
the normalisation statistics buys. The base is read by the probes' ``build_backbone``, the statistics by their
``recalibrate_bn``; a pretraining run may span processes, so here they are averaged over them.
"""
import torch
from torch import nn

from benchmarks.classification.features import recalibrate_bn
from benchmarks.engine.distributed import all_reduce_mean


@torch.no_grad()
def recalibrate_bn_statistics(model: nn.Module, loader, device, batches: int) -> int:
    """Every BN's running mean and variance as the average over ``batches`` batches of ``loader`` (precise BN),
    averaged over processes under torchrun; the weights stay bit-identical. Returns the batches seen."""
    seen = recalibrate_bn(model, loader, device, batches)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(all_reduce_mean(module.running_mean))
            module.running_var.copy_(all_reduce_mean(module.running_var))
    return seen
