"""The COCO detection reader and the dataset catalog."""

import json
import logging

import cv2
import numpy as np
import pytest
import torch

from benchmarks.data import CATEGORIES, DATASET_CATALOG, COCODetection, SceneSpec, resolve_dataset, write_coco

H, W = 40, 60


@pytest.fixture(scope="module")
def generated_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    write_coco(root, "train", 10, SceneSpec(height=96, width=96, crowd_prob=0.5), seed=3)
    return root


def generated(root, **kwargs):
    return COCODetection(root / "train", root / "annotations/instances_train.json", **kwargs)


def write_handmade(tmp_path, annotations, categories=None, images=None, image_files=True):
    """A tiny COCO json with hand-written annotations, and its images (solid grey, H x W)."""
    images = images or [{"id": 1, "file_name": "a.png", "height": H, "width": W}]
    if image_files:
        for image in images:
            pixels = np.full((image["height"], image["width"], 3), 128, np.uint8)
            cv2.imwrite(str(tmp_path / image["file_name"]), pixels)
    dataset = {
        "images": images,
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "thing", "supercategory": "x"}],
    }
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(dataset))
    return ann_file


def box_annotation(annotation_id, bbox, category_id=1, iscrowd=0, image_id=1):
    x, y, w, h = bbox
    polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": w * h,
        "iscrowd": iscrowd,
        "segmentation": [polygon],
    }


def test_reader_returns_torchvision_targets(generated_root):
    dataset = generated(generated_root)
    assert dataset.class_names == [c["name"] for c in CATEGORIES]
    assert dataset.coco_to_contiguous_id == {c["id"]: c["id"] for c in CATEGORIES}
    for index in range(len(dataset)):
        image, target = dataset[index]
        assert image.dtype == torch.uint8 and image.shape == (3, 96, 96)
        n = len(target["labels"])
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (n, 4)
        assert target["labels"].dtype == torch.int64 and n > 0
        assert target["labels"].min() >= 1 and target["labels"].max() <= len(CATEGORIES)
        assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (n, 96, 96)
        assert target["image_id"] == dataset.image_ids[index]
        for box, mask in zip(target["boxes"], target["masks"]):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert box.tolist() == [float(v) for v in expected]


def test_crowd_annotations_are_left_out_of_targets(generated_root):
    dataset = generated(generated_root)
    coco = dataset.coco
    num_crowd = 0
    for index in range(len(dataset)):
        _, target = dataset[index]
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=target["image_id"]))
        num_crowd += sum(a["iscrowd"] for a in annotations)
        assert len(target["labels"]) == sum(not a["iscrowd"] for a in annotations)
    assert num_crowd > 0


def test_reader_without_masks(generated_root):
    _, target = generated(generated_root, with_masks=False)[0]
    assert "masks" not in target


def test_the_image_decodes_to_the_written_pixels(generated_root):
    dataset = generated(generated_root)
    image, target = dataset[0]
    path = generated_root / "train" / dataset.coco.imgs[target["image_id"]]["file_name"]
    expected = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), expected)


def test_non_contiguous_category_ids_map_to_1_to_k(tmp_path):
    categories = [{"id": i, "name": f"c{i}", "supercategory": "s"} for i in (10, 3, 7)]
    annotations = [box_annotation(1, [1, 1, 10, 10], 10), box_annotation(2, [5, 5, 10, 10], 3)]
    dataset = COCODetection(tmp_path, write_handmade(tmp_path, annotations, categories))
    assert dataset.coco_to_contiguous_id == {3: 1, 7: 2, 10: 3}
    assert dataset.contiguous_to_coco_id == {1: 3, 2: 7, 3: 10}
    assert dataset.class_names == ["c3", "c7", "c10"]
    _, target = dataset[0]
    assert target["labels"].tolist() == [3, 1]
    assert target["boxes"].tolist() == [[1, 1, 11, 11], [5, 5, 15, 15]]
    assert target["masks"].sum().item() > 0


def test_grayscale_image_is_read_as_rgb(tmp_path):
    ann_file = write_handmade(tmp_path, [box_annotation(1, [1, 1, 10, 10])], image_files=False)
    cv2.imwrite(str(tmp_path / "a.png"), np.full((H, W), 77, np.uint8))
    image, _ = COCODetection(tmp_path, ann_file)[0]
    assert image.shape == (3, H, W) and (image == 77).all()


