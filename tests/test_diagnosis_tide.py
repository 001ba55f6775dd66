"""TIDE errors: hand-built cases where every error is known, the cases where tidecv breaks, and parity with tidecv
(every dAP and error count) and pycocotools (AP50, AP, per-class AP) on generated result sets."""
import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from benchmarks.detection.evaluation import evaluate_coco
from benchmarks.diagnosis.inputs import load_ground_truth
from benchmarks.diagnosis.tide import MAIN_ERRORS, SPECIAL_ERRORS, evaluate_tide
from benchmarks.perf.tide_speed import run_tidecv, synthetic_result_set
from tests.tidecv_compat import import_tidecv

CAT, DOG = 1, 2
A, B = [10, 10, 20, 20], [60, 60, 20, 20]
HALF_OFF = [20, 10, 20, 20]  # IoU 1/3 with A
NEAR = [12, 10, 20, 20]  # IoU 0.82 with A
FAR = [0, 70, 10, 10]  # overlaps nothing
NO_ERRORS = dict.fromkeys(MAIN_ERRORS, 0)


def ground_truth(objects, num_images=1):
    """``objects``: (image id, category id, box[, iscrowd]) tuples; images are 100 x 100."""
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 100, "width": 100} for i in range(1, num_images + 1)]
    annotations = []
    for k, (image_id, category_id, (x, y, w, h), *crowd) in enumerate(objects):
        annotations.append({"id": k + 1, "image_id": image_id, "category_id": category_id, "bbox": [x, y, w, h],
                            "area": w * h, "iscrowd": crowd[0] if crowd else 0,
                            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": CAT, "name": "cat"}, {"id": DOG, "name": "dog"}]}


def det(category_id, bbox, score, image_id=1):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def ap_points(precisions_at_recall):
    """101-point AP (points) of a PR curve given as [(recall reached, envelope precision up to it), ...]."""
    recalls = np.arange(101) / 100
    values = np.zeros(101)
    for recall, precision in reversed(precisions_at_recall):
        values[recalls <= recall] = precision
    return 100 * values.mean()


# name: (objects, detections, expected dAP of that error type, fixed by hand)
ONE_ERROR = {
    # IoU 1/3 with the only cat: AP 0 -> 100 when it is moved onto the cat
    "Loc": ([(1, CAT, A)], [det(CAT, HALF_OFF, 0.9)], 100.0),
    # a dog on the cat: TIDE averages the dog class (no objects, AP 0) until the fix moves the detection to cat
    "Cls": ([(1, CAT, A)], [det(DOG, A, 0.9)], 100.0),
    # a second hit on the first cat, scored above the hit on the second cat
    "Dupe": ([(1, CAT, A), (1, CAT, B)], [det(CAT, A, 0.9), det(CAT, NEAR, 0.8), det(CAT, B, 0.7)],
             100.0 - ap_points([(0.5, 1.0), (1.0, 2 / 3)])),
    # nothing there, scored above the only hit
    "Bkg": ([(1, CAT, A)], [det(CAT, FAR, 0.95), det(CAT, A, 0.9)], 100.0 - ap_points([(1.0, 0.5)])),
    # a dog half off the cat: wrong class and badly placed; the dog class counts 0 in TIDE's mean until removed
    "Both": ([(1, CAT, A)], [det(DOG, HALF_OFF, 0.95), det(CAT, A, 0.9)], 50.0),
    # the second cat is never found
    "Miss": ([(1, CAT, A), (1, CAT, B)], [det(CAT, A, 0.9)], 100.0 - ap_points([(0.5, 1.0)])),
}


@pytest.fixture(scope="module")
def tidecv():
    return import_tidecv()


def write_pair(tmp_path, gt, dets):
    gt_path, dets_path = tmp_path / "gt.json", tmp_path / "dets.json"
    gt_path.write_text(json.dumps(gt))
    dets_path.write_text(json.dumps(dets))
    return gt_path, dets_path


def pycocotools_ap50_per_class(gt, dets, mode, recalls):
    """pycocotools' AP (points) at IoU 0.5 per class, NaN for a class without objects, read at ``recalls``."""
    coco_gt = load_ground_truth(copy.deepcopy(gt), mode)  # pycocotools turns polygons into RLE in place
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), mode)
        evaluator.params.recThrs = recalls
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][0, :, :, 0, -1]  # [recall, class]
    return np.where(precision[0] > -1, 100 * precision.mean(0), np.nan)


