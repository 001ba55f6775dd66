"""The VOCdevkit reader: Detectron2's coordinates and dataset names, and clear errors on broken files."""

import json

import pytest

from benchmarks.data import CATEGORIES, SceneSpec, write_coco, write_voc
from benchmarks.data.voc import VOC_CLASS_NAMES, VOC_DATASETS, read_voc_split, resolve_voc_dataset


def _xml(width, height, objects):
    body = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for name, difficult, (x0, y0, x1, y1) in objects
    )
    size = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
    return f"<annotation>{size}{body}</annotation>"


def _year_dir(tmp_path, annotations, split="trainval", ids=None):
    year = tmp_path / "VOC2007"
    (year / "Annotations").mkdir(parents=True)
    (year / "ImageSets" / "Main").mkdir(parents=True)
    for voc_id, text in annotations.items():
        (year / "Annotations" / f"{voc_id}.xml").write_text(text)
    (year / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in (ids or annotations)))
    return year


def test_split_in_detectron2_coordinates_with_difficult_kept(tmp_path):
    year = _year_dir(tmp_path, {
        "000005": _xml(500, 375, [("chair", 0, (263, 211, 324, 339)), ("chair", 1, (5, 244, 67, 374))]),
        "000007": _xml(500, 333, []),
    })
    coco, ground_truth = read_voc_split(year, "trainval")
    assert [(i["id"], i["voc_id"], i["file_name"], i["height"], i["width"]) for i in coco["images"]] == [
        (1, "000005", "JPEGImages/000005.jpg", 375, 500), (2, "000007", "JPEGImages/000007.jpg", 333, 500)]
    chair = VOC_CLASS_NAMES.index("chair") + 1
    # Detectron2: xmin - 1 and ymin - 1, xmax and ymax unchanged; XYWH here.
    assert [(a["image_id"], a["category_id"], a["bbox"], a["difficult"]) for a in coco["annotations"]] == [
        (1, chair, [262.0, 210.0, 62.0, 129.0], 0), (1, chair, [4.0, 243.0, 63.0, 131.0], 1)]
    assert [c["name"] for c in coco["categories"]] == list(VOC_CLASS_NAMES)
    assert ground_truth == {"000005": [{"name": "chair", "bbox": [263.0, 211.0, 324.0, 339.0], "difficult": False},
                                       {"name": "chair", "bbox": [5.0, 244.0, 67.0, 374.0], "difficult": True}],
                            "000007": []}


def test_dataset_names_are_detectron2s(tmp_path):
    assert {"voc_2007_trainval", "voc_2012_trainval", "voc_2007_test", "voc_2012_val"} <= set(VOC_DATASETS)
    (tmp_path / "VOC2012").mkdir()
    assert resolve_voc_dataset("voc_2012_val", tmp_path) == (tmp_path / "VOC2012", "val")
    with pytest.raises(FileNotFoundError, match="VOC2007"):
        resolve_voc_dataset("voc_2007_test", tmp_path)
    with pytest.raises(ValueError, match="Unknown VOC dataset 'voc_2012_test'"):
        resolve_voc_dataset("voc_2012_test", tmp_path)


@pytest.mark.parametrize("text, message", [
    ("<annotation><size>", r"000001.xml is not valid XML"),
    ("<annotation></annotation>", r"000001.xml: missing <size>"),
    (_xml(10, 10, [("zebra", 0, (1, 1, 5, 5))]), r"000001.xml object #0: class 'zebra' is not one of the 20"),
    (_xml(10, 10, [("dog", 0, (6, 1, 5, 5))]), r"object #0 \(dog\): degenerate box"),
    (_xml(10, 10, [("dog", 0, (1, 1, "x", 5))]), r"object #0 \(dog\) <bndbox>: <xmax> is 'x', not a number"),
    (_xml(0, 10, []), r"positive integer width and height"),
])
def test_broken_annotation_names_file_and_problem(tmp_path, text, message):
    year = _year_dir(tmp_path, {"000001": text})
    with pytest.raises(ValueError, match=message):
        read_voc_split(year, "trainval")


def test_split_file_problems(tmp_path):
    year = _year_dir(tmp_path, {"000001": _xml(10, 10, [])}, ids=["000001", "000002"])
    with pytest.raises(FileNotFoundError, match=r"VOC annotation not found: .*000002.xml"):
        read_voc_split(year, "trainval")
    with pytest.raises(FileNotFoundError, match=r"VOC split file not found: .*test.txt"):
        read_voc_split(year, "test")
    (year / "ImageSets" / "Main" / "val.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"val.txt lists no images"):
        read_voc_split(year, "val")
    (year / "ImageSets" / "Main" / "train.txt").write_text("000001\n000001\n")
    with pytest.raises(ValueError, match=r"train.txt lists image ids more than once: 000001"):
        read_voc_split(year, "train")


def test_generated_voc_holds_the_coco_splits_scenes(tmp_path):
    spec = SceneSpec(height=64, width=80, crowd_prob=0.5)
    write_coco(tmp_path / "coco", "val", 6, spec, seed=4)
    year = write_voc(tmp_path / "VOC2007", {"test": ("val", 6)}, spec, seed=4)
    names = tuple(category["name"] for category in CATEGORIES)
    voc, ground_truth = read_voc_split(year, "test", names)
    coco = json.loads((tmp_path / "coco" / "annotations" / "instances_val.json").read_text())
    # the reader's Detectron2 coordinates give back the COCO boxes exactly; crowds come back as difficult objects
    assert [(a["image_id"], a["category_id"], a["bbox"], a["difficult"]) for a in voc["annotations"]] == [
        (a["image_id"], a["category_id"], a["bbox"], a["iscrowd"]) for a in coco["annotations"]]
    assert any(a["iscrowd"] for a in coco["annotations"])
    assert list(ground_truth) == [f"{i:06d}" for i in range(1, 7)]
    for image in voc["images"]:
        assert (year / image["file_name"]).read_bytes() == (tmp_path / "coco" / "val" / f"{image['id']:012d}.jpg"
                                                            ).read_bytes()


def test_generated_voc_writes_trainval_of_train_and_val(tmp_path):
    year = write_voc(tmp_path / "VOC2007", {"train": ("train", 2), "val": ("val", 1)}, SceneSpec(height=64, width=64))
    main = year / "ImageSets" / "Main"
    assert (main / "train.txt").read_text() == "000001\n000002\n"
    assert (main / "val.txt").read_text() == "000003\n"
    assert (main / "trainval.txt").read_text() == "000001\n000002\n000003\n"
