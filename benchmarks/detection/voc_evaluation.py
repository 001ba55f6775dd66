"""PASCAL VOC box AP as Detectron2's PascalVOCDetectionEvaluator computes it, in percent, in numpy.

That evaluator (the detection metric of MoCo, HPT and the Exemplar paper) writes every detection into a text
file per class and runs py-faster-rcnn's ``voc_eval`` per class and IoU threshold 0.50:0.05:0.95. The same
numbers here, without Detectron2 and without the text round trip:

- Ground truth is what the VOC xml holds: 1-based, inclusive pixel boxes (a box is ``xmax - xmin + 1`` wide).
  Objects of classes outside ``class_names`` are not evaluated.
- Detections are COCO-style result records in Detectron2's 0-based coordinates (``bbox`` = ``[x, y, w, h]``,
  ``category_id`` = index in ``class_names`` + 1). They become ``[x + 1, y + 1, x + w, y + h]``, and, as the
  evaluator's text lines do, scores are rounded to 3 decimals and coordinates to 1: scores that differ only in
  the 4th decimal tie, and a box can land exactly on an IoU threshold.
- Per class, detections are taken by descending score; each goes to the object of its class in its image that it
  overlaps most (the first in xml order on equal IoU), IoU with the +1 pixel convention. Above the threshold
  (strictly) it is a true positive if that object is not difficult and not yet taken, is skipped if the object is
  difficult, and is a false positive otherwise. Recall counts the non-difficult objects.
- AP is VOC07's 11-point interpolation (``use_07_metric``) or the area under the precision envelope (VOC2010+).
  The 11 recall points are Detectron2's ``np.arange(0.0, 1.1, 0.1)``: its 0.3, 0.6 and 0.7 are a hair above
  (3 of 10 objects found is below the 0.3 point), and IoU thresholds are ``t / 100.0`` as Detectron2 forms them.

Equal scores (common: 3 decimals leave 1000 levels for thousands of detections per class): Detectron2 ranks with
``np.argsort(-score)``, numpy's unstable default sort, whose order inside a tie depends on the numpy version and
the CPU (numpy 2's AVX-512, AVX2 and baseline kernels give three different orders). Its numbers move with it: on
a VOC07-sized synthetic set (300k detections; IoU 0.5 and 0.75), Detectron2 on one machine with numpy's AVX-512
and with its baseline kernels differs by up to 0.4 AP in a class and 0.04 in the mean. Here ties keep the order
of ``results`` (Detectron2's det-file order), the same on every machine. The two agree whenever the order inside
each tie cannot change the precision envelope (ties of false positives only, of true positives only, or with
detections on difficult objects), as on the parity fixture; a tie of a true and a false positive can move a
class's AP either way (up to 0.6 AP in a class, 0.02 in the mean, on that synthetic set). With numpy's default
sort in place of the stable one the numbers are Detectron2's bit for bit on the same machine.
"""
from __future__ import annotations

import numbers
import warnings
from collections.abc import Hashable, Sequence

import numpy as np

from ..data.coco_json import is_finite_number

VOC_METRICS = ("AP", "AP50", "AP75")  # the summary Detectron2's PascalVOCDetectionEvaluator prints
IOU_THRESHOLDS = tuple(t / 100.0 for t in range(50, 100, 5))
RECALL_POINTS = np.arange(0.0, 1.1, 0.1)  # Detectron2's: 0.30000000000000004, 0.6000000000000001, ..., not k / 10


def evaluate_voc(ground_truth: dict[str, list[dict]], results: list[dict], class_names: Sequence[str],
                 use_07_metric: bool) -> dict:
    """``{"bbox": {"AP", "AP50", "AP75", "AP50-<class>" for every class}}`` in percent, AP being the mean over the
    IoU thresholds of the mean over classes, as Detectron2's evaluator reports (plus the per-class AP50).

    ``ground_truth`` maps every image id (the VOC file id, e.g. ``"000005"``; images without objects included) to
    its objects ``{"name", "bbox": [xmin, ymin, xmax, ymax] from the xml, "difficult"}``
    (``benchmarks.data.voc.read_voc_split``);
    ``results`` are Detectron2-style result records ``{"image_id", "category_id", "score", "bbox"}`` (module
    docstring), checked, with the first bad one named in the error. A class with detections
    but no non-difficult object has AP NaN under the area metric and 0 under the 11-point one, with a warning, as in
    Detectron2 (whose ``rec = tp / npos`` divides 0 by 0); the means are NaN then too. A class with neither has AP 0.
    """
    table = voc_class_aps(ground_truth, results, class_names, use_07_metric)
    per_threshold = {round(t * 100): np.mean(row) for t, row in zip(IOU_THRESHOLDS, table)}
    metrics = {"AP": float(np.mean(list(per_threshold.values()))), "AP50": float(per_threshold[50]),
               "AP75": float(per_threshold[75])}
    metrics.update({f"AP50-{name}": float(ap) for name, ap in zip(class_names, table[0])})
    return {"bbox": metrics}