def assert_same_as_tidecv(ours, theirs, tolerance=0.01):
    for group in ("main", "special"):
        for error, value in theirs[group].items():
            assert ours[group][error] == pytest.approx(value, abs=tolerance), (group, error)
    assert ours["counts"] == theirs["counts"]


@pytest.mark.parametrize("error", MAIN_ERRORS)
def test_one_error_of_each_type(error, tmp_path, tidecv):
    objects, dets, expected = ONE_ERROR[error]
    result = evaluate_tide(ground_truth(objects), dets)
    assert result["counts"] == {**NO_ERRORS, error: 1}
    assert result["main"][error] == pytest.approx(expected)
    assert all(value == 0 for other, value in result["main"].items() if other != error)
    assert sum(c["counts"][error] for c in result["per_class"].values()) == 1
    assert_same_as_tidecv(result, run_tidecv(tidecv, *write_pair(tmp_path, ground_truth(objects), dets))[0])


def test_class_without_ground_truth_leaves_coco_ap_alone_but_counts_in_tide():
    result = evaluate_tide(ground_truth(ONE_ERROR["Both"][0]), ONE_ERROR["Both"][1])
    # pycocotools averages classes with objects only: the cat is found perfectly
    assert result["AP50"] == result["AP"] == 100.0
    # TIDE's mean counts the dog at 0, so removing the dog detection gains half of the AP
    assert result["main"]["Both"] == pytest.approx(50.0)
    assert result["per_class"]["dog"]["AP50"] == 0.0 and result["per_class"]["dog"]["counts"]["Both"] == 1
    assert result["per_class"]["cat"]["main"] == dict.fromkeys(MAIN_ERRORS, 0.0)


def test_tide_reads_precision_at_k_over_100(tmp_path, tidecv):
    # 7 of 10 cats found before a false positive: recall 0.7 exactly. pycocotools reads precision at
    # np.linspace(0, 1, 101), whose 0.7 is 0.7000000000000001, so it takes the precision after the false positive
    # there; tidecv reads it at 70 / 100 == 0.7. AP50 is pycocotools', the dAPs are relative to tidecv's AP.
    objects = [(1, CAT, [x, y, 10, 10]) for y in (0, 50) for x in (0, 20, 40, 60, 80)]
    dets = [det(CAT, box, 0.99 - 0.01 * k) for k, (_, _, box) in enumerate(objects)]
    dets.insert(7, det(CAT, FAR, 0.925))
    result = evaluate_tide(ground_truth(objects), dets)
    coco = evaluate_coco(load_ground_truth(ground_truth(objects)), copy.deepcopy(dets))["bbox"]
    assert result["AP50"] == pytest.approx(coco["AP50"])
    theirs = run_tidecv(tidecv, *write_pair(tmp_path, ground_truth(objects), dets))[0]
    assert theirs["AP_at"][0] - result["AP50"] == pytest.approx(100 * (1 - 10 / 11) / 101)
    assert_same_as_tidecv(result, theirs)


def test_only_the_best_claim_on_a_free_object_is_fixed(tmp_path, tidecv):
    # Cls (0.9) and Loc (0.8) both point at cat A; the Cls error is the better claim, so fixing Loc alone removes
    # the Loc detection instead of promoting it. The Loc error on cat B (0.5), matched at 0.6, is just removed.
    objects = [(1, CAT, A), (1, CAT, B)]
    dets = [det(DOG, A, 0.9), det(CAT, HALF_OFF, 0.8), det(CAT, B, 0.6), det(CAT, [70, 60, 20, 20], 0.5)]
    result = evaluate_tide(ground_truth(objects), dets)
    assert result["counts"] == {**NO_ERRORS, "Cls": 1, "Loc": 2}  # A is claimed, so it is no Miss
    # cat before: FP 0.8, TP 0.6, FP 0.5 -> AP of [(0.5, 0.5)]; the dog (no objects) counts 0
    before = ap_points([(0.5, 0.5)]) / 2
    assert result["main"]["Loc"] == pytest.approx(ap_points([(0.5, 1.0)]) / 2 - before)
    assert result["main"]["Cls"] == pytest.approx(ap_points([(0.5, 1.0), (1.0, 2 / 3)]) - before)
    assert_same_as_tidecv(result, run_tidecv(tidecv, *write_pair(tmp_path, ground_truth(objects), dets))[0])


