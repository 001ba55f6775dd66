"""Training and inference speed of a segmentation recipe, measured as benchmarks/detection/speed.py measures it."""
import itertools

import torch

from ..detection.speed import median, median_training_time, synchronize_device
from ..engine.distributed import current_device, get_world_size
from ..engine.seed import seed_everything
from ..engine.solver import build_sgd
from ..engine.trainer import amp_dtype
from ..modeling.deeplab import build_deeplabv3
from ..modeling.norm import resolve_norm
from .config import validate_segmentation_config
from .inference import Segmenter
from .train_net import build_train_loader, load_datasets


def measure_speed(cfg, train_iters: int = 10, inference_images: int = 20, warmup: int = 3) -> dict:
    """Median seconds per training iteration (forward, backward, SGD step on the recipe's crops) and per test image
    (resize to the test scale, whole or sliding-window inference), after warm-up."""
    validate_segmentation_config(cfg)
    device = current_device()
    train_set, test_set = load_datasets(cfg)
    seed_everything(cfg.SEED)
    model = build_deeplabv3(cfg.MODEL, resolve_norm(cfg.MODEL.RESNETS.NORM, device))
    segmenter = Segmenter(model, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, cfg.INPUT.CROP_SIZE,
                          cfg.MODEL.IGNORE_LABEL, cfg.MODEL.AUXILIARY_HEAD.LOSS_WEIGHT).to(device)
    dtype = amp_dtype(device, cfg.SOLVER.AMP.ENABLED)
    results = {"device": str(device), "processes": get_world_size(), "amp": str(dtype) if dtype else "off"}

    if train_iters > 0:
        optimizer = build_sgd(segmenter, cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY,
                              cfg.SOLVER.WEIGHT_DECAY)
        batches = list(itertools.islice(iter(build_train_loader(cfg, train_set, 0)), warmup + train_iters))
        segmenter.train()
        results["train_s_per_iter"] = median_training_time(
            batches, lambda batch: segmenter([image.to(device) for image in batch[0]], batch[1]), optimizer, device,
            dtype, warmup)
        results["train_images_per_iter"] = cfg.SOLVER.IMS_PER_BATCH // get_world_size()

    if inference_images > 0:
        segmenter.eval()
        times, test = [], cfg.TEST
        for index in itertools.islice(itertools.cycle(range(len(test_set))), warmup + inference_images):
            image = test_set[index][0].to(device)
            with synchronize_device(device, times), torch.autocast(device.type, dtype=dtype,
                                                                   enabled=dtype is not None):
                segmenter.predict(image, test.SCALE, test.MODE, test.SLIDE_CROP, test.SLIDE_STRIDE)
        results["inference_s_per_image"] = median(times[warmup:])
    return results