def voc_class_aps(ground_truth: dict[str, list[dict]], results: list[dict], class_names: Sequence[str],
                  use_07_metric: bool, iou_thresholds: Sequence[float] = IOU_THRESHOLDS) -> np.ndarray:
    """AP in percent of every class at every IoU threshold, ``[threshold, class]``; inputs as for ``evaluate_voc``."""
    image_index = {image_id: k for k, image_id in enumerate(ground_truth)}
    gt_image, gt_class, gt_boxes, gt_difficult = _ground_truth_arrays(ground_truth, class_names)
    det_image, det_class, det_scores, det_boxes = _result_arrays(results, image_index, len(class_names))
    table = np.zeros((len(iou_thresholds), len(class_names)))
    undefined = []
    for c, name in enumerate(class_names):
        gts, dets = gt_class == c, det_class == c
        npos = int(np.count_nonzero(gts & ~gt_difficult))
        if npos == 0:
            if dets.any():
                undefined.append(name)
                table[:, c] = 0.0 if use_07_metric else np.nan
            continue
        overlap, best, difficult = _best_matches(det_image[dets], det_scores[dets], det_boxes[dets], gt_image[gts],
                                                 gt_boxes[gts], gt_difficult[gts], len(image_index))
        for k, threshold in enumerate(iou_thresholds):
            hit = overlap > threshold
            counted = hit & ~difficult
            tp = np.zeros(len(overlap))
            candidates = np.flatnonzero(counted)
            _, first = np.unique(best[candidates], return_index=True)  # the highest-ranked detection of an object
            tp[candidates[first]] = 1.0
            fp = (~hit | counted).astype(float) - tp
            table[k, c] = _average_precision(tp, fp, npos, use_07_metric) * 100
    if undefined:
        warnings.warn(f"{', '.join(undefined)}: detections but no non-difficult object, so recall is 0/0 and AP is "
                      f"{'0 (11-point metric)' if use_07_metric else 'NaN (area metric), and so are the means'}, "
                      "as in Detectron2", RuntimeWarning, stacklevel=2)
    return table


