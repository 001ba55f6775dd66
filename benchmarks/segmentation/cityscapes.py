"""Cityscapes fine semantic segmentation, read from the real layout (no mmseg, no Detectron2).

Layout (cityscapesscripts ``README.md``; Detectron2 ``data/datasets/cityscapes.py`` ``load_cityscapes_semantic``):
``leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
``gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png``, with ``_gtFine_labelTrainIds.png`` next to it
once cityscapesscripts' ``preparation/createTrainIdLabelImgs.py`` (or mmseg's ``tools/dataset_converters/
cityscapes.py``) has run. Names split on ``_`` into city, sequence and frame (cityscapesscripts ``helpers/
csHelpers.py`` ``getCsFileInfo``), so a city name holds no ``_`` (the real ``bad-honnef`` uses a dash).

Classes: the label table of cityscapesscripts ``helpers/labels.py`` (``labels``): the 19 train classes are the
labels with ``0 <= trainId < 255``, in trainId order; every label whose trainId is 255 or -1 is ignored (255),
exactly the labels with ``ignoreInEval`` (checked at import). A trainId maps back to the first label of the table
that carries it (``trainId2label``), as mmseg's ``CityscapesMetric._convert_to_label_id`` and the Cityscapes
benchmark expect predictions in labelIds.

Dataset names are Detectron2's (``data/datasets/builtin.py`` ``_RAW_CITYSCAPES_SPLITS``, with ``{task}`` =
``sem_seg``), resolved under a data root that holds ``cityscapes/`` as Detectron2's ``$DETECTRON2_DATASETS`` and the
other readers here (``bdd100k/``, ``VOC2007/``) do; a root that is itself the Cityscapes directory (holding
``leftImg8bit/`` and ``gtFine/``: mmseg's ``data_root='data/cityscapes/'`` and cityscapesscripts'
``$CITYSCAPES_DATASET``) is accepted as well.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import torch
from cityscapesscripts.helpers import labels as cs_labels
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

__all__ = ["CITYSCAPES_CLASSES", "CITYSCAPES_DATASETS", "CITYSCAPES_PALETTE", "IGNORE_INDEX", "LABEL_ID_TO_TRAIN_ID",
           "NUM_CLASSES", "TRAIN_ID_TO_LABEL_ID", "CityscapesSemSeg", "cityscapes_dir", "label_ids_to_train_ids",
           "parse_cityscapes_name", "read_label_png", "resolve_cityscapes_dataset"]

IGNORE_INDEX = 255
_TRAIN_LABELS = sorted((label for label in cs_labels.labels if 0 <= label.trainId < 255), key=lambda x: x.trainId)
CITYSCAPES_CLASSES = tuple(label.name for label in _TRAIN_LABELS)
CITYSCAPES_PALETTE = tuple(tuple(label.color) for label in _TRAIN_LABELS)  # RGB, as cityscapesscripts colours them
NUM_CLASSES = len(CITYSCAPES_CLASSES)
if [label.trainId for label in _TRAIN_LABELS] != list(range(NUM_CLASSES)) or NUM_CLASSES != 19:
    raise ImportError("cityscapesscripts' label table no longer has the 19 train classes 0..18")
if any(label.ignoreInEval != (label.trainId in (255, -1)) for label in cs_labels.labels):
    raise ImportError("cityscapesscripts' label table: ignoreInEval no longer matches trainId 255/-1")

# labelId -> trainId lookup (uint8); ids the table does not know are flagged by _UNKNOWN_ID, never a valid trainId.
_UNKNOWN_ID = 254
LABEL_ID_TO_TRAIN_ID = np.full(256, _UNKNOWN_ID, np.uint8)
for _label in cs_labels.labels:
    if _label.id >= 0:  # license plate (id -1) is never drawn into the PNGs (preparation/json2labelImg.py)
        LABEL_ID_TO_TRAIN_ID[_label.id] = IGNORE_INDEX if _label.trainId in (255, -1) else _label.trainId
KNOWN_LABEL_IDS = tuple(int(i) for i in np.flatnonzero(LABEL_ID_TO_TRAIN_ID != _UNKNOWN_ID))
TRAIN_ID_TO_LABEL_ID = np.array([cs_labels.trainId2label[t].id for t in range(NUM_CLASSES)], np.uint8)

SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
# Dataset names -> (image directory, label directory), relative to the Cityscapes directory.
CITYSCAPES_DATASETS = {f"cityscapes_fine_sem_seg_{split}": (f"leftImg8bit/{split}", f"gtFine/{split}")
                       for split in SPLITS}
# <city>_<seq>_<frame>_<type>[_<type2>].png; the real files have 6-digit sequence and frame numbers.
_NAME = re.compile(r"^(?P<city>[^_]+)_(?P<sequence>\d+)_(?P<frame>\d+)_(?P<type>[^_]+(?:_[^_]+)?)\.png$")


def parse_cityscapes_name(file_name) -> dict:
    """``{stem, city, sequence, frame}`` of a Cityscapes file name (``stem`` = ``<city>_<seq>_<frame>``, what
    cityscapesscripts matches predictions to ground truth by)."""
    match = _NAME.match(Path(file_name).name)
    if match is None:
        raise ValueError(f"{file_name}: not a Cityscapes file name <city>_<seq>_<frame>_<type>.png "
                         "(city without '_', sequence and frame numbers)")
    city, sequence, frame = match["city"], match["sequence"], match["frame"]
    return {"stem": f"{city}_{sequence}_{frame}", "city": city, "sequence": sequence, "frame": frame}


def cityscapes_dir(root) -> Path:
    """The Cityscapes directory of a data root: ``root/cityscapes`` if it exists, else ``root`` itself when it holds
    ``leftImg8bit/`` (see the module docstring)."""
    root = Path(root)
    if (root / "cityscapes").is_dir():
        return root / "cityscapes"
    if (root / "leftImg8bit").is_dir():
        return root
    raise FileNotFoundError(f"No Cityscapes directory under {root}: expected {root / 'cityscapes'} or "
                            f"{root / 'leftImg8bit'}")


def resolve_cityscapes_dataset(name: str, root) -> tuple[Path, Path]:
    """``(image_dir, gt_dir)`` of a dataset name (``cityscapes_fine_sem_seg_{train,val,test}``); both must exist."""
    if name not in CITYSCAPES_DATASETS:
        raise ValueError(f"Unknown Cityscapes dataset {name!r}; known: {', '.join(CITYSCAPES_DATASETS)}")
    base = cityscapes_dir(root)
    image_dir, gt_dir = (base / relative for relative in CITYSCAPES_DATASETS[name])
    for directory in (image_dir, gt_dir):
        if not directory.is_dir():
            raise FileNotFoundError(f"Cityscapes dataset {name!r}: directory {directory} not found")
    return image_dir, gt_dir


def read_label_png(path) -> np.ndarray:
    """A single-channel label PNG as uint8 HxW, read as cityscapesscripts and mmseg read it (PIL, palette
    indices for mode 'P'); an unreadable or multi-channel file is an error naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            mode, array = image.mode, np.array(image)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise ValueError(f"{path}: unreadable label PNG ({e})") from None
    if array.ndim != 2 or mode not in ("L", "P"):
        raise ValueError(f"{path}: a label PNG must be single-channel 8-bit ('L' or 'P'), got mode {mode!r}")
    return array


