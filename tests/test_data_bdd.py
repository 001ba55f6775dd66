"""The BDD100K label reader (bdd100k's own COCO conversion), its dataset names, and the generator's BDD layout."""

import contextlib
import io
import json
import logging
import re

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from benchmarks.data import CATEGORIES, SHAPE_TO_BDD_CLASS, COCODetection, SceneSpec, write_bdd, write_coco
from benchmarks.data.bdd import BDD_CLASS_NAMES, BDD_DATASETS, read_bdd_labels, resolve_bdd_dataset
from benchmarks.data.coco import load_coco_annotations


def _id(name):
    return BDD_CLASS_NAMES.index(name) + 1


def _label(label_id, category, box, **attributes):
    x1, y1, x2, y2 = box
    return {"id": label_id, "category": category, "attributes": attributes,
            "box2d": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}}


def _write(tmp_path, frames, name="det_val.json"):
    path = tmp_path / name
    path.write_text(json.dumps(frames) if not isinstance(frames, str) else frames)
    return path


DAY = {"weather": "clear", "scene": "city street", "timeofday": "daytime"}


def test_det_20_file_converted_as_bdd100k_to_coco_does(tmp_path):
    frames = [
        {"name": "b1c66a42-6f7d68ca.jpg", "attributes": DAY, "timestamp": 10000, "labels": [
            _label("7", "traffic light", (10.5, 20.0, 30.25, 40.0), occluded=False, truncated=False,
                   trafficLightColor="G"),
            _label("8", "car", (0, 0, 0, 0), occluded=True, truncated=True, trafficLightColor="NA", crowd=True),
            _label(9, "other vehicle", (100, 50, 199, 149), occluded=False),
            _label("10", "trailer", (1, 2, 3, 4)),
            _label("11", "other person", (5, 5, 6, 6)),
        ]},
        {"name": "b1c81faa-3df17267.jpg", "attributes": {"weather": "rainy", "scene": "highway",
                                                           "timeofday": "night"}, "timestamp": 10000},
        {"name": "b1ceb32e-3f481b43.jpg", "attributes": DAY, "labels": None},
        {"name": "b1d0091f-75824d0d.jpg", "labels": [_label("12", "pedestrian", (2, 3, 12, 33))]},
    ]
    coco = read_bdd_labels(_write(tmp_path, frames))
    assert load_coco_annotations(coco) is coco
    assert coco["info"]["bdd_label_format"] == "det_20"
    assert [c["name"] for c in coco["categories"]] == list(BDD_CLASS_NAMES) == [
        "pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle", "traffic light", "traffic sign"]
    assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
    # every frame is an image, labelled or not, in file order, at BDD's 1280 x 720
    assert [(i["id"], i["file_name"], i["height"], i["width"]) for i in coco["images"]] == [
        (1, "b1c66a42-6f7d68ca.jpg", 720, 1280), (2, "b1c81faa-3df17267.jpg", 720, 1280),
        (3, "b1ceb32e-3f481b43.jpg", 720, 1280), (4, "b1d0091f-75824d0d.jpg", 720, 1280)]
    assert coco["images"][1]["attributes"] == {"weather": "rainy", "scene": "highway", "timeofday": "night"}
    assert coco["images"][3]["attributes"] == {}
    # bbox [x1, y1, x2 - x1 + 1, y2 - y1 + 1], area w * h; crowd and the ignored categories are iscrowd
    assert [(a["id"], a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"], a["bdd_id"],
             a["bdd_category"]) for a in coco["annotations"]] == [
        (1, 1, _id("traffic light"), [10.5, 20.0, 20.75, 21.0], 435.75, 0, "7", "traffic light"),
        (2, 1, _id("car"), [0.0, 0.0, 1.0, 1.0], 1.0, 1, "8", "car"),
        (3, 1, _id("car"), [100.0, 50.0, 100.0, 100.0], 10000.0, 1, "9", "other vehicle"),
        (4, 1, _id("truck"), [1.0, 2.0, 3.0, 3.0], 9.0, 1, "10", "trailer"),
        (5, 1, _id("pedestrian"), [5.0, 5.0, 2.0, 2.0], 4.0, 1, "11", "other person"),
        (6, 4, _id("pedestrian"), [2.0, 3.0, 11.0, 31.0], 341.0, 0, "12", "pedestrian"),
    ]
    assert coco["annotations"][0]["attributes"] == {"occluded": False, "truncated": False, "trafficLightColor": "G"}
    assert coco["annotations"][1]["attributes"]["crowd"] is True


