"""COCO annotation files read and validated without torch: the diagnosis tools read them too.

Validated when read, so that a broken file fails at once with the file and the annotation id in the message
instead of deep inside pycocotools or a training run. ``benchmarks.data.coco`` builds its Dataset on these.
"""
from __future__ import annotations

import gc
import json
import math
import numbers
from pathlib import Path

import orjson

__all__ = ["is_finite_number", "load_coco_annotations", "read_json"]


def read_json(path):
    """A json file's content: orjson parses the ~70 MB of a COCO-scale result file several times faster than
    ``json``. What it refuses (NaN, Infinity) goes to ``json``, which accepts those and whose error messages the
    callers pass on; integers beyond 64 bits, which no COCO id or coordinate needs, come back as floats (so the
    checks reject them as ids). The cyclic garbage collector pauses meanwhile: parsed json holds no cycles, and its
    passes over the millions of new objects would triple the time."""
    with open(path, "rb") as file:
        data = file.read()
    collecting = gc.isenabled()
    gc.disable()
    try:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return json.loads(data)
    finally:
        if collecting:
            gc.enable()


def is_finite_number(value) -> bool:
    """A real number (a JSON number, or numpy's): not a bool (a bool is an int in Python), not NaN or infinite."""
    if type(value) in (float, int):  # what json gives, decided without the ABC check (~10x slower, 150k boxes)
        return math.isfinite(value)
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _segmentation_problem(segmentation, height: int, width: int) -> str | None:
    """What is wrong with a COCO segmentation (polygons or RLE), or None if it is well formed."""
    if isinstance(segmentation, list):
        if not segmentation:
            return "has an empty polygon list as segmentation"
        for polygon in segmentation:
            if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
                return "has a segmentation polygon that is not a flat list of at least 3 (x, y) points"
        return None
    if isinstance(segmentation, dict):
        counts, size = segmentation.get("counts"), segmentation.get("size")
        if size != [height, width]:
            return f"has an RLE segmentation of size {size!r}, but its image is [{height}, {width}]"
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts):
                return "has uncompressed RLE counts that are not all non-negative integers"
            if sum(counts) != height * width:
                return f"has uncompressed RLE counts summing to {sum(counts)}, expected {height * width}"
            return None
        if not isinstance(counts, str):
            return "has an RLE segmentation without a 'counts' string or list"
        return None
    return f"has a segmentation that is neither a polygon list nor an RLE dict: {segmentation!r:.80}"


def load_coco_annotations(source, with_masks: bool = False, name: str | None = None) -> dict:
    """Read (from a path) and validate COCO instance annotations; every error names the file.

    ``source`` may also be an already loaded dict, which is validated the same way (and not copied); errors then
    name it ``name``.
    """
    if isinstance(source, dict):
        annotation_file, dataset = name or "the COCO annotation dict", source
    else:
        annotation_file = Path(source)
        if not annotation_file.is_file():
            raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}")
        try:
            dataset = read_json(annotation_file)
        except json.JSONDecodeError as e:
            raise ValueError(f"{annotation_file} is not valid JSON: {e}") from e
    required = ("images", "annotations", "categories")
    if not isinstance(dataset, dict) or any(not isinstance(dataset.get(key), list) for key in required):
        present = sorted(dataset) if isinstance(dataset, dict) else type(dataset).__name__
        raise ValueError(
            f"{annotation_file} is not a COCO annotation file: expected lists 'images', 'annotations' "
            f"and 'categories' at the top level, found {present}"
        )

    images = {}
    for position, image in enumerate(dataset["images"]):
        image_id = image.get("id") if isinstance(image, dict) else None
        if not (
            isinstance(image_id, int)
            and isinstance(image.get("file_name"), str)
            and isinstance(image.get("height"), int)
            and isinstance(image.get("width"), int)
            and image["height"] > 0
            and image["width"] > 0
        ):
            raise ValueError(
                f"{annotation_file}: image entry #{position} (id {image_id!r}) needs an integer 'id', "
                "a 'file_name' and positive integer 'height' and 'width'"
            )
        if image_id in images:
            raise ValueError(f"{annotation_file}: image id {image_id} appears more than once")
        images[image_id] = image

    category_ids = set()
    for position, category in enumerate(dataset["categories"]):
        if not (isinstance(category, dict) and isinstance(category.get("id"), int) and "name" in category):
            raise ValueError(f"{annotation_file}: category entry #{position} needs an integer 'id' and a 'name'")
        category_ids.add(category["id"])
    if not category_ids:
        raise ValueError(f"{annotation_file}: 'categories' is empty")

    annotation_ids = set()
    for position, annotation in enumerate(dataset["annotations"]):
        annotation_id = annotation.get("id") if isinstance(annotation, dict) else None
        if not isinstance(annotation_id, int):
            raise ValueError(f"{annotation_file}: annotation entry #{position} has no integer 'id'")
        where = f"annotation id {annotation_id} in {annotation_file}"
        if annotation_id in annotation_ids:
            raise ValueError(f"{where} appears more than once")
        annotation_ids.add(annotation_id)
        image = images.get(annotation.get("image_id"))
        if image is None:
            raise ValueError(f"{where} refers to unknown image_id {annotation.get('image_id')!r}")
        if annotation.get("category_id") not in category_ids:
            raise ValueError(f"{where} refers to unknown category_id {annotation.get('category_id')!r}")
        bbox = annotation.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)):
            raise ValueError(f"{where} has a missing or malformed bbox {bbox!r}; expected [x, y, width, height]")
        if with_masks:
            if "segmentation" not in annotation:
                raise ValueError(f"{where} has no segmentation (needed with with_masks=True)")
            problem = _segmentation_problem(annotation["segmentation"], image["height"], image["width"])
            if problem:
                raise ValueError(f"{where} {problem}")
    return dataset
