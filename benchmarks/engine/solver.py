"""SGD, Detectron2's WarmupMultiStepLR / WarmupCosineLR and mmseg's PolyLR, as the recipes specify them."""
import bisect
import logging
import math

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


def warmup_factor_at(iteration: int, warmup_iters: int, warmup_factor: float, warmup_method: str) -> float:
    """Detectron2's warmup: linear (or constant) from ``warmup_factor`` to 1 over ``warmup_iters``."""
    if iteration >= warmup_iters:
        return 1.0
    if warmup_method == "linear":
        alpha = iteration / warmup_iters
        return warmup_factor * (1 - alpha) + alpha
    if warmup_method == "constant":
        return warmup_factor
    raise ValueError(f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got {warmup_method!r}")


def warmup_multistep_factor(iteration: int, steps, gamma: float, warmup_iters: int, warmup_factor: float,
                            warmup_method: str = "linear") -> float:
    """Detectron2's WarmupMultiStepLR factor: warmup, then x gamma at each step."""
    return (gamma ** bisect.bisect_right(list(steps), iteration)
            * warmup_factor_at(iteration, warmup_iters, warmup_factor, warmup_method))


def warmup_cosine_factor(iteration: int, max_iter: int, warmup_iters: int, warmup_factor: float,
                         warmup_method: str = "linear") -> float:
    """Detectron2's WarmupCosineLR factor: warmup times a half cosine from 1 to 0 over the run."""
    return (0.5 * (1.0 + math.cos(math.pi * iteration / max_iter))
            * warmup_factor_at(iteration, warmup_iters, warmup_factor, warmup_method))


def poly_lr(iteration: int, base_lr: float, max_iter: int, power: float, min_lr: float) -> float:
    """mmengine's PolyLR(eta_min, power, end=max_iter) in closed form: its step ``s`` multiplies ``lr - eta_min`` by
    ``(1 - 1 / (T - s + 1)) ** power`` with ``T = max_iter - 1``, which telescopes to
    ``(base - eta_min) * (1 - s / T) ** power + eta_min``: ``eta_min`` at the last iteration."""
    last = max(max_iter - 1, 1)
    return (base_lr - min_lr) * max(1.0 - iteration / last, 0.0) ** power + min_lr


def build_poly_scheduler(optimizer, base_lr: float, max_iter: int, power: float, min_lr: float):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: poly_lr(it, base_lr, max_iter, power, min_lr) / base_lr)


def build_lr_scheduler(optimizer, solver_cfg) -> torch.optim.lr_scheduler.LambdaLR:
    """``SOLVER.LR_SCHEDULER_NAME``: WarmupMultiStepLR (the detection protocols) or WarmupCosineLR."""
    warmup = (solver_cfg.WARMUP_ITERS, solver_cfg.WARMUP_FACTOR, solver_cfg.WARMUP_METHOD)
    name = solver_cfg.LR_SCHEDULER_NAME
    if name == "WarmupCosineLR":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda it: warmup_cosine_factor(it, solver_cfg.MAX_ITER, *warmup))
    if name != "WarmupMultiStepLR":
        raise ValueError(f"SOLVER.LR_SCHEDULER_NAME must be WarmupMultiStepLR or WarmupCosineLR, got {name!r}")
    steps = sorted(solver_cfg.STEPS)
    if any(step > solver_cfg.MAX_ITER for step in steps):
        logger.warning("SOLVER.STEPS %s reach beyond SOLVER.MAX_ITER %d; those steps never happen.",
                       tuple(steps), solver_cfg.MAX_ITER)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: warmup_multistep_factor(it, steps, solver_cfg.GAMMA, *warmup))
