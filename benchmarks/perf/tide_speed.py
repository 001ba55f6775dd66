#!/usr/bin/env python
"""How much faster ``evaluate_tide`` is than tidecv 1.0.1 on a COCO-scale result set, and that both agree.

  python benchmarks/perf/tide_speed.py               # 5,000 images, ~37k objects, 500k detections (minutes)
  python benchmarks/perf/tide_speed.py --scale 0.02  # 100 images: a quick check

Generates the set deterministically (``synthetic_result_set``), writes it as COCO json files and times both
tools from those files in this process: tidecv with what it needs for the same numbers (``evaluate_range`` over
COCO's ten IoU thresholds, then its main and special errors). Needs tidecv (the ``test`` extra). Prints both
times, the ratio, and the largest differences between the two tools' numbers; exits non-zero if any dAP
differs by more than 0.01.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util

COCO_IMAGES, COCO_DETS_PER_IMAGE = 5000, 100
# Detections made from each object: (share of objects, box jitter relative to its size, share with a wrong class,
# Beta score parameters) for good hits, localization errors and duplicates; the rest of an image's detections
# are background boxes.
_DERIVED = ((0.85, 0.06, 0.08, (6.0, 2.0)), (0.35, 0.45, 0.05, (3.0, 3.0)), (0.25, 0.12, 0.0, (3.0, 4.0)))


def _ellipse_polygon(x, y, w, h, points: int = 12) -> list:
    angles = 2 * np.pi * np.arange(points) / points
    return np.stack([x + w / 2 * (1 + np.cos(angles)), y + h / 2 * (1 + np.sin(angles))], 1).ravel().tolist()


def synthetic_result_set(num_images: int = COCO_IMAGES, num_classes: int = 80, extra_classes: int = 0,
                         objects_per_image: float = 7.35, dets_per_image: int = COCO_DETS_PER_IMAGE,
                         crowd_fraction: float = 0.01, images_without_dets: float = 0.0, masks: bool = False,
                         size: tuple = (640, 480), seed: int = 0) -> tuple[dict, list]:
    """A COCO ground-truth dict and detector-like results for it, the same for the same arguments.

    Objects have COCO-like sizes and a long-tailed class distribution; each object yields a good hit, a
    badly localized box and a duplicate with fixed probabilities (some with a wrong class), and every image is
    filled up to ``dets_per_image`` with low-scored background boxes, whose classes include ``extra_classes``
    that have no ground truth. ``masks``: objects are ellipses, as polygons in the ground truth and compressed
    RLE in the results (slow; for small sets). Scores are continuous, so they never tie.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    counts = rng.poisson(objects_per_image, num_images)
    image = np.repeat(np.arange(num_images), counts)
    n = len(image)
    w = np.exp(rng.uniform(np.log(6.0), np.log(0.6 * width), n))
    h = np.minimum(w * np.exp(rng.normal(0.0, 0.4, n)), 0.9 * height)
    boxes = np.stack([rng.uniform(0, width - w), rng.uniform(0, height - h), w, h], 1)
    weights = 1.0 / np.arange(1, num_classes + 1) ** 0.7
    cls = rng.choice(num_classes, n, p=weights / weights.sum())
    crowd = rng.random(n) < crowd_fraction

    det_image, det_cls, det_boxes, det_score = [], [], [], []
    for share, jitter, wrong_class, (alpha, beta) in _DERIVED:
        pick = np.flatnonzero(~crowd & (rng.random(n) < share))
        x, y, bw, bh = boxes[pick].T
        bw2, bh2 = bw * np.exp(rng.normal(0, jitter, len(pick))), bh * np.exp(rng.normal(0, jitter, len(pick)))
        x2 = np.clip(x + bw * rng.normal(0, jitter, len(pick)), 0, width - 1)
        y2 = np.clip(y + bh * rng.normal(0, jitter, len(pick)), 0, height - 1)
        det_boxes.append(np.stack([x2, y2, np.minimum(bw2, width - x2), np.minimum(bh2, height - y2)], 1))
        flip = rng.random(len(pick)) < wrong_class
        det_cls.append(np.where(flip, rng.integers(0, num_classes + extra_classes, len(pick)), cls[pick]))
        det_image.append(image[pick])
        det_score.append(rng.beta(alpha, beta, len(pick)))
    derived = np.bincount(np.concatenate(det_image), minlength=num_images)
    background = np.maximum(dets_per_image - derived, 0)
    m = background.sum()
    bw = np.exp(rng.uniform(np.log(4.0), np.log(0.5 * width), m))
    bh = np.minimum(bw * np.exp(rng.normal(0.0, 0.5, m)), 0.9 * height)
    det_boxes.append(np.stack([rng.uniform(0, width - bw), rng.uniform(0, height - bh), bw, bh], 1))
    det_cls.append(rng.integers(0, num_classes + extra_classes, m))
    det_image.append(np.repeat(np.arange(num_images), background))
    det_score.append(rng.beta(1.2, 6.0, m))
    det_image, det_cls, det_score = (np.concatenate(parts) for parts in (det_image, det_cls, det_score))
    det_boxes = np.round(np.concatenate(det_boxes), 2)
    silent = rng.random(num_images) < images_without_dets
    order = np.lexsort((rng.random(len(det_image)), det_image))  # by image, shuffled within it
    order = order[~silent[det_image[order]]]

    category_ids = 2 * np.arange(num_classes + extra_classes) + 1  # not contiguous, as in COCO
    images = [{"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "height": height, "width": width}
              for i in range(num_images)]
    annotations = []
    for k, (i, c, box, is_crowd) in enumerate(zip(image.tolist(), cls.tolist(), boxes.tolist(), crowd.tolist())):
        x, y, bw, bh = box
        polygon = _ellipse_polygon(x, y, bw, bh) if masks else [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
        annotations.append({"id": k + 1, "image_id": i + 1, "category_id": int(category_ids[c]), "bbox": box,
                            "area": bw * bh, "iscrowd": int(is_crowd), "segmentation": [polygon]})
    categories = [{"id": int(c), "name": f"class{k}", "supercategory": f"group{k % 5}"}
                  for k, c in enumerate(category_ids)]
    dets = [{"image_id": i + 1, "category_id": int(category_ids[c]), "bbox": box, "score": s}
            for i, c, box, s in zip(det_image[order].tolist(), det_cls[order].tolist(), det_boxes[order].tolist(),
                                    det_score[order].tolist())]
    if masks:
        for det in dets:
            rle = mask_util.merge(mask_util.frPyObjects([_ellipse_polygon(*det["bbox"])], height, width))
            det["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    return {"images": images, "annotations": annotations, "categories": categories}, dets


def run_tidecv(tidecv, gt_path, dets_path, mode: str = "bbox", pos_thresh: float = 0.5, bg_thresh: float = 0.1):
    """tidecv's AP over 0.50:0.95 and at each threshold, dAPs and error counts (at ``pos_thresh``, which must be
    one of COCO's thresholds), and seconds per phase."""
    mode = "mask" if mode == "segm" else mode
    tic = time.perf_counter()
    gt, dets = tidecv.datasets.COCO(str(gt_path)), tidecv.datasets.COCOResult(str(dets_path))
    times = {"load": time.perf_counter() - tic}
    tide = tidecv.TIDE(pos_threshold=pos_thresh, background_threshold=bg_thresh, mode=mode)
    tic = time.perf_counter()
    tide.evaluate_range(gt, dets, mode=mode)
    times["evaluate_range"] = time.perf_counter() - tic
    tic = time.perf_counter()
    main, special = tide.get_main_errors()[dets.name], tide.get_special_errors()[dets.name]
    times["errors"] = time.perf_counter() - tic
    aps = [run.ap for run in tide.run_thresholds[dets.name]]
    counts = {error.short_name: n for error, n in tide.runs[dets.name].count_errors().items()}
    return {"AP": float(np.mean(aps)), "AP_at": aps, "main": main, "special": special, "counts": counts}, times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of COCO's 5,000 images (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo: tests/ holds tidecv's numpy-2 shims
    from benchmarks.diagnosis.tide import evaluate_tide
    from tests.tidecv_compat import import_tidecv

    num_images = max(1, round(COCO_IMAGES * args.scale))
    tic = time.perf_counter()
    gt, dets = synthetic_result_set(num_images, seed=args.seed)
    print(f"synthetic set: {num_images} images, {sum(not a['iscrowd'] for a in gt['annotations'])} objects "
          f"(+{sum(a['iscrowd'] for a in gt['annotations'])} crowd), {len(dets)} detections "
          f"({time.perf_counter() - tic:.1f} s to generate)")
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, dets_path = Path(tmp) / "gt.json", Path(tmp) / "dets.json"
        gt_path.write_text(json.dumps(gt))
        dets_path.write_text(json.dumps(dets))
        del gt, dets
        tidecv = import_tidecv()
        tic = time.perf_counter()
        ours = evaluate_tide(gt_path, dets_path)
        ours_time = time.perf_counter() - tic
        theirs, times = run_tidecv(tidecv, gt_path, dets_path)
    tidecv_time = sum(times.values())
    print(f"transferlab evaluate_tide: {ours_time:7.2f} s  (from the json files: load, AP@[.50:.95], errors, dAPs)")
    print(f"tidecv 1.0.1:              {tidecv_time:7.2f} s  (" + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
          + ")")
    print(f"speed-up: {tidecv_time / ours_time:.1f}x")
    print(f"AP50 {ours['AP50']:.3f} (tidecv {theirs['AP_at'][0]:.3f}), AP {ours['AP']:.3f} (tidecv {theirs['AP']:.3f})")
    print("dAP          " + " ".join(f"{t:>8}" for t in (*ours["main"], *ours["special"])))
    print("transferlab  " + " ".join(f"{v:8.3f}" for v in (*ours["main"].values(), *ours["special"].values())))
    print("tidecv       " + " ".join(f"{theirs[group][t]:8.3f}" for group in ("main", "special") for t in ours[group]))
    worst = max(abs(ours[group][t] - theirs[group][t]) for group in ("main", "special") for t in ours[group])
    print(f"largest dAP difference: {worst:.2e}; AP difference {abs(ours['AP'] - theirs['AP']):.2e}")
    if worst > 0.01:
        sys.exit("dAPs differ by more than 0.01")


if __name__ == "__main__":
    main()
