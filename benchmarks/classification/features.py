"""Frozen-backbone features for the classification probes: build, transform, extract, cache, recalibrate BN.

Every probe but finetuning looks at the backbone only through the pooled features of a single centre crop, so
they are extracted once per (checkpoint, data, split, stage, transform) and cached on disk: a sweep of many
probes then costs one pass over the images.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision import transforms
from tqdm import tqdm

from converters import atomic_torch_save, load_backbone
from converters.canonical import IMAGENET_PIXEL_MEAN, IMAGENET_PIXEL_STD

from ..engine.precise_bn import update_bn_stats
from ..results.store import file_sha256

__all__ = [
    "RANDOM_INIT",
    "STAGES",
    "FeatureCache",
    "build_backbone",
    "checkpoint_id",
    "eval_transform",
    "extract_features",
    "recalibrate_bn",
    "stage_features",
    "train_transform",
]

logger = logging.getLogger("transferlab")

# Globally average-pooled outputs a probe can read: the stem (after the max-pool), each residual stage (SL-MLP
# Fig. 1), and ``pool``, the standard probe feature. ``layer4`` and ``pool`` are the same vector under two names.
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "pool")
RANDOM_INIT = "none"
CACHE_VERSION = 1  # bump when extraction changes what a cached file holds


def build_backbone(weights: str | os.PathLike, arch: str = "resnet50", seed: int = 0) -> tuple[nn.Module, dict]:
    """A torchvision ResNet without ``fc`` (it returns pooled features) and the checkpoint's metadata.

    ``weights`` is any checkpoint ``converters.load_backbone`` reads, whose arch wins over ``arch``, or ``'none'``
    for the random-init baseline, drawn from ``seed`` without touching the caller's RNG so that it is the same
    network in every run.
    """
    if os.fspath(weights) == RANDOM_INIT:
        state_dict, meta = None, {"arch": arch, "pixel_mean": None, "pixel_std": None}
    else:
        state_dict, meta = load_backbone(weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(torchvision.models, meta["arch"])(weights=None)
    model.fc = nn.Identity()
    if state_dict is None:
        logger.info("Backbone %s: random initialization (seed %d), the scratch baseline", arch, seed)
    else:
        model.load_state_dict(state_dict)  # strict: every tensor of the network comes from the checkpoint
        method = f", method {meta['method']}" if meta.get("method") else ""
        logger.info("Backbone %s: loaded all %d tensors from %s (%s format%s)", meta["arch"], len(state_dict),
                    weights, meta.get("source_format", "?"), method)
    return model.eval(), meta


def checkpoint_id(weights: str | os.PathLike, seed: int = 0) -> str:
    """What identifies a backbone for the cache: the sha256 of the checkpoint file (not its name), or none+seed."""
    if os.fspath(weights) == RANDOM_INIT:
        return f"{RANDOM_INIT}-seed{seed}"
    return file_sha256(weights)


def _normalize(meta: dict | None) -> transforms.Normalize:
    """The checkpoint's pixel statistics when it records them (0-255 scale), else ImageNet's."""
    meta = meta or {}
    mean = meta.get("pixel_mean") or IMAGENET_PIXEL_MEAN
    std = meta.get("pixel_std") or IMAGENET_PIXEL_STD
    return transforms.Normalize([m / 255 for m in mean], [s / 255 for s in std])


def eval_transform(meta: dict | None = None, size: int = 224, resize: int | None = None) -> transforms.Compose:
    """The single centre crop of the probes: short side to ``resize`` (256 for 224), centre crop ``size``.

    HPT's appendix A says "resized the long edge"; its OpenSelfSup pipelines use torchvision's Resize(256), which
    resizes the short side, so that the 224 crop always lies inside the image.
    """
    resize = resize or round(size * 256 / 224)
    return transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(size), transforms.ToTensor(),
                               _normalize(meta)])


def train_transform(meta: dict | None = None, size: int = 224) -> transforms.Compose:
    """HPT appendix A's training augmentation for the augmented linear probe and finetuning."""
    return transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                               transforms.ToTensor(), _normalize(meta)])


