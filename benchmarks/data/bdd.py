"""BDD100K detection labels (the 2020 ``det_20`` files and the 2018 ``bdd100k_labels_images_*`` files) as COCO dicts.

The conversion is bdd100k's own ``python -m bdd100k.label.to_coco -m det`` (github.com/bdd100k/bdd100k at 9ac17c6,
github.com/scalabel/scalabel at 071d073), so COCO AP computed with pycocotools on our dict is the AP of their
converted file:

- Layout (``doc/source/download.rst``, "100K Images" and "Detection 2020 Labels"; the 2018 file names from
  ``doc/source/usage.rst`` and the 2018 ``README.md``): images ``bdd100k/images/100k/{train,val}/<name>``, labels
  ``bdd100k/labels/det_20/det_{train,val}.json`` and ``bdd100k/labels/bdd100k_labels_images_{train,val}.json``.
  A file is a list of frames ``{name, attributes: {weather, scene, timeofday}, timestamp, labels: [{id, category,
  attributes: {occluded, truncated, trafficLightColor, crowd?}, box2d: {x1, y1, x2, y2}}]}`` (``doc/source/
  format.rst``; scalabel ``scalabel/label/typing.py`` ``Frame``, ``Label``, ``Box2D``); ``labels`` may be absent
  (frames of ``det_train.json`` without it: bdd100k issue #152) or null (``tests/label/testcases/
  example_ignore_annotation.json``). Images the file does not list (137 of the 70k train images, issue #210) are
  not part of the set. The 2018 files also hold ``lane`` and ``drivable area`` labels: ``poly2d``, no ``box2d``.
- Classes: the leaf categories of ``bdd100k/configs/det.toml`` in order, ids 1..10 (``doc/source/format.rst``,
  "Object Detection"); scalabel ``label/transforms.py`` ``get_coco_categories`` numbers them from 1.
- Names: ``det.toml`` ``[name_mapping]`` renames the 2018 names (person, bike, motor) and caravan, van;
  ``[ignored_mapping]`` maps "other person", "other vehicle", "trailer" onto a class and bdd100k
  ``label/to_scalabel.py`` ``deal_bdd100k_category`` marks them ``ignored``. Any other category fails its
  ``assert category_name in ignored_mapping``; we raise a ValueError naming the file, frame and category instead.
- Boxes: scalabel ``label/transforms.py`` ``box2d_to_bbox`` gives ``[x1, y1, x2 - x1 + 1, y2 - y1 + 1]`` (box2d
  corners are inclusive pixels, ``doc/source/format.rst`` "Coordinate System"), and ``label/to_coco.py``
  ``set_box_object_geometry`` the area ``w * h``.
- Crowds: ``label/to_coco.py`` ``scalabel2coco_detection`` sets ``iscrowd = crowd or ignored`` (``label/utils.py``
  ``check_crowd``, ``check_ignored`` read ``attributes["crowd"]`` and ``attributes["ignored"]``), so the ignored
  categories become crowds of their mapped class: pycocotools neither rewards nor penalises detections on them.
- Images: one per frame, labelled or not (negatives stay), ``file_name`` the frame's ``name``, the frame's
  ``attributes`` kept, size 720 x 1280 from ``det.toml`` ``[scalabel.imageSize]``. ``scalabel2coco_detection``
  prefers that config size over a frame's own ``size``; the published example frames carry none, our generated
  ones do (they are not 1280 x 720), so a frame's ``size`` is used when present (image sizes do not enter AP).

Where we differ, and why no AP changes: image ids follow the file order (bdd100k's evaluator sorts frames by name
first); ``file_name`` is always the ``name`` (scalabel would take a frame's ``url``, which these files do not
have); ``lane`` and ``drivable area`` labels are skipped, where bdd100k's category step stops at its assert (so
the 2018 files can be read at all); a detection-class label without ``box2d``, which ``scalabel2coco_detection``
would skip silently, and a box with ``x2 < x1`` or ``y2 < y1`` are errors, not data.

Checked once (not a test: scalabel is no dependency) by running bdd100k 9ac17c6's ``to_coco`` steps
(``bdd100k_to_scalabel`` with the det config, then ``scalabel2coco_detection``; scalabel 0.3.1, pydantic 1.10) on
hand-written det_20 and 2018 files (every mapped, ignored and crowd case above) and on ``write_bdd`` output in both
formats: categories, image ids, names and attributes, and every annotation's id, image, category, bbox, area,
iscrowd and label id came out identical; image sizes differed only where frames carry a ``size``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from .coco import is_finite_number

__all__ = ["BDD_2018_NAMES", "BDD_CLASS_NAMES", "BDD_DATASETS", "BDD_IMAGE_DIR", "BDD_LABEL_FILES", "read_bdd_labels",
           "resolve_bdd_dataset"]

logger = logging.getLogger(__name__)

# bdd100k/configs/det.toml leaf categories; a detection's category_id is its index here plus 1.
BDD_CLASS_NAMES = ("pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle", "traffic light",
                   "traffic sign")
# det.toml [name_mapping] and [ignored_mapping].
BDD_2018_NAMES = {"bike": "bicycle", "motor": "motorcycle", "person": "pedestrian"}  # the 2018 files' names
NAME_MAPPING = {**BDD_2018_NAMES, "caravan": "car", "van": "car"}
IGNORED_MAPPING = {"other person": "pedestrian", "other vehicle": "car", "trailer": "truck"}
# The 2018 files' segmentation categories: poly2d only, no detection class.
NON_DETECTION_CATEGORIES = ("drivable area", "lane")
# det.toml [scalabel.imageSize]: every BDD100K image is 1280 x 720.
DEFAULT_HEIGHT, DEFAULT_WIDTH = 720, 1280
# Category names only one of the two label releases uses, which tells them apart.
_ONLY_2018 = frozenset({*BDD_2018_NAMES, *NON_DETECTION_CATEGORIES})
_ONLY_DET_20 = frozenset({*BDD_2018_NAMES.values(), *IGNORED_MAPPING})

# Paths under a data root that holds bdd100k/, with {split} the split name.
BDD_IMAGE_DIR = "bdd100k/images/100k/{split}"
BDD_LABEL_FILES = {"det_20": "bdd100k/labels/det_20/det_{split}.json",
                   "2018": "bdd100k/labels/bdd100k_labels_images_{split}.json"}
# Dataset names (as in DATASETS.TRAIN/TEST) -> (image directory, label file), relative to the data root.
BDD_DATASETS = {
    f"bdd100k{'' if label_format == 'det_20' else '_2018'}_det_{split}": (
        BDD_IMAGE_DIR.format(split=split), label_file.format(split=split))
    for label_format, label_file in BDD_LABEL_FILES.items()
    for split in ("train", "val")
}


def resolve_bdd_dataset(name: str, root) -> tuple[Path, Path]:
    """``(image_dir, label_file)`` of a BDD100K dataset name under a data root that holds ``bdd100k/``; both must
    exist."""
    if name not in BDD_DATASETS:
        raise ValueError(f"Unknown BDD100K dataset {name!r}; known: {', '.join(sorted(BDD_DATASETS))}")
    image_dir, label_file = (Path(root) / relative for relative in BDD_DATASETS[name])
    if not label_file.is_file():
        raise FileNotFoundError(f"BDD100K dataset {name!r}: label file {label_file} not found")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"BDD100K dataset {name!r}: image directory {image_dir} not found")
    return image_dir, label_file


def _class_of(category: str, where: str) -> tuple[int, bool]:
    """``(category_id, ignored)`` of a detection category, as bdd100k's ``deal_bdd100k_category`` maps it."""
    name = NAME_MAPPING.get(category, category)
    if name in BDD_CLASS_NAMES:
        return BDD_CLASS_NAMES.index(name) + 1, False
    if name in IGNORED_MAPPING:
        return BDD_CLASS_NAMES.index(IGNORED_MAPPING[name]) + 1, True
    known = [*BDD_CLASS_NAMES, *NAME_MAPPING, *IGNORED_MAPPING, *NON_DETECTION_CATEGORIES]
    raise ValueError(f"{where}: unknown category {category!r} (BDD100K detection knows {', '.join(known)})")


