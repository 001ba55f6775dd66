"""tools/evaluate.py: COCO AP of a results file equals pycocotools' own, and metrics.json is what a run writes."""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .conftest import REPO
from .test_diagnosis_hoiem import DETS, GT


def evaluate(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "tools/evaluate.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=300)


def pycocotools_bbox_stats(gt, dets):
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(json.loads(json.dumps(dets))), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_coco_metric_matches_pycocotools_and_writes_metrics_json(tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "dets.json").write_text(json.dumps(DETS))
    result = evaluate("--gt", tmp_path / "gt.json", "--dets", tmp_path / "dets.json", "--metric", "coco",
                      "--out", tmp_path / "eval")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    stats = pycocotools_bbox_stats(GT, DETS)
    for name, value in zip(("AP", "AP50", "AP75"), stats[:3]):
        assert metrics["bbox"][name] == pytest.approx(100 * value, abs=1e-9)
    assert f"| bbox | {metrics['bbox']['AP']:.2f} | {metrics['bbox']['AP50']:.2f} |" in result.stdout


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "dets.json").write_text(json.dumps([{**DETS[0], "image_id": 99}]))
    result = evaluate("--gt", tmp_path / "gt.json", "--dets", tmp_path / "dets.json", "--metric", "coco")
    assert result.returncode == 2
    assert "detection #0 refers to image_id 99, which is not in the ground truth" in result.stderr
    result = evaluate("--gt", tmp_path / "gt.json", "--dets", tmp_path / "dets.json", "--metric", "coco",
                      "--split", "test")
    assert result.returncode == 2 and "--split names a VOC split" in result.stderr
    result = evaluate("--gt", tmp_path / "gt.json", "--dets", tmp_path / "dets.json", "--metric", "coco",
                      "--voc-ap", "area")
    assert result.returncode == 2 and "--classes and --voc-ap apply to --metric voc" in result.stderr


def test_voc_metric_gives_detectron2s_numbers_on_the_fixture(tmp_path):
    fixture = REPO / "tests" / "fixtures" / "voc_eval"
    expected = json.loads((fixture / "expected.json").read_text())
    result = evaluate("--gt", fixture, "--split", "test", "--dets", fixture / "detections.json", "--metric", "voc",
                      "--classes", ",".join(expected["class_names"]), "--voc-ap", "11point", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())["bbox"]
    for name in ("AP", "AP50", "AP75"):
        assert metrics[name] == pytest.approx(expected["voc07"][name], abs=1e-4)
    year = tmp_path / "VOCdevkit" / "VOC2007"  # named by its year: the 11-point rule, as Detectron2 picks it
    shutil.copytree(fixture, year)
    result = evaluate("--gt", year, "--split", "test", "--dets", fixture / "detections.json", "--metric", "voc",
                      "--classes", ",".join(expected["class_names"]))
    assert result.returncode == 0 and f"| bbox | {expected['voc07']['AP']:.2f} |" in result.stdout, result.stderr
    # the fixture's directory is not named VOC<year>: the AP rule must be given
    result = evaluate("--gt", fixture, "--split", "test", "--dets", fixture / "detections.json", "--metric", "voc",
                      "--classes", ",".join(expected["class_names"]))
    assert result.returncode == 2 and "cannot tell the VOC year" in result.stderr
    result = evaluate("--gt", fixture, "--dets", fixture / "detections.json", "--metric", "voc")
    assert result.returncode == 2 and "--metric voc needs --split" in result.stderr
    result = evaluate("--gt", fixture, "--split", "test", "--dets", fixture / "detections.json", "--metric", "voc",
                      "--voc-ap", "area", "--backend", "pycocotools")
    assert result.returncode == 2 and "--metric voc has one" in result.stderr
