"""Unlabelled images from a directory tree: a flat folder or ImageNet-style class subfolders."""
import re
from collections import Counter, defaultdict
from pathlib import Path

import torch
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


def subset_indices(count: int, fraction: float, seed: int, groups=None) -> list:
    """Sorted indices of a random ``fraction`` of ``count`` items, drawn with ``seed`` (HPT's 1/10/25/100 %).

    One permutation of all items is drawn with ``seed`` (a private generator: torch's global RNG is untouched)
    and a prefix of it kept, so the same seed gives the same subset and a smaller fraction's subset lies in a
    larger one's. With ``groups`` (an item's class, one per item) the fraction is kept per group, each group's
    items taken in that same permutation's order: at least one item per group, so no class vanishes. A group
    (or the whole set) of n items keeps round(fraction * n) of them, at least 1.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction!r}: must be a number in (0, 1]")
    if groups is not None and len(groups) != count:
        raise ValueError(f"{len(groups)} groups for {count} items")
    if fraction == 1:
        return list(range(count))
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    members = defaultdict(list)  # group -> its indices, in permutation order
    for index in order:
        members[groups[index] if groups is not None else None].append(index)
    # round half up (int(x + 0.5)) rather than to even: a larger fraction never keeps fewer items
    kept = [index for indices in members.values() for index in indices[:max(1, int(fraction * len(indices) + 0.5))]]
    return sorted(kept)


def subset(files, fraction: float, seed: int = 0, groups=None) -> list:
    """The ``subset_indices`` of ``files``, in their order (sorted stays sorted, so indices mean the same on
    every run); fraction 1 is every file."""
    return [files[index] for index in subset_indices(len(files), fraction, seed, groups)]


class ImageDirectory(Dataset):
    """``dataset[i]`` is ``transform(rgb_image_i)``; labels, if any, are ignored.

    ``fraction`` < 1 keeps a random subset of the images, drawn with ``seed`` (see ``subset``);
    ``num_found`` is how many images ``root`` holds.
    """

    def __init__(self, root, transform=None, fraction: float = 1.0, seed: int = 0):
        self.root = Path(root)
        self.files = find_images(self.root)
        self.num_found = len(self.files)
        self._keep_subset(fraction, seed)
        self.transform = transform

    def _keep_subset(self, fraction: float, seed: int) -> None:
        self.files = subset(self.files, fraction, seed)

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
    under ``root`` (torchvision's ImageFolder convention), classes in sorted order.

    ``fraction`` < 1 keeps that fraction of every class (stratified, at least one image each): the classes are
    the whole folder's.
    """

    def _keep_subset(self, fraction: float, seed: int) -> None:
        unfoldered = [path for path in self.files if path.parent == self.root]
        if unfoldered:
            raise ValueError(f"{self.root}: a labelled pretraining method reads classes from class subfolders "
                             f"(ROOT/<class>/<image>), but {len(unfoldered)} images lie directly in it, e.g. "
                             f"{unfoldered[0].name}")
        self.classes = sorted({path.relative_to(self.root).parts[0] for path in self.files})
        index = {name: i for i, name in enumerate(self.classes)}
        labels = [index[path.relative_to(self.root).parts[0]] for path in self.files]
        kept = subset_indices(len(self.files), fraction, seed, groups=labels)
        self.files, self.labels = [self.files[i] for i in kept], [labels[i] for i in kept]

    def __getitem__(self, index):
        return super().__getitem__(index), self.labels[index]