def _box(label: dict, where: str) -> tuple[float, float, float, float]:
    box2d = label.get("box2d")
    if box2d is None:
        raise ValueError(f"{where}: a label of a detection category without 'box2d'")
    corners = [box2d.get(key) if isinstance(box2d, dict) else None for key in ("x1", "y1", "x2", "y2")]
    if not all(is_finite_number(value) for value in corners):
        raise ValueError(f"{where}: box2d needs finite numbers x1, y1, x2, y2, got {box2d!r}")
    x1, y1, x2, y2 = (float(value) for value in corners)
    if x2 < x1 or y2 < y1:
        raise ValueError(f"{where}: box2d has x2 < x1 or y2 < y1: {box2d!r}")
    return x1, y1, x2, y2


def _optional_dict(container: dict, key: str, where: str) -> dict:
    value = container.get(key)
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{where}: '{key}' must be an object, got {value!r:.80}")
    return dict(value or {})


def _image_size(frame: dict, where: str) -> tuple[int, int]:
    size = frame.get("size")
    if size is None:
        return DEFAULT_HEIGHT, DEFAULT_WIDTH
    height, width = (size.get(key) if isinstance(size, dict) else None for key in ("height", "width"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (height, width)):
        raise ValueError(f"{where}: 'size' must hold positive integer width and height, got {size!r}")
    return height, width


def read_bdd_labels(label_file) -> dict:
    """The COCO-format dict of a BDD100K detection label file (det_20 or 2018, told apart by their category names).

    Images have ids 1..N in file order, ``file_name`` the frame's ``name`` (relative to ``bdd100k/images/100k/
    <split>``) and the frame's ``attributes``; categories are 1..10 in ``BDD_CLASS_NAMES`` order; each annotation
    keeps the label's ``attributes``, its ``id`` as ``bdd_id`` and its category as written as ``bdd_category``.
    ``info['bdd_label_format']`` says which release the file is. See the module docstring for the conversion.
    """
    label_file = Path(label_file)
    if not label_file.is_file():
        raise FileNotFoundError(f"BDD100K label file not found: {label_file}")
    try:
        frames = json.loads(label_file.read_bytes())
    except json.JSONDecodeError as e:
        raise ValueError(f"{label_file} is not valid JSON: {e}") from None
    if not isinstance(frames, list):
        raise ValueError(f"{label_file}: a BDD100K label file is a list of frames, got {type(frames).__name__}")
    images, annotations, skipped = [], [], Counter()
    first_frame_with = {}  # category -> name of the first frame that has it
    for position, frame in enumerate(frames):
        if not (isinstance(frame, dict) and isinstance(frame.get("name"), str) and frame["name"]):
            raise ValueError(f"{label_file}: frame #{position} is not an object with a non-empty 'name'")
        where = f"{label_file} frame {frame['name']!r}"
        height, width = _image_size(frame, where)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": frame["name"], "height": height, "width": width,
                       "attributes": _optional_dict(frame, "attributes", where)})
        labels = frame.get("labels")
        if labels is None:
            continue
        if not isinstance(labels, list):
            raise ValueError(f"{where}: 'labels' must be a list, got {labels!r:.80}")
        for index, label in enumerate(labels):
            if not (isinstance(label, dict) and isinstance(label.get("category"), str)):
                raise ValueError(f"{where} label #{index}: not an object with a 'category' string")
            category = label["category"]
            label_where = f"{where} label #{index} (id {label.get('id')!r}, {category})"
            first_frame_with.setdefault(category, frame["name"])
            if category in NON_DETECTION_CATEGORIES:
                skipped[category] += 1
                continue
            category_id, ignored = _class_of(category, label_where)
            if label.get("id") is None:
                raise ValueError(f"{label_where}: no 'id' (every Scalabel label has one)")
            x1, y1, x2, y2 = _box(label, label_where)
            attributes = _optional_dict(label, "attributes", label_where)
            w, h = x2 - x1 + 1, y2 - y1 + 1
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                "bbox": [x1, y1, w, h], "area": w * h,
                "iscrowd": int(bool(attributes.get("crowd", False)) or bool(attributes.get("ignored", False))
                               or ignored),
                "attributes": attributes, "bdd_id": str(label["id"]), "bdd_category": category,
            })
    names = Counter(image["file_name"] for image in images)
    repeated = sorted(name for name, count in names.items() if count > 1)
    if repeated:
        raise ValueError(f"{label_file}: frame names appear more than once: {', '.join(repeated[:5])}")
    old, new = sorted(_ONLY_2018 & first_frame_with.keys()), sorted(_ONLY_DET_20 & first_frame_with.keys())
    if old and new:
        raise ValueError(f"{label_file} mixes the 2018 category {old[0]!r} (frame {first_frame_with[old[0]]!r}) with "
                         f"the det_20 category {new[0]!r} (frame {first_frame_with[new[0]]!r})")
    label_format = "2018" if old else "det_20"
    if skipped:
        logger.info("%s: skipped %s labels without a detection class.", label_file,
                    ", ".join(f"{count} {category!r}" for category, count in sorted(skipped.items())))
    logger.info("%s (%s labels): %d images (%d without objects), %d boxes (%d crowd or ignored).", label_file,
                label_format, len(images), len(images) - len({a["image_id"] for a in annotations}), len(annotations),
                sum(a["iscrowd"] for a in annotations))
    return {
        "info": {"description": f"BDD100K detection labels of {label_file.name}", "source": str(label_file),
                 "bdd_label_format": label_format},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(BDD_CLASS_NAMES)],
    }