def test_all_segmentation_encodings(tmp_path):
    from pycocotools import mask as mask_utils

    mask = np.zeros((H, W), np.uint8)
    mask[5:15, 10:30] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    compressed = {"size": [H, W], "counts": rle["counts"].decode()}
    flat = mask.ravel(order="F")
    runs = np.diff(np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])).tolist()
    uncompressed = {"counts": runs, "size": [H, W]}  # starts with zeros since mask[0, 0] == 0
    annotations = [box_annotation(i, [10, 5, 20, 10]) for i in (1, 2, 3)]
    annotations[1]["segmentation"] = compressed
    annotations[2]["segmentation"] = uncompressed
    _, target = COCODetection(tmp_path, write_handmade(tmp_path, annotations))[0]
    for decoded in target["masks"]:
        np.testing.assert_array_equal(decoded.numpy(), mask)


def test_filter_empty_drops_crowd_only_images(tmp_path, caplog):
    images = [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in (1, 2, 3)]
    annotations = [
        box_annotation(1, [1, 1, 10, 10], image_id=1),
        box_annotation(2, [1, 1, 10, 10], iscrowd=1, image_id=2),
    ]
    ann_file = write_handmade(tmp_path, annotations, images=images)
    with caplog.at_level(logging.INFO, logger="benchmarks.data.coco"):
        training = COCODetection(tmp_path, ann_file)
    assert training.image_ids == [1]
    assert "Removed 2 images" in caplog.text
    evaluation = COCODetection(tmp_path, ann_file, filter_empty=False)
    assert evaluation.image_ids == [1, 2, 3]
    _, target = evaluation[1]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["masks"].shape == (0, H, W)
    assert len(evaluation.coco.getAnnIds(imgIds=2)) == 1  # the crowd stays available for evaluation


def test_degenerate_boxes_are_dropped_with_one_warning(tmp_path, caplog):
    annotations = [
        box_annotation(1, [1, 1, 10, 10]),
        box_annotation(2, [5, 5, 0.5, 10]),
        box_annotation(3, [5, 5, 10, 0]),
        box_annotation(4, [W + 3, 5, 10, 10]),  # entirely outside the image
    ]
    with caplog.at_level(logging.WARNING, logger="benchmarks.data.coco"):
        dataset = COCODetection(tmp_path, write_handmade(tmp_path, annotations))
        _, target = dataset[0]
        dataset[0]
    assert target["boxes"].tolist() == [[1, 1, 11, 11]]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Dropped 3 annotations" in warnings[0].getMessage()


def test_transforms_are_applied(generated_root):
    def flip(image, target):
        return image.flip(-1), {**target, "flipped": True}

    image, target = generated(generated_root, transforms=flip)[0]
    reference, _ = generated(generated_root)[0]
    assert target["flipped"] and torch.equal(image, reference.flip(-1))


# --- bad input ----------------------------------------------------------------------------------


def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        COCODetection(tmp_path, tmp_path / "nothere.json")


def test_invalid_json(tmp_path):
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        COCODetection(tmp_path, tmp_path / "broken.json")


