"""The scene generator, its on-disk writers and the cached built-in set."""

import colorsys
import dataclasses
import json
import multiprocessing
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torchvision.datasets import ImageFolder

from benchmarks.data import (
    CATEGORIES,
    SceneSpec,
    builtin,
    builtin_data_root,
    render_scene,
    scene_rng,
    write_coco,
    write_image_folder,
    write_image_pool,
)

CROWDED = SceneSpec(crowd_prob=0.5)


def mask_extent(mask):
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]]


def test_categories_have_coco_ids_and_supercategories():
    assert len(CATEGORIES) >= 6
    assert [c["id"] for c in CATEGORIES] == list(range(1, len(CATEGORIES) + 1))
    assert len({c["name"] for c in CATEGORIES}) == len(CATEGORIES)
    supercategories = [c["supercategory"] for c in CATEGORIES]
    assert all(supercategories)
    assert all(supercategories.count(s) >= 2 for s in supercategories)  # similar classes exist


def test_render_is_deterministic():
    image_a, instances_a = render_scene(scene_rng(7, "train", 3), CROWDED)
    image_b, instances_b = render_scene(scene_rng(7, "train", 3), CROWDED)
    np.testing.assert_array_equal(image_a, image_b)
    assert len(instances_a) == len(instances_b)
    for a, b in zip(instances_a, instances_b):
        np.testing.assert_array_equal(a.pop("mask"), b.pop("mask"))
        assert a == b
    image_c, _ = render_scene(scene_rng(7, "train", 4), CROWDED)
    assert not np.array_equal(image_a, image_c)


def test_scene_statistics_and_exact_masks():
    spec = SceneSpec(crowd_prob=0.2)
    object_counts, categories, crowds = [], set(), 0
    for index in range(100):
        image, instances = render_scene(scene_rng(0, "stats", index), spec)
        assert image.shape == (spec.height, spec.width, 3) and image.dtype == np.uint8
        coverage = np.zeros((spec.height, spec.width), np.int64)
        for instance in instances:
            mask = instance["mask"]
            assert mask.dtype == bool and mask.shape == (spec.height, spec.width)
            assert instance["bbox"] == mask_extent(mask)
            assert instance["area"] == mask.sum() >= spec.min_visible_pixels
            coverage += mask
            categories.add(instance["category_id"])
        assert coverage.max() <= 1, "visible masks of one image overlap"
        object_counts.append(sum(not instance["iscrowd"] for instance in instances))
        crowds += sum(instance["iscrowd"] for instance in instances)
    assert np.mean(object_counts) >= 2
    assert min(object_counts) >= spec.min_objects and max(object_counts) <= spec.max_objects
    assert categories == {c["id"] for c in CATEGORIES}
    assert crowds > 0


def test_no_occlusion_allowed_keeps_every_shape_whole():
    """With max_occlusion=0 no object loses a pixel, so every (star-shaped) silhouette stays in one piece."""
    spec = SceneSpec(min_objects=4, max_objects=4, max_occlusion=0.0, crowd_prob=0.0)
    for index in range(30):
        _, instances = render_scene(scene_rng(1, "occlusion", index), spec)
        for instance in instances:
            num_labels, _ = cv2.connectedComponents(instance["mask"].astype(np.uint8), connectivity=8)
            assert num_labels == 2  # background + one piece


def test_scene_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="min_objects"):
        SceneSpec(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="max_occlusion"):
        SceneSpec(max_occlusion=1.0)
    with pytest.raises(ValueError, match="object_size"):
        SceneSpec(min_object_size=0.5, max_object_size=0.2)
    with pytest.raises(ValueError, match="object_hsv"):
        SceneSpec(object_hsv=((0, 60), (0.5, 1.2), (0, 1)))
    with pytest.raises(ValueError, match="background_hsv"):
        SceneSpec(background_hsv=((0, 60), (0.5, 1)))
    with pytest.raises(ValueError, match="background_kinds"):
        SceneSpec(background_kinds=("gradient", "plaid"))
    with pytest.raises(ValueError, match="background_stripe_period"):
        SceneSpec(background_stripe_period=(10, 4))


