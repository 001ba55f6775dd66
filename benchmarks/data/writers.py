"""Write rendered scenes in the real on-disk formats, so generated and real data share one reader.

Every file is written under a temporary name and renamed into place, so a killed run never leaves
a truncated file under a final name.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from .bdd import BDD_2018_NAMES, BDD_IMAGE_DIR, BDD_LABEL_FILES
from .streets import StreetSpec, render_street
from .synthetic import CATEGORIES, GENERATOR_VERSION, SceneSpec, render_scene, scene_rng

__all__ = ["CITYSCAPES_CITIES", "SHAPE_TO_BDD_CLASS", "write_bdd", "write_cityscapes", "write_coco", "write_image_pool",
           "write_image_folder", "write_multilabel_csv", "write_voc"]

JPEG_QUALITY = 95
PROGRESS_BAR_MIN_IMAGES = 300  # smaller writes finish too fast for a progress bar to help
_CATEGORY_NAMES = {category["id"]: category["name"] for category in CATEGORIES}


def _atomic_write_bytes(path: Path, data: bytes):
    # Hidden and without an image extension, so readers never pick up a partial file.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as f:
        f.write(data)
    os.replace(temporary, path)


def _write_jpeg(path: Path, image: np.ndarray):
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        JPEG_QUALITY,
        # No chroma subsampling: object colours stay sharp up to their mask boundary.
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    ]
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), params)
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    _atomic_write_bytes(path, encoded.tobytes())


def _write_png(path: Path, array: np.ndarray):
    """A PNG of a grey (HxW uint8 or uint16) or RGB/RGBA (HxWx3/4 uint8, RGB order) array."""
    if array.ndim == 3:
        array = array[..., [2, 1, 0, 3][: array.shape[2]]]  # OpenCV writes BGR(A)
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    _atomic_write_bytes(path, encoded.tobytes())


def _progress(iterable, total: int, description: str):
    return tqdm(iterable, total=total, desc=description, unit="img", disable=total < PROGRESS_BAR_MIN_IMAGES)


def _compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """Run lengths over the column-major mask, starting with a run of zeros, as COCO crowds are stored."""
    flat = mask.ravel(order="F").astype(np.int8)
    boundaries = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(boundaries).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return {"counts": counts, "size": list(mask.shape)}


def write_coco(root, split: str, num_images: int, spec: SceneSpec = SceneSpec(), seed: int = 0) -> Path:
    """Write a COCO instance-segmentation split and return the annotation file.

    Layout: ``root/annotations/instances_{split}.json`` and ``root/{split}/{image_id:012d}.jpg``.
    Objects are stored as compressed RLE, crowds as uncompressed RLE, as in real COCO.
    """
    root = Path(root)
    image_dir, annotation_dir = root / split, root / "annotations"
    image_dir.mkdir(parents=True, exist_ok=True)
    annotation_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in _progress(range(num_images), num_images, f"COCO {split}"):
        image_id = index + 1
        image, instances = render_scene(scene_rng(seed, f"coco/{split}", index), spec)
        file_name = f"{image_id:012d}.jpg"
        _write_jpeg(image_dir / file_name, image)
        images.append(
            {"id": image_id, "file_name": file_name, "height": spec.height, "width": spec.width, "license": 1}
        )
        for instance in instances:
            encode = _uncompressed_rle if instance["iscrowd"] else _compressed_rle
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": instance["category_id"],
                    "segmentation": encode(instance["mask"]),
                    "area": instance["area"],
                    "bbox": [float(v) for v in instance["bbox"]],
                    "iscrowd": instance["iscrowd"],
                }
            )
    dataset = {
        "info": {
            "description": f"transferlab synthetic scenes, split {split!r}",
            "version": str(GENERATOR_VERSION),
            "seed": seed,
            "contributor": "transferlab",
        },
        "licenses": [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": images,
        "annotations": annotations,
        "categories": [dict(category) for category in CATEGORIES],
    }
    annotation_file = annotation_dir / f"instances_{split}.json"
    _atomic_write_bytes(annotation_file, json.dumps(dataset, separators=(",", ":")).encode())
    return annotation_file


def _touches_border(bbox, spec: SceneSpec) -> bool:
    """Whether a COCO box touches the image border: the object may be cut off (VOC's and BDD's ``truncated``)."""
    x, y, w, h = bbox
    return x == 0 or y == 0 or x + w == spec.width or y + h == spec.height


def _voc_xml(voc_id: str, height: int, width: int, objects: list[tuple]) -> str:
    body = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>{int(truncated)}</truncated>"
        f"<difficult>{int(difficult)}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
        f"<ymax>{ymax}</ymax></bndbox></object>"
        for name, truncated, difficult, (xmin, ymin, xmax, ymax) in objects
    )
    return (f"<annotation><folder>VOC</folder><filename>{voc_id}.jpg</filename><source><database>transferlab "
            f"synthetic scenes</database></source><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size><segmented>0</segmented>{body}</annotation>\n")


def write_voc(year_dir, splits: dict, spec: SceneSpec = SceneSpec(), seed: int = 0) -> Path:
    """Write a PASCAL VOC year directory: ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg``,
    ``ImageSets/Main/<split>.txt``.

    ``splits`` maps each VOC split to ``(coco_split, num_images)``: its scenes are those ``write_coco`` writes for
    ``coco_split`` with the same seed, so the VOC and COCO layouts hold the same images and objects. Ids run
    000001, 000002, ... across the splits in order. Boxes are VOC's 1-based inclusive pixels (``xmin = x + 1``,
    ``xmax = x + w`` of the COCO box); a crowd becomes one object marked ``difficult`` (VOC's neither-hit-nor-miss),
    and an object touching the image border is ``truncated``. Also writes ``trainval.txt`` when both ``train`` and
    ``val`` are written, as the real sets have it.
    """
    year_dir = Path(year_dir)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (year_dir / sub).mkdir(parents=True, exist_ok=True)
    ids_of_split, next_id = {}, 1
    for voc_split, (coco_split, num_images) in splits.items():
        ids = []
        for index in _progress(range(num_images), num_images, f"VOC {voc_split}"):
            image, instances = render_scene(scene_rng(seed, f"coco/{coco_split}", index), spec)
            voc_id = f"{next_id:06d}"
            next_id += 1
            objects = []
            for instance in instances:
                x, y, w, h = instance["bbox"]
                objects.append((_CATEGORY_NAMES[instance["category_id"]], _touches_border(instance["bbox"], spec),
                                bool(instance["iscrowd"]), (x + 1, y + 1, x + w, y + h)))
            _write_jpeg(year_dir / "JPEGImages" / f"{voc_id}.jpg", image)
            _atomic_write_bytes(year_dir / "Annotations" / f"{voc_id}.xml",
                                _voc_xml(voc_id, spec.height, spec.width, objects).encode())
            ids.append(voc_id)
        ids_of_split[voc_split] = ids
    if "train" in ids_of_split and "val" in ids_of_split and "trainval" not in ids_of_split:
        ids_of_split["trainval"] = sorted(ids_of_split["train"] + ids_of_split["val"])
    for voc_split, ids in ids_of_split.items():
        split_file = year_dir / "ImageSets" / "Main" / f"{voc_split}.txt"
        _atomic_write_bytes(split_file, "".join(f"{voc_id}\n" for voc_id in ids).encode())
    return year_dir


# The generator's shapes as BDD100K classes: each look-alike pair (round, polygon, spiky) becomes two classes of one
# det.toml supercategory (human, vehicle, bike), so similar-class error analyses keep their meaning.
SHAPE_TO_BDD_CLASS = {"circle": "pedestrian", "ring": "rider", "square": "car", "triangle": "truck",
                      "star": "motorcycle", "cross": "bicycle"}
_DET_20_TO_2018_NAMES = {new: old for old, new in BDD_2018_NAMES.items()}


def _bdd_frame(name: str, instances: list[dict], spec: SceneSpec, label_format: str, first_label_id: int) -> dict:
    """One frame as the real files have it; box2d corners are inclusive pixels, the inverse of bdd100k's
    ``[x1, y1, x2 - x1 + 1, y2 - y1 + 1]``."""
    labels = []
    for offset, instance in enumerate(instances):
        x, y, w, h = instance["bbox"]
        category = SHAPE_TO_BDD_CLASS[_CATEGORY_NAMES[instance["category_id"]]]
        if label_format == "2018":
            category = _DET_20_TO_2018_NAMES.get(category, category)
        attributes = {"truncated": _touches_border(instance["bbox"], spec),
                      "trafficLightColor": "NA" if label_format == "det_20" else "none",
                      "crowd": bool(instance["iscrowd"])}
        labels.append({"id": str(first_label_id + offset), "category": category, "attributes": attributes,
                       "box2d": {"x1": x, "y1": y, "x2": x + w - 1, "y2": y + h - 1}})
    frame = {"name": name, "attributes": {"weather": "undefined", "scene": "undefined", "timeofday": "undefined"},
             "timestamp": 10000, "size": {"width": spec.width, "height": spec.height}}
    if labels:  # det_train.json leaves out the labels of a frame without objects (bdd100k issue #152)
        frame["labels"] = labels
    return frame


def write_bdd(root, splits: dict, spec: SceneSpec = SceneSpec(), seed: int = 0, label_format: str = "det_20") -> Path:
    """Write BDD100K's layout under the data root ``root`` and return ``root``: ``bdd100k/images/100k/<split>/
    <coco_split>-<n>.jpg`` and the labels of ``label_format``, ``"det_20"`` (``bdd100k/labels/det_20/
    det_<split>.json``) or ``"2018"`` (``bdd100k/labels/bdd100k_labels_images_<split>.json``, with the 2018 names).

    ``splits`` maps each BDD split to ``(coco_split, num_images)``: its scenes are those ``write_coco`` writes for
    ``coco_split`` with the same seed, shapes named by ``SHAPE_TO_BDD_CLASS``. A crowd is a label with the
    ``crowd`` attribute, which bdd100k's converter makes ``iscrowd``; the ``truncated`` attribute marks objects
    touching the border; ``occluded`` is left out, as the generator does not record who hides whom. Each frame
    carries its ``size``, since the scenes are not BDD's 1280 x 720.
    """
    if label_format not in BDD_LABEL_FILES:
        raise ValueError(f"write_bdd: label_format must be one of {', '.join(BDD_LABEL_FILES)}, got {label_format!r}")
    root = Path(root)
    for bdd_split, (coco_split, num_images) in splits.items():
        image_dir = root / BDD_IMAGE_DIR.format(split=bdd_split)
        label_file = root / BDD_LABEL_FILES[label_format].format(split=bdd_split)
        image_dir.mkdir(parents=True, exist_ok=True)
        label_file.parent.mkdir(parents=True, exist_ok=True)
        frames, next_label_id = [], 0
        for index in _progress(range(num_images), num_images, f"BDD100K {bdd_split}"):
            image, instances = render_scene(scene_rng(seed, f"coco/{coco_split}", index), spec)
            name = f"{coco_split}-{index + 1:07d}.jpg"
            _write_jpeg(image_dir / name, image)
            frames.append(_bdd_frame(name, instances, spec, label_format, next_label_id))
            next_label_id += len(instances)
        _atomic_write_bytes(label_file, json.dumps(frames, separators=(",", ":")).encode())
    return root


def write_image_pool(directory, num_images: int, spec: SceneSpec = SceneSpec(), seed: int = 0) -> Path:
    """Write an unlabeled flat directory of scene images (``{index:06d}.jpg``) for self-supervised pretraining."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for index in _progress(range(num_images), num_images, "image pool"):
        image, _ = render_scene(scene_rng(seed, "pool", index), spec)
        _write_jpeg(directory / f"{index:06d}.jpg", image)
    return directory


def _labelled_scenes(seed: int, stream: str, num_images: int, spec: SceneSpec, label, description: str):
    """``(index, image, label)`` of the first ``num_images`` scenes of ``stream`` that ``label(instances)`` labels.

    Scenes it returns a falsy label for are skipped, so indices may have gaps; the index names the
    scene, so any written image can be rendered again from (seed, stream, index).
    """
    if spec.max_objects == 0:
        raise ValueError(f"{description}: needs scenes with objects to label, got spec.max_objects=0")
    index, written = 0, 0
    with _progress(None, num_images, description) as progress:
        while written < num_images:
            image, instances = render_scene(scene_rng(seed, stream, index), spec)
            scene_label = label(instances)
            if scene_label:
                yield index, image, scene_label
                written += 1
                progress.update()
            index += 1



def _dominant_category(instances) -> str | None:
    objects = [instance for instance in instances if not instance["iscrowd"]]
    return _CATEGORY_NAMES[max(objects, key=lambda instance: instance["area"])["category_id"]] if objects else None


def _categories_present(instances) -> list[str]:
    return sorted({_CATEGORY_NAMES[instance["category_id"]] for instance in instances})


def write_image_folder(root, split: str, num_images: int, spec: SceneSpec = SceneSpec(), seed: int = 0, *,
                       stream: str = "classification") -> Path:
    """Write a torchvision ImageFolder split ``root/{split}/{class_name}/{index:06d}.jpg``.

    An image's class is that of its largest visible (non-crowd) object; scenes without one are
    skipped, so indices may have gaps. Only classes that occur get a directory (ImageFolder rejects
    empty class directories). The scenes are those of the stream ``{stream}/{split}``, so image
    folders written under different stream names hold different scenes for the same seed.
    """
    split_dir = Path(root) / split
    scenes = _labelled_scenes(seed, f"{stream}/{split}", num_images, spec, _dominant_category,
                              f"image folder {stream}/{split}")
    for index, image, class_name in scenes:
        class_dir = split_dir / class_name
        class_dir.mkdir(parents=True, exist_ok=True)
        _write_jpeg(class_dir / f"{index:06d}.jpg", image)
    return split_dir


def write_multilabel_csv(root, split: str, num_images: int, spec: SceneSpec = SceneSpec(), seed: int = 0) -> Path:
    """Write a multi-label split ``root/{split}.csv`` with its images in ``root/{split}/{index:06d}.jpg``.

    The CSV has the header ``path,labels`` and rows ``{split}/{index:06d}.jpg,circle;star``: the
    path relative to the CSV and the sorted names of every category visible in the image (crowds
    included), as VOC/COCO multi-label sets are labelled. Scenes without objects are skipped.
    """
    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    rows = csv.writer(table, lineterminator="\n")
    rows.writerow(["path", "labels"])
    scenes = _labelled_scenes(seed, f"classification_multilabel/{split}", num_images, spec, _categories_present,
                              f"multi-label {split}")
    for index, image, labels in scenes:
        relative = f"{split}/{index:06d}.jpg"
        _write_jpeg(root / relative, image)
        rows.writerow([relative, ";".join(labels)])
    csv_file = root / f"{split}.csv"
    _atomic_write_bytes(csv_file, table.getvalue().encode())
    return csv_file


# The generated cities of each split (made-up names; as in the real set, no city is in two splits).
CITYSCAPES_CITIES = {"train": ("synthtown", "synthburg"), "val": ("synthdorf",), "test": ("synthstadt",)}
CITYSCAPES_FRAME = 19  # the annotated frame of every real snippet is its 20th, <city>_<seq>_000019


def write_cityscapes(root, splits: dict, spec: StreetSpec = StreetSpec(), seed: int = 0) -> Path:
    """Write street scenes in the Cityscapes layout and return ``root`` (the Cityscapes directory itself, what
    ``$CITYSCAPES_DATASET`` points at; a data root holds it as ``cityscapes/``).

    ``splits`` maps a split (``train``, ``val``, ``test``) to its number of images. Image ``i`` of a split with
    cities ``CITYSCAPES_CITIES[split]`` (``synth<split>`` for other splits) is city ``i % n``, sequence ``i // n``:
    ``leftImg8bit/<split>/<city>/<city>_<seq:06d>_000019_leftImg8bit.png`` (RGB PNG) and next to it under
    ``gtFine/<split>/<city>/`` the ``_gtFine_labelIds.png`` and ``_gtFine_labelTrainIds.png`` (8-bit grey),
    ``_gtFine_instanceIds.png`` (16-bit grey: labelId, or labelId * 1000 + k for objects), ``_gtFine_color.png``
    (RGBA, the label colours) and ``_gtFine_polygons.json`` (one polygon per object, which cityscapesscripts'
    json2labelImg and json2instanceImg turn into exactly these PNGs), as the real gtFine holds them. Scene ``i`` is
    ``render_street(scene_rng(seed, f"cityscapes/{split}", i), spec)``.
    """
    # imported here: benchmarks.segmentation may import benchmarks.data, not the other way round at import time
    from cityscapesscripts.helpers.labels import labels

    from ..segmentation.cityscapes import LABEL_ID_TO_TRAIN_ID

    colors = np.zeros((256, 4), np.uint8)
    for label in labels:
        if label.id >= 0:
            colors[label.id] = (*label.color, 255)
    root = Path(root)
    for split, num_images in splits.items():
        cities = CITYSCAPES_CITIES.get(split, (f"synth{split}",))
        for index in _progress(range(num_images), num_images, f"Cityscapes {split}"):
            image, label_ids, instance_ids, polygons = render_street(scene_rng(seed, f"cityscapes/{split}", index),
                                                                     spec)
            city = cities[index % len(cities)]
            stem = f"{city}_{index // len(cities):06d}_{CITYSCAPES_FRAME:06d}"
            image_dir, gt_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
            image_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            _write_png(image_dir / f"{stem}_leftImg8bit.png", image)
            _write_png(gt_dir / f"{stem}_gtFine_labelIds.png", label_ids)
            _write_png(gt_dir / f"{stem}_gtFine_labelTrainIds.png", LABEL_ID_TO_TRAIN_ID[label_ids])
            _write_png(gt_dir / f"{stem}_gtFine_instanceIds.png", instance_ids.astype(np.uint16))
            _write_png(gt_dir / f"{stem}_gtFine_color.png", colors[label_ids])
            _atomic_write_bytes(gt_dir / f"{stem}_gtFine_polygons.json",
                                json.dumps(polygons, separators=(",", ":")).encode())
    return root