def test_two_loc_errors_on_one_object_fix_into_one_true_positive():
    result = evaluate_tide(ground_truth([(1, CAT, A)]), [det(CAT, HALF_OFF, 0.9), det(CAT, [18, 10, 20, 20], 0.8)])
    assert result["counts"] == {**NO_ERRORS, "Loc": 2}
    assert result["main"]["Loc"] == pytest.approx(100.0)


def test_detections_in_a_crowd_region(tmp_path, tidecv):
    gt = ground_truth([(1, CAT, A), (1, CAT, [40, 40, 60, 60], 1)])
    dets = [det(CAT, A, 0.9), det(CAT, [50, 50, 20, 20], 0.95), det(DOG, [50, 50, 20, 20], 0.8)]
    result = evaluate_tide(gt, dets)
    # the cat inside the cat crowd is left out of the AP; the dog there is not (the crowd is of another class)
    assert result["AP50"] == 100.0
    # tidecv still gives the ignored cat an error type: both are Bkg (no object under them)
    assert result["counts"] == {**NO_ERRORS, "Bkg": 2}
    # fixing Bkg removes the dog, which TIDE's mean counted at 0 (no dog objects)
    assert result["main"] == {**dict.fromkeys(MAIN_ERRORS, 0.0), "Bkg": 50.0}
    assert_same_as_tidecv(result, run_tidecv(tidecv, *write_pair(tmp_path, gt, dets))[0])


def test_no_detections_is_all_miss(tmp_path, tidecv):
    gt = ground_truth([(1, CAT, A), (1, DOG, B), (2, CAT, B)], num_images=2)
    result = evaluate_tide(gt, [])
    assert result["AP50"] == result["AP"] == 0.0
    assert result["counts"] == {**NO_ERRORS, "Miss": 3}
    assert result["main"] == {**dict.fromkeys(MAIN_ERRORS, 0.0), "Miss": 100.0}
    assert result["special"] == {"FalsePos": 0.0, "FalseNeg": 100.0}
    assert set(result["per_class"]) == {"cat", "dog"}
    with pytest.raises(ZeroDivisionError):  # tidecv divides by the number of classes left (tide#39)
        run_tidecv(tidecv, *write_pair(tmp_path, gt, []))


def test_perfect_detections_have_no_errors():
    objects = [(1, CAT, A), (1, DOG, B), (2, CAT, B)]
    dets = [det(c, box, 0.9 - 0.1 * k, image_id=i) for k, (i, c, box) in enumerate(objects)]
    result = evaluate_tide(ground_truth(objects, num_images=2), dets)
    assert result["AP50"] == result["AP"] == 100.0
    assert result["counts"] == NO_ERRORS
    assert set(result["main"].values()) == set(result["special"].values()) == {0.0}


def test_only_background_detections_and_no_objects():
    result = evaluate_tide(ground_truth([]), [det(CAT, A, 0.9), det(DOG, B, 0.8)])
    assert result["AP50"] == result["AP"] == 0.0  # no class has objects: pycocotools says -1
    assert result["counts"] == {**NO_ERRORS, "Bkg": 2}
    assert result["main"] == {**dict.fromkeys(MAIN_ERRORS, 0.0), "Bkg": 100.0}  # the fix leaves nothing to miss
    assert result["per_class"]["cat"]["AP"] == 0.0


def test_empty_image_set():
    gt = ground_truth([], num_images=0)
    result = evaluate_tide(gt, [])
    assert result == {"AP50": 0.0, "AP": 0.0, "main": dict.fromkeys(MAIN_ERRORS, 0.0),
                      "special": dict.fromkeys(SPECIAL_ERRORS, 0.0), "counts": NO_ERRORS, "per_class": {}}


def test_top_detections_per_image_only():
    dets = [det(CAT, FAR, 0.1 + 0.01 * k) for k in range(5)] + [det(CAT, A, 0.05)]
    assert evaluate_tide(ground_truth([(1, CAT, A)]), dets, max_dets=5)["counts"] == {**NO_ERRORS, "Bkg": 5,
                                                                                       "Miss": 1}
    assert evaluate_tide(ground_truth([(1, CAT, A)]), dets, max_dets=6)["counts"] == {**NO_ERRORS, "Bkg": 5}