def _best_matches(image, scores, boxes, gt_image, gt_boxes, gt_difficult, num_images):
    """For a class's detections ranked by score (ties in input order): the IoU with the object of the class in the
    same image that it overlaps most (-inf without one), that object's index (-1) and whether it is difficult."""
    order = np.argsort(-scores, kind="stable")
    image, boxes = image[order], boxes[order]
    # every (detection, object of its image) pair; objects are grouped by image in xml order
    per_image = np.bincount(gt_image, minlength=num_images)
    first_gt = np.cumsum(per_image) - per_image
    pairs_per_det = per_image[image]
    pair_start = np.cumsum(pairs_per_det) - pairs_per_det
    pair_det = np.repeat(np.arange(len(image)), pairs_per_det)
    pair_gt = np.repeat(first_gt[image] - pair_start, pairs_per_det) + np.arange(len(pair_det))
    det, gt = boxes[pair_det], gt_boxes[pair_gt]
    # Detectron2's arithmetic, term by term, so that an IoU on a threshold compares the same way
    iw = np.maximum(np.minimum(gt[:, 2], det[:, 2]) - np.maximum(gt[:, 0], det[:, 0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(gt[:, 3], det[:, 3]) - np.maximum(gt[:, 1], det[:, 1]) + 1.0, 0.0)
    inters = iw * ih
    union = ((det[:, 2] - det[:, 0] + 1.0) * (det[:, 3] - det[:, 1] + 1.0)
             + (gt[:, 2] - gt[:, 0] + 1.0) * (gt[:, 3] - gt[:, 1] + 1.0) - inters)
    iou = inters / union
    overlap = np.full(len(image), -np.inf)
    best = np.full(len(image), -1)
    with_gt = pairs_per_det > 0
    if with_gt.any():
        overlap[with_gt] = np.maximum.reduceat(iou, pair_start[with_gt])
        at_max = np.flatnonzero(iou == overlap[pair_det])
        dets_at_max, first = np.unique(pair_det[at_max], return_index=True)
        best[dets_at_max] = pair_gt[at_max[first]]
    return overlap, best, np.where(best >= 0, gt_difficult[best], False)


def _average_precision(tp: np.ndarray, fp: np.ndarray, npos: int, use_07_metric: bool) -> float:
    """VOC AP of a ranked list of true/false positives (both 0 for a detection on a difficult object)."""
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / float(npos)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use_07_metric:
        envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or beyond
        ap = 0.0
        for k in np.searchsorted(recall, RECALL_POINTS, side="left"):  # summed in Detectron2's order
            ap = ap + (envelope[k] if k < len(recall) else 0.0) / 11.0
        return float(ap)
    recall = np.concatenate(([0.0], recall, [1.0]))
    envelope = np.maximum.accumulate(np.concatenate(([0.0], precision, [0.0]))[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def _round_as_text(values: np.ndarray, decimals: int) -> np.ndarray:
    """``float(f"{value:.{decimals}f}")`` of every value (exact decimal rounding, ties to even), as Detectron2's
    det-file lines round. The scaled product can be off by an ulp, so values next to a midpoint take the slow path."""
    scale = 10.0 ** decimals
    scaled = values * scale
    rounded = np.rint(scaled) / scale
    near_midpoint = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
    rounded[near_midpoint] = [float(f"{value:.{decimals}f}") for value in values[near_midpoint]]
    return rounded


def _ground_truth_arrays(ground_truth: dict, class_names: Sequence[str]):
    """Image index, class index (-1 for other classes), box and difficult flag of every object, image by image."""
    if not isinstance(ground_truth, dict):
        raise ValueError(f"ground_truth must map image ids to lists of objects, got a {type(ground_truth).__name__}")
    classes = {name: c for c, name in enumerate(class_names)}
    image, cls, boxes, difficult = [], [], [], []
    for k, (image_id, objects) in enumerate(ground_truth.items()):
        if not isinstance(objects, list):
            raise ValueError(f"ground truth of image {image_id!r}: expected a list of objects, got {objects!r}")
        for obj in objects:
            bbox = obj.get("bbox") if isinstance(obj, dict) else None
            if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)
                    and bbox[2] >= bbox[0] and bbox[3] >= bbox[1] and isinstance(obj.get("name"), str)):
                raise ValueError(f"ground truth of image {image_id!r}: malformed object {obj!r}; expected "
                                 "{'name': str, 'bbox': [xmin, ymin, xmax, ymax] with xmax >= xmin, ymax >= ymin, "
                                 "'difficult': bool}")
            image.append(k)
            cls.append(classes.get(obj["name"], -1))
            boxes.append(bbox)
            difficult.append(bool(obj.get("difficult", False)))
    return (np.array(image, dtype=np.int64), np.array(cls, dtype=np.int64),
            np.array(boxes, dtype=float).reshape(-1, 4), np.array(difficult, dtype=bool))


def _result_arrays(results: list, image_index: dict, num_classes: int):
    """Image index, class index, rounded score and VOC box (1-based, rounded) of every result record."""
    if not isinstance(results, list):
        raise ValueError(f"results must be a list of result records, got a {type(results).__name__}")
    if not _plainly_valid(results, image_index, num_classes):
        for position, record in enumerate(results):
            problem = _record_problem(record, image_index, num_classes)
            if problem:
                raise ValueError(f"result record #{position} {record!r}: {problem}")
    image = np.array([image_index[r["image_id"]] for r in results], dtype=np.int64)
    cls = np.array([r["category_id"] for r in results], dtype=np.int64) - 1
    scores = _round_as_text(np.array([r["score"] for r in results], dtype=float), 3)
    x, y, w, h = np.array([r["bbox"] for r in results], dtype=float).reshape(-1, 4).T
    boxes = _round_as_text(np.stack([x + 1, y + 1, x + w, y + h], axis=1), 1)
    return image, cls, scores, boxes


def _plainly_valid(results: list, image_index: dict, num_classes: int) -> bool:
    """True if every record passes ``_record_problem``, checked a column at a time (VOC07 test gives a few hundred
    thousand records); False means: find the bad record one by one."""
    try:
        if {type(r) for r in results} - {dict}:
            return False
        image_ids, category_ids, scores, boxes = ([r[key] for r in results]
                                                  for key in ("image_id", "category_id", "score", "bbox"))
        if not image_index.keys() >= set(image_ids):
            return False
    except (KeyError, TypeError):  # a missing key, an unhashable id
        return False
    if ({type(c) for c in category_ids} - {int} or {type(s) for s in scores} - {int, float}
            or {type(b) for b in boxes} - {list} or {len(b) for b in boxes} - {4}
            or {type(v) for b in boxes for v in b} - {int, float}):
        return False
    category_ids, scores = np.array(category_ids), np.array(scores, dtype=float)
    boxes = np.array(boxes, dtype=float).reshape(-1, 4)
    return bool(np.all((category_ids >= 1) & (category_ids <= num_classes)) and np.isfinite(scores).all()
                and np.isfinite(boxes).all() and (boxes[:, 2:] >= 0).all())


def _record_problem(record, image_index: dict, num_classes: int) -> str | None:
    if not isinstance(record, dict):
        return "not a dict"
    image_id = record.get("image_id")
    if not isinstance(image_id, Hashable) or image_id not in image_index:
        return (f"image_id {image_id!r} is not an image of the ground truth"
                + ("" if isinstance(image_id, str) else " (VOC file ids are strings such as '000005')"))
    category_id = record.get("category_id")
    if not (isinstance(category_id, numbers.Integral) and not isinstance(category_id, bool)
            and 1 <= category_id <= num_classes):
        return f"category_id {category_id!r} is not one of 1..{num_classes} (index in class_names + 1)"
    if not is_finite_number(record.get("score")):
        return f"score {record.get('score')!r} is not a finite number"
    bbox = record.get("bbox")
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)):
        return f"bbox {bbox!r} is not [x, y, width, height] of 4 finite numbers"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"bbox {bbox!r} has a negative width or height"
    return None
