"""Read the two inputs of every diagnosis, ground truth and detections, and say which file is wrong.

A diagnosis is often run on files produced elsewhere (another engine's results, a converted VOC set),
so a malformed record must fail with the file and the record in the message, not deep inside pycocotools.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
import warnings

from pycocotools.coco import COCO

from ..data.coco_json import is_finite_number, load_coco_annotations, read_json

MODES = ("bbox", "segm")


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def _modes(modes) -> tuple:
    """One mode or several, checked."""
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    for mode in modes:
        check_mode(mode)
    return modes


def load_ground_truth(gt, modes="bbox") -> COCO:
    """A COCO index over ``gt`` (an annotation file, a COCO dict, or a COCO object), validated for ``modes`` (one
    mode or several)."""
    modes = _modes(modes)
    if isinstance(gt, COCO):
        return gt
    # the dataset reader's validation names the file and the annotation; segm also checks the masks
    dataset = load_coco_annotations(gt, with_masks="segm" in modes)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def _plainly_valid(dets: list, coco: COCO, modes: tuple) -> bool:
    """True if every record passes ``load_detections``' checks, tested a column at a time: a result file has up to
    millions of records. False means: find the bad record one by one (or accept a dict subclass there)."""
    try:
        if {type(record) for record in dets} - {dict}:
            return False
        image_ids, category_ids, scores = ([record[key] for record in dets]
                                           for key in ("image_id", "category_id", "score"))
        geometry = {mode: [record["bbox" if mode == "bbox" else "segmentation"] for record in dets] for mode in modes}
        if not (coco.imgs.keys() >= set(image_ids) and coco.cats.keys() >= set(category_ids)):
            return False
    except (KeyError, TypeError):  # a missing key, an unhashable id
        return False
    # a sum of numbers is finite only if each is (or, rarely, it overflows: then the slow path decides)
    if {type(score) for score in scores} - {int, float} or not math.isfinite(sum(scores)):
        return False
    if "segm" in geometry and not ({type(s) for s in geometry["segm"]} <= {dict}
                                   and all("counts" in s and "size" in s for s in geometry["segm"])):
        return False
    boxes = geometry.get("bbox", [])
    return ({type(bbox) for bbox in boxes} <= {list} and {len(bbox) for bbox in boxes} <= {4}
            and not {type(v) for bbox in boxes for v in bbox} - {int, float}
            and math.isfinite(sum(itertools.chain.from_iterable(boxes))))


def read_results_file(path) -> list:
    """The list of result records in a json file, unchecked; an empty one warns (valid, but often the wrong file)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"detections file not found: {os.fspath(path)}")
    try:
        records = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{os.fspath(path)} is not valid JSON: {error}") from error
    if not isinstance(records, list):
        raise ValueError(f"{os.fspath(path)}: expected a list of COCO result records "
                         f"({{image_id, category_id, bbox, score}}), found a {type(records).__name__}")
    if not records:
        warnings.warn(f"{os.fspath(path)}: no detections at all: every object counts as missed (AP 0)", stacklevel=3)
    return records


def load_detections(dets, coco: COCO, modes="bbox") -> list:
    """COCO result records from a results file or a list, checked against the ground truth's images and classes
    and for the geometry of each of ``modes`` (one mode or several: a file is then read once for all)."""
    modes = _modes(modes)
    source = "detections"
    if isinstance(dets, (str, os.PathLike)):
        source = os.fspath(dets)
        dets = read_results_file(source)
    if not isinstance(dets, list):
        raise ValueError(f"{source}: expected a list of COCO result records "
                         f"({{image_id, category_id, bbox, score}}), found a {type(dets).__name__}")
    if _plainly_valid(dets, coco, modes):
        return dets
    for position, record in enumerate(dets):
        where = f"{source}: detection #{position}"
        if not isinstance(record, dict):
            raise ValueError(f"{where} is not a JSON object")
        if record.get("image_id") not in coco.imgs:
            raise ValueError(f"{where} refers to image_id {record.get('image_id')!r}, "
                             "which is not in the ground truth")
        if record.get("category_id") not in coco.cats:
            raise ValueError(f"{where} refers to category_id {record.get('category_id')!r}, "
                             "which is not in the ground truth")
        if not is_finite_number(record.get("score")):
            raise ValueError(f"{where} has no numeric score")
        if "bbox" in modes:
            bbox = record.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)):
                raise ValueError(f"{where} has a missing or malformed bbox {bbox!r}; expected [x, y, width, height]")
        if "segm" in modes:
            segmentation = record.get("segmentation")
            if not (isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation):
                raise ValueError(f"{where} has no RLE segmentation (needed for mode 'segm')")
    return dets
