"""Hoiem-style analysis of top-ranked false positives (Hoiem, Chodpathumwan & Dai, ECCV 2012).

The Exemplar paper (Zhao et al., ICLR 2021, Fig. 1 and Fig. 7) uses it to show that detectors
fine-tuned from supervised pretraining make more localization errors than MoCo ones. Per category,
detections are ranked by score and matched VOC-style: greedily by score, each detection to the
object of its class it overlaps most; at IoU >= 0.5 it is a true positive unless that object was
already detected. Every false positive gets one type, tested in this order (Hoiem's toolkit):

- Loc: the right class with 0.1 <= IoU < 0.5, or a duplicate detection of an object;
- Sim: IoU >= 0.1 with an object of a similar class (the other-class object it overlaps most decides);
- Oth: the same with an object of a dissimilar class;
- BG:  everything else (background or unlabeled objects).

Detections on ignore regions are neither true nor false positives: best match at IoU >= 0.5 an object
marked ``ignore`` or ``difficult`` (VOC), or at least half of the detection inside a crowd region of
its class (COCO's crowd overlap). Overlaps are box IoU (``bbox``) or mask IoU (``segm``).
"""
from __future__ import annotations

import os
import warnings
from collections import Counter

import numpy as np
import yaml

from .inputs import check_mode, load_detections, load_ground_truth
from .tide import _batches, _box_ious, _column, _group, _mask_ious, _padded, _slots

FP_TYPES = ("Loc", "Sim", "Oth", "BG")
FP_POINTS = (25, 50, 100, 200, 400)  # "total false positives" on the x axis of the paper's Fig. 1
POS_THRESH, LOW_THRESH = 0.5, 0.1

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
# Hoiem et al.'s similar classes on VOC: their toolkit names e.g. bird, boat, car for aeroplane and person, cat,
# horse for dog. Groups may overlap; two classes are similar when some group holds both.
VOC_SIMILAR = {
    "animals": ("bird", "cat", "cow", "dog", "horse", "person", "sheep"),
    "vehicles": ("aeroplane", "bicycle", "boat", "bus", "car", "motorbike", "train"),
    "furniture": ("chair", "diningtable", "sofa"),
    "aeroplane-bird": ("aeroplane", "bird"),
}
SIMILAR_KEYWORDS = ("voc", "supercategory", "none")

_COR, _IGNORED = len(FP_TYPES), -1  # kind codes besides the FP types' indices


def _groups_from_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"similar-class mapping file not found: {path} "
                                f"(or give one of {', '.join(SIMILAR_KEYWORDS)})")
    try:
        with open(path) as file:
            groups = yaml.safe_load(file)  # JSON is YAML too
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON or YAML: {error}") from error
    if not (isinstance(groups, dict) and groups and all(
            isinstance(members, list) and all(isinstance(name, str) for name in members)
            for members in groups.values())):
        raise ValueError(f"{path}: expected a mapping from group name to a list of category names, "
                         'e.g. {"animals": ["cat", "dog"], "vehicles": ["car", "bus"]}')
    return groups


def resolve_similar(categories: list, similar=None) -> tuple[dict, str]:
    """Similar-class groups ``{group: [category names]}`` for ``categories`` and where they came from.

    ``similar`` is None (VOC's groups when every category is a VOC class, else COCO supercategories),
    ``"voc"``, ``"supercategory"``, ``"none"``, a ``{group: [names]}`` dict, or a JSON/YAML file holding one.
    """
    names = [category["name"] for category in categories]
    if similar is None:
        similar = "voc" if set(names) <= set(VOC_CLASSES) else "supercategory"
    if isinstance(similar, dict):
        groups, source = similar, "mapping"
    elif similar == "voc":
        groups, source = VOC_SIMILAR, "voc"
    elif similar == "none":
        groups, source = {}, "none"
    elif similar == "supercategory":
        source, groups = "supercategory", {}
        missing = [category["name"] for category in categories if not category.get("supercategory")]
        if missing:
            warnings.warn(f"categories without a supercategory have no similar classes: {', '.join(missing)}",
                          stacklevel=2)
        for category in categories:
            if category.get("supercategory"):
                groups.setdefault(str(category["supercategory"]), []).append(category["name"])
    else:
        source = os.fspath(similar)
        groups = _groups_from_file(source)
    known = set(names)
    unknown = sorted({name for members in groups.values() for name in members} - known)
    if unknown and source != "voc":  # the built-in VOC groups also serve subsets of VOC
        warnings.warn(f"similar classes ({source}): not categories of the ground truth, ignored: "
                      f"{', '.join(unknown)}", stacklevel=2)
    groups = {str(group): [name for name in members if name in known] for group, members in groups.items()}
    return {group: members for group, members in groups.items() if members}, source


