"""The datasets a detection config names (``DATASETS.TRAIN``/``TEST``), resolved to COCO-form annotations and the
metric that scores them, as Detectron2's dataset catalog and ``build_evaluator`` do.

- COCO catalog names (``coco_2017_val``, ``builtin_coco_val``) and ``ANN.json:IMAGE_DIR`` pairs: COCO json, COCO AP.
- Detectron2's VOC names (``voc_2007_trainval``, ``voc_2012_val``, …): the VOCdevkit layout read by
  ``benchmarks.data.voc``, scored with ``PascalVOCDetectionEvaluator``'s metric, VOC07's 11-point AP for 2007 sets
  and the area method otherwise (Detectron2 keys it on the year).
- BDD100K names (``bdd100k_det_train``, ``bdd100k_det_val``; ``bdd100k_2018_det_*`` for the 2018 label files): the
  BDD100K layout read by ``benchmarks.data.bdd`` (bdd100k's own COCO conversion, in memory), COCO AP as bdd100k's
  evaluation computes it.
- Several training names are concatenated, as Detectron2 concatenates VOC07+12 trainval (MoCo Table 2).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..data.bdd import BDD_DATASETS, read_bdd_labels, resolve_bdd_dataset
from ..data.builtin import builtin_data_root
from ..data.coco import DATASET_CATALOG, load_coco_annotations, resolve_dataset
from ..data.voc import VOC_CLASS_NAMES, VOC_DATASETS, read_voc_split, resolve_voc_dataset


@dataclass
class DetectionSplit:
    """One config entry's data: ``annotations`` (a path or a loaded dict) with file names relative to ``image_dir``."""

    names: tuple[str, ...]
    image_dir: Path
    annotations: Path | dict
    source: str  # what messages name
    metric: str  # "coco" or "voc"
    voc_ground_truth: dict | None = None  # VOC id -> the xml's objects (benchmarks.data.voc.read_voc_split)
    use_07_metric: bool = False


def is_voc_dataset(name: str) -> bool:
    return name in VOC_DATASETS


def needs_data_root(names) -> bool:
    return any(name in DATASET_CATALOG or name in BDD_DATASETS or is_voc_dataset(name) for name in names)


def dataset_root(cfg) -> Path | None:
    """``DATASETS.ROOT``; else the built-in data when a catalog name needs a root; else none (path pairs only)."""
    if cfg.DATASETS.ROOT:
        return Path(cfg.DATASETS.ROOT)
    if needs_data_root((*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST)):
        return builtin_data_root()
    return None


def _resolve_one(name: str, root, class_names) -> DetectionSplit:
    if is_voc_dataset(name):
        if root is None:
            raise ValueError(f"VOC dataset {name!r} needs a data root (DATASETS.ROOT or --data-root)")
        year_dir, split = resolve_voc_dataset(name, root)
        annotations, ground_truth = read_voc_split(year_dir, split, tuple(class_names) or VOC_CLASS_NAMES)
        return DetectionSplit((name,), year_dir, annotations, str(year_dir / "ImageSets" / "Main" / f"{split}.txt"),
                              "voc", ground_truth, use_07_metric=year_dir.name == "VOC2007")
    if name in BDD_DATASETS:
        if root is None:
            raise ValueError(f"BDD100K dataset {name!r} needs a data root (DATASETS.ROOT or --data-root)")
        image_dir, label_file = resolve_bdd_dataset(name, root)
        split = DetectionSplit((name,), image_dir, read_bdd_labels(label_file), str(label_file), "coco")
    else:
        image_dir, annotation_file = resolve_dataset(name, root)
        split = DetectionSplit((name,), image_dir, annotation_file, str(annotation_file), "coco")
    if class_names:  # COCO json and BDD100K name their own classes: they must be the ones given
        split.annotations = _as_dict(split)
        names = [c["name"] for c in sorted(split.annotations["categories"], key=lambda c: c["id"])]
        if names != list(class_names):
            raise ValueError(f"{split.source} names its categories {names} (in id order), but "
                             f"DATASETS.CLASS_NAMES is {list(class_names)}; they must agree (or leave it empty)")
    return split


def _as_dict(split: DetectionSplit) -> dict:
    if isinstance(split.annotations, dict):
        return split.annotations
    return load_coco_annotations(split.annotations)


def concatenate(splits: list[DetectionSplit]) -> DetectionSplit:
    """The splits as one: images and annotations renumbered, file names relative to the common image directory.

    The categories must be the same (ids and names), as Detectron2 requires of datasets trained together.
    """
    if len(splits) == 1:
        return splits[0]
    image_dir = Path(os.path.commonpath([str(split.image_dir.absolute()) for split in splits]))
    images, annotations, categories = [], [], None
    for split in splits:
        dataset = _as_dict(split)
        these = [(c["id"], c["name"]) for c in dataset["categories"]]
        if categories is None:
            categories, first = dataset["categories"], split
        elif these != [(c["id"], c["name"]) for c in categories]:
            raise ValueError(f"{split.source} and {first.source} have different categories; datasets trained "
                             "together must share them")
        new_image_id = {}
        for image in dataset["images"]:
            new_image_id[image["id"]] = len(images) + 1
            path = os.path.relpath(split.image_dir.absolute() / image["file_name"], image_dir)
            images.append({**image, "id": len(images) + 1, "file_name": path})
        for annotation in dataset["annotations"]:
            annotations.append({**annotation, "id": len(annotations) + 1,
                                "image_id": new_image_id[annotation["image_id"]]})
    return DetectionSplit(
        names=tuple(name for split in splits for name in split.names), image_dir=image_dir,
        annotations={"images": images, "annotations": annotations, "categories": categories},
        source=" + ".join(split.source for split in splits), metric=splits[0].metric)  # TEST is one dataset


def resolve_detection_split(names, root=None, class_names=()) -> DetectionSplit:
    """The data of ``DATASETS.TRAIN`` (one or more names, concatenated) or ``DATASETS.TEST`` (one name)."""
    return concatenate([_resolve_one(name, root, class_names) for name in names])


def to_voc_results(records: list, images: dict) -> list:
    """COCO result records of a VOC split (integer image ids) in Detectron2's VOC conventions: ``image_id`` the VOC
    file id, the box already in Detectron2's 0-based coordinates (the split's annotations are)."""
    return [{**record, "image_id": images[record["image_id"]]["voc_id"]} for record in records]
