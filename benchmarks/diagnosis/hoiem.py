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
import pycocotools.mask as mask_util
import yaml

from .inputs import check_mode, load_detections, load_ground_truth

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


def _overlaps(coco, detections: list, annotations: list, mode: str) -> np.ndarray:
    """IoU of detections x ground truth; against crowd regions, the fraction of the detection inside them."""
    if mode == "bbox":
        dt, gt = [d["bbox"] for d in detections], [a["bbox"] for a in annotations]
    else:
        dt, gt = [d["segmentation"] for d in detections], [coco.annToRLE(a) for a in annotations]
    crowd = [int(a.get("iscrowd", 0)) for a in annotations]
    return np.asarray(mask_util.iou(dt, gt, crowd), dtype=np.float64).reshape(len(dt), len(gt))


def _classify_image(det_classes, ious, gt_classes, gt_crowd, gt_ignore, similar):
    """Kind code per detection (score-sorted) of one image, and the class an Sim/Oth detection fired on."""
    num_dets = len(det_classes)
    kinds, confused = np.full(num_dets, FP_TYPES.index("BG")), np.full(num_dets, -1)
    if ious.shape[1] == 0:
        return kinds, confused
    rows = np.arange(num_dets)
    same = det_classes[:, None] == gt_classes[None, :]
    object_ious = np.where(same & ~gt_crowd, ious, -1.0)
    best = object_ious.argmax(1)
    best_iou = object_ious[rows, best]
    crowd_iou = np.where(same & gt_crowd, ious, 0.0).max(1)
    other_ious = np.where(same, 0.0, ious)
    other = other_ious.argmax(1)
    other_iou = other_ious[rows, other]

    duplicate = np.zeros(num_dets, dtype=bool)
    detected = np.zeros(len(gt_classes), dtype=bool)
    for i in np.flatnonzero(best_iou >= POS_THRESH):  # greedy in score order: the first claim wins
        j = best[i]
        if gt_ignore[j]:
            kinds[i] = _IGNORED
        elif detected[j]:
            duplicate[i] = True
        else:
            detected[j], kinds[i] = True, _COR
    false_positive = kinds == FP_TYPES.index("BG")
    kinds[false_positive & (crowd_iou >= POS_THRESH)] = _IGNORED
    false_positive &= kinds != _IGNORED
    loc = false_positive & (duplicate | (best_iou >= LOW_THRESH))
    confusion = false_positive & ~loc & (other_iou >= LOW_THRESH)
    confused[confusion] = gt_classes[other[confusion]]
    is_similar = similar[det_classes, np.maximum(confused, 0)]
    kinds[loc] = FP_TYPES.index("Loc")
    kinds[confusion & is_similar] = FP_TYPES.index("Sim")
    kinds[confusion & ~is_similar] = FP_TYPES.index("Oth")
    return kinds, confused


def _classify(coco, dets: list, mode: str, similar: np.ndarray, class_index: dict, max_dets: int):
    """Class index, score, kind and confused class of every detection kept (top ``max_dets`` per image)."""
    by_image = {}
    for det in dets:
        by_image.setdefault(det["image_id"], []).append(det)
    columns = {"cls": [], "score": [], "kind": [], "confused": []}
    for image_id, image_dets in by_image.items():
        image_dets = sorted(image_dets, key=lambda d: -d["score"])[:max_dets]
        annotations = coco.imgToAnns.get(image_id, [])
        det_classes = np.array([class_index[d["category_id"]] for d in image_dets], dtype=np.int64)
        gt_classes = np.array([class_index[a["category_id"]] for a in annotations], dtype=np.int64)
        gt_crowd = np.array([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool)
        gt_ignore = np.array([bool(a.get("ignore", 0) or a.get("difficult", 0)) for a in annotations], dtype=bool)
        ious = _overlaps(coco, image_dets, annotations, mode)
        kinds, confused = _classify_image(det_classes, ious, gt_classes, gt_crowd, gt_ignore, similar)
        columns["cls"].append(det_classes)
        columns["score"].append(np.array([d["score"] for d in image_dets], dtype=np.float64))
        columns["kind"].append(kinds)
        columns["confused"].append(confused)
    empty = {"cls": np.int64, "score": np.float64, "kind": np.int64, "confused": np.int64}
    return {key: np.concatenate(parts) if parts else np.zeros(0, dtype=empty[key]) for key, parts in columns.items()}


def _type_counts(kinds: np.ndarray) -> dict:
    return {name: int((kinds == code).sum()) for code, name in enumerate(FP_TYPES)}


def _summary(kinds: np.ndarray, scores: np.ndarray, num_gt: int, top_n: dict, fp_points) -> dict:
    """Totals, the FP types at N (given) and the FP types among the top K false positives for each K."""
    false_positives = kinds[np.argsort(-scores, kind="stable")]
    false_positives = false_positives[false_positives != _COR]
    curve = [{"top": k, "n_fp": int(min(k, len(false_positives))), **_type_counts(false_positives[:k])}
             for k in fp_points]
    return {"num_gt": num_gt, "num_dets": int(len(kinds)), "num_fp": int(len(false_positives)),
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
    groups, source = resolve_similar(categories, similar)
    index_of = {name: i for i, name in enumerate(names)}
    similar_matrix = np.zeros((len(names), len(names)), dtype=bool)
    for members in groups.values():
        member_index = [index_of[name] for name in members]
        similar_matrix[np.ix_(member_index, member_index)] = True
    np.fill_diagonal(similar_matrix, False)

    det = _classify(coco, dets, mode, similar_matrix, class_index, max_dets)
    num_gt = Counter(class_index[a["category_id"]] for a in coco.dataset["annotations"]
                     if not (a.get("iscrowd", 0) or a.get("ignore", 0) or a.get("difficult", 0)))
    counted = det["kind"] != _IGNORED
    per_class, members_of = {}, {}
    for i, name in enumerate(names):
        mine = counted & (det["cls"] == i)
        members_of[name] = mine
        order = np.argsort(-det["score"][mine], kind="stable")[: num_gt[i]]
        top = det["kind"][mine][order]
        top_confused = det["confused"][mine][order]
        top_n = {"n": int(len(top)), "Cor": int((top == _COR).sum()), **_type_counts(top)}
        entry = _summary(det["kind"][mine], det["score"][mine], num_gt[i], top_n, fp_points)
        confused_with = Counter(names[c] for c in top_confused[top_confused >= 0])
        entry["confused_with"] = dict(confused_with.most_common())
        entry["num_ignored"] = int(((det["cls"] == i) & ~counted).sum())
        per_class[name] = entry

    def pooled(classes: list) -> dict:
        mask = np.logical_or.reduce([members_of[name] for name in classes])
        top_n = {key: sum(per_class[name]["top_n"][key] for name in classes) for key in ("n", "Cor", *FP_TYPES)}
        return _summary(det["kind"][mask], det["score"][mask], sum(per_class[name]["num_gt"] for name in classes),
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