@pytest.mark.parametrize(
    "content", [{"images": [], "annotations": []}, [1, 2], {"images": {}, "annotations": [], "categories": []}]
)
def test_json_that_is_not_coco(tmp_path, content):
    (tmp_path / "other.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match="other.json is not a COCO annotation file"):
        COCODetection(tmp_path, tmp_path / "other.json")


@pytest.mark.parametrize(
    "field, value, problem",
    [
        ("bbox", None, "missing or malformed bbox"),
        ("bbox", [1, 2, 3], "missing or malformed bbox"),
        ("bbox", [1, 2, "3", 4], "missing or malformed bbox"),
        ("bbox", [1, 2, float("nan"), 4], "missing or malformed bbox"),
        ("segmentation", None, "has no segmentation"),
        ("segmentation", 5, "neither a polygon list nor an RLE"),
        ("segmentation", [], "empty polygon list"),
        ("segmentation", [[1, 2, 3, 4, 5]], "at least 3 .x, y. points"),
        ("segmentation", {"counts": "abc", "size": [10, 10]}, "RLE segmentation of size"),
        ("segmentation", {"counts": [5, 5], "size": [H, W]}, "summing to 10"),
        ("segmentation", {"size": [H, W]}, "without a 'counts'"),
        ("image_id", 99, "unknown image_id 99"),
        ("category_id", 42, "unknown category_id 42"),
    ],
)
def test_malformed_annotation_names_id_and_file(tmp_path, field, value, problem):
    annotation = box_annotation(17, [1, 1, 10, 10])
    if value is None:
        del annotation[field]
    else:
        annotation[field] = value
    ann_file = write_handmade(tmp_path, [box_annotation(1, [1, 1, 5, 5]), annotation])
    with pytest.raises(ValueError, match=problem) as error:
        COCODetection(tmp_path, ann_file)
    assert "annotation id 17" in str(error.value) and str(ann_file) in str(error.value)


def test_segmentation_is_not_checked_without_masks(tmp_path):
    annotation = box_annotation(1, [1, 1, 10, 10])
    del annotation["segmentation"]
    dataset = COCODetection(tmp_path, write_handmade(tmp_path, [annotation]), with_masks=False)
    assert dataset[0][1]["boxes"].shape == (1, 4)


def test_polygon_with_bad_coordinates_names_annotation_at_read_time(tmp_path):
    annotation = box_annotation(23, [1, 1, 10, 10])
    annotation["segmentation"] = [[1, 1, "x", 1, 10, 10]]
    dataset = COCODetection(tmp_path, write_handmade(tmp_path, [annotation]))
    with pytest.raises(ValueError, match="annotation id 23 in .*instances.json"):
        dataset[0]


def test_missing_image_file(tmp_path):
    images = [
        {"id": 1, "file_name": "a.png", "height": H, "width": W},
        {"id": 2, "file_name": "gone.png", "height": H, "width": W},
    ]
    annotations = [box_annotation(1, [1, 1, 10, 10], image_id=1), box_annotation(2, [1, 1, 10, 10], image_id=2)]
    ann_file = write_handmade(tmp_path, annotations, images=images, image_files=False)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((H, W, 3), np.uint8))
    dataset = COCODetection(tmp_path, ann_file)
    dataset[0]
    with pytest.raises(FileNotFoundError, match="gone.png"):
        dataset[1]
    with pytest.raises(FileNotFoundError, match=r"1 of 2 images listed in .*instances.json are missing, e.g. .*gone"):
        dataset.check_images()


def test_unreadable_image_file(tmp_path):
    ann_file = write_handmade(tmp_path, [box_annotation(1, [1, 1, 10, 10])], image_files=False)
    (tmp_path / "a.png").write_bytes(b"this is not a png")
    with pytest.raises(OSError, match="Cannot decode image file .*a.png"):
        COCODetection(tmp_path, ann_file)[0]
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(OSError, match="a.png"):
        COCODetection(tmp_path, ann_file)[0]


def test_image_size_disagreeing_with_json(tmp_path):
    ann_file = write_handmade(tmp_path, [box_annotation(1, [1, 1, 10, 10])], image_files=False)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((W, H, 3), np.uint8))
    with pytest.raises(ValueError, match="a.png is 40x60 .*instances.json says 60x40"):
        COCODetection(tmp_path, ann_file)[0]


def test_empty_dataset_after_filtering(tmp_path):
    ann_file = write_handmade(tmp_path, [box_annotation(1, [1, 1, 10, 10], iscrowd=1)])
    with pytest.raises(ValueError, match="instances.json has no images after removing"):
        COCODetection(tmp_path, ann_file)
    assert len(COCODetection(tmp_path, ann_file, filter_empty=False)) == 1


# --- catalog ------------------------------------------------------------------------------------


def test_catalog_names_the_usual_layouts():
    assert DATASET_CATALOG["coco_2017_train"] == ("train2017", "annotations/instances_train2017.json")
    assert DATASET_CATALOG["builtin_coco_val"] == ("val", "annotations/instances_val.json")


def test_resolve_dataset(generated_root):
    image_dir, ann_file = resolve_dataset("builtin_coco_train", generated_root)
    assert image_dir == generated_root / "train" and ann_file == generated_root / "annotations/instances_train.json"
    with pytest.raises(ValueError, match="known datasets: builtin_coco_train, builtin_coco_val, coco_2017_train"):
        resolve_dataset("coco_2014_train", generated_root)
    with pytest.raises(FileNotFoundError, match="instances_val.json"):
        resolve_dataset("builtin_coco_val", generated_root)
    with pytest.raises(FileNotFoundError, match="instances_train2017.json"):
        resolve_dataset("coco_2017_train", generated_root)


def test_resolve_dataset_names_a_missing_image_directory(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/instances_val.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="Image directory .* not found: .*val"):
        resolve_dataset("builtin_coco_val", tmp_path)
