"""The detection input pipeline: transforms on both mask types, the empty-instance filter, channel order,
aspect-ratio grouped batches that resume exactly, and which config a data root gets."""
import itertools
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from benchmarks.data import SceneSpec, StreetSpec, write_builtin_set
from benchmarks.data.coco import resolve_dataset
from benchmarks.detection import data as detection_data  # its TestSamples is not a test class
from benchmarks.detection.config import get_detection_defaults
from benchmarks.detection.data import (
    TrainingSamples,
    build_train_loader,
    hflip_sample,
    resize_sample,
    shortest_edge_size,
)
from benchmarks.engine.sampler import GroupedBatchSampler, InfiniteSampler, sample_seed
from benchmarks.modeling.masks import BitMasks, PolygonMasks
from benchmarks.tasks import CONFIG_ROOT, TASKS, choose_config

# Two objects on a 427x640 (H x W) image: a triangle and a rectangle in two parts.
POLYGONS = [
    [np.array([100.5, 50.25, 300.75, 80.5, 180.0, 400.5])],
    [np.array([350.0, 20.0, 600.5, 20.0, 600.5, 150.25, 350.0, 150.25]), np.array([400.0, 200.0, 500.0, 210.0,
                                                                                   450.0, 330.0])],
]


def polygon_bounds(instance):
    points = np.concatenate([polygon.reshape(-1, 2) for polygon in instance])
    return [*points.min(0), *points.max(0)]


def mask_bounds(mask: torch.Tensor):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def cfg_for(**overrides):
    cfg = get_detection_defaults()
    cfg.INPUT.MIN_SIZE_TRAIN = (16, 24)
    cfg.INPUT.MAX_SIZE_TRAIN = 64
    cfg.INPUT.MIN_SIZE_TEST = 16
    cfg.INPUT.MAX_SIZE_TEST = 64
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SEED = 3
    for key, value in overrides.items():
        node = cfg
        *path, name = key.split(".")
        for part in path:
            node = getattr(node, part)
        setattr(node, name, value)
    return cfg


@pytest.mark.parametrize("kind", ["polygon", "bitmask"])
def test_resize_and_flip_keep_masks_on_their_boxes_on_a_427x640_image(kind):
    height, width = 427, 640
    if kind == "polygon":
        masks = PolygonMasks(POLYGONS, (height, width))
        boxes = torch.tensor([polygon_bounds(instance) for instance in POLYGONS], dtype=torch.float32)
    else:  # as RLE annotations come: the box is the mask's pixel extent
        masks = BitMasks(torch.from_numpy(np.stack([
            mask_util.decode(mask_util.merge(mask_util.frPyObjects(instance, height, width))) for instance in POLYGONS
        ])))
        boxes = torch.tensor([mask_bounds(mask) for mask in masks.tensor], dtype=torch.float32)
    target = {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks}
    new_size = shortest_edge_size(height, width, 800, 1333)
    assert new_size == (800, 1199)
    image, target = resize_sample(torch.zeros(3, height, width, dtype=torch.uint8), target, new_size)
    image, target = hflip_sample(image, target)
    assert image.shape[-2:] == new_size and target["masks"].image_size == new_size
    scale = np.array([1199 / 640, 800 / 427, 1199 / 640, 800 / 427])
    for box, original in zip(target["boxes"].tolist(), boxes.double().numpy()):
        moved = original * scale
        np.testing.assert_allclose(box, [1199 - moved[2], moved[1], 1199 - moved[0], moved[3]], rtol=1e-6)
    for index, box in enumerate(target["boxes"].tolist()):
        if kind == "polygon":  # coordinates move exactly with the image: float32 boxes, float64 polygons
            np.testing.assert_allclose(polygon_bounds(target["masks"].polygons[index]), box, atol=1e-3)
        else:  # nearest resizing moves a pixel edge by less than one output pixel
            np.testing.assert_allclose(mask_bounds(target["masks"].tensor[index]), box, atol=1.0)


class FixedSamples(torch.utils.data.Dataset):
    """Hand-made (image, target) pairs, for the parts of the pipeline after the reader."""

    def __init__(self, samples, sizes=None):
        self.samples, self.sizes = samples, sizes

    def __len__(self):
        return len(self.samples)

    def image_size(self, index):
        return self.sizes[index]

    def __getitem__(self, index):
        return self.samples[index]


