"""Classification data as the probes read it: image folders and multi-label CSVs, checked before any training.

Two layouts, told apart by what ``ROOT`` holds:

- image folders (torchvision's ``ImageFolder`` convention): ``ROOT/{train,val,test}/<class>/<image>``, or a
  flat ``ROOT/<class>/<image>`` that is the train split. Classes are the sorted folder names of train;
  images are the files with one of torchvision's ``IMG_EXTENSIONS``, also in subfolders of a class folder;
  names starting with ``.`` are not classes.
- multi-label CSV: ``ROOT/train.csv`` and optionally ``val.csv`` and ``test.csv``, one image per row as
  ``path,label1;label2;...`` with the path relative to the CSV. A first row whose path cell is ``path``
  is a header (``path,labels``); blank lines are skipped; a row may have no labels. Classes are the
  sorted union of the train labels. This layout wins when ``ROOT/train.csv`` exists, since its images
  usually sit in ``ROOT/train/``.

A missing val or test split is drawn from train, per class (multi-label: per first label in sorted
order), so that every class keeps its share; the draw is recorded in ``notes`` for the log.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from ..data.builtin import builtin_data_root, generated_set_version

__all__ = [
    "SPLITS",
    "ClassificationData",
    "ImageSampleDataset",
    "Sample",
    "label_budget",
    "per_class_shots",
    "read_classification_data",
]

SPLITS = ("train", "val", "test")
CSV_HEADER_PATH = "path"
LABEL_SEPARATOR = ";"


@dataclass(frozen=True)
class Sample:
    path: Path
    target: int | tuple[int, ...]  # class index; for multi-label a sorted tuple of class indices


@dataclass
class ClassificationData:
    classes: list[str]
    multilabel: bool
    splits: dict[str, list[Sample]]  # "train", "val" and "test", each non-empty
    notes: list[str]  # how the splits were made, for the log

    def fingerprint(self) -> str:
        """sha256 over the classes and every sample's (path, size, mtime_ns, target): the data part of cache keys.

        Paths are taken relative to the deepest folder holding all samples, so a moved data root that
        keeps its file times still hits the cache; an edited, added or relabelled image misses it.
        """
        samples = [sample for split in self.splits.values() for sample in split]
        base = os.path.commonpath([str(sample.path.parent) for sample in samples])
        splits = {}
        for name in sorted(self.splits):
            rows = []
            for sample in self.splits[name]:
                stat = sample.path.stat()
                rows.append([os.path.relpath(sample.path, base), stat.st_size, stat.st_mtime_ns, sample.target])
            splits[name] = rows
        key = {"classes": self.classes, "multilabel": self.multilabel, "splits": splits}
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()


def data_directory(root: str | os.PathLike | None, builtin: str = "classification") -> Path:
    """The dataset to read: ``root`` itself, or inside a generated set (the built-in one when ``root`` is empty)
    its ``builtin`` subdirectory (``classification``, ``classification_multilabel``, ``domain_a`` or ``domain_b``)."""
    if not root:
        return builtin_data_root() / builtin
    root = Path(root)
    return root / builtin if generated_set_version(root) is not None else root


def read_classification_data(root, *, seed: int = 0, val_fraction: float = 0.1,
                             test_fraction: float = 0.2) -> ClassificationData:
    """Read and check the dataset at ``root``; a missing val or test split is drawn from train.

    ``val_fraction`` and ``test_fraction`` are fractions of each train class (rounded half up; at least
    one image of a class stays in train). Every image's header is opened here, so a bad file is
    reported, by name, before any training starts.
    """
    fractions = {"val": val_fraction, "test": test_fraction}
    for name, fraction in fractions.items():
        if not 0 < fraction < 1:
            raise ValueError(f"{name}_fraction must be in (0, 1), got {fraction}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such data directory")
    if (root / "train.csv").is_file():
        classes, splits = _read_csv_splits(root)
        multilabel, notes = True, []
    else:
        classes, splits, notes = _read_folder_splits(root)
        multilabel = False
    _check_images(splits)
    missing = {name: fraction for name, fraction in fractions.items() if name not in splits}
    if missing:
        splits["train"], drawn = _stratified_split(splits["train"], missing, seed)
        stratum = "first label" if multilabel else "class"
        for name, samples in drawn.items():
            if not samples:
                raise ValueError(f"{root} has no {name} split, and {missing[name]:.0%} of each train {stratum} "
                                 f"rounds to no image: add a {name} split or raise {name}_fraction")
            notes.append(f"no {name} split in {root}: {missing[name]:.0%} of train per {stratum} "
                         f"({len(samples)} images), seed {seed}")
            splits[name] = samples
    return ClassificationData(classes=classes, multilabel=multilabel, splits={name: splits[name] for name in SPLITS},
                              notes=notes)


def _labels(target) -> tuple[int, ...]:
    return target if isinstance(target, tuple) else (target,)


def label_budget(samples: list[Sample], n: int, seed: int) -> list[Sample]:
    """A seeded subset of ``n`` samples in which every class of ``samples`` occurs (HPT's 1000-label protocol).

    In a seeded order, each sample that brings a class not yet covered is taken first; the rest of the
    budget is the next samples of that order. The subset keeps the order of ``samples``.
    """
    classes = {label for sample in samples for label in _labels(sample.target)}
    if not len(classes) <= n <= len(samples):
        raise ValueError(f"label budget {n}: needs at least one sample per class ({len(classes)} classes) "
                         f"and at most the {len(samples)} samples there are")
    order = np.random.default_rng(seed).permutation(len(samples)).tolist()
    chosen, covered = [], set()
    for index in order:
        labels = set(_labels(samples[index].target))
        if not labels <= covered:
            chosen.append(index)
            covered |= labels
    taken = set(chosen)
    chosen += [index for index in order if index not in taken][: n - len(chosen)]
    return [samples[index] for index in sorted(chosen)]


def per_class_shots(samples: list[Sample], k: int, seed: int, *, classes: list[str] | None = None) -> list[Sample]:
    """``k`` seeded samples of each class; the subset keeps the order of ``samples``.

    With ``classes`` (the class names) every one of them must have ``k`` samples and errors name it;
    without, the classes are those that occur in ``samples``.
    """
    if k < 1:
        raise ValueError(f"shots per class must be >= 1, got {k}")
    if any(isinstance(sample.target, tuple) for sample in samples):
        raise ValueError("per-class shots need single-label samples, got multi-label ones")
    members = defaultdict(list)
    for index, sample in enumerate(samples):
        members[sample.target].append(index)
    rng = np.random.default_rng(seed)
    chosen = []
    for target in range(len(classes)) if classes is not None else sorted(members):
        if len(members[target]) < k:
            name = repr(classes[target]) if classes is not None else target
            raise ValueError(f"{k}-shot: class {name} has only {len(members[target])} samples")
        chosen += rng.choice(members[target], size=k, replace=False).tolist()
    return [samples[index] for index in sorted(chosen)]


class ImageSampleDataset(torch.utils.data.Dataset):
    """``(transform(RGB image), target)`` per sample: a long class index, or a float multi-hot vector of
    ``num_classes`` for multi-label samples (what BCE losses and AUROC take)."""

    def __init__(self, samples: list[Sample], transform=None, num_classes: int | None = None):
        self.samples = list(samples)
        self.transform = transform
        self.num_classes = num_classes
        if num_classes is None and any(isinstance(sample.target, tuple) for sample in self.samples):
            raise ValueError("multi-label samples need num_classes for their multi-hot targets")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        sample = self.samples[index]
        try:
            with Image.open(sample.path) as image:
                image = image.convert("RGB")
        except (OSError, SyntaxError) as error:  # PIL's errors for undecodable and truncated files
            raise ValueError(f"{sample.path}: cannot decode image ({error})") from error
        if self.transform is not None:
            image = self.transform(image)
        if isinstance(sample.target, tuple):
            target = torch.zeros(self.num_classes)
            target[list(sample.target)] = 1.0
        else:
            target = torch.tensor(sample.target, dtype=torch.long)
        return image, target


# --- image folders ------------------------------------------------------------------------------


def _class_folders(directory: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(directory) if entry.is_dir() and not entry.name.startswith("."))


def _read_folder_splits(root: Path) -> tuple[list[str], dict[str, list[Sample]], list[str]]:
    present = [name for name in SPLITS if (root / name).is_dir()]
    notes = []
    if "train" in present:
        directories = {name: root / name for name in present}
    elif present:
        raise ValueError(f"{root} has {'/ and '.join(present)}/ but no train/ folder")
    elif _class_folders(root):
        directories = {"train": root}
        notes.append(f"{root} has no train/ folder: read {root}/<class>/ as the train split")
    elif any(not entry.name.startswith(".") for entry in os.scandir(root)):
        raise ValueError(f"{root} is neither an image-folder dataset ({root}/train/<class>/<image> or "
                         f"{root}/<class>/<image>) nor a multi-label one ({root}/train.csv)")
    else:
        raise ValueError(f"{root}: empty dataset directory")
    classes = _class_folders(directories["train"])
    if not classes:
        raise ValueError(f"{directories['train']}: empty dataset: no class folders (<class>/<image>)")
    class_to_index = {name: index for index, name in enumerate(classes)}
    splits = {name: _read_folder_split(directory, class_to_index, directories["train"])
              for name, directory in directories.items()}
    return classes, splits, notes


def _read_folder_split(directory: Path, class_to_index: dict[str, int], train_directory: Path) -> list[Sample]:
    names = _class_folders(directory)
    if not names:
        raise ValueError(f"{directory}: no class folders (<class>/<image>)")
    for name in names:
        if name not in class_to_index:
            raise ValueError(f"{directory / name}: class {name!r} does not occur in {train_directory}")
    found = make_dataset(directory, {name: class_to_index[name] for name in names}, IMG_EXTENSIONS, allow_empty=True)
    counts = defaultdict(int)
    for _, target in found:
        counts[target] += 1
    for name in names:
        if not counts[class_to_index[name]]:
            raise ValueError(f"{directory / name}: empty class folder (no file ending in {', '.join(IMG_EXTENSIONS)})")
    return [Sample(Path(path), target) for path, target in found]


# --- multi-label CSV ----------------------------------------------------------------------------


def _read_csv_rows(csv_file: Path) -> list[tuple[int, Path, list[str]]]:
    """``(line number, image path, sorted labels)`` of every row; the paths must exist."""
    rows, first = [], True
    with open(csv_file, newline="") as f:
        reader = csv.reader(f)
        for cells in reader:
            if not cells:
                continue
            header, first = first and cells[0].strip() == CSV_HEADER_PATH, False
            if header:
                continue
            where = f"{csv_file} line {reader.line_num}"
            if len(cells) != 2:
                raise ValueError(f"{where}: expected 2 cells 'path,label1{LABEL_SEPARATOR}label2...', got {len(cells)}")
            path = csv_file.parent / cells[0].strip()
            if not path.is_file():
                raise FileNotFoundError(f"{where}: {cells[0].strip()} does not exist ({path})")
            labels = sorted({label.strip() for label in cells[1].split(LABEL_SEPARATOR)} - {""})
            rows.append((reader.line_num, path, labels))
    if not rows:
        raise ValueError(f"{csv_file}: empty dataset: no rows")
    return rows


def _read_csv_splits(root: Path) -> tuple[list[str], dict[str, list[Sample]]]:
    rows = {name: _read_csv_rows(root / f"{name}.csv") for name in SPLITS if (root / f"{name}.csv").is_file()}
    classes = sorted({label for _, _, labels in rows["train"] for label in labels})
    if not classes:
        raise ValueError(f"{root / 'train.csv'}: no row has a label")
    class_to_index = {name: index for index, name in enumerate(classes)}
    splits = {}
    for name, split_rows in rows.items():
        samples = []
        for line, path, labels in split_rows:
            unknown = [label for label in labels if label not in class_to_index]
            if unknown:
                raise ValueError(f"{root / f'{name}.csv'} line {line}: label {unknown[0]!r} does not occur in "
                                 f"{root / 'train.csv'}")
            samples.append(Sample(path, tuple(class_to_index[label] for label in labels)))
        splits[name] = samples
    return classes, splits


# --- shared checks and splits -------------------------------------------------------------------


def _stratified_split(samples: list[Sample], fractions: dict[str, float], seed: int):
    """Draw ``fractions`` of each stratum (class, or first label) from ``samples``, seeded.

    Returns what stays and ``{name: drawn}``, all in the order of ``samples``. Per stratum the
    count is rounded half up and capped so that at least one sample stays.
    """
    strata = defaultdict(list)
    for index, sample in enumerate(samples):
        labels = _labels(sample.target)
        strata[labels[0] if labels else -1].append(index)
    rng = np.random.default_rng(seed)
    assignment = {}
    for key in sorted(strata):
        members = strata[key]
        order = rng.permutation(len(members)).tolist()
        start = 0
        for name, fraction in fractions.items():
            count = min(int(fraction * len(members) + 0.5), len(members) - 1 - start)
            for position in order[start:start + count]:
                assignment[members[position]] = name
            start += count
    kept = [sample for index, sample in enumerate(samples) if index not in assignment]
    drawn = {name: [sample for index, sample in enumerate(samples) if assignment.get(index) == name]
             for name in fractions}
    return kept, drawn


def _check_images(splits: dict[str, list[Sample]]):
    """Open every image's header (cheap: PIL decodes lazily); the first that fails is an error naming it."""
    for samples in splits.values():
        for sample in samples:
            try:
                with Image.open(sample.path):
                    pass
            except (OSError, SyntaxError) as error:
                raise ValueError(f"{sample.path}: unreadable image ({error})") from error
