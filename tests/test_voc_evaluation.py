"""VOC box AP against Detectron2's voc_eval on a fixture (numbers from benchmarks/perf/voc_eval_reference.py), and
hand-computed cases for matching, difficult objects, the two AP rules, rounding, ties and bad input."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.data.voc import read_voc_split
from benchmarks.detection.voc_evaluation import IOU_THRESHOLDS, evaluate_voc, voc_class_aps

FIXTURE = Path(__file__).parent / "fixtures" / "voc_eval"
NAMES = ("cat", "dog")
CAT = 1


def obj(bbox, name="cat", difficult=False):
    return {"name": name, "bbox": bbox, "difficult": difficult}


def det(image_id, xml_box, score, category_id=CAT):
    """A result record (0-based xywh) for the 1-based box the VOC xml would hold."""
    xmin, ymin, xmax, ymax = xml_box
    return {"image_id": image_id, "category_id": category_id, "score": score,
            "bbox": [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]}


def cat_aps(ground_truth, results, thresholds=IOU_THRESHOLDS):
    """The cat's AP (percent) per threshold, 11-point and area."""
    return [voc_class_aps(ground_truth, results, NAMES, use_07_metric, thresholds)[:, 0]
            for use_07_metric in (True, False)]


@pytest.mark.parametrize("metric, use_07_metric", [("voc07", True), ("area", False)])
def test_every_class_and_threshold_matches_detectron2(metric, use_07_metric):
    expected = json.loads((FIXTURE / "expected.json").read_text())
    names = expected["class_names"]
    _, ground_truth = read_voc_split(FIXTURE, "test", names)
    results = json.loads((FIXTURE / "detections.json").read_text())
    assert len(ground_truth) == 30 and sum(not objects for objects in ground_truth.values()) >= 3
    with pytest.warns(RuntimeWarning, match="boat: detections but no non-difficult object"):
        table = voc_class_aps(ground_truth, results, names, use_07_metric)
    want = np.array([expected[metric]["per_class"][name] for name in names], dtype=float).T  # null -> NaN
    np.testing.assert_allclose(table, want, rtol=0, atol=1e-4)
    with pytest.warns(RuntimeWarning):
        metrics = evaluate_voc(ground_truth, results, names, use_07_metric)["bbox"]
    for key in ("AP", "AP50", "AP75"):
        np.testing.assert_allclose(metrics[key], expected[metric][key] if expected[metric][key] is not None
                                   else math.nan, rtol=0, atol=1e-4)
    for c, name in enumerate(names):
        np.testing.assert_allclose(metrics[f"AP50-{name}"], want[0, c], rtol=0, atol=1e-4)


def test_difficult_objects_are_neither_hits_nor_misses():
    # A and C count, B is difficult (npos = 2). Ranked: on B (skipped), background (FP), on A (TP):
    # recall 0, 0, 0.5; precision 0 (0 / eps), 0, 0.5.
    # 11-point: the points 0 .. 0.5 (six) see precision 0.5, the five above see none: 6 * 0.5 / 11 = 27.27%.
    # Area: recall steps 0 -> 0.5 under envelope 0.5, then 0.5 -> 1 under 0: 0.25 = 25%.
    ground_truth = {"1": [obj([1, 1, 10, 10]), obj([21, 1, 30, 10], difficult=True), obj([41, 1, 50, 10])]}
    results = [det("1", [21, 1, 30, 10], 0.9), det("1", [100, 100, 120, 120], 0.8), det("1", [1, 1, 10, 10], 0.7)]
    voc07, area = cat_aps(ground_truth, results)
    np.testing.assert_allclose(voc07, 300 / 11)  # exact boxes: the same at every threshold
    np.testing.assert_allclose(area, 25.0)
    metrics = evaluate_voc(ground_truth, results, NAMES, use_07_metric=False)["bbox"]
    assert metrics["AP"] == metrics["AP50"] == metrics["AP75"] == pytest.approx(12.5)  # the dog has AP 0
    assert metrics["AP50-cat"] == pytest.approx(25.0) and metrics["AP50-dog"] == 0.0