@pytest.mark.parametrize("kind", ["polygon", "bitmask"])
def test_empty_instances_are_dropped_and_each_mask_stays_with_its_instance(kind):
    height, width = 40, 60
    boxes = torch.tensor([[5.0, 5.0, 20.0, 15.0], [30.0, 10.0, 30.0, 30.0], [35.0, 20.0, 55.0, 38.0]])
    polygons = [[np.array([x0, y0, x1, y0, x1, y1, x0, y1])] for x0, y0, x1, y1 in boxes.tolist()]
    polygons[1] = [np.array([30.0, 10.0, 31.0, 10.0, 30.0, 30.0])]  # the zero-width box's sliver
    if kind == "polygon":
        masks = PolygonMasks(polygons, (height, width))
    else:
        masks = BitMasks(torch.from_numpy(np.stack([
            mask_util.decode(mask_util.merge(mask_util.frPyObjects(instance, height, width))) for instance in polygons
        ])))
    target = {"boxes": boxes, "labels": torch.tensor([1, 2, 3]), "masks": masks, "image_id": 7}
    samples = TrainingSamples(FixedSamples([(torch.zeros(3, height, width, dtype=torch.uint8), target)]),
                              cfg_for(**{"INPUT.MIN_SIZE_TRAIN": (40,), "INPUT.RANDOM_FLIP": "none"}))
    _, kept = samples[0]
    assert kept["labels"].tolist() == [1, 3] and kept["image_id"] == 7
    assert type(kept["masks"]) is type(masks) and len(kept["masks"]) == 2
    for box, index in zip(kept["boxes"].tolist(), range(2)):
        if kind == "polygon":
            assert polygon_bounds(kept["masks"].polygons[index]) == pytest.approx(box)
        else:
            assert mask_bounds(kept["masks"].tensor[index]) == pytest.approx(box)


