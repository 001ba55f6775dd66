#!/usr/bin/env python
"""What the cached linear protocol saves: a 3-lr sweep on cached features against the naive protocol, one process.

  python benchmarks/perf/linear_probe_speed.py                  # ResNet-50, 384 images of 64x64 (35 s on 2 cores)
  python benchmarks/perf/linear_probe_speed.py --size 32 --train 64 --val 16 --test 16    # a quick check

On the same images (random tensors with a class-dependent colour, so the probes learn something) and the same
random-init ResNet-50 (its BN statistics recalibrated on the train images), it times:

- one extraction pass: pooled features of every train, val and test image once;
- cached: that extraction plus ``cached_linear_probe`` fitting all lrs at once on the features;
- naive: for each lr separately, the backbone forward on every batch of every epoch, then val and test
  (``augmented_linear_probe`` with one lr, here on the un-augmented images).

Both probes run the same SGD recipe (HPT's, for the same number of steps and batch size) and their test top-1 is
printed per lr. The last line gives the two ratios.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.classification.features import build_backbone, extract_features, recalibrate_bn  # noqa: E402
from benchmarks.classification.linear import HPT_LRS, augmented_linear_probe, cached_linear_probe  # noqa: E402


def make_split(num_images: int, num_classes: int, size: int, seed: int) -> TensorDataset:
    """Normalised-looking noise images whose mean colour depends on the class."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(num_classes, (num_images,), generator=generator)
    colours = torch.randn(num_classes, 3, 1, 1, generator=torch.Generator().manual_seed(0))
    images = torch.randn(num_images, 3, size, size, generator=generator) + colours[targets]
    return TensorDataset(images, targets)


def top1s(result) -> str:
    return ", ".join(f"lr {p['lr']:g}: {t['top1']:.1f}" for p, t in zip(result.params, result.test))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--train", type=int, default=256, help="train images")
    parser.add_argument("--val", type=int, default=64, help="val images")
    parser.add_argument("--test", type=int, default=64, help="test images")
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=4, help="training epochs of each probe")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    device = torch.device("cpu")
    backbone, _ = build_backbone("none")
    splits = [make_split(n, args.classes, args.size, seed) for seed, n in enumerate((args.train, args.val, args.test))]
    loaders = [DataLoader(split, args.batch_size) for split in splits]
    steps = args.epochs * args.train // args.batch_size
    fit = {"lrs": HPT_LRS, "steps": steps, "batch_size": args.batch_size}
    print(f"resnet50 (random init), {args.size}x{args.size} images, train/val/test {args.train}/{args.val}/"
          f"{args.test}, {args.classes} classes, {steps} steps of batch {args.batch_size} per lr, "
          f"{torch.get_num_threads()} threads")
    # Random init leaves BN's running statistics at 0/1, under which activations grow with depth to features of
    # norm ~1e3 that saturate SGD at these lrs; statistics of the data give features of a trained net's scale.
    recalibrate_bn(backbone, loaders[0], device, num_batches=len(loaders[0]))  # also the warm-up

    start = time.perf_counter()
    for loader in loaders:
        extract_features(backbone, loader, device)
    extraction = time.perf_counter() - start
    print(f"one extraction pass: {extraction:.1f} s", flush=True)

    start = time.perf_counter()
    features = [extract_features(backbone, loader, device) for loader in loaders]
    cached_result = cached_linear_probe(*[(f["pool"], t) for f, t in features], args.classes, **fit)
    cached = time.perf_counter() - start
    print(f"cached: {cached:.1f} s, test top-1 {top1s(cached_result)}", flush=True)

    start = time.perf_counter()
    naive_results = [augmented_linear_probe(backbone, *splits, args.classes, device, lrs=(lr,), steps=steps,
                                            batch_size=args.batch_size) for lr in HPT_LRS]
    naive = time.perf_counter() - start
    print(f"naive: {naive:.1f} s, test top-1 {', '.join(top1s(result) for result in naive_results)}")
    print(f"linear sweep of {len(HPT_LRS)} lrs: cached {cached / extraction:.2f}x one extraction pass, "
          f"naive {naive / cached:.2f}x cached")


if __name__ == "__main__":
    main()
