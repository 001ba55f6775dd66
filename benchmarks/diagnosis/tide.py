"""TIDE error diagnosis (Bolya et al., ECCV 2020) of COCO-format detections, vectorized with numpy.

Every false positive among an image's top ``max_dets`` detections gets one of TIDE's detection errors, and every
object that no error could have claimed is a Miss, exactly as tidecv 1.0.1 assigns them (tidecv/quantify.py):

- Bkg:  the image has no (non-crowd) object;
- Loc:  its best IoU with an object of its class is in [bg_thresh, pos_thresh];
- Cls:  IoU >= pos_thresh with an object of another class;
- Dupe: IoU >= pos_thresh with an object of its class that a higher-scored detection already matched;
- Bkg:  IoU <= bg_thresh with every object;
- Both: anything else (wrong class and badly localized).

An error type's dAP is how much AP rises when TIDE's oracle fixes that type alone: a Loc or Cls error becomes a
true positive of the object it points at (only the highest-scored such error per object, and only if the object
is unmatched; the others are removed), Dupe, Bkg and Both detections are removed, and Miss removes the missed
objects from the count. Special errors: FalsePos scores every false positive 0, FalseNeg removes every unmatched
object. Why not tidecv itself: it loops over detections in Python (on a COCO-sized result set, 500k detections,
it takes ~14x as long: benchmarks/perf/tide_speed.py), has no per-class breakdown (tide#11), and divides by zero
where a fix leaves nothing to average (tide#10, #16, #39).

Two APs, on purpose, so that both match their references:

- ``AP50`` and ``AP`` (0.50:0.95) are COCO's and equal pycocotools': per class, precision interpolated at the
  101 recalls ``np.linspace(0, 1, 101)``, averaged over the classes that have ground truth.
- every dAP is a difference of tidecv's own AP at ``pos_thresh``, computed as tidecv does: recall points
  ``k / 100`` (which differ from linspace's ``k * 0.01`` in the last bit, so a recall of exactly k/100 can
  interpolate differently) and a mean over every class with ground truth *or* detections, a class without
  ground truth counting 0 (tide#28), a class that a fix leaves with neither dropping out of the mean.
  So dAPs are relative to tidecv's AP, which is COCO's AP50 when every class with detections has ground truth.

Defined where tidecv crashes or pycocotools says -1:

- no class has ground truth (e.g. an empty image set): AP50 = AP = 0;
- nothing to evaluate (no ground truth and no counted detection): every dAP is 0;
- a fix that leaves no class with ground truth or detections gives AP 100 (nothing is left to get wrong): with no
  detections at all, Miss = FalseNeg = 100; with only background detections and no ground truth, Bkg = 100;
- per class, a class without ground truth has AP50 = AP = 0 (as in TIDE) but is left out of the overall AP, a
  class that a fix empties has AP 100 after it, and one outside TIDE's mean (its only detections lie in crowd
  regions) has dAPs 0.

Conventions shared with the references: ``max_dets`` keeps each image's top detections by score over all classes
(TIDE and Detectron2 cap per image; pycocotools caps per image and class, which is the same whenever no image has
more than ``max_dets`` detections). Crowd regions (``iscrowd``; VOC's ``difficult`` is not read, as in both
references) are not objects: an unmatched detection of their class whose area lies in one (intersection over
detection area) at or above the IoU threshold is left out of the AP (tidecv: strictly above). Like tidecv, it
still gets an error type, which ``counts`` include, and if it is a Loc/Cls error it can claim an object (no Miss
then) and be promoted by that fix. Score ties keep image-id order, then file order (pycocotools' order).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from operator import itemgetter

import numpy as np
import pycocotools.mask as mask_util

from .inputs import check_mode, load_detections, load_ground_truth

MAIN_ERRORS = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
SPECIAL_ERRORS = ("FalsePos", "FalseNeg")
_CLS, _LOC, _BOTH, _DUPE, _BKG, _MISS = range(len(MAIN_ERRORS))  # error codes; -1: no error
COCO_IOUS = np.linspace(0.5, 0.95, 10)  # pycocotools' iouThrs, bit for bit
_COCO_RECALLS = np.linspace(0.0, 1.0, 101)  # pycocotools' recThrs
_TIDE_RECALLS = np.arange(101) / 100  # tidecv's
_BATCH_PAIRS = 1 << 21  # padded detection x object pairs per batch of images: bounds the memory to ~0.2 GB


@dataclass
class _Objects:
    """Detections or ground-truth objects of all images in flat arrays, grouped by image."""

    cls: np.ndarray  # index into the sorted category ids
    geometry: object  # N x 4 xywh boxes (bbox) or a list of N RLEs (segm)
    starts: np.ndarray  # image i holds starts[i]:starts[i + 1]
    score: np.ndarray | None = None


@dataclass
class _Assignment:
    """What matching says about every kept detection and every object."""

    coco_tp: np.ndarray  # [IoU threshold, detection] true positive at COCO_IOUS
    coco_ignored: np.ndarray  # [IoU threshold, detection] inside a crowd region
    tide_tp: np.ndarray  # true positive at pos_thresh
    tide_ignored: np.ndarray  # left out of the AP at pos_thresh: unmatched, in a crowd region of its class
    error: np.ndarray  # error code of each detection, -1 for none
    fix_cls: np.ndarray  # class a Loc/Cls error becomes a true positive of when fixed, -1: it is removed instead
    used: np.ndarray  # object matched at pos_thresh
    miss: np.ndarray  # object that is a Miss error


def _column(records: list, key: str, dtype) -> np.ndarray:
    return np.fromiter(map(itemgetter(key), records), dtype=dtype, count=len(records))


def _group(coco, records: list, mode: str, image, category_ids, num_images: int, order, score=None) -> _Objects:
    """``records[order]`` (``image``: their image indices) as flat arrays; ``order`` must group them by image."""
    cls = np.searchsorted(category_ids, _column(records, "category_id", np.int64))
    if mode == "bbox":
        boxes = chain.from_iterable(map(itemgetter("bbox"), records))
        geometry = np.fromiter(boxes, dtype=np.float64, count=4 * len(records)).reshape(-1, 4)[order]
    else:  # polygons and uncompressed RLE as pycocotools reads them
        geometry = [coco.annToRLE(records[i]) for i in order]
    starts = np.searchsorted(image[order], np.arange(num_images + 1))
    return _Objects(cls[order], geometry, starts, None if score is None else score[order])


def _ground_truth(coco, image_ids, category_ids, mode: str) -> tuple[_Objects, _Objects]:
    """Objects and crowd regions, each image's in file order (the order pycocotools and tidecv match in)."""
    annotations = coco.dataset["annotations"]
    parts = []
    for crowd in (False, True):
        records = [a for a in annotations if bool(a.get("iscrowd", 0)) == crowd]
        image = np.searchsorted(image_ids, _column(records, "image_id", np.int64))
        parts.append(_group(coco, records, mode, image, category_ids, len(image_ids), np.argsort(image, kind="stable")))
    return parts[0], parts[1]


