"""The classification data layer: image folders, multi-label CSVs, drawn splits, budgets, checks, built-in set."""

import collections
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from benchmarks.classification.data import (
    ClassificationData,
    ImageSampleDataset,
    Sample,
    label_budget,
    per_class_shots,
    read_classification_data,
)
from benchmarks.data import CATEGORIES, SceneSpec, StreetSpec, builtin, render_scene, scene_rng, write_builtin_set
from benchmarks.data.writers import write_multilabel_csv

from .conftest import REPO


def write_image(path: Path, color=(200, 30, 30), mode="RGB", size=(8, 8), image_format="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=image_format)
    return path


def write_folders(root: Path, layout: dict[str, dict[str, int]]):
    """``{split: {class: number of images}}``; a split of ``""`` writes the flat ``root/<class>/`` layout."""
    for split, classes in layout.items():
        for name, count in classes.items():
            for index in range(count):
                write_image(root / split / name / f"{index:03d}.png", color=(index, 0, 0))
    return root


def class_counts(samples):
    return collections.Counter(sample.target for sample in samples)


# --- image folders ------------------------------------------------------------------------------


def test_split_folders_are_read_as_imagefolder_reads_them(tmp_path):
    root = write_folders(tmp_path, {"train": {"b": 2, "a": 3}, "val": {"a": 1}, "test": {"a": 1, "b": 1}})
    write_image(root / "train" / "a" / "nested" / "deep.jpg", image_format="JPEG")  # ImageFolder walks class folders
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    data = read_classification_data(root)
    assert data.classes == ["a", "b"] and not data.multilabel and data.notes == []
    assert list(data.splits) == ["train", "val", "test"]
    assert [(sample.path.relative_to(root).as_posix(), sample.target) for sample in data.splits["train"]] == [
        ("train/a/000.png", 0), ("train/a/001.png", 0), ("train/a/002.png", 0), ("train/a/nested/deep.jpg", 0),
        ("train/b/000.png", 1), ("train/b/001.png", 1)]
    assert class_counts(data.splits["val"]) == {0: 1} and class_counts(data.splits["test"]) == {0: 1, 1: 1}


def test_flat_folder_is_train_and_val_test_are_drawn_per_class(tmp_path):
    root = write_folders(tmp_path, {"": {"a": 10, "b": 20, "c": 1}})
    data = read_classification_data(root, seed=0, val_fraction=0.1, test_fraction=0.2)
    assert data.classes == ["a", "b", "c"]
    # per class: round-half-up fraction of the class, and the one image of "c" stays in train
    assert class_counts(data.splits["val"]) == {0: 1, 1: 2}
    assert class_counts(data.splits["test"]) == {0: 2, 1: 4}
    assert class_counts(data.splits["train"]) == {0: 7, 1: 14, 2: 1}
    paths = [sample.path for split in data.splits.values() for sample in split]
    assert sorted(paths) == sorted(root.glob("*/*.png"))  # a partition of the images
    assert data.notes == [
        f"{root} has no train/ folder: read {root}/<class>/ as the train split",
        f"no val split in {root}: 10% of train per class (3 images), seed 0",
        f"no test split in {root}: 20% of train per class (6 images), seed 0",
    ]
    for samples in data.splits.values():  # drawn splits keep the file order
        assert [sample.path for sample in samples] == sorted(sample.path for sample in samples)


def test_drawn_splits_depend_on_the_seed_only(tmp_path):
    root = write_folders(tmp_path, {"train": {"a": 20, "b": 20}, "val": {"a": 2, "b": 2}})
    first, again, other = (read_classification_data(root, seed=seed) for seed in (0, 0, 1))
    assert first.splits == again.splits
    assert first.splits["test"] != other.splits["test"]
    assert class_counts(other.splits["test"]) == class_counts(first.splits["test"]) == {0: 4, 1: 4}
    assert first.splits["val"] == other.splits["val"]  # a given split is never touched
    assert first.notes == [f"no test split in {root}: 20% of train per class (8 images), seed 0"]


def test_at_least_one_image_of_a_class_stays_in_train(tmp_path):
    root = write_folders(tmp_path, {"train": {"a": 2, "b": 4}})
    data = read_classification_data(root, val_fraction=0.5, test_fraction=0.5)
    assert class_counts(data.splits["train"]) == {0: 1, 1: 1}
    assert class_counts(data.splits["val"]) == {0: 1, 1: 2}
    assert class_counts(data.splits["test"]) == {1: 1}


def test_a_split_too_small_to_draw_is_an_error(tmp_path):
    root = write_folders(tmp_path, {"train": {"a": 3, "b": 3}, "val": {"a": 1}})
    with pytest.raises(ValueError, match=r"has no test split, and 10% of each train class rounds to no image"):
        read_classification_data(root, test_fraction=0.1)


def test_empty_class_folder_is_an_error_naming_it(tmp_path):
    root = write_folders(tmp_path, {"train": {"a": 2}, "val": {"a": 1}})
    (root / "train" / "b").mkdir()
    (root / "train" / "b" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=re.escape(f"{root / 'train' / 'b'}: empty class folder")):
        read_classification_data(root)


@pytest.mark.parametrize("split", ["val", "test"])
def test_a_class_missing_from_train_is_an_error(tmp_path, split):
    root = write_folders(tmp_path, {"train": {"a": 2}, split: {"a": 1, "zebra": 1}})
    message = f"{root / split / 'zebra'}: class 'zebra' does not occur in {root / 'train'}"
    with pytest.raises(ValueError, match=re.escape(message)):
        read_classification_data(root)


def test_an_unreadable_image_is_an_error_naming_the_first_one(tmp_path):
    root = write_folders(tmp_path, {"train": {"a": 3}, "val": {"a": 1}, "test": {"a": 1}})
    (root / "train" / "a" / "001.png").write_bytes(b"not a png")
    (root / "train" / "a" / "002.png").write_bytes(b"nor this")
    with pytest.raises(ValueError, match=re.escape(f"{root / 'train' / 'a' / '001.png'}: unreadable image")):
        read_classification_data(root)


@pytest.mark.parametrize("case, message", [
    ("empty root", "empty dataset directory"),
    ("train without classes", "empty dataset: no class folders"),
    ("loose files", "is neither an image-folder dataset"),
    ("val without train", "has val/ and test/ but no train/ folder"),
    ("missing root", "no such data directory"),
])
def test_roots_that_are_no_dataset_are_errors(tmp_path, case, message):
    root = tmp_path / "root"
    if case != "missing root":
        root.mkdir()
    if case == "train without classes":
        (root / "train").mkdir()
    elif case == "loose files":
        write_image(root / "image.png")
    elif case == "val without train":
        write_folders(root, {"val": {"a": 1}, "test": {"a": 1}})
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_classification_data(root)


@pytest.mark.parametrize("option", ["val_fraction", "test_fraction"])
def test_fractions_must_be_proper(tmp_path, option):
    with pytest.raises(ValueError, match=rf"{option} must be in \(0, 1\), got 1.0"):
        read_classification_data(tmp_path, **{option: 1.0})


# --- multi-label CSV ----------------------------------------------------------------------------


def test_csv_rows_give_sorted_label_tuples_and_the_header_is_optional(tmp_path):
    for name in ("x.png", "y.png", "z.png", "w.png"):
        write_image(tmp_path / "images" / name)
    (tmp_path / "train.csv").write_text("path,labels\nimages/x.png,dog;cat\n\nimages/y.png, cat ;cat\nimages/z.png,\n")
    (tmp_path / "val.csv").write_text("images/w.png,dog\n")  # no header
    (tmp_path / "test.csv").write_text("images/x.png,cat\n")
    data = read_classification_data(tmp_path)
    assert data.multilabel and data.classes == ["cat", "dog"] and data.notes == []
    assert [(sample.path, sample.target) for sample in data.splits["train"]] == [
        (tmp_path / "images/x.png", (0, 1)), (tmp_path / "images/y.png", (0,)), (tmp_path / "images/z.png", ())]
    assert data.splits["val"] == [Sample(tmp_path / "images/w.png", (1,))]


def test_csv_layout_wins_over_the_train_folder_holding_its_images(tmp_path):
    write_image(tmp_path / "train" / "000.png")
    write_image(tmp_path / "train" / "001.png")
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.csv").write_text("train/000.png,a\ntrain/001.png,b\n")
    data = read_classification_data(tmp_path)
    assert data.multilabel and data.classes == ["a", "b"] and len(data.splits["train"]) == 2


def test_missing_csv_splits_are_drawn_per_first_label(tmp_path):
    rows = [f"{index:02d}.png,{'a;b' if index < 10 else 'b'}" for index in range(30)]  # first label: a 10x, b 20x
    for index in range(30):
        write_image(tmp_path / f"{index:02d}.png")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    data = read_classification_data(tmp_path, seed=3)
    first_labels = {split: collections.Counter(sample.target[0] for sample in samples)
                    for split, samples in data.splits.items()}
    assert first_labels == {"train": {0: 7, 1: 14}, "val": {0: 1, 1: 2}, "test": {0: 2, 1: 4}}
    assert data.notes == [f"no val split in {tmp_path}: 10% of train per first label (3 images), seed 3",
                          f"no test split in {tmp_path}: 20% of train per first label (6 images), seed 3"]


@pytest.mark.parametrize("csv_name, text, error, message", [
    ("train.csv", "path,labels\na.png,x\nmissing.png,x\n", FileNotFoundError,
     r"train.csv line 3: missing.png does not exist"),
    ("val.csv", "a.png,x\n\na.png,x;unseen\n", ValueError,
     r"val.csv line 3: label 'unseen' does not occur in .*train.csv"),
    ("test.csv", "a.png\n", ValueError, r"test.csv line 1: expected 2 cells"),
    ("train.csv", "path,labels\n", ValueError, r"train.csv: empty dataset: no rows"),
    ("train.csv", "a.png,\n", ValueError, r"train.csv: no row has a label"),
])
def test_bad_csv_rows_are_errors_naming_file_and_line(tmp_path, csv_name, text, error, message):
    write_image(tmp_path / "a.png")
    (tmp_path / "train.csv").write_text("a.png,x\n")
    (tmp_path / csv_name).write_text(text)
    with pytest.raises(error, match=message):
        read_classification_data(tmp_path)


def test_csv_image_that_is_no_image_is_an_error(tmp_path):
    write_image(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x00" * 10)
    (tmp_path / "train.csv").write_text("a.png,x\nb.png,x\n")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'b.png'}: unreadable image")):
        read_classification_data(tmp_path)


# --- fingerprint ----------------------------------------------------------------------------------


def test_fingerprint_follows_files_and_labels_not_the_location(tmp_path):
    root = write_folders(tmp_path / "one", {"train": {"a": 3, "b": 3}, "val": {"a": 1, "b": 1}, "test": {"a": 1}})
    fingerprint = read_classification_data(root).fingerprint()
    assert len(fingerprint) == 64 and read_classification_data(root).fingerprint() == fingerprint
    copy = shutil.copytree(root, tmp_path / "two")  # copy2 keeps sizes and modification times
    assert read_classification_data(copy).fingerprint() == fingerprint
    write_image(copy / "test" / "a" / "000.png", color=(1, 2, 3), size=(9, 9))  # edited
    assert read_classification_data(copy).fingerprint() != fingerprint
    shutil.rmtree(copy)
    copy = shutil.copytree(root, tmp_path / "two")
    os.rename(copy / "train" / "a" / "002.png", copy / "train" / "b" / "002.png")  # relabelled
    assert read_classification_data(copy).fingerprint() != fingerprint
    data = read_classification_data(root)
    as_multilabel = ClassificationData(data.classes, True, data.splits, data.notes)
    assert as_multilabel.fingerprint() != fingerprint


# --- label budgets and shots ----------------------------------------------------------------------


def samples_of(targets):
    return [Sample(Path(f"/data/{index:03d}.png"), target) for index, target in enumerate(targets)]


def test_label_budget_covers_every_class_and_is_seeded():
    samples = samples_of([0] * 50 + [1] * 5 + [2])
    for seed in range(5):
        chosen = label_budget(samples, 3, seed)
        assert class_counts(chosen) == {0: 1, 1: 1, 2: 1}
        budget = label_budget(samples, 20, seed)
        assert len(budget) == 20 and set(class_counts(budget)) == {0, 1, 2}
        assert budget == sorted(budget, key=samples.index)  # keeps the order of the samples
        assert len(set(budget)) == 20
    assert label_budget(samples, 20, 0) == label_budget(samples, 20, 0) != label_budget(samples, 20, 1)
    assert label_budget(samples, len(samples), 0) == samples


def test_label_budget_covers_every_label_of_multilabel_samples():
    samples = samples_of([(0,), (0, 1), (0,), (2,), (1, 2), (0,)] * 5)
    for seed in range(5):
        chosen = label_budget(samples, 3, seed)
        assert len(chosen) == 3 and {label for sample in chosen for label in sample.target} == {0, 1, 2}


@pytest.mark.parametrize("n, message", [(2, r"label budget 2: needs at least one sample per class \(3 classes\)"),
                                        (7, r"at most the 6 samples")])
def test_label_budget_bounds(n, message):
    with pytest.raises(ValueError, match=message):
        label_budget(samples_of([0, 0, 1, 1, 2, 2]), n, 0)


def test_per_class_shots_takes_k_of_each_class_seeded():
    samples = samples_of([0] * 10 + [1] * 4 + [2] * 7)
    for seed in range(5):
        shots = per_class_shots(samples, 4, seed)
        assert class_counts(shots) == {0: 4, 1: 4, 2: 4} and len(set(shots)) == 12
        assert shots == sorted(shots, key=samples.index)
    assert per_class_shots(samples, 2, 0) == per_class_shots(samples, 2, 0) != per_class_shots(samples, 2, 1)


def test_per_class_shots_errors_name_the_class():
    samples = samples_of([0] * 5 + [1] * 2)
    with pytest.raises(ValueError, match=r"5-shot: class 1 has only 2 samples"):
        per_class_shots(samples, 5, 0)
    with pytest.raises(ValueError, match=r"3-shot: class 'cat' has only 2 samples"):
        per_class_shots(samples, 3, 0, classes=["dog", "cat"])
    with pytest.raises(ValueError, match=r"1-shot: class 'fish' has only 0 samples"):
        per_class_shots(samples, 1, 0, classes=["dog", "cat", "fish"])
    with pytest.raises(ValueError, match="single-label"):
        per_class_shots(samples_of([(0,), (1,)]), 1, 0)
    with pytest.raises(ValueError, match=">= 1"):
        per_class_shots(samples, 0, 0)


# --- dataset --------------------------------------------------------------------------------------


def test_dataset_gives_rgb_images_and_targets(tmp_path):
    gray = write_image(tmp_path / "gray.png", color=128, mode="L")
    rgba = write_image(tmp_path / "rgba.png", color=(1, 2, 3, 4), mode="RGBA")
    dataset = ImageSampleDataset([Sample(gray, 2), Sample(rgba, 0)], transform=lambda image: image)
    image, target = dataset[0]
    assert len(dataset) == 2 and image.mode == "RGB" and image.getpixel((0, 0)) == (128, 128, 128)
    assert target.dtype == torch.long and target.shape == () and target.item() == 2
    multilabel = ImageSampleDataset([Sample(gray, (0, 2)), Sample(gray, ())], transform=lambda image: image.size,
                                    num_classes=4)
    assert multilabel[0][0] == (8, 8) and dataset[1][0].mode == "RGB"
    assert multilabel[0][1].tolist() == [1.0, 0.0, 1.0, 0.0] and multilabel[0][1].dtype == torch.float32
    assert multilabel[1][1].tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="num_classes"):
        ImageSampleDataset([Sample(gray, (0,))], transform=None)