def test_hsv_palette_colours_every_object_and_background_within_its_ranges():
    object_hsv, background_hsv = ((-20, 50), (0.75, 1.0), (0.8, 1.0)), ((190, 250), (0.05, 0.3), (0.1, 0.35))
    spec = SceneSpec(height=64, width=64, texture_prob=0.0, background_contrast=0.0, crowd_prob=0.0,
                     object_hsv=object_hsv, background_hsv=background_hsv)

    def within(color, ranges):
        hue, saturation, value = colorsys.rgb_to_hsv(*(np.asarray(color) / 255))
        (h0, h1), (s0, s1), (v0, v1) = ranges
        tolerance = 1.5 / 255  # colours are rounded to uint8
        hue = (360 * hue - h0) % 360 + h0  # into [h0, h0 + 360)
        return h0 - 2 <= hue <= h1 + 2 and s0 - 2 * tolerance <= saturation <= s1 + 2 * tolerance and \
            v0 - tolerance <= value <= v1 + tolerance

    for index in range(20):
        image, instances = render_scene(scene_rng(0, "palette", index), spec)
        background = np.logical_not(np.logical_or.reduce([instance["mask"] for instance in instances]))
        assert within(image[background][0], background_hsv)
        for instance in instances:
            assert within(image[instance["mask"]][0], object_hsv)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    write_coco(root, "train", 12, CROWDED, seed=5)
    return root


def test_write_coco_is_byte_identical_for_a_seed(coco_root, tmp_path):
    write_coco(tmp_path, "train", 12, CROWDED, seed=5)
    json_file = "annotations/instances_train.json"
    assert (tmp_path / json_file).read_bytes() == (coco_root / json_file).read_bytes()
    images = sorted(p.name for p in (coco_root / "train").iterdir())
    assert images == [f"{i:012d}.jpg" for i in range(1, 13)]
    for name in images:
        assert (tmp_path / "train" / name).read_bytes() == (coco_root / "train" / name).read_bytes()
    write_coco(tmp_path, "train", 12, CROWDED, seed=6)
    assert (tmp_path / json_file).read_bytes() != (coco_root / json_file).read_bytes()


def test_splits_use_distinct_seeds(tmp_path):
    write_coco(tmp_path, "train", 2, seed=0)
    write_coco(tmp_path, "val", 2, seed=0)
    first = "000000000001.jpg"
    assert (tmp_path / "train" / first).read_bytes() != (tmp_path / "val" / first).read_bytes()


def test_coco_json_round_trips_masks_exactly(coco_root):
    dataset = json.loads((coco_root / "annotations/instances_train.json").read_text())
    assert set(dataset) == {"info", "licenses", "images", "annotations", "categories"}
    assert dataset["categories"] == CATEGORIES
    coco = COCO(str(coco_root / "annotations/instances_train.json"))
    num_crowd = 0
    for index, image_info in enumerate(dataset["images"]):
        assert image_info["file_name"] == f"{image_info['id']:012d}.jpg"
        assert (image_info["height"], image_info["width"]) == (CROWDED.height, CROWDED.width)
        _, instances = render_scene(scene_rng(5, "coco/train", index), CROWDED)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image_info["id"]))
        assert len(annotations) == len(instances)
        for annotation, instance in zip(annotations, instances):
            mask = coco.annToMask(annotation).astype(bool)
            np.testing.assert_array_equal(mask, instance["mask"])
            assert annotation["bbox"] == mask_extent(mask)
            assert annotation["area"] == mask.sum() == mask_utils.area(coco.annToRLE(annotation))
            assert annotation["category_id"] == instance["category_id"]
            assert annotation["iscrowd"] == instance["iscrowd"]
            counts = annotation["segmentation"]["counts"]
            if annotation["iscrowd"]:
                num_crowd += 1
                assert isinstance(counts, list)  # uncompressed RLE, as real COCO stores crowds
            else:
                assert isinstance(counts, str)
    assert num_crowd > 0


def test_write_image_pool(tmp_path):
    spec = SceneSpec(height=64, width=80)
    write_image_pool(tmp_path / "pool", 5, spec, seed=1)
    files = sorted((tmp_path / "pool").iterdir())
    assert [f.name for f in files] == [f"{i:06d}.jpg" for i in range(5)]
    assert cv2.imread(str(files[0])).shape == (64, 80, 3)