def _detections(coco, records: list, image_ids, category_ids, mode: str, max_dets: int) -> _Objects:
    """Each image's top ``max_dets`` detections, best score first (ties in file order)."""
    image = np.searchsorted(image_ids, _column(records, "image_id", np.int64))
    score = _column(records, "score", np.float64)
    order = np.lexsort((-score, image))
    starts = np.searchsorted(image[order], np.arange(len(image_ids) + 1))
    order = order[np.arange(len(order)) - starts[image[order]] < max_dets]
    return _group(coco, records, mode, image, category_ids, len(image_ids), order, score)


def _batches(det_counts, object_counts) -> list:
    """Images with detections in batches of similar object count whose padded pair count stays within budget."""
    images = np.flatnonzero(det_counts)
    images = images[np.argsort(object_counts[images], kind="stable")]
    batches, start, widest = [], 0, 0
    for end, image in enumerate(images):
        widest = max(widest, det_counts[image])
        if end > start and (end - start + 1) * widest * max(object_counts[image], 1) > _BATCH_PAIRS:
            batches.append(images[start:end])
            start, widest = end, det_counts[image]
    if start < len(images):
        batches.append(images[start:])
    return batches


def _slots(starts, images):
    """Batch row, slot in the row and flat index of every object of ``images``, and the row width."""
    counts = starts[images + 1] - starts[images]
    row = np.repeat(np.arange(len(images)), counts)
    slot = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    return row, slot, starts[images][row] + slot, int(counts.max(initial=0))


def _padded(values, slots, rows: int, fill):
    row, slot, flat, width = slots
    out = np.full((rows, width) + values.shape[1:], fill, dtype=values.dtype)
    out[row, slot] = values[flat]
    return out