def test_bitmasks_that_vanish_when_resized_are_dropped():
    """Halving 400 rows, PIL's NEAREST reads the odd rows only: a mask on row 2 alone becomes empty, and
    Detectron2's filter_empty_instances drops it although its box (now half a pixel high) is not empty."""
    tensor = torch.zeros(2, 400, 600, dtype=torch.bool)
    tensor[0, 100:200, 100:300] = True
    tensor[1, 2, 50:400] = True
    boxes = torch.tensor([[100.0, 100.0, 300.0, 200.0], [50.0, 2.0, 400.0, 3.0]])
    target = {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": BitMasks(tensor), "image_id": 1}
    samples = TrainingSamples(FixedSamples([(torch.zeros(3, 400, 600, dtype=torch.uint8), target)]),
                              cfg_for(**{"INPUT.MIN_SIZE_TRAIN": (200,), "INPUT.RANDOM_FLIP": "none",
                                         "INPUT.MAX_SIZE_TRAIN": 1333}))
    _, kept = samples[0]
    assert kept["labels"].tolist() == [1] and len(kept["masks"]) == 1 and kept["masks"].image_size == (200, 300)


def test_bgr_input_is_the_channel_reversed_image():
    image = torch.arange(3 * 20 * 30, dtype=torch.int64).reshape(3, 20, 30).remainder(256).to(torch.uint8)
    target = {"boxes": torch.tensor([[2.0, 2.0, 10.0, 10.0]]), "labels": torch.tensor([1]), "image_id": 4}
    dataset = FixedSamples([(image, target)])
    outputs = {}
    for channel_order in ("RGB", "BGR"):
        cfg = cfg_for(**{"INPUT.FORMAT": channel_order})
        with torch.random.fork_rng():
            torch.manual_seed(0)
            training, _ = TrainingSamples(dataset, cfg)[0]
        test, original_size, image_id = detection_data.TestSamples(dataset, cfg)[0]
        outputs[channel_order] = training, test
        assert original_size == (20, 30) and image_id == 4
    for rgb, bgr in zip(outputs["RGB"], outputs["BGR"]):
        assert torch.equal(bgr, rgb.flip(0)) and not torch.equal(bgr, rgb)
    with pytest.raises(ValueError, match="INPUT.FORMAT must be 'RGB' or 'BGR', got 'YUV'"):
        TrainingSamples(dataset, cfg_for(**{"INPUT.FORMAT": "YUV"}))


# --- aspect-ratio grouping ---------------------------------------------------------------------


def mixed_orientation_dataset(num_images=11):
    """Landscape (20x30), portrait (30x20) and square (24x24) images; each image's pixels say its index."""
    sizes = [[(20, 30), (30, 20), (24, 24)][i % 3] if i % 4 else (30, 20) for i in range(num_images)]
    samples = []
    for index, (height, width) in enumerate(sizes):
        image = torch.full((3, height, width), index, dtype=torch.uint8)
        image[:, : height // 2, : width // 3] = 200  # a corner that shows flips
        target = {"boxes": torch.tensor([[1.0, 1.0, width - 2.0, height - 3.0]]), "labels": torch.tensor([1]),
                  "image_id": index}
        samples.append((image, target))
    return FixedSamples(samples, sizes)


def loader_batches(cfg, dataset, start_iter, num_batches):
    return list(itertools.islice(iter(build_train_loader(cfg, dataset, start_iter)), num_batches))


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (images_a, targets_a), (images_b, targets_b) in zip(a, b):
        assert all(torch.equal(x, y) for x, y in zip(images_a, images_b))
        assert [t["image_id"] for t in targets_a] == [t["image_id"] for t in targets_b]
        assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(targets_a, targets_b))


def test_grouped_batches_hold_one_orientation_and_resume_exactly():
    dataset = mixed_orientation_dataset()
    cfg = cfg_for(**{"SOLVER.IMS_PER_BATCH": 3})
    batches = loader_batches(cfg, dataset, 0, 12)
    for _, targets in batches:
        height_width = [dataset.image_size(t["image_id"]) for t in targets]
        assert len({width > height for height, width in height_width}) == 1
    orientations = {dataset.image_size(t["image_id"])[1] > dataset.image_size(t["image_id"])[0]
                    for _, targets in batches for t in targets[:1]}
    assert orientations == {True, False}
    for start in (1, 5):
        assert_same_batches(loader_batches(cfg, dataset, start, 12 - start), batches[start:])


def test_grouping_off_batches_the_consecutive_stream():
    dataset = mixed_orientation_dataset()
    cfg = cfg_for(**{"SOLVER.IMS_PER_BATCH": 3, "DATALOADER.ASPECT_RATIO_GROUPING": False})
    batches = loader_batches(cfg, dataset, 0, 5)
    stream = [index for index, _ in itertools.islice(iter(InfiniteSampler(11, seed=3, rank=0, world_size=1)), 15)]
    assert [t["image_id"] for _, targets in batches for t in targets] == stream
    assert_same_batches(loader_batches(cfg, dataset, 2, 3), batches[2:])


def test_a_samples_augmentation_is_tied_to_its_stream_position_with_or_without_grouping():
    """The same stream position gives the same scale and flip whichever batch grouping puts it in."""
    dataset = mixed_orientation_dataset()
    grouped = loader_batches(cfg_for(**{"SOLVER.IMS_PER_BATCH": 3}), dataset, 0, 8)
    plain = loader_batches(cfg_for(**{"SOLVER.IMS_PER_BATCH": 3, "DATALOADER.ASPECT_RATIO_GROUPING": False}),
                           dataset, 0, 12)
    by_position = {}
    for batch_index, (images, targets) in enumerate(plain):
        for offset, (image, target) in enumerate(zip(images, targets)):
            by_position[batch_index * 3 + offset] = (image, target)
    sampler = InfiniteSampler(11, seed=3, rank=0, world_size=1)
    position_of = {sample_seed(3, position): position for position, _ in itertools.islice(sampler.stream(), 36)}
    groups = [0 if w > h else 1 for h, w in dataset.sizes]
    items = itertools.islice(iter(GroupedBatchSampler(sampler, groups, 3)), 8)
    compared = 0
    for (images, targets), batch_items in zip(grouped, items):
        for image, target, (_, seed) in zip(images, targets, batch_items):
            position = position_of[seed]
            if position in by_position:
                reference_image, reference_target = by_position[position]
                assert torch.equal(image, reference_image) and target["image_id"] == reference_target["image_id"]
                compared += 1
    assert compared >= 18


# --- which config a data root gets ---------------------------------------------------------------


def test_a_generated_data_root_gets_the_demo_recipe(tmp_path):
    """README: a set written by tools/make_data.py --out DIR is a valid --data-root."""
    task = TASKS["coco_maskrcnn"]
    root = tmp_path / "made"
    tiny = SceneSpec(height=32, width=32, min_objects=1, max_objects=2, min_object_size=0.3, max_object_size=0.6)
    write_builtin_set(root, train_images=2, val_images=1, pool_images=1, classification_train_images=1,
                      classification_val_images=1, classification_test_images=1, multilabel_train_images=1,
                      multilabel_val_images=1, multilabel_test_images=1, domain_train_images=1, domain_val_images=1,
                      domain_test_images=1, seed=0, detection_spec=tiny, small_image_spec=tiny,
                      classification_spec=tiny, multilabel_spec=tiny, domain_a_spec=tiny, domain_b_spec=tiny,
                      street_train_images=1, street_val_images=1, street_spec=StreetSpec(height=32, width=64))
    path, reason = choose_config(task, data_root=root)
    assert path == CONFIG_ROOT / task.demo_config
    assert str(root) in reason and "generated set" in reason and "demo recipe" in reason
    # and the demo recipe's datasets resolve under it
    for name in ("builtin_coco_train", "builtin_coco_val"):
        image_dir, ann_file = resolve_dataset(name, root)
        assert image_dir.is_dir() and ann_file.is_file()


@pytest.mark.parametrize("manifest", [None, "not json", json.dumps({"name": "someone else's"}), "[1, 2]"])
def test_other_data_roots_get_the_paper_recipe(tmp_path, manifest):
    if manifest is not None:
        (tmp_path / "manifest.json").write_text(manifest)
    task = TASKS["coco_maskrcnn"]
    path, reason = choose_config(task, data_root=tmp_path)
    assert path == CONFIG_ROOT / task.paper_config and reason == f"--data-root {tmp_path}: the paper recipe"
    assert choose_config(task, config_file="x.yaml", data_root=tmp_path)[1] == "given with --config"
