"""COCO-format detection datasets: the dataset catalog and a torch Dataset over pycocotools.

The same reader serves real COCO (``/data/coco``) and the built-in generated set. Annotation files
are validated when the dataset is built (``coco_json``, which the diagnosis uses without torch), so a
broken file fails at once with the file and the annotation id in the message instead of deep inside
a training run.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO

from ..modeling.masks import BitMasks, PolygonMasks, polygons_to_bitmask
from .coco_json import is_finite_number, load_coco_annotations

__all__ = ["DATASET_CATALOG", "resolve_dataset", "load_coco_annotations", "COCODetection"]

logger = logging.getLogger(__name__)

# name -> (image directory, annotation file), both relative to a data root (Detectron2's builtin layout).
DATASET_CATALOG = {
    "coco_2017_train": ("train2017", "annotations/instances_train2017.json"),
    "coco_2017_val": ("val2017", "annotations/instances_val2017.json"),
    "builtin_coco_train": ("train", "annotations/instances_train.json"),
    "builtin_coco_val": ("val", "annotations/instances_val.json"),
}


def resolve_dataset(name: str, root=None) -> tuple[Path, Path]:
    """``(image_dir, annotation_file)`` of a dataset named in ``DATASETS.TRAIN``/``TEST``; both must exist.

    ``name`` is a catalog name, resolved under the data root ``root``, or ``path/to/ann.json:path/to/image_dir``
    (Detectron2's ``register_coco_instances`` in config form), relative paths taken from the current directory.
    """
    if ".json:" in name:
        annotation_part, _, image_part = name.partition(".json:")
        if not image_part:
            raise ValueError(f"Dataset {name!r} names no image directory after the ':' (ANNOTATIONS.json:IMAGE_DIR)")
        annotation_file, image_dir = Path(annotation_part + ".json").absolute(), Path(image_part).absolute()
    elif name in DATASET_CATALOG:
        if root is None:
            raise ValueError(f"Dataset {name!r} is a catalog name and needs a data root")
        image_dir, annotation_file = (Path(root) / relative for relative in DATASET_CATALOG[name])
    else:
        raise ValueError(f"Unknown dataset {name!r}; give a catalog name ({', '.join(sorted(DATASET_CATALOG))}) "
                         "or a COCO annotation file and its image directory as ANNOTATIONS.json:IMAGE_DIR")
    if not annotation_file.is_file():
        raise FileNotFoundError(f"Annotation file of dataset {name!r} not found: {annotation_file}")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"Image directory of dataset {name!r} not found: {image_dir}")
    return image_dir, annotation_file


class COCODetection(torch.utils.data.Dataset):
    """COCO instance annotations as torchvision detection samples.

    ``dataset[i]`` is ``(image, target)``: ``image`` a uint8 3xHxW RGB tensor and ``target`` a dict
    with ``boxes`` (float32 Nx4, absolute XYXY), ``labels`` (int64 N, contiguous 1..K; 0 is the
    background, as torchvision detection models expect), ``masks`` (if ``with_masks``: a
    ``PolygonMasks`` or ``BitMasks`` of the N instances) and ``image_id``. Crowd annotations and
    boxes thinner than one pixel are left out of the target, as in Detectron2's training data; they
    stay in ``coco`` for evaluation. Images are read with their EXIF orientation applied, as
    Detectron2's ``read_image`` does.

    Args:
        image_dir: directory that the images' ``file_name`` entries are relative to.
        ann_file: COCO instances json, or an already loaded COCO-format dict (a VOC split read by
            ``benchmarks.data.voc``, several sets concatenated); ``source`` then names it in messages.
        with_masks: return instance masks (polygons, compressed or uncompressed RLE).
        filter_empty: drop images without a usable annotation (for training; evaluate with False).
        transforms: optional callable ``(image, target) -> (image, target)``.
        mask_format: ``"polygon"`` (Detectron2's default ``INPUT.MASK_FORMAT``): an image whose instances
            all have polygons gets ``PolygonMasks``; an image with an RLE instance gets ``BitMasks``
            (Detectron2 cannot make polygons from RLE and fails there). ``"bitmask"``: ``BitMasks``
            always, polygons rasterised at full resolution.
    """

    def __init__(
        self,
        image_dir,
        ann_file,
        with_masks: bool = True,
        filter_empty: bool = True,
        transforms: Callable | None = None,
        mask_format: str = "polygon",
        source: str | None = None,
    ):
        if mask_format not in ("polygon", "bitmask"):
            raise ValueError(f"mask_format must be 'polygon' or 'bitmask', got {mask_format!r}")
        self.image_dir = Path(image_dir)
        loaded = isinstance(ann_file, dict)
        # what messages name: the annotation file, or what the loaded dict was read from
        self.ann_file = source or ("the COCO annotation dict" if loaded else Path(ann_file))
        self.with_masks = with_masks
        self.transforms = transforms
        dataset = load_coco_annotations(ann_file, with_masks, name=str(self.ann_file))
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco = COCO()
            self.coco.dataset = dataset
            self.coco.createIndex()

        coco_category_ids = sorted(self.coco.cats)
        self.coco_to_contiguous_id = {coco_id: i + 1 for i, coco_id in enumerate(coco_category_ids)}
        self.contiguous_to_coco_id = {i: coco_id for coco_id, i in self.coco_to_contiguous_id.items()}
        # class_names[label - 1] is the name of contiguous label ``label``.
        self.class_names = [self.coco.cats[coco_id]["name"] for coco_id in coco_category_ids]

        self._instances = {}  # image id -> (boxes, labels, annotations) of the usable annotations
        num_degenerate = 0
        for image_id, image in self.coco.imgs.items():
            boxes, labels, annotations = [], [], []
            for annotation in self.coco.imgToAnns.get(image_id, []):
                if annotation.get("iscrowd", 0):
                    continue
                x, y, w, h = annotation["bbox"]
                x0, y0 = min(max(x, 0), image["width"]), min(max(y, 0), image["height"])
                x1, y1 = min(max(x + w, 0), image["width"]), min(max(y + h, 0), image["height"])
                if x1 - x0 < 1 or y1 - y0 < 1:
                    num_degenerate += 1
                    continue
                boxes.append([x0, y0, x1, y1])
                labels.append(self.coco_to_contiguous_id[annotation["category_id"]])
                annotations.append(annotation)
            self._instances[image_id] = (
                np.array(boxes, dtype=np.float32).reshape(-1, 4),
                np.array(labels, dtype=np.int64),
                annotations,
            )
        if num_degenerate:
            logger.warning(
                "Dropped %d annotations of %s whose box is less than 1 pixel wide or high inside the image.",
                num_degenerate,
                self.ann_file,
            )

        image_ids = sorted(self.coco.imgs)
        if filter_empty:
            kept = [image_id for image_id in image_ids if len(self._instances[image_id][1])]
            if len(kept) < len(image_ids):
                logger.info(
                    "Removed %d images without usable (non-crowd, non-degenerate) annotations from %s; %d left.",
                    len(image_ids) - len(kept),
                    self.ann_file,
                    len(kept),
                )
            image_ids = kept
        if not image_ids:
            reason = " after removing images without usable annotations" if filter_empty else ""
            raise ValueError(f"Dataset from {self.ann_file} has no images{reason}")
        self.image_ids = image_ids

        self._polygon_images = set()  # images whose masks are PolygonMasks
        if with_masks and mask_format == "polygon":
            self._polygon_images = {
                image_id for image_id in image_ids
                if all(isinstance(a["segmentation"], list) for a in self._instances[image_id][2])
            }
            if len(self._polygon_images) < len(image_ids):
                logger.info(
                    "%d of %d images of %s have RLE instance masks: their mask targets are cropped from bitmasks "
                    "(MASK_FORMAT 'polygon' needs polygons; Detectron2 would stop at these images).",
                    len(image_ids) - len(self._polygon_images), len(image_ids), self.ann_file,
                )

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of sample ``index`` from the annotation file, without reading the image."""
        info = self.coco.imgs[self.image_ids[index]]
        return info["height"], info["width"]

    def image_path(self, image_id: int) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    def check_images(self):
        """Fail fast, before training, if any image file is missing (existence only; no decoding)."""
        missing = [path for path in map(self.image_path, self.image_ids) if not os.path.exists(path)]
        if missing:
            examples = ", ".join(str(path) for path in missing[:5])
            raise FileNotFoundError(
                f"{len(missing)} of {len(self.image_ids)} images listed in {self.ann_file} are missing, e.g. {examples}"
            )

    def _read_image(self, image_id: int) -> torch.Tensor:
        path = self.image_path(image_id)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Image file not found: {path} (image id {image_id} in {self.ann_file})")
        # cv2 applies the EXIF orientation as Detectron2's read_image does (all 8 orientations agree for JPEG, PNG
        # and WebP); grayscale, CMYK and 16-bit become 8-bit colour.
        try:
            encoded = np.fromfile(path, dtype=np.uint8)
        except OSError as e:
            raise OSError(f"Cannot read image file {path}: {e}") from e
        image = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if encoded.size else None
        if image is None:
            raise OSError(f"Cannot decode image file {path} (image id {image_id} in {self.ann_file})")
        info = self.coco.imgs[image_id]
        expected = (info["height"], info["width"])
        if image.shape[:2] != expected:
            stored = cv2.imdecode(encoded, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION).shape[:2]
            exif = (
                "; that is its size before its EXIF orientation is applied, which Detectron2 applies too (the "
                "annotation was made ignoring it): fix width/height or the file's orientation tag"
                if stored == expected else ""
            )
            raise ValueError(
                f"Image file {path} is {image.shape[1]}x{image.shape[0]} (WxH), but {self.ann_file} "
                f"says {info['width']}x{info['height']} for image id {image_id}{exif}"
            )
        return torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1)))

    def _polygons(self, annotation: dict) -> list[np.ndarray]:
        # Coordinates are checked here, per image read, rather than all of them when the file is loaded.
        if not all(is_finite_number(v) for polygon in annotation["segmentation"] for v in polygon):
            raise ValueError(f"Annotation id {annotation['id']} in {self.ann_file} has a polygon coordinate "
                             "that is not a finite number")
        return [np.asarray(polygon, dtype=np.float64) for polygon in annotation["segmentation"]]

    def _polygon_masks(self, image_id: int, annotations: list[dict]) -> PolygonMasks:
        info = self.coco.imgs[image_id]
        return PolygonMasks([self._polygons(a) for a in annotations], (info["height"], info["width"]))

    def _bitmasks(self, image_id: int, annotations: list[dict]) -> BitMasks:
        """Full-image masks; polygons rasterised as Detectron2's polygons_to_bitmask does."""
        height, width = self.coco.imgs[image_id]["height"], self.coco.imgs[image_id]["width"]
        masks = np.zeros((len(annotations), height, width), dtype=bool)
        for i, annotation in enumerate(annotations):
            if isinstance(annotation["segmentation"], list):
                masks[i] = polygons_to_bitmask(self._polygons(annotation), height, width)
                continue
            try:
                masks[i] = self.coco.annToMask(annotation)
            except (TypeError, ValueError) as e:  # pycocotools does not say which annotation failed
                raise ValueError(
                    f"Cannot decode the segmentation of annotation id {annotation['id']} in {self.ann_file}: {e}"
                ) from e
        return BitMasks(torch.from_numpy(masks))

    def __getitem__(self, index: int):
        image_id = self.image_ids[index]
        image = self._read_image(image_id)
        boxes, labels, annotations = self._instances[image_id]
        target = {"boxes": torch.tensor(boxes), "labels": torch.tensor(labels), "image_id": image_id}
        if self.with_masks:
            masks = self._polygon_masks if image_id in self._polygon_images else self._bitmasks
            target["masks"] = masks(image_id, annotations)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
