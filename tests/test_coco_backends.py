"""faster-coco-eval and pycocotools give the same COCO numbers; the backend choice and its errors."""
import contextlib
import io
import math

import pytest
from pycocotools.coco import COCO

from benchmarks.detection import evaluation
from benchmarks.detection.evaluation import evaluate_coco, resolve_coco_backend
from benchmarks.perf.tide_speed import synthetic_result_set


def coco_index(dataset: dict) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def test_backends_agree_on_every_metric_and_class():
    # masks, crowds, classes without ground truth and images without detections: every branch of the metric
    gt, results = synthetic_result_set(num_images=40, num_classes=8, extra_classes=2, images_without_dets=0.1,
                                       crowd_fraction=0.05, masks=True, seed=3)
    fast = evaluate_coco(coco_index(gt), results, ("bbox", "segm"), "faster_coco_eval")
    reference = evaluate_coco(coco_index(gt), results, ("bbox", "segm"), "pycocotools")
    assert fast.keys() == reference.keys() == {"bbox", "segm"}
    for iou_type in reference:
        assert fast[iou_type].keys() == reference[iou_type].keys()
        for name, value in reference[iou_type].items():
            # the same algorithm in C++: identical up to float summation order
            assert fast[iou_type][name] == pytest.approx(value, abs=1e-9, nan_ok=True), (iou_type, name)
        assert not math.isnan(reference[iou_type]["AP"])


def test_backend_choice(monkeypatch):
    assert resolve_coco_backend("auto") == "faster_coco_eval"
    assert resolve_coco_backend("pycocotools") == "pycocotools"
    with pytest.raises(ValueError, match="must be one of auto, faster_coco_eval, pycocotools, got 'detectron2'"):
        resolve_coco_backend("detectron2")
    monkeypatch.setattr(evaluation.importlib.util, "find_spec", lambda name: None)
    assert resolve_coco_backend("auto") == "pycocotools"
    with pytest.raises(ModuleNotFoundError, match="faster_coco_eval is not installed"):
        resolve_coco_backend("faster_coco_eval")
