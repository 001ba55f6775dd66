"""HPT's "Base" baseline (Reed et al. 2022): the base checkpoint unchanged except for its BN running statistics,
re-estimated on the target data with no gradient step, so that a transfer from it measures what adapting only
the normalisation statistics buys.
"""
import torch
import torchvision
from torch import nn

from benchmarks.engine.distributed import all_reduce_mean
from benchmarks.engine.precise_bn import update_bn_stats
from converters import load_backbone


def load_init_backbone(path) -> tuple[nn.Module, dict]:
    """The ``--init`` checkpoint (any format ``converters.load_backbone`` reads) as a torchvision ResNet whose
    ``fc`` is the identity, every backbone tensor loaded, and its metadata."""
    state_dict, meta = load_backbone(path)
    model = torchvision.models.get_model(meta["arch"], weights=None)
    model.fc = nn.Identity()
    model.load_state_dict(state_dict)
    return model, meta


@torch.no_grad()
def recalibrate_bn_statistics(model: nn.Module, loader, device, batches: int) -> int:
    """Every BN's running mean and variance as the average over ``batches`` batches of ``loader`` (precise BN),
    averaged over processes under torchrun; the weights stay bit-identical. Returns the batches seen."""
    seen = update_bn_stats(model, iter(loader), lambda net, images: net(images.to(device)), batches)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(all_reduce_mean(module.running_mean))
            module.running_var.copy_(all_reduce_mean(module.running_var))
    return seen