def label_ids_to_train_ids(label_ids: np.ndarray, where="label") -> np.ndarray:
    """trainIds (uint8, 255 = ignore) of a labelIds array; an id outside cityscapesscripts' table is an error."""
    train_ids = LABEL_ID_TO_TRAIN_ID[label_ids]
    if (train_ids == _UNKNOWN_ID).any():
        unknown = sorted(int(v) for v in np.unique(label_ids[train_ids == _UNKNOWN_ID]))
        raise ValueError(f"{where}: unknown Cityscapes label ids {unknown} (known: 0..{max(KNOWN_LABEL_IDS)})")
    return train_ids


def _read_image(path: Path) -> np.ndarray:
    data = np.fromfile(path, np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"{path}: unreadable image PNG")
    return np.ascontiguousarray(image[..., ::-1])


class CityscapesSemSeg(Dataset):
    """``(image, label, info)``: image uint8 3xHxW RGB, label int64 HxW of trainIds (255 = ignore), info
    ``{stem, city, sequence, frame, image_file, label_file}``.

    Images are paired with labels by their ``<city>_<seq>_<frame>`` stem; ``_gtFine_labelTrainIds.png`` is used
    when present, else ``_gtFine_labelIds.png`` converted through the label table. A missing label and an empty
    split fail here; a label of another size than its image, unknown ids and unreadable PNGs fail when the item
    is read (``verify()`` reads every item once), each naming the file.
    """

    def __init__(self, image_dir, gt_dir):
        self.image_dir, self.gt_dir = Path(image_dir), Path(gt_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"Cityscapes image directory {self.image_dir} not found")
        image_files = sorted(self.image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
        if not image_files:
            raise FileNotFoundError(f"Cityscapes split {self.image_dir} is empty: no <city>/*{IMAGE_SUFFIX}")
        self.items = []
        for image_file in image_files:
            info = parse_cityscapes_name(image_file)
            if image_file.parent.name != info["city"]:
                raise ValueError(f"{image_file}: city {info['city']!r} of the name is not its directory's")
            label_dir = self.gt_dir / info["city"]
            train_ids, label_ids = (label_dir / f"{info['stem']}{s}" for s in (TRAIN_IDS_SUFFIX, LABEL_IDS_SUFFIX))
            label_file = train_ids if train_ids.is_file() else label_ids
            if not label_file.is_file():
                raise FileNotFoundError(f"{image_file}: no label, neither {train_ids} nor {label_ids}")
            self.items.append({**info, "image_file": str(image_file), "label_file": str(label_file)})

    @classmethod
    def from_name(cls, name: str, root) -> CityscapesSemSeg:
        """The split of a dataset name (``cityscapes_fine_sem_seg_val``) under a data root."""
        return cls(*resolve_cityscapes_dataset(name, root))

    def __len__(self) -> int:
        return len(self.items)

    def read_label(self, index: int) -> np.ndarray:
        """The trainIds (uint8 HxW) of an item, validated."""
        label_file = self.items[index]["label_file"]
        label = read_label_png(label_file)
        if label_file.endswith(TRAIN_IDS_SUFFIX):
            bad = (label >= NUM_CLASSES) & (label != IGNORE_INDEX)
            if bad.any():
                raise ValueError(f"{label_file}: unknown trainIds {sorted(int(v) for v in np.unique(label[bad]))} "
                                 f"(0..{NUM_CLASSES - 1} and {IGNORE_INDEX})")
            return label
        return label_ids_to_train_ids(label, label_file)

    def __getitem__(self, index: int):
        item = self.items[index]
        image = _read_image(Path(item["image_file"]))
        label = self.read_label(index)
        if label.shape != image.shape[:2]:
            raise ValueError(f"{item['label_file']}: label is {label.shape[1]}x{label.shape[0]} but its image "
                             f"{item['image_file']} is {image.shape[1]}x{image.shape[0]}")
        return (torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(label.astype(np.int64)),
                dict(item))

    def verify(self):
        """Read every item once, so a broken file fails before a long run rather than during it."""
        for index in range(len(self)):
            self[index]