def _box_ious(dt, gt, crowd):
    """IoU of xywh boxes [B, D, 4] x [B, G, 4] with pycocotools' arithmetic, so that thresholds cut identically.

    Against a crowd region: intersection over the detection's area. ``crowd``: whether every box of ``gt`` is one,
    or a [B, 1, G] mask of those that are. Zero-size padding boxes give 0.
    """
    dx, dy, dw, dh = (dt[..., k, None] for k in range(4))
    gx, gy, gw, gh = (gt[..., None, :, k] for k in range(4))
    inter = np.minimum(dx + dw, gx + gw)
    inter -= np.maximum(dx, gx)
    h = np.minimum(dy + dh, gy + gh)
    h -= np.maximum(dy, gy)
    inter.clip(0.0, None, out=inter)  # no overlap in x or in y: 0, else width * height as pycocotools multiplies
    inter *= h.clip(0.0, None, out=h)
    if isinstance(crowd, np.ndarray):
        union = np.where(crowd, dw * dh, dw * dh + gw * gh - inter)
    else:
        union = np.broadcast_to(dw * dh, inter.shape) if crowd else dw * dh + gw * gh - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def _mask_ious(det: _Objects, objects: _Objects, images, shape, crowd):
    """Mask IoU [B, D, G] by pycocotools, one image at a time; padding stays 0. ``crowd``: whether every object is
    a crowd region, or a flag per object of ``objects``."""
    out = np.zeros(shape)
    for row, image in enumerate(images):
        dt = det.geometry[det.starts[image]:det.starts[image + 1]]
        gt = objects.geometry[objects.starts[image]:objects.starts[image + 1]]
        if dt and gt:
            flags = (crowd[objects.starts[image]:objects.starts[image + 1]].astype(int).tolist()
                     if isinstance(crowd, np.ndarray) else [int(crowd)] * len(gt))
            out[row, :len(dt), :len(gt)] = np.asarray(mask_util.iou(dt, gt, flags)).reshape(len(dt), len(gt))
    return out


