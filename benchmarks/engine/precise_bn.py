"""Precise BN (Wu & Johnson, 2021): replace BN's running averages by the exact mean over many batches.

The MoCo detection protocol enables it (``TEST.PRECISE_BN``): with small per-GPU batches the EMA of a
fine-tuned network lags behind its weights, and evaluation uses the running statistics.
"""
import itertools
import logging

import torch
from torch import nn

logger = logging.getLogger("transferlab")


@torch.no_grad()
def update_bn_stats(model: nn.Module, batches, run_forward, num_iter: int) -> int:
    """Recompute every trainable BN's running mean/var as the average over ``num_iter`` batches.

    ``run_forward(model, batch)`` runs the model in training mode. The caller's RNG streams are left
    untouched, so training continues exactly as it would have without this.
    """
    bn_layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not bn_layers:
        return 0
    momenta = [bn.momentum for bn in bn_layers]
    for bn in bn_layers:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches that follow
    was_training = model.training
    model.train()
    seen = 0
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
        for batch in itertools.islice(batches, num_iter):
            run_forward(model, batch)
            seen += 1
    for bn, momentum in zip(bn_layers, momenta):
        bn.momentum = momentum
    model.train(was_training)
    if seen < num_iter:
        logger.warning("Precise BN wanted %d batches, the data gave %d", num_iter, seen)
    logger.info("Precise BN: running statistics of %d BN layers recomputed over %d batches", len(bn_layers), seen)
    return seen