def _classify_detections(best, best_iou, ignore, crowd_iou, other_cls, other_iou, det_cls, similar):
    """Kind code and confused class of every detection, from its overlaps; detections in score order per image.

    ``best`` is the index of the non-crowd object of its class it overlaps most, ``best_iou`` that IoU (-1 without
    one), ``ignore`` a flag per object, ``crowd_iou`` the largest share of it inside a crowd region of its class,
    ``other_*`` the class and IoU of the other-class annotation it overlaps most.
    """
    num_dets = len(det_cls)
    kinds, confused = np.full(num_dets, FP_TYPES.index("BG")), np.full(num_dets, -1)
    # greedy in score order, each detection to its best object: the first claim on an object wins, later ones
    # are duplicates (detections are grouped by image, so an object's claims are in score order)
    claim = np.flatnonzero(best_iou >= POS_THRESH)
    ignored = ignore[best[claim]]
    kinds[claim[ignored]] = _IGNORED
    claim = claim[~ignored]
    _, first = np.unique(best[claim], return_index=True)
    duplicate = np.zeros(num_dets, dtype=bool)
    duplicate[claim] = True
    duplicate[claim[first]] = False
    kinds[claim[first]] = _COR
    false_positive = kinds == FP_TYPES.index("BG")
    kinds[false_positive & (crowd_iou >= POS_THRESH)] = _IGNORED
    false_positive &= kinds != _IGNORED
    loc = false_positive & (duplicate | (best_iou >= LOW_THRESH))
    confusion = false_positive & ~loc & (other_iou >= LOW_THRESH)
    confused[confusion] = other_cls[confusion]
    is_similar = similar[det_cls, np.maximum(confused, 0)]
    kinds[loc] = FP_TYPES.index("Loc")
    kinds[confusion & is_similar] = FP_TYPES.index("Sim")
    kinds[confusion & ~is_similar] = FP_TYPES.index("Oth")
    return kinds, confused


def _overlap_batch(det, gt, crowd, images, mode, out: dict) -> None:
    """The overlaps ``_classify_detections`` reads, for the detections of one batch of images."""
    d_slots, g_slots = _slots(det.starts, images), _slots(gt.starts, images)
    rows = len(images)
    d_cls, g_cls = _padded(det.cls, d_slots, rows, -1), _padded(gt.cls, g_slots, rows, -2)
    g_crowd = _padded(crowd, g_slots, rows, False)
    if mode == "bbox":
        ious = _box_ious(_padded(det.geometry, d_slots, rows, 0.0), _padded(gt.geometry, g_slots, rows, 0.0),
                         crowd=g_crowd[:, None, :])
    else:
        ious = _mask_ious(det, gt, images, (rows, d_slots[3], g_slots[3]), crowd=crowd)
    d_row, d_slot, d_flat, _ = d_slots
    same = (d_cls[:, :, None] == g_cls[:, None, :])[d_row, d_slot]
    ious, g_crowd = ious[d_row, d_slot], g_crowd[d_row]
    object_ious = np.where(same & ~g_crowd, ious, -1.0)
    best = object_ious.argmax(1, keepdims=True)
    out["best"][d_flat] = gt.starts[images][d_row] + best[:, 0]
    out["best_iou"][d_flat] = np.take_along_axis(object_ious, best, 1)[:, 0]
    out["crowd_iou"][d_flat] = np.where(same & g_crowd, ious, 0.0).max(1, initial=0.0)
    other_ious = np.where(same, 0.0, ious)
    other = other_ious.argmax(1, keepdims=True)
    out["other_cls"][d_flat] = np.take_along_axis(_padded(gt.cls, g_slots, rows, -1)[d_row], other, 1)[:, 0]
    out["other_iou"][d_flat] = np.take_along_axis(other_ious, other, 1)[:, 0]