def test_a_second_detection_of_an_object_is_a_false_positive():
    # TP then duplicate FP (npos 1): precision 1, 0.5 at recall 1: AP 100 either way
    ground_truth = {"1": [obj([1, 1, 10, 10])]}
    results = [det("1", [1, 1, 10, 10], 0.7), det("1", [1, 1, 10, 10], 0.9)]
    voc07, area = cat_aps(ground_truth, results, [0.5])
    assert voc07[0] == pytest.approx(100.0) and area[0] == pytest.approx(100.0)
    # with a second object nobody detects, the duplicate does not count for it: recall stops at 0.5 (AP 50)
    ground_truth["1"].append(obj([50, 50, 60, 60]))
    assert cat_aps(ground_truth, results, [0.5])[1][0] == pytest.approx(50.0)


def test_a_detection_goes_to_the_object_it_overlaps_most():
    # The first detection is above 0.5 with A (IoU 80/120) but is B itself: it takes B, not the first object above
    # the threshold, so A stays for the second detection and both are hits
    ground_truth = {"1": [obj([1, 1, 10, 10]), obj([3, 1, 12, 10])]}
    results = [det("1", [3, 1, 12, 10], 0.9), det("1", [1, 1, 10, 10], 0.8)]
    assert cat_aps(ground_truth, results, [0.5])[1][0] == pytest.approx(100.0)


def test_iou_uses_the_plus_one_pixel_convention_and_must_exceed_the_threshold():
    # a 3x3 px object and a detection on 2 of its rows: IoU 6/9 (with widths xmax - xmin + 1), not 2/4
    small = {"1": [obj([10, 10, 12, 12])]}
    _, area = cat_aps(small, [det("1", [10, 10, 12, 11], 0.9)], [0.65, 0.7])
    assert area.tolist() == [100.0, 0.0]
    # a 100x100 px object and a detection on half of it: IoU exactly 0.5 is not above 0.5
    big = {"1": [obj([1, 1, 100, 100])]}
    _, area = cat_aps(big, [det("1", [1, 1, 100, 50], 0.9)], [0.45, 0.5])
    assert area.tolist() == [100.0, 0.0]
    # boxes that touch: xmin one past the object's xmax does not overlap it, xmin on it overlaps one column
    adjacent = [det("1", [101, 1, 200, 100], 0.9), det("1", [100, 1, 199, 100], 0.8)]
    assert cat_aps(big, adjacent, [0.0])[1][0] == pytest.approx(50.0)  # the second one, IoU 100/19900 > 0


def test_boxes_and_scores_are_rounded_as_detectron2s_det_files():
    # x + w = 75.04 is written as 75.0: the IoU lands exactly on 0.75, which is not above it
    ground_truth = {"1": [obj([1, 1, 100, 100])]}
    results = [{"image_id": "1", "category_id": CAT, "score": 0.9, "bbox": [0, 0, 100, 75.04]}]
    _, area = cat_aps(ground_truth, results, [0.7, 0.75])
    assert area.tolist() == [100.0, 0.0]
    # scores 0.8124 and 0.8121 are both written 0.812: a tie, which keeps the order of the results (the FP
    # first: precision 0, then 0.5 at recall 1 -> AP 50); the unrounded scores would put the TP first (AP 100)
    fp, tp = det("1", [200, 200, 210, 210], 0.8121), det("1", [1, 1, 100, 100], 0.8124)
    assert cat_aps(ground_truth, [fp, tp], [0.5])[1][0] == pytest.approx(50.0)
    assert cat_aps(ground_truth, [tp, fp], [0.5])[1][0] == pytest.approx(100.0)