def test_an_image_that_fails_to_decode_later_is_named(tmp_path):
    path = write_image(tmp_path / "truncated.png", size=(64, 64), color=(5, 6, 7))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path):  # the header is intact, so the read-time check passes
        pass
    with pytest.raises(ValueError, match=re.escape(f"{path}: cannot decode image")):
        ImageSampleDataset([Sample(path, 0)])[0]


# --- the built-in set -----------------------------------------------------------------------------

TINY = SceneSpec(height=32, width=32)
TINY_MULTILABEL = SceneSpec(height=32, width=32, max_objects=3, crowd_prob=0.0)
TINY_SINGLE = SceneSpec(height=32, width=32, max_objects=1, min_object_size=0.5, max_object_size=0.8, crowd_prob=0.0)
TINY_DOMAINS = {domain: dataclasses.replace(spec, height=48, width=48)
                for domain, spec in zip(builtin.DOMAINS, (builtin.DOMAIN_A_SPEC, builtin.DOMAIN_B_SPEC))}


def write_tiny_builtin(root, **counts):
    arguments = dict(train_images=3, val_images=2, pool_images=2, classification_train_images=6,
                     classification_val_images=4, classification_test_images=3, multilabel_train_images=4,
                     multilabel_val_images=2, multilabel_test_images=2, domain_train_images=4, domain_val_images=2,
                     domain_test_images=2, seed=3, detection_spec=SceneSpec(height=64, width=64, crowd_prob=0.5),
                     small_image_spec=TINY, classification_spec=TINY_SINGLE, multilabel_spec=TINY_MULTILABEL,
                     domain_a_spec=TINY_DOMAINS["domain_a"], domain_b_spec=TINY_DOMAINS["domain_b"],
                     street_train_images=1, street_val_images=1, street_spec=StreetSpec(height=32, width=64))
    return write_builtin_set(root, **{**arguments, **counts})


