"""The COCO detection reader and the dataset catalog."""

import json
import logging

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from benchmarks.data import CATEGORIES, DATASET_CATALOG, COCODetection, SceneSpec, resolve_dataset, write_coco
from benchmarks.modeling.masks import BitMasks, PolygonMasks

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
        assert isinstance(target["masks"], BitMasks)  # the generator writes RLE
        assert target["masks"].tensor.dtype == torch.bool and target["masks"].tensor.shape == (n, 96, 96)
        assert target["image_id"] == dataset.image_ids[index]
        for box, mask in zip(target["boxes"], target["masks"].tensor):
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
    assert isinstance(target["masks"], PolygonMasks) and len(target["masks"]) == 2


def test_grayscale_image_is_read_as_rgb(tmp_path):
    ann_file = write_handmade(tmp_path, [box_annotation(1, [1, 1, 10, 10])], image_files=False)
    cv2.imwrite(str(tmp_path / "a.png"), np.full((H, W), 77, np.uint8))
    image, _ = COCODetection(tmp_path, ann_file)[0]
    assert image.shape == (3, H, W) and (image == 77).all()


def test_all_segmentation_encodings(tmp_path):
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
    assert isinstance(target["masks"], BitMasks)  # one RLE instance: the whole image takes the bitmask path
    for decoded in target["masks"].tensor:
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
    assert len(target["masks"]) == 0 and target["masks"].image_size == (H, W)
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


# --- mask formats, on the odd image shapes real datasets have ------------------------------------


def polygon_annotation(annotation_id, image_id, polygons):
    """A non-crowd instance with polygon segmentation and the polygons' tight box."""
    xs = [x for polygon in polygons for x in polygon[0::2]]
    ys = [y for polygon in polygons for y in polygon[1::2]]
    bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    return {"id": annotation_id, "image_id": image_id, "category_id": 1, "bbox": bbox, "area": bbox[2] * bbox[3],
            "iscrowd": 0, "segmentation": [list(polygon) for polygon in polygons]}


def write_polygon_set(tmp_path):
    """Landscape 333x501, portrait 640x427 and landscape 427x640 images; the last has one RLE instance."""
    images = [{"id": 1, "file_name": "land.png", "height": 333, "width": 501},
              {"id": 2, "file_name": "portrait.png", "height": 640, "width": 427},
              {"id": 3, "file_name": "mixed.png", "height": 427, "width": 640}]
    rle_mask = np.zeros((427, 640), np.uint8)
    rle_mask[100:180, 300:420] = 1
    rle = mask_utils.encode(np.asfortranarray(rle_mask))
    rle_annotation = {"id": 5, "image_id": 3, "category_id": 1, "bbox": [300, 100, 120, 80], "area": 9600,
                      "iscrowd": 0, "segmentation": {"size": [427, 640], "counts": rle["counts"].decode()}}
    annotations = [
        polygon_annotation(1, 1, [[10.5, 20.25, 200.75, 30.5, 120.0, 300.5]]),
        polygon_annotation(2, 1, [[250.0, 10.0, 490.5, 10.0, 490.5, 150.25, 250.0, 150.25],
                                  [300.0, 200.0, 400.0, 200.0, 350.0, 320.0]]),  # one object in two parts
        polygon_annotation(3, 2, [[30.5, 40.5, 400.25, 60.0, 200.0, 610.75]]),
        polygon_annotation(4, 3, [[5.0, 5.0, 100.0, 5.0, 100.0, 90.0, 5.0, 90.0]]),
        rle_annotation,
    ]
    return write_handmade(tmp_path, annotations, images=images), annotations


def test_polygon_format_keeps_the_polygons(tmp_path, caplog):
    ann_file, annotations = write_polygon_set(tmp_path)
    with caplog.at_level(logging.INFO, logger="benchmarks.data.coco"):
        dataset = COCODetection(tmp_path, ann_file)
        for index in range(len(dataset)):
            dataset[index]
    fallback = [r.getMessage() for r in caplog.records if "RLE" in r.getMessage()]
    assert len(fallback) == 1 and "1 of 3 images" in fallback[0] and str(ann_file) in fallback[0]

    for index, (expected_ids, size) in enumerate([([1, 2], (333, 501)), ([3], (640, 427))]):
        _, target = dataset[index]
        masks = target["masks"]
        assert isinstance(masks, PolygonMasks) and masks.image_size == size and len(masks) == len(expected_ids)
        for polygons, annotation_id in zip(masks.polygons, expected_ids):
            expected = annotations[annotation_id - 1]["segmentation"]
            assert [p.dtype for p in polygons] == [np.float64] * len(expected)
            assert [p.tolist() for p in polygons] == expected
    _, target = dataset[2]
    assert isinstance(target["masks"], BitMasks) and target["masks"].image_size == (427, 640)


def test_bitmask_format_rasterises_polygons_at_full_resolution(tmp_path):
    ann_file, _ = write_polygon_set(tmp_path)
    polygons, bitmasks = COCODetection(tmp_path, ann_file), COCODetection(tmp_path, ann_file, mask_format="bitmask")
    for index in range(len(bitmasks)):
        _, target = bitmasks[index]
        assert isinstance(target["masks"], BitMasks)
        annotations = bitmasks.coco.loadAnns(bitmasks.coco.getAnnIds(imgIds=target["image_id"]))
        expected = np.stack([bitmasks.coco.annToMask(a) for a in annotations]).astype(bool)
        np.testing.assert_array_equal(target["masks"].tensor.numpy(), expected)
        # the polygon format's targets are of the same objects: their own boxes crop to nearly the same cells
        _, polygon_target = polygons[index]
        indices = torch.arange(len(target["boxes"]))
        a = polygon_target["masks"].crop_and_resize(target["boxes"], indices, 28)
        b = target["masks"].crop_and_resize(target["boxes"], indices, 28)
        assert (a != b).float().mean() < 0.03