def test_2018_file_maps_old_names_and_skips_lanes_and_drivable_area(tmp_path, caplog):
    poly = [{"vertices": [[0, 0], [10, 0], [10, 10]], "types": "LLL", "closed": True}]
    frames = [
        {"name": "0000f77c-6257be58.jpg", "attributes": DAY, "timestamp": 10000, "labels": [
            _label(0, "person", (1, 1, 10, 20), occluded=False, truncated=False, trafficLightColor="none"),
            _label(1, "bike", (0, 0, 9, 9)),
            _label(2, "motor", (0, 0, 4, 4)),
            _label(3, "traffic sign", (0, 0, 1, 1)),
            {"id": 4, "category": "drivable area", "attributes": {"areaType": "direct"}, "poly2d": poly},
            {"id": 5, "category": "lane", "attributes": {"laneDirection": "parallel"}, "poly2d": poly},
            {"id": 6, "category": "lane", "poly2d": poly},
        ]},
        {"name": "0000f77c-62c2a288.jpg", "attributes": DAY, "timestamp": 10000, "labels": [
            {"id": 7, "category": "drivable area", "poly2d": poly}]},
    ]
    label_file = _write(tmp_path, frames, "bdd100k_labels_images_val.json")
    with caplog.at_level(logging.INFO, logger="benchmarks.data.bdd"):
        coco = read_bdd_labels(label_file)
    assert coco["info"]["bdd_label_format"] == "2018"
    assert [(a["image_id"], a["category_id"], a["bbox"], a["bdd_category"]) for a in coco["annotations"]] == [
        (1, _id("pedestrian"), [1.0, 1.0, 10.0, 20.0], "person"), (1, _id("bicycle"), [0.0, 0.0, 10.0, 10.0], "bike"),
        (1, _id("motorcycle"), [0.0, 0.0, 5.0, 5.0], "motor"), (1, _id("traffic sign"), [0.0, 0.0, 2.0, 2.0],
                                                                  "traffic sign")]
    assert coco["annotations"][0]["attributes"] == {"occluded": False, "truncated": False, "trafficLightColor": "none"}
    assert [image["file_name"] for image in coco["images"]] == ["0000f77c-6257be58.jpg", "0000f77c-62c2a288.jpg"]
    assert "skipped 2 'drivable area', 2 'lane' labels" in caplog.text and str(label_file) in caplog.text


def test_ignored_categories_neither_hit_nor_miss_in_pycocotools(tmp_path):
    frames = [{"name": "a.jpg", "labels": [_label("1", "car", (100, 100, 299, 199)),
                                           _label("2", "other vehicle", (600, 300, 799, 449))]}]
    gt = COCO()
    with contextlib.redirect_stdout(io.StringIO()):
        gt.dataset = read_bdd_labels(_write(tmp_path, frames))
        gt.createIndex()
        car = _id("car")
        # the better-scored detection is a small box inside the ignored vehicle, which as a plain car would be both
        # a false positive and a miss; as a crowd it is matched by COCO's crowd rule (IoU = overlap / detection area)
        detections = gt.loadRes([{"image_id": 1, "category_id": car, "bbox": [100, 100, 200, 100], "score": 0.5},
                                 {"image_id": 1, "category_id": car, "bbox": [620, 320, 50, 50], "score": 0.9}])
        evaluation = COCOeval(gt, detections, "bbox")
        evaluation.params.catIds = [car]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_frame_size_overrides_bdd_image_size(tmp_path):
    coco = read_bdd_labels(_write(tmp_path, [{"name": "a.jpg", "size": {"width": 80, "height": 64}}]))
    assert (coco["images"][0]["height"], coco["images"][0]["width"]) == (64, 80)


GOOD = _label("1", "car", (1, 1, 5, 5))


