#!/usr/bin/env python
"""How much faster faster-coco-eval is than pycocotools on a COCO-scale result set, with the same AP.

  python benchmarks/perf/coco_eval_speed.py               # 5,000 images, ~37k objects, 500k detections (~2 min)
  python benchmarks/perf/coco_eval_speed.py --scale 0.02  # 100 images: a quick check

Generates the set deterministically (``tide_speed.synthetic_result_set``) and times ``evaluate_coco`` with each
backend in this process, from the same in-memory ground truth and detections (loadRes, evaluate, accumulate,
summarize: what a run's evaluation costs). Its last line is the comparison; exits non-zero if any of AP, AP50,
AP75, APs, APm, APl differs by more than 0.0005.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of COCO's 5,000 images (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from pycocotools.coco import COCO

    from benchmarks.detection.evaluation import COCO_METRICS, evaluate_coco
    from benchmarks.perf.tide_speed import COCO_IMAGES, synthetic_result_set

    num_images = max(1, round(COCO_IMAGES * args.scale))
    tic = time.perf_counter()
    gt, dets = synthetic_result_set(num_images, seed=args.seed)
    print(f"synthetic set: {num_images} images, {sum(not a['iscrowd'] for a in gt['annotations'])} objects, "
          f"{len(dets)} detections ({time.perf_counter() - tic:.1f} s to generate)")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
    times, metrics = {}, {}
    for backend in ("faster_coco_eval", "pycocotools"):
        records = [dict(record) for record in dets]  # loadRes adds fields to the records it is given
        tic = time.perf_counter()
        metrics[backend] = evaluate_coco(coco, records, ("bbox",), backend)["bbox"]
        times[backend] = time.perf_counter() - tic
    diff = max(abs(metrics["faster_coco_eval"][name] - metrics["pycocotools"][name]) for name in COCO_METRICS)
    print("      " + " ".join(f"{name:>7}" for name in COCO_METRICS))
    for backend, stats in metrics.items():
        print(f"{backend[:5]:5} " + " ".join(f"{stats[name]:7.3f}" for name in COCO_METRICS))
    print(f"COCO bbox eval: fast {times['faster_coco_eval']:.2f} s, pycocotools {times['pycocotools']:.2f} s, "
          f"{times['pycocotools'] / times['faster_coco_eval']:.2f}x, max |AP diff| {diff:.3f}")
    if diff > 0.0005:
        sys.exit(1)


if __name__ == "__main__":
    main()