def test_builtin_detection_and_pool_files_are_unchanged(tmp_path):
    """Digest of what the generator wrote before the classification splits were added and changed.

    It covers the annotation files and the name of every detection and pool file; image bytes are left out,
    as they depend on the JPEG encoder of the OpenCV build.
    """
    root = write_tiny_builtin(tmp_path)
    digest = hashlib.sha256()
    for part in ("annotations", "train", "val", "pool"):
        for path in sorted((root / part).rglob("*")):
            if path.is_file():
                digest.update(path.relative_to(root).as_posix().encode() + b"\0")
                if path.suffix == ".json":
                    digest.update(path.read_bytes())
    assert digest.hexdigest() == "c5e2d5ab1dd5d865c7e5e992c5e7fc567699c311410a5cb0ea74a663860f70a5"


TINY_DETECTION = SceneSpec(height=64, width=64, crowd_prob=0.5)  # write_tiny_builtin's detection_spec


def rendered_scene(relative: Path):
    """The scene a file of ``write_tiny_builtin`` holds, rendered again from its (seed, stream, index)."""
    part = relative.parts[0]
    if part in ("train", "val"):  # COCO: {split}/{image_id:012d}.jpg, image ids from 1
        stream, index, spec = f"coco/{part}", int(relative.stem) - 1, TINY_DETECTION
    elif part == "pool":
        stream, index, spec = "pool", int(relative.stem), TINY
    else:  # {set}/{split}/[{class}/]{index:06d}.jpg
        spec = {"classification": TINY_SINGLE, "classification_multilabel": TINY_MULTILABEL}[part]
        stream, index = f"{part}/{relative.parts[1]}", int(relative.stem)
    return render_scene(scene_rng(3, stream, index), spec)