def test_write_image_folder_labels_the_dominant_object(tmp_path):
    spec = SceneSpec(height=64, width=64)
    write_image_folder(tmp_path, "train", 40, spec, seed=2)
    folder = ImageFolder(str(tmp_path / "train"))
    assert len(folder) == 40
    names = {c["id"]: c["name"] for c in CATEGORIES}
    for path, label in folder.samples[:10]:
        index = int(Path(path).stem)
        _, instances = render_scene(scene_rng(2, "classification/train", index), spec)
        dominant = max((i for i in instances if not i["iscrowd"]), key=lambda i: i["area"])
        assert folder.classes[label] == names[dominant["category_id"]]


# Per-image statistics of the built-in domains: mean chroma (max - min of R, G, B over 255: HSV saturation times
# value, which unlike saturation is stable on B's near-black pixels) and mean gradient magnitude (Sobel, per pixel
# of the grey image). Over all 900 images of each domain of the default set: chroma A 0.208-0.655, B 0.008-0.111;
# gradient A 0.35-5.69, B 8.91-38.0.
# Chroma: every colour of B has saturation <= 0.3 and its background, most of the image, value <= 0.35, so B stays
# near 0.3 * 0.35 ~ 0.1; A's background alone has saturation >= 0.2 at value >= 0.75 (0.15) and its large object
# saturation >= 0.75 at value >= 0.8 (0.6), so A stays above ~0.2. 0.16 leaves >= 0.05 to both measured extremes.
# Gradient: A's one solid object on a smooth background of contrast 0.1 has only its outline as an edge (rings, with
# two outlines, come highest); B's backgrounds are stripes of period <= 10 px, checkers of <= 8 px cells or
# per-pixel grain of peak-to-peak >= 0.2 * 255, a mean gradient of about 2 * 51 / 10 = 10 for the smoothest (less
# where a dark base clips). 7, about the geometric mean of the measured extremes, leaves 1.3 and 1.9 to them.
DOMAIN_CHROMA_THRESHOLD = 0.16
DOMAIN_GRADIENT_THRESHOLD = 7.0


def colour_and_texture_statistics(path):
    image = cv2.imread(str(path)).astype(np.float64)
    chroma = (image.max(axis=2) - image.min(axis=2)).mean() / 255
    gray = image.mean(axis=2)
    gradient = np.hypot(cv2.Sobel(gray, cv2.CV_64F, 1, 0), cv2.Sobel(gray, cv2.CV_64F, 0, 1)) / 8
    return chroma, gradient.mean()


def test_builtin_domains_are_told_apart_image_by_image_by_chroma_and_by_texture(tmp_path):
    statistics = {}
    for domain, spec in zip(builtin.DOMAINS, (builtin.DOMAIN_A_SPEC, builtin.DOMAIN_B_SPEC)):
        write_image_folder(tmp_path / domain, "train", 60, spec, seed=builtin.SEED, stream=domain)
        files = sorted((tmp_path / domain / "train").glob("*/*.jpg"))
        statistics[domain] = np.array([colour_and_texture_statistics(path) for path in files])
    a, b = statistics["domain_a"], statistics["domain_b"]
    assert len(a) == len(b) == 60
    assert a[:, 0].min() > DOMAIN_CHROMA_THRESHOLD > b[:, 0].max()
    assert a[:, 1].max() < DOMAIN_GRADIENT_THRESHOLD < b[:, 1].min()


def test_writers_leave_no_temporary_files(coco_root):
    assert not [p for p in coco_root.rglob("*") if p.name.startswith(".")]


# --- built-in set -------------------------------------------------------------------------------


