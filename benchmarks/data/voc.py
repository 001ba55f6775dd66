"""PASCAL VOC detection data in the real VOCdevkit layout, read the way Detectron2 reads it.

A year directory (``VOCdevkit/VOC2007``) holds ``Annotations/<id>.xml``, ``ImageSets/Main/<split>.txt`` and
``JPEGImages/<id>.jpg``. A split is returned in two forms: a COCO-format dict for training and inference (boxes
in Detectron2's 0-based coordinates: the xml's ``xmin`` and ``ymin`` minus 1, ``xmax`` and ``ymax`` as they are,
difficult objects included, as Detectron2's ``load_voc_instances`` trains on them), and the xml's own boxes
with their ``difficult`` flags, which is what the VOC metric compares against.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

__all__ = ["VOC_CLASS_NAMES", "VOC_DATASETS", "read_voc_split", "resolve_voc_dataset"]

# Detectron2's CLASS_NAMES order; a detection's category_id is its index here plus 1.
VOC_CLASS_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

# Detectron2's dataset names -> (year directory under the data root, ImageSets/Main split).
VOC_DATASETS = {
    f"voc_{year}_{split}": (f"VOC{year}", split)
    for year in ("2007", "2012")
    for split in ("train", "val", "trainval")
} | {"voc_2007_test": ("VOC2007", "test")}


def resolve_voc_dataset(name: str, root) -> tuple[Path, str]:
    """``(year_dir, split)`` of a Detectron2 VOC dataset name under a data root that holds ``VOC2007/``, ``VOC2012/``
    (Detectron2's ``datasets/`` or a ``VOCdevkit/``)."""
    if name not in VOC_DATASETS:
        raise ValueError(f"Unknown VOC dataset {name!r}; known: {', '.join(sorted(VOC_DATASETS))}")
    year_dir, split = VOC_DATASETS[name]
    path = Path(root) / year_dir
    if not path.is_dir():
        raise FileNotFoundError(f"VOC dataset {name!r}: year directory {path} not found (expected {root}/{year_dir}/"
                                "{Annotations,ImageSets/Main,JPEGImages})")
    return path, split


def _text(element, tag: str, where: str) -> str:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"{where}: missing <{tag}>")
    return child.text.strip()


def _number(element, tag: str, where: str) -> float:
    text = _text(element, tag, where)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: <{tag}> is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: <{tag}> is {text!r}, not a finite number")
    return value


def _read_annotation(xml_file: Path, class_names) -> tuple[int, int, list[dict]]:
    """``(height, width, objects)`` of one xml; each object ``{"name", "bbox": [xmin, ymin, xmax, ymax] as in the
    xml, "difficult": bool}``."""
    try:
        tree = ET.parse(xml_file)
    except FileNotFoundError:
        raise FileNotFoundError(f"VOC annotation not found: {xml_file}") from None
    except ET.ParseError as e:
        raise ValueError(f"{xml_file} is not valid XML: {e}") from None
    size = tree.find("size")
    if size is None:
        raise ValueError(f"{xml_file}: missing <size>")
    height, width = (_number(size, tag, f"{xml_file} <size>") for tag in ("height", "width"))
    if height <= 0 or width <= 0 or height != int(height) or width != int(width):
        raise ValueError(f"{xml_file}: <size> must hold positive integer width and height, got {width} x {height}")
    objects = []
    for position, obj in enumerate(tree.findall("object")):
        where = f"{xml_file} object #{position}"
        name = _text(obj, "name", where)
        if name not in class_names:
            raise ValueError(f"{where}: class {name!r} is not one of the {len(class_names)} classes "
                             f"({', '.join(class_names)})")
        box = obj.find("bndbox")
        if box is None:
            raise ValueError(f"{where} ({name}): missing <bndbox>")
        bbox = [_number(box, tag, f"{where} ({name}) <bndbox>") for tag in ("xmin", "ymin", "xmax", "ymax")]
        # Detectron2 keeps a box whose 0-based width xmax - (xmin - 1) is positive, so xmax >= xmin in the xml.
        if bbox[2] < bbox[0] or bbox[3] < bbox[1]:
            raise ValueError(f"{where} ({name}): degenerate box xmin, ymin, xmax, ymax = {bbox}")
        difficult = obj.find("difficult")
        objects.append({"name": name, "bbox": bbox,
                        "difficult": difficult is not None and (difficult.text or "0").strip() == "1"})
    return int(height), int(width), objects


def read_voc_split(year_dir, split: str, class_names=VOC_CLASS_NAMES) -> tuple[dict, dict]:
    """``(coco_dict, ground_truth)`` of ``year_dir/ImageSets/Main/<split>.txt``.

    ``coco_dict`` has image ids 1..N in the split file's order, each image's VOC id as ``voc_id`` and its file as
    ``JPEGImages/<id>.jpg`` (relative to ``year_dir``), categories 1..K in ``class_names`` order, and one
    annotation per object with ``difficult`` kept. ``ground_truth`` maps each VOC id to its objects with the xml's
    boxes (see ``_read_annotation``), the input of ``benchmarks.detection.voc_evaluation``.
    """
    year_dir = Path(year_dir)
    split_file = year_dir / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.is_file():
        raise FileNotFoundError(f"VOC split file not found: {split_file}")
    voc_ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    if not voc_ids:
        raise ValueError(f"{split_file} lists no images")
    repeated = sorted(voc_id for voc_id, count in Counter(voc_ids).items() if count > 1)
    if repeated:
        raise ValueError(f"{split_file} lists image ids more than once: {', '.join(repeated[:5])}")
    images, annotations, ground_truth = [], [], {}
    for image_id, voc_id in enumerate(voc_ids, start=1):
        height, width, objects = _read_annotation(year_dir / "Annotations" / f"{voc_id}.xml", class_names)
        images.append({"id": image_id, "voc_id": voc_id, "file_name": f"JPEGImages/{voc_id}.jpg",
                       "height": height, "width": width})
        for obj in objects:
            xmin, ymin, xmax, ymax = obj["bbox"]
            x, y = xmin - 1.0, ymin - 1.0
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": class_names.index(obj["name"]) + 1,
                "bbox": [x, y, xmax - x, ymax - y], "area": (xmax - x) * (ymax - y), "iscrowd": 0,
                "difficult": int(obj["difficult"]),
            })
        ground_truth[voc_id] = objects
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}, ground_truth