def test_builtin_files_and_pixels_are_unchanged(tmp_path):
    """Digest of the name of every file of the sets that existed before the domains, the multi-label CSVs and the
    pixels each image was encoded from, so new SceneSpec knobs at their defaults change no image.

    The pixels are those rendered again from the scene each file names, not the decoded JPEG, so the digest does
    not depend on the JPEG encoder of the OpenCV build.
    """
    root = write_tiny_builtin(tmp_path)
    digest = hashlib.sha256()
    for part in ("train", "val", "pool", "classification", "classification_multilabel"):
        for path in sorted((root / part).rglob("*")):
            if not path.is_file():
                continue
            relative = path.relative_to(root)
            digest.update(relative.as_posix().encode() + b"\0")
            if path.suffix == ".csv":
                digest.update(path.read_bytes())
            else:
                digest.update(rendered_scene(relative)[0].tobytes())
    assert digest.hexdigest() == "1ec85c1cccaac8927925040420085d440d376a4c64b841e75af71dd7b12a7065"


@pytest.mark.parametrize("folder, spec", [("classification", TINY_SINGLE), *TINY_DOMAINS.items()])
def test_builtin_image_folder_images_hold_one_object_of_their_class(tmp_path, folder, spec):
    root = write_tiny_builtin(tmp_path, classification_train_images=12, domain_train_images=12)
    names = {category["id"]: category["name"] for category in CATEGORIES}
    paths = list((root / folder / "train").rglob("*.jpg"))
    assert len(paths) == 12
    for path in paths:
        _, instances = render_scene(scene_rng(3, f"{folder}/train", int(path.stem)), spec)
        assert [names[instance["category_id"]] for instance in instances] == [path.parent.name]