def _classify(coco, dets: list, mode: str, similar: np.ndarray, category_ids, max_dets: int):
    """Class index, score, kind and confused class of every detection kept (top ``max_dets`` per image), images in
    the order they first appear in ``dets``, each one's detections best score first (ties in file order)."""
    image_ids = np.array(sorted(coco.imgs), dtype=np.int64)
    image = np.searchsorted(image_ids, _column(dets, "image_id", np.int64))
    # number the images by first appearance, those without detections after them
    first_seen = np.full(len(image_ids), len(dets), dtype=np.int64)
    seen, first = np.unique(image, return_index=True)
    first_seen[seen] = first
    rank = np.empty(len(image_ids), dtype=np.int64)
    rank[np.argsort(first_seen, kind="stable")] = np.arange(len(image_ids))
    image = rank[image]
    score = _column(dets, "score", np.float64)
    order = np.lexsort((-score, image))
    starts = np.searchsorted(image[order], np.arange(len(image_ids) + 1))
    order = order[np.arange(len(order)) - starts[image[order]] < max_dets]
    det = _group(coco, dets, mode, image, category_ids, len(image_ids), order, score)

    annotations = coco.dataset["annotations"]  # every image's in file order, crowd regions among them
    gt_image = rank[np.searchsorted(image_ids, _column(annotations, "image_id", np.int64))]
    gt_order = np.argsort(gt_image, kind="stable")
    gt = _group(coco, annotations, mode, gt_image, category_ids, len(image_ids), gt_order)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool)[gt_order]
    ignore = np.array([bool(a.get("ignore", 0) or a.get("difficult", 0)) for a in annotations], dtype=bool)[gt_order]

    num = len(det.cls)
    overlaps = {"best": np.zeros(num, dtype=np.int64), "best_iou": np.full(num, -1.0),
                "crowd_iou": np.zeros(num), "other_cls": np.full(num, -1), "other_iou": np.zeros(num)}
    gt_counts = np.diff(gt.starts)
    for images in _batches(np.diff(det.starts), gt_counts):
        if gt_counts[images].any():  # else every detection of these images is BG, as initialised
            _overlap_batch(det, gt, crowd, images, mode, overlaps)
    kinds, confused = _classify_detections(overlaps["best"], overlaps["best_iou"], ignore, overlaps["crowd_iou"],
                                           overlaps["other_cls"], overlaps["other_iou"], det.cls, similar)
    return {"cls": det.cls, "score": det.score, "kind": kinds, "confused": confused}


def _type_counts(kinds: np.ndarray) -> dict:
    return {name: int((kinds == code).sum()) for code, name in enumerate(FP_TYPES)}


def _summary(ranked_kinds: np.ndarray, num_gt: int, top_n: dict, fp_points) -> dict:
    """Totals, the FP types at N (given) and the FP types among the top K false positives for each K, from the
    kinds of the detections ranked by score."""
    false_positives = ranked_kinds[ranked_kinds != _COR]
    curve = [{"top": k, "n_fp": int(min(k, len(false_positives))), **_type_counts(false_positives[:k])}
             for k in fp_points]
    return {"num_gt": num_gt, "num_dets": int(len(ranked_kinds)), "num_fp": int(len(false_positives)),
            "top_n": top_n, "curve": curve}