@pytest.mark.parametrize("frames, message", [
    ('[{"name": "f.jpg"', r"is not valid JSON"),
    ({"frames": []}, r"a BDD100K label file is a list of frames, got dict"),
    ([{"labels": []}], r"frame #0 is not an object with a non-empty 'name'"),
    ([{"name": "f.jpg", "labels": {"car": 1}}], r"frame 'f.jpg': 'labels' must be a list"),
    ([{"name": "f.jpg", "labels": [{"id": "1", "category": "car"}]}],
     r"frame 'f.jpg' label #0 \(id '1', car\): a label of a detection category without 'box2d'"),
    ([{"name": "f.jpg", "labels": [{"id": "1", "category": "car", "poly2d": []}]}], r"without 'box2d'"),
    ('[{"name": "f.jpg", "labels": [{"id": "1", "category": "car", "box2d": {"x1": NaN, "y1": 0, "x2": 1, "y2": 1}}]}]',
     r"frame 'f.jpg' label #0 \(id '1', car\): box2d needs finite numbers"),
    ([{"name": "f.jpg", "labels": [{"id": "1", "category": "car", "box2d": {"x1": 0, "y1": 0, "x2": 1}}]}],
     r"frame 'f.jpg' .*box2d needs finite numbers"),
    ([{"name": "f.jpg", "labels": [_label("1", "car", (5, 0, 4, 9))]}], r"frame 'f.jpg' .*x2 < x1 or y2 < y1"),
    ([{"name": "f.jpg", "labels": [_label("1", "car", (0, 5, 4, 4))]}], r"frame 'f.jpg' .*x2 < x1 or y2 < y1"),
    ([{"name": "f.jpg", "labels": [GOOD]}, {"name": "g.jpg", "labels": [_label("2", "tram", (0, 0, 1, 1))]}],
     r"frame 'g.jpg' label #0 \(id '2', tram\): unknown category 'tram'"),
    ([{"name": "f.jpg", "labels": [{"category": "car", "box2d": {"x1": 0, "y1": 0, "x2": 1, "y2": 1}}]}],
     r"frame 'f.jpg' label #0 \(id None, car\): no 'id'"),
    ([{"name": "f.jpg", "labels": [GOOD, {"id": "2"}]}], r"frame 'f.jpg' label #1: not an object with a 'category'"),
    ([{"name": "f.jpg", "attributes": "day"}], r"frame 'f.jpg': 'attributes' must be an object"),
    ([{"name": "f.jpg", "size": {"width": 0, "height": 4}}], r"frame 'f.jpg': 'size' must hold positive integer"),
    ([{"name": "f.jpg"}, {"name": "f.jpg"}], r"frame names appear more than once: f.jpg"),
    ([{"name": "f.jpg", "labels": [_label("1", "person", (0, 0, 1, 1))]},
      {"name": "g.jpg", "labels": [_label("2", "pedestrian", (0, 0, 1, 1))]}],
     r"mixes the 2018 category 'person' \(frame 'f.jpg'\) with the det_20 category 'pedestrian' \(frame 'g.jpg'\)"),
])
def test_malformed_labels_name_file_frame_and_problem(tmp_path, frames, message):
    label_file = _write(tmp_path, frames)
    with pytest.raises(ValueError, match=re.escape(str(label_file)) + ".*" + message):
        read_bdd_labels(label_file)


def test_dataset_names_and_missing_paths(tmp_path):
    assert BDD_DATASETS == {
        "bdd100k_det_train": ("bdd100k/images/100k/train", "bdd100k/labels/det_20/det_train.json"),
        "bdd100k_det_val": ("bdd100k/images/100k/val", "bdd100k/labels/det_20/det_val.json"),
        "bdd100k_2018_det_train": ("bdd100k/images/100k/train", "bdd100k/labels/bdd100k_labels_images_train.json"),
        "bdd100k_2018_det_val": ("bdd100k/images/100k/val", "bdd100k/labels/bdd100k_labels_images_val.json"),
    }
    with pytest.raises(ValueError, match="Unknown BDD100K dataset 'bdd100k_det_test'; known: bdd100k_2018_det_train"):
        resolve_bdd_dataset("bdd100k_det_test", tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "bdd100k/labels/det_20/det_val.json"))):
        resolve_bdd_dataset("bdd100k_det_val", tmp_path)
    label_file = tmp_path / "bdd100k/labels/det_20/det_val.json"
    label_file.parent.mkdir(parents=True)
    label_file.write_text("[]")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "bdd100k/images/100k/val"))):
        resolve_bdd_dataset("bdd100k_det_val", tmp_path)
    (tmp_path / "bdd100k/images/100k/val").mkdir(parents=True)
    assert resolve_bdd_dataset("bdd100k_det_val", tmp_path) == (tmp_path / "bdd100k/images/100k/val", label_file)
    with pytest.raises(FileNotFoundError, match="BDD100K label file not found"):
        read_bdd_labels(tmp_path / "missing.json")