def test_malformed_input_names_the_file(tmp_path):
    gt_path, dets_path = write_pair(tmp_path, ground_truth([(1, CAT, A)]), [det(CAT, A, 0.9, image_id=7)])
    with pytest.raises(ValueError, match=f"{dets_path}.*image_id 7"):
        evaluate_tide(gt_path, dets_path)
    dets_path.write_text(json.dumps([det(CAT, [1, 2, 3], 0.9)]))
    with pytest.raises(ValueError, match=f"{dets_path}.*bbox"):
        evaluate_tide(gt_path, dets_path)
    with pytest.raises(ValueError, match="mode"):
        evaluate_tide(gt_path, [], mode="polygon")
    with pytest.raises(ValueError, match="bg_thresh"):
        evaluate_tide(gt_path, [], pos_thresh=0.5, bg_thresh=0.6)
    gt_path.write_text("{")
    with pytest.raises(ValueError, match=f"{gt_path} is not valid JSON"):
        evaluate_tide(gt_path, [])


# Generated result sets: (generator arguments, mode, pos_thresh, bg_thresh, compare with pycocotools)
SETS = {
    "plain": (dict(num_images=40, num_classes=10, dets_per_image=25, seed=1), "bbox", 0.5, 0.1, True),
    # crowds, classes with detections but no objects, images without detections and without objects
    "hard": (dict(num_images=50, num_classes=8, extra_classes=3, objects_per_image=3.0, dets_per_image=30,
                  crowd_fraction=0.1, images_without_dets=0.15, seed=2), "bbox", 0.5, 0.1, True),
    "thresholds": (dict(num_images=40, num_classes=10, dets_per_image=25, seed=3), "bbox", 0.6, 0.2, True),
    # more detections than max_dets: tidecv keeps the top 100 per image as we do, pycocotools per image and class
    "crowded": (dict(num_images=12, num_classes=6, dets_per_image=130, seed=4), "bbox", 0.5, 0.1, False),
    "masks": (dict(num_images=16, num_classes=5, extra_classes=1, dets_per_image=12, crowd_fraction=0.1,
                   masks=True, size=(96, 72), seed=5), "segm", 0.5, 0.1, True),
}


@pytest.mark.parametrize("name", SETS)
def test_parity_with_tidecv_and_pycocotools(name, tmp_path, tidecv):
    arguments, mode, pos_thresh, bg_thresh, with_pycocotools = SETS[name]
    gt, dets = synthetic_result_set(**arguments)
    paths = write_pair(tmp_path, gt, dets)
    ours = evaluate_tide(*paths, mode=mode, pos_thresh=pos_thresh, bg_thresh=bg_thresh)
    theirs, _ = run_tidecv(tidecv, *paths, mode=mode, pos_thresh=pos_thresh, bg_thresh=bg_thresh)
    assert sum(ours["counts"].values()) > 0 and max(ours["main"].values()) > 0.5  # something to compare
    assert_same_as_tidecv(ours, theirs)
    assert {t: sum(c["counts"][t] for c in ours["per_class"].values()) for t in MAIN_ERRORS} == ours["counts"]
    if not with_pycocotools:
        return
    coco = evaluate_coco(load_ground_truth(copy.deepcopy(gt), mode), copy.deepcopy(dets), (mode,))[mode]
    assert ours["AP50"] == pytest.approx(coco["AP50"], abs=0.01)
    assert ours["AP"] == pytest.approx(coco["AP"], abs=0.01)
    for category in gt["categories"]:
        if not np.isnan(coco[f"AP-{category['name']}"]):
            assert ours["per_class"][category["name"]]["AP"] == pytest.approx(coco[f"AP-{category['name']}"], abs=0.01)
    if pos_thresh == 0.5:
        # TIDE's AP, which the dAPs are relative to, is pycocotools' AP50 read at recalls k/100 and averaged over
        # the classes with objects or detections (per_class; here none has only detections in crowd regions,
        # which TIDE leaves out) instead of those with objects
        per_class = pycocotools_ap50_per_class(gt, dets, mode, recalls=np.arange(101) / 100)
        assert theirs["AP_at"][0] == pytest.approx(np.nansum(per_class) / len(ours["per_class"]), abs=1e-6)


def test_per_class_equals_overall_with_one_class():
    gt, dets = synthetic_result_set(num_images=20, num_classes=1, dets_per_image=10, seed=6)
    result = evaluate_tide(gt, dets)
    only = result["per_class"]["class0"]
    for key in ("AP50", "AP", "main", "special", "counts"):
        assert only[key] == pytest.approx(result[key])


def test_mask_is_segm():
    gt, dets = synthetic_result_set(**SETS["masks"][0])
    assert evaluate_tide(gt, dets, mode="mask") == evaluate_tide(gt, dets, mode="segm")