def analyze_false_positives(gt, dets, mode: str = "bbox", similar=None, max_dets: int = 100,
                            fp_points=FP_POINTS) -> dict:
    """False-positive types per category, per similar-class group and overall.

    ``gt``: COCO annotation file, dict or COCO object; ``dets``: COCO results file or list. ``similar``: see
    :func:`resolve_similar`. For each category, ``top_n`` counts correct detections (``Cor``) and each FP type
    among its top N detections, N being its number of objects (the paper's Fig. 7 pies), and ``confused_with``
    which classes its Sim/Oth false positives there fired on; ``curve`` counts the types among its top K false
    positives for K in ``fp_points`` (Fig. 1; ``n_fp`` < K when it has fewer). A group or ``overall`` sums
    ``top_n`` over its categories and ranks its categories' false positives together by score for ``curve``.
    """
    coco = load_ground_truth(gt, mode)
    return analyze_false_positives_loaded(coco, load_detections(dets, coco, mode), mode, similar, max_dets, fp_points)


def analyze_false_positives_loaded(coco, dets: list, mode: str = "bbox", similar=None, max_dets: int = 100,
                                   fp_points=FP_POINTS) -> dict:
    """:func:`analyze_false_positives` on a COCO index and records that ``inputs.load_detections`` already
    checked for ``mode``: what a diagnosis of several modes and models runs, reading every file once."""
    check_mode(mode)
    if max_dets < 1:
        raise ValueError(f"max_dets must be at least 1, got {max_dets}")
    categories = [coco.cats[category_id] for category_id in sorted(coco.cats)]
    names = [category["name"] for category in categories]
    if len(set(names)) != len(names):
        raise ValueError(f"category names must be unique, got {names}")
    class_index = {category["id"]: i for i, category in enumerate(categories)}
    category_ids = np.array(sorted(coco.cats), dtype=np.int64)
    groups, source = resolve_similar(categories, similar)
    index_of = {name: i for i, name in enumerate(names)}
    similar_matrix = np.zeros((len(names), len(names)), dtype=bool)
    for members in groups.values():
        member_index = [index_of[name] for name in members]
        similar_matrix[np.ix_(member_index, member_index)] = True
    np.fill_diagonal(similar_matrix, False)

    det = _classify(coco, dets, mode, similar_matrix, category_ids, max_dets)
    num_gt = Counter(class_index[a["category_id"]] for a in coco.dataset["annotations"]
                     if not (a.get("iscrowd", 0) or a.get("ignore", 0) or a.get("difficult", 0)))
    kind, cls = det["kind"], det["cls"]
    counted = kind != _IGNORED
    # one sort for every class and group: best score first, ties in detection order, then grouped by class
    ranked = np.argsort(-det["score"], kind="stable")
    ranked = ranked[counted[ranked]]
    by_class = ranked[np.argsort(cls[ranked], kind="stable")]
    bounds = np.searchsorted(cls[by_class], np.arange(len(names) + 1))
    num_ignored = np.bincount(cls[~counted], minlength=len(names))
    per_class = {}
    for i, name in enumerate(names):
        mine = by_class[bounds[i]:bounds[i + 1]]
        top, top_confused = kind[mine[: num_gt[i]]], det["confused"][mine[: num_gt[i]]]
        top_n = {"n": int(len(top)), "Cor": int((top == _COR).sum()), **_type_counts(top)}
        entry = _summary(kind[mine], num_gt[i], top_n, fp_points)
        confused_with = Counter(names[c] for c in top_confused[top_confused >= 0])
        entry["confused_with"] = dict(confused_with.most_common())
        entry["num_ignored"] = int(num_ignored[i])
        per_class[name] = entry

    def pooled(classes: list) -> dict:
        member = np.zeros(len(names), dtype=bool)
        member[[index_of[name] for name in classes]] = True
        top_n = {key: sum(per_class[name]["top_n"][key] for name in classes) for key in ("n", "Cor", *FP_TYPES)}
        return _summary(kind[ranked[member[cls[ranked]]]], sum(per_class[name]["num_gt"] for name in classes),
                        top_n, fp_points)

    return {
        "mode": mode,
        "max_dets": max_dets,
        "types": list(FP_TYPES),
        "fp_points": list(fp_points),
        "similar": {"source": source, "groups": groups},
        "overall": pooled(names),
        "per_group": {group: {"classes": members, **pooled(members)} for group, members in groups.items()},
        "per_class": per_class,
    }