def test_builtin_classification_splits_read_with_no_drawn_split(tmp_path):
    root = write_tiny_builtin(tmp_path, classification_train_images=40, classification_test_images=5,
                              multilabel_train_images=30)
    folders = read_classification_data(root / "classification")
    assert folders.notes == [] and not folders.multilabel
    assert [len(folders.splits[split]) for split in ("train", "val", "test")] == [40, 4, 5]
    assert set(folders.classes) <= {category["name"] for category in CATEGORIES}
    multilabel = read_classification_data(root / "classification_multilabel")
    assert multilabel.multilabel and multilabel.notes == []
    assert [len(multilabel.splits[split]) for split in ("train", "val", "test")] == [30, 2, 2]
    assert all(1 <= len(sample.target) <= 3 for samples in multilabel.splits.values() for sample in samples)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["classification_test_images"] == 5 and manifest["multilabel_train_images"] == 30
    assert (manifest["multilabel_val_images"], manifest["multilabel_test_images"]) == (2, 2)
    assert manifest["multilabel_spec"]["max_objects"] == 3
    assert (manifest["domain_train_images"], manifest["domain_val_images"], manifest["domain_test_images"]) == (4, 2, 2)
    assert manifest["domain_b_spec"] == json.loads(json.dumps(dataclasses.asdict(TINY_DOMAINS["domain_b"])))