@pytest.fixture
def small_builtin(monkeypatch, tmp_path):
    """A tiny default set in a private cache; returns the list of directories generation wrote to."""
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    for name, value in [
        ("TRAIN_IMAGES", 3),
        ("VAL_IMAGES", 2),
        ("POOL_IMAGES", 2),
        ("CLASSIFICATION_TRAIN_IMAGES", 2),
        ("CLASSIFICATION_VAL_IMAGES", 2),
        ("CLASSIFICATION_TEST_IMAGES", 2),
        ("MULTILABEL_TRAIN_IMAGES", 2),
        ("MULTILABEL_VAL_IMAGES", 2),
        ("MULTILABEL_TEST_IMAGES", 2),
        ("DOMAIN_TRAIN_IMAGES", 2),
        ("DOMAIN_VAL_IMAGES", 1),
        ("DOMAIN_TEST_IMAGES", 1),
    ]:
        monkeypatch.setattr(builtin, name, value)
    monkeypatch.setattr(builtin, "DETECTION_SPEC", SceneSpec(height=48, width=48))
    monkeypatch.setattr(builtin, "SMALL_IMAGE_SPEC", SceneSpec(height=32, width=32))
    monkeypatch.setattr(builtin, "CLASSIFICATION_SPEC", SceneSpec(height=32, width=32, max_objects=1, crowd_prob=0.0))
    monkeypatch.setattr(builtin, "MULTILABEL_SPEC", SceneSpec(height=32, width=32, max_objects=3, crowd_prob=0.0))
    monkeypatch.setattr(builtin, "DOMAIN_A_SPEC", dataclasses.replace(builtin.DOMAIN_A_SPEC, height=32, width=32))
    monkeypatch.setattr(builtin, "DOMAIN_B_SPEC", dataclasses.replace(builtin.DOMAIN_B_SPEC, height=32, width=32))
    generated = []
    write = builtin.write_builtin_set

    def recording_write(root, **kwargs):
        generated.append(Path(root))
        with open(tmp_path / "generations.log", "a") as log:  # visible across forked processes
            log.write(f"{root}\n")
        return write(root, **kwargs)

    monkeypatch.setattr(builtin, "write_builtin_set", recording_write)
    return generated


def test_builtin_set_is_generated_once_and_reused(small_builtin, tmp_path):
    root = builtin_data_root()
    assert root.parent == tmp_path / "cache" / "data"
    assert (root / "annotations/instances_train.json").is_file()
    assert len(list((root / "val").iterdir())) == 2
    assert len(list((root / "pool").iterdir())) == 2
    assert (root / "classification/train").is_dir() and (root / "manifest.json").is_file()
    for domain in ("domain_a", "domain_b"):
        assert [len(list((root / domain / split).glob("*/*.jpg"))) for split in ("train", "val", "test")] == [2, 1, 1]
    assert builtin_data_root() == root
    assert len(small_builtin) == 1
    assert not [p for p in root.parent.iterdir() if ".tmp-" in p.name]


def test_builtin_set_changes_directory_when_parameters_change(small_builtin, monkeypatch):
    first = builtin_data_root()
    monkeypatch.setattr(builtin, "TRAIN_IMAGES", 4)
    second = builtin_data_root()
    assert first != second and len(list((second / "train").iterdir())) == 4


def test_leftover_temporary_directory_is_not_taken_for_a_set(small_builtin, tmp_path):
    data_dir = tmp_path / "cache" / "data"
    root = builtin_data_root()
    leftover = data_dir / f".{root.name}.tmp-99999"
    leftover.mkdir()
    (leftover / "annotations").mkdir()  # a killed run that had got far
    (leftover / "annotations" / "instances_train.json").write_text("{}")
    import shutil

    shutil.rmtree(root)
    assert builtin_data_root() == root
    assert len(small_builtin) == 2
    assert not leftover.exists()
    assert json.loads((root / "annotations/instances_train.json").read_text())["images"]


def test_unknown_builtin_set_is_an_error(small_builtin):
    with pytest.raises(ValueError, match="known: default"):
        builtin_data_root("imagenet")


def _resolve_builtin(queue):
    queue.put(str(builtin_data_root()))


def test_concurrent_processes_generate_once(small_builtin, tmp_path):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    processes = [context.Process(target=_resolve_builtin, args=(queue,)) for _ in range(2)]
    for process in processes:
        process.start()
    roots = {queue.get(timeout=60) for _ in processes}
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert len(roots) == 1
    assert len((tmp_path / "generations.log").read_text().splitlines()) == 1
