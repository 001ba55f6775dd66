"""Training and inference speed of a detection recipe, measured like Detectron2's tools/benchmark.py."""
import contextlib
import itertools
import logging
import time

import torch

from ..engine.distributed import current_device, get_world_size
from ..engine.seed import seed_everything
from ..engine.solver import build_sgd
from ..engine.trainer import amp_dtype
from ..modeling.norm import resolve_norm
from ..modeling.rcnn import build_detector
from .config import validate_detection_config
from .data import build_test_loader, build_train_loader
from .train_net import detection_losses, load_datasets

logger = logging.getLogger("transferlab")


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


@contextlib.contextmanager
def synchronize_device(device, times: list):
    """Times the block into ``times``, waiting for the GPU's queue on both sides."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize()
    times.append(time.perf_counter() - tic)


def median_training_time(batches, losses_of, optimizer, device, dtype, warmup: int) -> float:
    """Median seconds of a training step (forward under autocast, backward, SGD step) over ``batches`` after the
    first ``warmup``."""
    times = []
    for batch in batches:
        with synchronize_device(device, times):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                losses = losses_of(batch)
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
    return median(times[warmup:])


def measure_speed(cfg, train_iters: int = 10, inference_images: int = 20, warmup: int = 3) -> dict:
    """Median seconds per training iteration (forward, backward, SGD step) and per test image, after warm-up."""
    validate_detection_config(cfg)
    device = current_device()
    train_set, test_set, _ = load_datasets(cfg)
    seed_everything(cfg.SEED)
    model = build_detector(cfg, resolve_norm(cfg.MODEL.RESNETS.NORM, device)).to(device)
    dtype = amp_dtype(device, cfg.SOLVER.AMP.ENABLED)
    results = {"device": str(device), "processes": get_world_size(), "amp": str(dtype) if dtype else "off"}

    if train_iters > 0:
        optimizer = build_sgd(model, cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY,
                              cfg.SOLVER.WEIGHT_DECAY_NORM)
        compute_losses = detection_losses(device)
        batches = list(itertools.islice(iter(build_train_loader(cfg, train_set, 0)), warmup + train_iters))
        model.train()
        results["train_s_per_iter"] = median_training_time(
            batches, lambda batch: compute_losses(model, batch), optimizer, device, dtype, warmup)
        results["train_images_per_iter"] = cfg.SOLVER.IMS_PER_BATCH // get_world_size()

    if inference_images > 0:
        model.eval()
        times = []
        with torch.no_grad():
            for images, _, _ in itertools.islice(build_test_loader(cfg, test_set), warmup + inference_images):
                with synchronize_device(device, times):
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        model([image.to(device) for image in images])
        results["inference_s_per_image"] = median(times[warmup:])
    return results