def test_multilabel_rows_name_every_category_in_the_image(tmp_path):
    csv_file = write_multilabel_csv(tmp_path, "train", 12, TINY_MULTILABEL, seed=4)
    lines = csv_file.read_text().splitlines()
    assert lines[0] == "path,labels" and len(lines) == 13
    names = {category["id"]: category["name"] for category in CATEGORIES}
    for line in lines[1:]:
        relative, labels = line.split(",")
        assert (tmp_path / relative).is_file()
        _, instances = render_scene(scene_rng(4, "classification_multilabel/train", int(Path(relative).stem)),
                                    TINY_MULTILABEL)
        assert labels.split(";") == sorted({names[instance["category_id"]] for instance in instances})


def test_make_data_writes_the_new_splits_with_their_counts(tmp_path):
    spec = importlib.util.spec_from_file_location("make_data", REPO / "tools" / "make_data.py")
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    out = tmp_path / "data"
    make_data.main(["--out", str(out), "--train", "1", "--val", "1", "--pool", "1", "--classification-train", "2",
                    "--classification-val", "1", "--classification-test", "3", "--multilabel-train", "4",
                    "--multilabel-val", "2", "--multilabel-test", "1", "--domain-train", "3", "--domain-val", "1",
                    "--domain-test", "2", "--image-size", "32", "--small-image-size", "32"])
    assert len(list((out / "classification" / "test").glob("*/*.jpg"))) == 3
    for split, count in (("train", 4), ("val", 2), ("test", 1)):
        assert len((out / "classification_multilabel" / f"{split}.csv").read_text().splitlines()) == count + 1
    for domain in ("domain_a", "domain_b"):
        assert [len(list((out / domain / split).glob("*/*.jpg"))) for split in ("train", "val", "test")] == [3, 1, 2]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["multilabel_spec"]["height"] == 32 and manifest["domain_a_spec"]["width"] == 32
    assert manifest["domain_b_spec"]["background_kinds"] == list(builtin.DOMAIN_B_SPEC.background_kinds)
    with pytest.raises(ValueError, match="--multilabel-test -1: an image count must be >= 0"):
        make_data.check_args(make_data.parse_args(["--out", str(tmp_path / "other"), "--multilabel-test", "-1"]))
