#!/usr/bin/env python
"""Training seconds per iteration of transferlab's DeepLab-v3 R50-D8 (mmseg's model) against torchvision's
``deeplabv3_resnet50``, in one process.

  python benchmarks/perf/deeplab_speed.py [--iters 3] [--warmup 1] [--size 512 1024] [--batch 2] [--amp]

Both train on the same random batch (2 crops of 512x1024 by default: the recipe's 2 images per GPU), fp32 on the
CPU (``--amp``: both under bf16 autocast, as SOLVER.AMP.ENABLED runs on CPUs), SGD with a cross-entropy loss on the
main and the auxiliary output, alternating iteration by iteration so that the machine's drift hits both alike.
transferlab's model is the heavier one: mmseg's ASPP has 512 channels and a 3x3 bottleneck over 5 x 512,
torchvision's 256 and a 1x1 projection (1.6x the training FLOPs of torchvision's, counted with
torch.utils.flop_counter at 2x128x256: 417 vs 260 GFLOP). Each runs as its engine runs it (ours
channels-last on CPUs, as the segmentation engine feeds it; torchvision's NCHW). The last line compares them; on the
reference machine (quiet, 2 threads, 2026-12-02, 2 timed iterations after 1 warm-up):
``DeepLab-v3 R50 training, 2x512x1024 fp32: transferlab 45.6 s, torchvision 30.8 s, 1.48x`` and with ``--amp``
``DeepLab-v3 R50 training, 2x512x1024 bf16: transferlab 25.7 s, torchvision 21.1 s, 1.21x``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.engine.config import load_config  # noqa: E402
from benchmarks.modeling.deeplab import build_deeplabv3  # noqa: E402
from benchmarks.segmentation.config import get_segmentation_defaults  # noqa: E402
from benchmarks.segmentation.inference import Segmenter  # noqa: E402


def transferlab_step(size, batch):
    cfg = load_config(get_segmentation_defaults(), None, ["MODEL.RESNETS.NORM", "BN", "INPUT.CROP_SIZE", str(size)])
    model = build_deeplabv3(cfg.MODEL, "BN")
    segmenter = Segmenter(model, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, cfg.INPUT.CROP_SIZE, 255, 0.4).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = [torch.randint(0, 256, (3, *size), dtype=torch.uint8) for _ in range(batch)]
    labels = [torch.randint(0, 19, size) for _ in range(batch)]

    def step():
        losses = segmenter(images, labels)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()
    return step


def torchvision_step(size, batch):
    model = torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=19,
                                                               aux_loss=True).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, *size)
    labels = torch.randint(0, 19, (batch, *size))

    def step():
        out = model(images)
        loss = F.cross_entropy(out["out"], labels) + 0.4 * F.cross_entropy(out["aux"], labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations of each model")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations of each model first")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"), help="crop size")
    parser.add_argument("--batch", type=int, default=2, help="crops per iteration")
    parser.add_argument("--amp", action="store_true", help="both models under bf16 autocast")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    steps = {"transferlab": transferlab_step(tuple(args.size), args.batch),
             "torchvision": torchvision_step(tuple(args.size), args.batch)}
    times = {name: [] for name in steps}
    for iteration in range(args.warmup + args.iters):
        for name, step in steps.items():
            tic = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.amp):
                step()
            if iteration >= args.warmup:
                times[name].append(time.perf_counter() - tic)
            print(f"{name} iteration {iteration}: {time.perf_counter() - tic:.2f} s", flush=True)
    ours, theirs = (statistics.median(times[name]) for name in ("transferlab", "torchvision"))
    precision = "bf16" if args.amp else "fp32"
    print(f"DeepLab-v3 R50 training, {args.batch}x{args.size[0]}x{args.size[1]} {precision}: transferlab {ours:.1f} s, "
          f"torchvision {theirs:.1f} s, {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
