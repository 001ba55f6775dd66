#!/usr/bin/env python
"""Training seconds per iteration of transferlab's R50-C4 Mask R-CNN and R50-FPN Faster R-CNN against Detectron2's,
in one process.

  /path/to/venv-with-detectron2/bin/python benchmarks/perf/detectron2_speed.py [--iters 5] [--warmup 2]

Needs Detectron2 importable in the running Python (never a dependency of transferlab; see
``detectron2_parity.py``) and says so plainly when it is absent. Both models get the same weights and the same
batches (2 generated images per iteration, ground truth with masks), are trained with SGD in fp32 on the CPU,
alternating iteration by iteration so that a machine's drift hits both alike, and the medians after warm-up
are printed with their ratio for each setting:

- ``256``: R50-C4 Mask R-CNN, MODEL.RESNETS.NORM BN, 64 RoIs per image, 256x256 images (tools/benchmark.py's
  reference setting)
- ``512x683``: the same at 512x683 (a non-square 3:4 image at short side 512, as real datasets have)
- ``fpn512``: R50-FPN Faster R-CNN as Detectron2's faster_rcnn_R_50_FPN_1x (Base-RCNN-FPN: 2fc box head, no norm
  in FPN and heads) with MODEL.RESNETS.NORM BN, 512 RoIs per image, 512x512 images
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from benchmarks.data import SceneSpec, write_coco  # noqa: E402
from benchmarks.data.coco import COCODetection  # noqa: E402
from benchmarks.detection.config import get_detection_defaults  # noqa: E402
from benchmarks.detection.data import build_train_loader  # noqa: E402
from benchmarks.engine.config import load_config  # noqa: E402
from benchmarks.modeling.masks import PolygonMasks as OurPolygonMasks  # noqa: E402
from benchmarks.perf.detectron2_parity import (  # noqa: E402  (exits without D2)
    build_fpn_models,
    build_models,
    ours_to_detectron2,
    ours_to_detectron2_fpn,
)

SETTINGS = {  # name: (image height, width as generated, short side, architecture, RoIs per image)
    "256": ((256, 256), 256, "c4", 64),
    "512x683": ((384, 512), 512, "c4", 64),
    "fpn512": ((512, 512), 512, "fpn", 512),
}
# Detectron2's Base-RCNN-FPN heads (FPN without norm, 2fc box head) on the FPN recipe, without masks
FPN_DEFAULTS = ["MODEL.MASK_ON", "False", "MODEL.FPN.NORM", "", "MODEL.ROI_BOX_HEAD.NUM_CONV", "0",
                "MODEL.ROI_BOX_HEAD.NUM_FC", "2", "MODEL.ROI_BOX_HEAD.NORM", "", "MODEL.ROI_MASK_HEAD.NORM", ""]


def build_pair(arch: str, rois: int):
    """transferlab's and Detectron2's model of a setting, with the same weights."""
    heads = ["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", str(rois)]
    if arch == "c4":
        ours, theirs = build_models(6, ["MODEL.RESNETS.NORM", "BN", *heads])
        theirs.load_state_dict(ours_to_detectron2(ours.state_dict()), strict=True)
    else:
        ours, theirs = build_fpn_models(6, [*heads, *FPN_DEFAULTS])
        theirs.load_state_dict(ours_to_detectron2_fpn(ours.state_dict()), strict=True)
    return ours, theirs


def batches(image_size, short_side: int, count: int, root: Path):
    """``count`` training batches of 2 images through transferlab's own loader (resize, flip, mask targets)."""
    write_coco(root, "train", 2 * count, SceneSpec(height=image_size[0], width=image_size[1], min_objects=2,
                                                    max_objects=4), seed=0)
    dataset = COCODetection(root / "train", root / "annotations" / "instances_train.json")
    cfg = load_config(get_detection_defaults(), None, [
        "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", f"({short_side},)", "INPUT.MAX_SIZE_TRAIN", "2000",
        "DATALOADER.NUM_WORKERS", "0"])
    loader = iter(build_train_loader(cfg, dataset, 0))
    return [next(loader) for _ in range(count)]


def to_detectron2_inputs(images, targets) -> list:
    inputs = []
    for image, target in zip(images, targets):
        size = tuple(image.shape[-2:])
        masks = target["masks"]
        gt_masks = (PolygonMasks([[p.copy() for p in instance] for instance in masks.polygons])
                    if isinstance(masks, OurPolygonMasks) else BitMasks(masks.tensor))
        inputs.append({"image": image, "instances": Instances(size, gt_boxes=Boxes(target["boxes"].clone()),
                                                              gt_classes=target["labels"] - 1, gt_masks=gt_masks)})
    return inputs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per model and setting")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--setting", choices=SETTINGS, action="append", help="default: all")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, CPU")
    for name in args.setting or SETTINGS:
        image_size, short_side, arch, rois = SETTINGS[name]
        with tempfile.TemporaryDirectory() as tmp:
            data = batches(image_size, short_side, args.warmup + args.iters, Path(tmp))
        ours, theirs = build_pair(arch, rois)
        models = {"transferlab": ours, "Detectron2": theirs}
        optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.001, momentum=0.9, weight_decay=1e-4)
                      for k, m in models.items()}
        times = {k: [] for k in models}
        for model in models.values():
            model.train()
        with EventStorage():
            for step, (images, targets) in enumerate(data):
                for key, model in models.items():
                    tic = time.perf_counter()
                    if key == "transferlab":
                        losses = model(images, targets)
                    else:
                        losses = model(to_detectron2_inputs(images, targets))
                    optimizers[key].zero_grad(set_to_none=True)
                    sum(losses.values()).backward()
                    optimizers[key].step()
                    if step >= args.warmup:
                        times[key].append(time.perf_counter() - tic)
        shape = tuple(data[0][0][0].shape[-2:])
        ours_s, theirs_s = statistics.median(times["transferlab"]), statistics.median(times["Detectron2"])
        model_name = "R50-C4 Mask R-CNN" if arch == "c4" else "R50-FPN Faster R-CNN"
        print(f"{name}: {model_name}, images {shape[0]}x{shape[1]}, {rois} RoIs per image, norm BN: transferlab "
              f"{ours_s:.2f} s/iter, Detectron2 {theirs_s:.2f} s/iter, ratio {ours_s / theirs_s:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