def test_eleven_point_recall_points_are_detectron2s():
    # 10 objects; ranked TP TP TP FP TP: recall .1 .2 .3 .3 .4, precision 1 1 1 .75 .8. Detectron2's 4th point is
    # 0.30000000000000004, above recall 3/10, so it sees 0.8, not 1: (3 * 1 + 2 * 0.8) / 11 = 41.82%
    ground_truth = {str(k): [obj([1, 1, 10, 10])] for k in range(10)}
    results = [det("0", [1, 1, 10, 10], 0.9), det("1", [1, 1, 10, 10], 0.8), det("2", [1, 1, 10, 10], 0.7),
               det("3", [50, 50, 60, 60], 0.6), det("3", [1, 1, 10, 10], 0.5)]
    assert cat_aps(ground_truth, results, [0.5])[0][0] == pytest.approx(460 / 11)


def test_classes_without_objects_or_detections():
    ground_truth = {"1": [obj([1, 1, 10, 10]), obj([1, 1, 10, 10], name="dog", difficult=True),
                          obj([1, 1, 10, 10], name="horse")], "2": []}
    # no detections at all: 0 for every class (the dog has only a difficult object)
    for use_07_metric in (True, False):
        assert voc_class_aps(ground_truth, [], NAMES, use_07_metric).tolist() == [[0.0, 0.0]] * 10
    # a dog detection with no non-difficult dog: 0/0 recall, as in Detectron2 AP 0 (11-point) or NaN (area)
    results = [det("2", [1, 1, 10, 10], 0.9, category_id=2), det("1", [1, 1, 10, 10], 0.8)]
    with pytest.warns(RuntimeWarning, match="dog: detections but no non-difficult object"):
        metrics = evaluate_voc(ground_truth, results, NAMES, use_07_metric=True)["bbox"]
    assert metrics["AP50-dog"] == 0.0 and metrics["AP50-cat"] == pytest.approx(100.0)
    assert metrics["AP"] == pytest.approx(50.0)
    with pytest.warns(RuntimeWarning, match="NaN"):
        metrics = evaluate_voc(ground_truth, results, NAMES, use_07_metric=False)["bbox"]
    assert math.isnan(metrics["AP50-dog"]) and math.isnan(metrics["AP"]) and metrics["AP50-cat"] == pytest.approx(100)


@pytest.mark.parametrize("record, message", [
    ({"image_id": "9", "category_id": 1, "score": 0.5, "bbox": [0, 0, 1, 1]}, "image_id '9' is not an image"),
    ({"image_id": 1, "category_id": 1, "score": 0.5, "bbox": [0, 0, 1, 1]}, "ids are strings"),
    ({"image_id": "1", "category_id": 3, "score": 0.5, "bbox": [0, 0, 1, 1]}, r"category_id 3 is not one of 1\.\.2"),
    ({"image_id": "1", "category_id": 0, "score": 0.5, "bbox": [0, 0, 1, 1]}, "category_id 0"),
    ({"image_id": "1", "category_id": 1, "score": float("nan"), "bbox": [0, 0, 1, 1]}, "score nan"),
    ({"image_id": "1", "category_id": 1, "score": 0.5, "bbox": [0, 0, 1]}, "not .x, y, width, height."),
    ({"image_id": "1", "category_id": 1, "score": 0.5, "bbox": [0, 0, "1", 1]}, "not .x, y, width, height."),
    ({"image_id": "1", "category_id": 1, "score": 0.5, "bbox": [0, 0, -1, 1]}, "negative width"),
    ({"image_id": "1", "category_id": 1, "score": 0.5}, "bbox None"),
])
def test_bad_result_records_are_named(record, message):
    ground_truth = {"1": [obj([1, 1, 10, 10])]}
    good = det("1", [1, 1, 10, 10], 0.9)
    with pytest.raises(ValueError, match=f"result record #1 .*{message}"):
        voc_class_aps(ground_truth, [good, record], NAMES, True)


def test_bad_ground_truth_is_named():
    with pytest.raises(ValueError, match="image '1': malformed object"):
        voc_class_aps({"1": [obj([10, 1, 9, 10])]}, [], NAMES, True)
    with pytest.raises(ValueError, match="image '1': expected a list of objects"):
        voc_class_aps({"1": None}, [], NAMES, True)
