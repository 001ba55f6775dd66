"""Unlabelled images from a directory tree: a flat folder or ImageNet-style class subfolders."""
import re
from collections import Counter
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
# Directory names of evaluation splits (ImageNet's val/, COCO's val2017/, the built-in set's val/): images under
# them were meant for measuring, not for pretraining.
HELD_OUT_SPLIT = re.compile(r"(val|valid|validation|test)\d*", re.IGNORECASE)


def find_images(root) -> list:
    """Every image file under ``root``, recursively, in sorted order so that indices mean the same on every run."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image directory not found: {root}")
    paths = [path for path in root.rglob("*") if path.is_file()]
    files = sorted(path for path in paths if path.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        suffixes = sorted({path.suffix.lower() or "no suffix" for path in paths})
        found = f"it holds {len(paths)} other files ({', '.join(suffixes)})" if paths else "it is empty"
        raise FileNotFoundError(f"no images (*.jpg, *.jpeg, *.png) found under {root}: {found}")
    return files


def held_out_images(root, files) -> dict:
    """How many of ``files`` lie under each subdirectory of ``root`` named like an evaluation split (val, valid,
    validation, test, optionally with digits: val2017): {that subdirectory: count}."""
    root = Path(root)
    counts = Counter()
    for path in files:
        parts = Path(path).relative_to(root).parts[:-1]
        split = next((i for i, part in enumerate(parts) if HELD_OUT_SPLIT.fullmatch(part)), None)
        if split is not None:
            counts[root.joinpath(*parts[: split + 1])] += 1
    return dict(sorted(counts.items()))


class ImageDirectory(Dataset):
    """``dataset[i]`` is ``transform(rgb_image_i)``; labels, if any, are ignored."""

    def __init__(self, root, transform=None):
        self.root = Path(root)
        self.files = find_images(self.root)
        self.transform = transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        path = self.files[index]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except (OSError, ValueError) as err:
            raise OSError(f"cannot read image {path}: {err}") from err
        return self.transform(image) if self.transform is not None else image


class LabelledImageFolder(ImageDirectory):
    """``dataset[i]`` is ``(transform(rgb_image_i), class index)``, the class being the image's top-level folder
    under ``root`` (torchvision's ImageFolder convention), classes in sorted order."""

    def __init__(self, root, transform=None):
        super().__init__(root, transform)
        unfoldered = [path for path in self.files if path.parent == self.root]
        if unfoldered:
            raise ValueError(f"{self.root}: a labelled pretraining method reads classes from class subfolders "
                             f"(ROOT/<class>/<image>), but {len(unfoldered)} images lie directly in it, e.g. "
                             f"{unfoldered[0].name}")
        self.classes = sorted({path.relative_to(self.root).parts[0] for path in self.files})
        index = {name: i for i, name in enumerate(self.classes)}
        self.labels = [index[path.relative_to(self.root).parts[0]] for path in self.files]

    def __getitem__(self, index):
        return super().__getitem__(index), self.labels[index]