def test_shapes_become_distinct_bdd_classes():
    assert set(SHAPE_TO_BDD_CLASS) == {category["name"] for category in CATEGORIES}
    assert len(set(SHAPE_TO_BDD_CLASS.values())) == len(CATEGORIES)
    assert set(SHAPE_TO_BDD_CLASS.values()) <= set(BDD_CLASS_NAMES)


SPEC = SceneSpec(height=64, width=80, min_objects=0, max_objects=3, crowd_prob=0.5)


@pytest.fixture(scope="module")
def coco_val(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    write_coco(root, "val", 10, SPEC, seed=4)
    return root


@pytest.mark.parametrize("label_format, dataset", [("det_20", "bdd100k_det_val"), ("2018", "bdd100k_2018_det_val")])
def test_generated_bdd_holds_the_coco_splits_scenes(tmp_path, coco_val, label_format, dataset):
    root = write_bdd(tmp_path, {"val": ("val", 10), "train": ("train", 2)}, SPEC, seed=4, label_format=label_format)
    image_dir, label_file = resolve_bdd_dataset(dataset, root)
    bdd = read_bdd_labels(label_file)
    assert bdd["info"]["bdd_label_format"] == label_format
    coco = json.loads((coco_val / "annotations" / "instances_val.json").read_text())
    shape_names = {category["id"]: category["name"] for category in CATEGORIES}
    to_bdd = {shape_id: _id(SHAPE_TO_BDD_CLASS[name]) for shape_id, name in shape_names.items()}
    # bdd100k's conversion of the written box2d gives back write_coco's boxes exactly; crowds stay crowds
    assert [(a["image_id"], a["category_id"], a["bbox"], a["iscrowd"]) for a in bdd["annotations"]] == [
        (a["image_id"], to_bdd[a["category_id"]], a["bbox"], a["iscrowd"]) for a in coco["annotations"]]
    assert any(a["iscrowd"] for a in coco["annotations"])
    assert len({a["image_id"] for a in coco["annotations"]}) < len(coco["images"])  # some scenes without objects
    assert [(i["id"], i["height"], i["width"]) for i in bdd["images"]] == [
        (i["id"], i["height"], i["width"]) for i in coco["images"]]
    for image in bdd["images"]:
        assert (image_dir / image["file_name"]).read_bytes() == (coco_val / "val" / f"{image['id']:012d}.jpg"
                                                                 ).read_bytes()
    frames = json.loads(label_file.read_text())
    assert all("labels" not in frame or frame["labels"] for frame in frames)
    written = {label["category"] for frame in frames for label in frame.get("labels", [])}
    present = {SHAPE_TO_BDD_CLASS[shape_names[a["category_id"]]] for a in coco["annotations"]}
    old_names = {"pedestrian": "person", "motorcycle": "motor", "bicycle": "bike"} if label_format == "2018" else {}
    assert written == {old_names.get(name, name) for name in present}
    assert (root / "bdd100k/images/100k/train").is_dir()


def test_generated_bdd_loads_in_coco_detection_from_memory(tmp_path):
    root = write_bdd(tmp_path, {"val": ("val", 4)}, SceneSpec(height=64, width=80), seed=1)
    image_dir, label_file = resolve_bdd_dataset("bdd100k_det_val", root)
    coco = read_bdd_labels(label_file)
    dataset = COCODetection(image_dir, coco, with_masks=False, filter_empty=False, source=str(label_file))
    dataset.check_images()
    assert dataset.ann_file == str(label_file)
    assert dataset.class_names == list(BDD_CLASS_NAMES)
    image, target = dataset[0]
    assert tuple(image.shape) == (3, 64, 80)
    first = [a for a in coco["annotations"] if a["image_id"] == target["image_id"] and not a["iscrowd"]]
    assert target["boxes"].tolist() == [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in first)]
    assert target["labels"].tolist() == [a["category_id"] for a in first]


def test_write_bdd_rejects_unknown_label_format(tmp_path):
    with pytest.raises(ValueError, match="label_format must be one of det_20, 2018, got 'coco'"):
        write_bdd(tmp_path, {"val": ("val", 1)}, label_format="coco")