def _greedy_match(candidates, thresholds, last_on_tie: bool):
    """COCO's greedy matching at several IoU thresholds at once, vectorized over the images of a batch.

    In score order each detection takes the free object it overlaps most, if the IoU reaches the threshold.
    ``candidates`` [B, D, G] holds IoUs, -1 where the classes differ. Returns the matched object [T, B, D], -1 for
    none. Equal IoUs go to the last object for pycocotools, the first for tidecv (``last_on_tie``).
    """
    batch, num_dets, num_objects = candidates.shape
    match = np.full((len(thresholds), batch, num_dets), -1)
    if num_objects == 0:
        return match
    # only detections that reach some threshold take part; packing them keeps the loop to the busiest image
    rows, dets = np.nonzero(candidates.max(-1) >= thresholds.min())
    if len(rows) == 0:
        return match
    per_row = np.bincount(rows, minlength=batch)
    packed_slot = np.arange(len(rows)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    packed = np.full((batch, per_row.max(), num_objects), -1.0)
    packed[rows, packed_slot] = candidates[rows, dets]
    free = np.ones((len(thresholds), batch, num_objects), dtype=bool)
    chosen = np.full((len(thresholds), batch, packed.shape[1]), -1)
    for k in range(packed.shape[1]):
        ious = np.where(free, packed[None, :, k], -1.0)
        best = num_objects - 1 - ious[..., ::-1].argmax(-1) if last_on_tie else ious.argmax(-1)
        hit = np.take_along_axis(ious, best[..., None], -1)[..., 0] >= thresholds[:, None]
        chosen[:, :, k] = np.where(hit, best, -1)
        t, b = np.nonzero(hit)
        free[t, b, best[t, b]] = False
    match[:, rows, dets] = chosen[:, rows, packed_slot]
    return match


def _assign_batch(det, objects, crowds, images, mode, pos_thresh, bg_thresh, out: _Assignment) -> None:
    """Match one batch of images at COCO's thresholds and at ``pos_thresh``, and find TIDE's errors there."""
    d_slots, g_slots, c_slots = (_slots(o.starts, images) for o in (det, objects, crowds))
    rows = len(images)
    d_cls = _padded(det.cls, d_slots, rows, -1)
    g_cls, c_cls = _padded(objects.cls, g_slots, rows, -2), _padded(crowds.cls, c_slots, rows, -2)
    if mode == "bbox":
        d_box = _padded(det.geometry, d_slots, rows, 0.0)
        ious = _box_ious(d_box, _padded(objects.geometry, g_slots, rows, 0.0), crowd=False)
        crowd_ious = _box_ious(d_box, _padded(crowds.geometry, c_slots, rows, 0.0), crowd=True)
    else:
        ious = _mask_ious(det, objects, images, (rows, d_slots[3], g_slots[3]), crowd=False)
        crowd_ious = _mask_ious(det, crowds, images, (rows, d_slots[3], c_slots[3]), crowd=True)
    same = d_cls[:, :, None] == g_cls[:, None, :]
    candidates = np.where(same, ious, -1.0)
    crowd_best = np.where(d_cls[:, :, None] == c_cls[:, None, :], crowd_ious, -1.0).max(-1, initial=-1.0)
    d_row, d_slot, d_flat, _ = d_slots
    g_row, g_slot, g_flat, num_objects = g_slots

    coco_tp = _greedy_match(candidates, COCO_IOUS, last_on_tie=True) >= 0
    out.coco_tp[:, d_flat] = coco_tp[:, d_row, d_slot]
    out.coco_ignored[:, d_flat] = (~coco_tp & (crowd_best >= COCO_IOUS[:, None, None]))[:, d_row, d_slot]

    match = _greedy_match(candidates, np.array([pos_thresh]), last_on_tie=False)[0]
    matched = match >= 0
    used = np.zeros((rows, num_objects), dtype=bool)
    r, s = np.nonzero(matched)
    used[r, match[r, s]] = True
    unmatched = (d_cls >= 0) & ~matched  # tidecv types the errors of crowd-ignored detections too
    has_objects = (g_cls >= 0).any(1, keepdims=True)
    error = np.where(unmatched & ~has_objects, _BKG, -1)
    fix_cls = np.full(error.shape, -1)
    usable = np.zeros_like(used)
    if num_objects:
        same_ious, other_ious = np.where(same, ious, 0.0), np.where(same, 0.0, ious)
        loc_target, cls_target = same_ious.argmax(-1), other_ious.argmax(-1)
        loc_iou = np.take_along_axis(same_ious, loc_target[..., None], -1)[..., 0]
        cls_iou = np.take_along_axis(other_ious, cls_target[..., None], -1)[..., 0]
        tests = (
            (_LOC, (bg_thresh <= loc_iou) & (loc_iou <= pos_thresh)),
            (_CLS, cls_iou >= pos_thresh),
            (_DUPE, np.where(used[:, None, :], same_ious, 0.0).max(-1) >= pos_thresh),
            (_BKG, ious.max(-1) <= bg_thresh),
        )
        pending = unmatched & has_objects
        for code, test in tests:
            error[pending & test] = code
            pending &= ~test
        error[pending] = _BOTH
        # A Loc/Cls error claims the object it points at; if that object is unmatched it is not a Miss, and the
        # first (highest-scored) claim on it is the one the oracle turns into its true positive.
        target = np.where(error == _LOC, loc_target, cls_target)
        claims = ((error == _LOC) | (error == _CLS)) & ~np.take_along_axis(used, target, 1)
        r, s = np.nonzero(claims)
        usable[r, target[r, s]] = True
        _, first = np.unique(r * num_objects + target[r, s], return_index=True)
        r, s = r[first], s[first]
        fix_cls[r, s] = g_cls[r, target[r, s]]

    out.tide_tp[d_flat] = matched[d_row, d_slot]
    out.tide_ignored[d_flat] = (unmatched & (crowd_best > pos_thresh))[d_row, d_slot]
    out.error[d_flat] = error[d_row, d_slot]
    out.fix_cls[d_flat] = fix_cls[d_row, d_slot]
    out.used[g_flat] = used[g_row, g_slot]
    out.miss[g_flat] = ((g_cls >= 0) & ~used & ~usable)[g_row, g_slot]


def _assign(det, objects, crowds, mode, pos_thresh, bg_thresh) -> _Assignment:
    num_dets, num_objects = len(det.cls), len(objects.cls)
    out = _Assignment(
        coco_tp=np.zeros((len(COCO_IOUS), num_dets), dtype=bool),
        coco_ignored=np.zeros((len(COCO_IOUS), num_dets), dtype=bool),
        tide_tp=np.zeros(num_dets, dtype=bool),
        tide_ignored=np.zeros(num_dets, dtype=bool),
        error=np.full(num_dets, -1),
        fix_cls=np.full(num_dets, -1),
        used=np.zeros(num_objects, dtype=bool),
        miss=np.ones(num_objects, dtype=bool),  # objects of images without detections stay Misses
    )
    object_counts = np.maximum(np.diff(objects.starts), np.diff(crowds.starts))
    for images in _batches(np.diff(det.starts), object_counts):
        _assign_batch(det, objects, crowds, images, mode, pos_thresh, bg_thresh, out)
    return out


def _class_aps(cls, tp, num_gt, recalls, order):
    """Interpolated AP (points) per class over the detections ``order`` (grouped by class, best score first).

    Precision is made monotone from the right and read at each recall point, 0 beyond the last detection,
    as pycocotools and tidecv do. NaN for a class without ground truth.
    """
    cls, tp = cls[order], tp[order]
    bounds = np.searchsorted(cls, np.arange(len(num_gt) + 1))
    aps = np.full(len(num_gt), np.nan)
    for k in np.flatnonzero(num_gt > 0):
        hits = tp[bounds[k]:bounds[k + 1]]
        if len(hits) == 0:
            aps[k] = 0.0
            continue
        true_pos = np.cumsum(hits)
        precision = np.maximum.accumulate((true_pos / np.arange(1, len(hits) + 1))[::-1])[::-1]
        found = np.searchsorted(true_pos / num_gt[k], recalls, side="left")
        aps[k] = 100.0 * np.where(found < len(hits), precision[np.minimum(found, len(hits) - 1)], 0.0).mean()
    return aps


def _tide_aps(cls, score, tp, keep, num_gt, order=None):
    """tidecv's per-class AP (0 for a class without ground truth) and which classes count in its mean.

    ``order`` sorts (class, -score) and may be reused as long as neither changes; ``keep`` selects the points.
    """
    if order is None:
        order = np.lexsort((-score, cls))
    order = order[keep[order]]
    aps = np.nan_to_num(_class_aps(cls, tp, num_gt, _TIDE_RECALLS, order), nan=0.0)
    return aps, (num_gt > 0) | (np.bincount(cls[order], minlength=len(num_gt)) > 0)


def _mean(aps, counted, empty: float) -> float:
    return float(aps[counted].mean()) if counted.any() else empty


def _fixes(det: _Objects, objects: _Objects, a: _Assignment, num_gt, order) -> dict:
    """``{error type: (per-class AP, counted classes)}`` with that type fixed by TIDE's oracle, and ``None``: as is.

    ``order`` sorts the detections by (class, -score). As in tidecv, a crowd-ignored detection stays out of every
    AP unless fixing its Loc/Cls error promotes it.
    """
    points = ~a.tide_ignored
    fixes = {None: _tide_aps(det.cls, det.score, a.tide_tp, points, num_gt, order)}
    for code in (_CLS, _LOC, _BOTH, _DUPE, _BKG):
        hit = a.error == code
        promoted = hit & (a.fix_cls >= 0)
        cls = np.where(promoted, a.fix_cls, det.cls)  # Loc keeps the class, so it keeps the order too
        fixes[MAIN_ERRORS[code]] = _tide_aps(cls, det.score, a.tide_tp | promoted, promoted | (points & ~hit),
                                             num_gt, order if code != _CLS else None)
    fixes["Miss"] = _tide_aps(det.cls, det.score, a.tide_tp, points,
                              num_gt - np.bincount(objects.cls[a.miss], minlength=len(num_gt)), order)
    fixes["FalsePos"] = _tide_aps(det.cls, a.tide_tp.astype(np.float64), a.tide_tp, points, num_gt)
    fixes["FalseNeg"] = _tide_aps(det.cls, det.score, a.tide_tp, points,
                                  np.bincount(objects.cls[a.used], minlength=len(num_gt)), order)
    return fixes


def _daps(fixes: dict, select) -> tuple[dict, dict]:
    """Main and special dAPs; ``select`` reduces (per-class AP, counted) to the number wanted."""
    base = select(*fixes[None], None)
    if base is None:
        return {t: 0.0 for t in MAIN_ERRORS}, {t: 0.0 for t in SPECIAL_ERRORS}
    main = {t: max(select(*fixes[t], 100.0) - base, 0.0) for t in MAIN_ERRORS}  # tidecv clamps main dAPs at 0
    special = {t: select(*fixes[t], 100.0) - base for t in SPECIAL_ERRORS}
    return main, special


def evaluate_tide(gt, dets, mode: str = "bbox", pos_thresh: float = 0.5, bg_thresh: float = 0.1,
                  max_dets: int = 100) -> dict:
    """TIDE's error breakdown and COCO AP, overall and per class; numbers in AP points (0-100).

    ``gt``: COCO annotation file, dict or pycocotools COCO; ``dets``: COCO results file or list of records.
    ``mode``: ``bbox`` or ``segm`` (``mask``, tidecv's name, is accepted). Returns ``{"AP50", "AP", "main": {type:
    dAP}, "special": {type: dAP}, "counts": {main type: errors}, "per_class": {name: the same five keys}}``.
    ``per_class`` lists every class with ground truth or detections; a detection error counts for the detection's
    class, a Miss for the object's. See the module docstring for which AP each number is.
    """
    mode = "segm" if mode == "mask" else mode
    coco = load_ground_truth(gt, mode)
    return evaluate_tide_loaded(coco, load_detections(dets, coco, mode), mode, pos_thresh, bg_thresh, max_dets)


def evaluate_tide_loaded(coco, records: list, mode: str = "bbox", pos_thresh: float = 0.5, bg_thresh: float = 0.1,
                         max_dets: int = 100) -> dict:
    """:func:`evaluate_tide` on a COCO index and records that ``inputs.load_detections`` already checked for
    ``mode`` (``bbox`` or ``segm``): what a diagnosis of several modes and models runs, reading every file once."""
    check_mode(mode)
    if not (0 <= bg_thresh <= pos_thresh <= 1 and pos_thresh > 0):
        raise ValueError(f"need 0 <= bg_thresh <= pos_thresh <= 1 and pos_thresh > 0, got {bg_thresh}, {pos_thresh}")
    if max_dets < 1:
        raise ValueError(f"max_dets must be at least 1, got {max_dets}")
    category_ids = np.array(sorted(coco.cats), dtype=np.int64)
    names = [str(coco.cats[i]["name"]) for i in category_ids]
    if len(set(names)) != len(names):
        raise ValueError(f"category names must be unique, got {names}")
    image_ids = np.array(sorted(coco.imgs), dtype=np.int64)

    objects, crowds = _ground_truth(coco, image_ids, category_ids, mode)
    det = _detections(coco, records, image_ids, category_ids, mode, max_dets)
    a = _assign(det, objects, crowds, mode, pos_thresh, bg_thresh)

    num_gt = np.bincount(objects.cls, minlength=len(names))
    has_gt = num_gt > 0
    order = np.lexsort((-det.score, det.cls))
    coco_aps = np.stack([_class_aps(det.cls, a.coco_tp[t], num_gt, _COCO_RECALLS, order[~a.coco_ignored[t][order]])
                         for t in range(len(COCO_IOUS))])  # [IoU threshold, class], NaN without ground truth
    fixes = _fixes(det, objects, a, num_gt, order)
    counts = np.zeros((len(MAIN_ERRORS), len(names)), dtype=np.int64)
    errors = a.error >= 0
    np.add.at(counts, (a.error[errors], det.cls[errors]), 1)
    counts[_MISS] = np.bincount(objects.cls[a.miss], minlength=len(names))

    main, special = _daps(fixes, _mean)
    result = {
        "AP50": float(coco_aps[0, has_gt].mean()) if has_gt.any() else 0.0,
        "AP": float(coco_aps[:, has_gt].mean()) if has_gt.any() else 0.0,
        "main": main,
        "special": special,
        "counts": {t: int(n) for t, n in zip(MAIN_ERRORS, counts.sum(1))},
        "per_class": {},
    }
    for k in np.flatnonzero(has_gt | (np.bincount(det.cls, minlength=len(names)) > 0)):
        main, special = _daps(fixes, lambda aps, counted, empty, k=k: float(aps[k]) if counted[k] else empty)
        result["per_class"][names[k]] = {
            "AP50": float(coco_aps[0, k]) if has_gt[k] else 0.0,
            "AP": float(coco_aps[:, k].mean()) if has_gt[k] else 0.0,
            "main": main,
            "special": special,
            "counts": {t: int(n) for t, n in zip(MAIN_ERRORS, counts[:, k])},
        }
    return result