def test_unknown_mask_format(tmp_path):
    with pytest.raises(ValueError, match="mask_format must be 'polygon' or 'bitmask', got 'rle'"):
        COCODetection(tmp_path, write_handmade(tmp_path, [box_annotation(1, [1, 1, 10, 10])]), mask_format="rle")


def test_image_size_comes_from_the_annotation_file(tmp_path):
    ann_file, _ = write_polygon_set(tmp_path)
    dataset = COCODetection(tmp_path, ann_file)
    assert [dataset.image_size(i) for i in range(len(dataset))] == [(333, 501), (640, 427), (427, 640)]


# --- EXIF orientation ---------------------------------------------------------------------------

# detectron2.data.detection_utils._apply_exif_orientation: EXIF orientation -> PIL transpose
DETECTRON2_EXIF_TRANSPOSE = {2: Image.FLIP_LEFT_RIGHT, 3: Image.ROTATE_180, 4: Image.FLIP_TOP_BOTTOM,
                             5: Image.TRANSPOSE, 6: Image.ROTATE_270, 7: Image.TRANSVERSE, 8: Image.ROTATE_90}


def write_jpeg_with_orientation(path, orientation, height=48, width=80):
    """A landscape JPEG whose quadrants differ, tagged with an EXIF orientation."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2, : width // 2] = (230, 20, 20)
    pixels[: height // 2, width // 2:] = (20, 230, 20)
    pixels[height // 2:, : width // 2] = (20, 20, 230)
    pixels[height // 2:, width // 2:] = (230, 230, 20)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, "JPEG", quality=95, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_detectron2_does(tmp_path, orientation):
    write_jpeg_with_orientation(tmp_path / "a.jpg", orientation)
    shown = (80, 48) if orientation >= 5 else (48, 80)  # 5..8 swap portrait and landscape
    images = [{"id": 1, "file_name": "a.jpg", "height": shown[0], "width": shown[1]}]
    ann_file = write_handmade(tmp_path, [box_annotation(1, [1, 1, 10, 10])], images=images, image_files=False)
    image, _ = COCODetection(tmp_path, ann_file)[0]

    stored = cv2.imread(str(tmp_path / "a.jpg"), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)[:, :, ::-1]
    expected = Image.fromarray(np.ascontiguousarray(stored))
    if orientation in DETECTRON2_EXIF_TRANSPOSE:
        expected = expected.transpose(DETECTRON2_EXIF_TRANSPOSE[orientation])
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), np.asarray(expected))


def test_annotation_of_the_unrotated_size_names_the_exif_orientation(tmp_path):
    write_jpeg_with_orientation(tmp_path / "a.jpg", 6)  # stored 80x48 (WxH), shown 48x80
    images = [{"id": 1, "file_name": "a.jpg", "height": 48, "width": 80}]
    ann_file = write_handmade(tmp_path, [box_annotation(1, [1, 1, 10, 10])], images=images, image_files=False)
    with pytest.raises(ValueError, match=r"a.jpg is 48x80 \(WxH\), but .*instances.json says 80x48 .*EXIF orientation"):
        COCODetection(tmp_path, ann_file)[0]


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


@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
@pytest.mark.parametrize("bad", ["x", float("nan"), True])
def test_polygon_with_bad_coordinates_names_annotation_at_read_time(tmp_path, mask_format, bad):
    annotation = box_annotation(23, [1, 1, 10, 10])
    annotation["segmentation"] = [[1, 1, bad, 1, 10, 10]]
    dataset = COCODetection(tmp_path, write_handmade(tmp_path, [annotation]), mask_format=mask_format)
    with pytest.raises(ValueError, match="Annotation id 23 in .*instances.json has a polygon coordinate that is not"):
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
    with pytest.raises(ValueError, match=r"catalog name \(builtin_coco_train, builtin_coco_val, coco_2017_train"):
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


def test_resolve_dataset_pair_of_annotation_file_and_image_directory(tmp_path, monkeypatch):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann/my_train.json").write_text("{}")
    (tmp_path / "pics").mkdir()
    monkeypatch.chdir(tmp_path / "ann")
    assert resolve_dataset("my_train.json:../pics", root=None) == (tmp_path / "ann/../pics",
                                                                   tmp_path / "ann/my_train.json")
    absolute = f"{tmp_path / 'ann/my_train.json'}:{tmp_path / 'pics'}"
    assert resolve_dataset(absolute, root="/ignored") == (tmp_path / "pics", tmp_path / "ann/my_train.json")
    with pytest.raises(FileNotFoundError, match="Annotation file .* not found: .*ann/other.json"):
        resolve_dataset("other.json:../pics", None)
    with pytest.raises(FileNotFoundError, match="Image directory .* not found: .*ann/../photos"):
        resolve_dataset("my_train.json:../photos", None)
    with pytest.raises(ValueError, match="no image directory after the ':'"):
        resolve_dataset("my_train.json:", None)
    with pytest.raises(ValueError, match="catalog name and needs a data root"):
        resolve_dataset("coco_2017_train", None)
