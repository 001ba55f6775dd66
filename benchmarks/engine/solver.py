"""SGD and Detectron2's WarmupMultiStepLR, as the detection and segmentation recipes specify them."""
import bisect
import logging

import torch
from torch import nn

logger = logging.getLogger("transferlab")

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def build_sgd(model: nn.Module, base_lr: float, momentum: float, weight_decay: float,
              weight_decay_norm: float) -> torch.optim.SGD:
    """Norm-layer affine parameters get their own weight decay (0 in Detectron2's defaults)."""
    norm_params, other_params = [], []
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.requires_grad:
                (norm_params if isinstance(module, NORM_TYPES) else other_params).append(param)
    groups = [{"params": other_params, "weight_decay": weight_decay}]
    if norm_params:
        groups.append({"params": norm_params, "weight_decay": weight_decay_norm})
    return torch.optim.SGD(groups, lr=base_lr, momentum=momentum)


def warmup_multistep_factor(iteration: int, steps, gamma: float, warmup_iters: int, warmup_factor: float,
                            warmup_method: str = "linear") -> float:
    """Detectron2's factor: linear (or constant) warmup from ``warmup_factor``, then x gamma at each step."""
    factor = gamma ** bisect.bisect_right(list(steps), iteration)
    if iteration < warmup_iters:
        if warmup_method == "linear":
            alpha = iteration / warmup_iters
            factor *= warmup_factor * (1 - alpha) + alpha
        elif warmup_method == "constant":
            factor *= warmup_factor
        else:
            raise ValueError(f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got {warmup_method!r}")
    return factor


def build_warmup_multistep(optimizer, solver_cfg) -> torch.optim.lr_scheduler.LambdaLR:
    steps = sorted(solver_cfg.STEPS)
    if any(step > solver_cfg.MAX_ITER for step in steps):
        logger.warning("SOLVER.STEPS %s reach beyond SOLVER.MAX_ITER %d; those steps never happen.",
                       tuple(steps), solver_cfg.MAX_ITER)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda it: warmup_multistep_factor(it, steps, solver_cfg.GAMMA, solver_cfg.WARMUP_ITERS,
                                           solver_cfg.WARMUP_FACTOR, solver_cfg.WARMUP_METHOD),
    )