def stage_features(backbone: nn.Module, images: torch.Tensor, stages=("pool",)) -> dict[str, torch.Tensor]:
    """Pooled [N, C] features of ``stages``; the forward stops at the deepest stage asked for."""
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; choose from {STAGES}")
    deepest = max(STAGES.index(stage) for stage in stages)
    x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(images))))
    outputs = {"stem": x}
    for name in STAGES[1:min(deepest, 4) + 1]:
        x = getattr(backbone, name)(x)
        outputs[name] = x
    outputs["pool"] = outputs.get("layer4")
    return {stage: torch.flatten(nn.functional.adaptive_avg_pool2d(outputs[stage], 1), 1) for stage in stages}


@torch.no_grad()  # not inference_mode: the probes fit on these tensors with autograd
def extract_features(backbone: nn.Module, loader, device, stages=("pool",), description: str = "features"
                     ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Features of every image of ``loader`` (stage -> float32 [N, C] on the CPU) and the targets, in order.

    The backbone runs in eval mode (BN uses its running statistics), as a frozen backbone does in every probe.
    """
    was_training = backbone.training
    backbone.eval()
    features, targets = {stage: [] for stage in stages}, []
    for images, batch_targets in tqdm(loader, desc=description, unit="batch", leave=False):
        for stage, value in stage_features(backbone, images.to(device, non_blocking=True), stages).items():
            features[stage].append(value.float().cpu())
        targets.append(batch_targets)
    backbone.train(was_training)
    return {stage: torch.cat(values) for stage, values in features.items()}, torch.cat(targets)


def recalibrate_bn(backbone: nn.Module, loader, device, num_batches: int) -> int:
    """Re-estimate every BN's running statistics on the target data (HPT's "Base" baseline); batches used.

    ``loader`` yields image batches or ``(images, targets)``. The statistics become the exact average over
    ``num_batches`` batches (precise BN), not an EMA; the weights and the backbone's train/eval mode are unchanged.
    """
    def forward(model, batch):
        model((batch[0] if isinstance(batch, (list, tuple)) else batch).to(device))

    was_training = backbone.training
    backbone.train()  # update_bn_stats recomputes the BNs that are in training mode
    seen = update_bn_stats(backbone, iter(loader), forward, num_batches)
    backbone.train(was_training)
    return seen


class FeatureCache:
    """Extracted features on disk, one file per (backbone, data, split, stage, transform).

    ``backbone`` is a ``checkpoint_id`` (so a renamed checkpoint hits and a retrained one misses), ``data`` the
    data's fingerprint string and ``transform`` a description of the image transform (e.g. its repr). Files are
    written atomically and read with ``weights_only=True``.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.hits = self.misses = 0

    def path(self, backbone: str, data: str, split: str, stage: str, transform: str) -> Path:
        key = {"version": CACHE_VERSION, "backbone": backbone, "data": data, "split": split, "stage": stage,
               "transform": transform}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.root / f"{split}-{stage}-{digest[:32]}.pt"

    def features(self, backbone_model: nn.Module, loader, device, *, backbone: str, data: str, split: str,
                 transform: str, stages=("pool",)) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Like ``extract_features``, from the cache where it can; the missing stages come from one pass."""
        paths = {stage: self.path(backbone, data, split, stage, transform) for stage in stages}
        cached = {stage: torch.load(path, weights_only=True) for stage, path in paths.items() if path.is_file()}
        missing = [stage for stage in stages if stage not in cached]
        self.hits += len(cached)
        self.misses += len(missing)
        if missing:
            features, targets = extract_features(backbone_model, loader, device, missing, f"{split} features")
            self.root.mkdir(parents=True, exist_ok=True)
            for stage in missing:
                cached[stage] = {"features": features[stage], "targets": targets}
                atomic_torch_save(cached[stage], paths[stage])
        return {stage: cached[stage]["features"] for stage in stages}, cached[stages[0]]["targets"]
