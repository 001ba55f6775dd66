"""Unlabelled images from a directory tree: a flat folder or ImageNet-style class subfolders."""
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def find_images(root) -> list:
    """Every image file under ``root``, recursively, in sorted order so that indices mean the same on every run."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image directory not found: {root}")
    files = sorted(path for path in root.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not files:
        raise FileNotFoundError(f"no images (*.jpg, *.jpeg, *.png) found under {root}")
    return files


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
