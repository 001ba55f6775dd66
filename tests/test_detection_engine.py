"""The detection engine end to end on tiny generated data: exact resume, outputs, evaluation parity, DDP."""
import contextlib
import io
import json
import os
import subprocess
import sys

import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from benchmarks.detection import train_net
from benchmarks.detection.config import get_detection_defaults
from benchmarks.detection.evaluation import evaluate_coco
from benchmarks.engine.checkpoint import ExistingRunError
from benchmarks.engine.config import load_config
from converters import load_torch_file

from .conftest import REPO


def tiny_cfg(config_path, data_root, output_dir, *overrides):
    cfg = load_config(get_detection_defaults(), config_path, list(overrides))
    cfg.defrost()
    cfg.DATASETS.ROOT = str(data_root)
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.MODEL.WEIGHTS = "none"
    cfg.freeze()
    return cfg


class Interrupt(Exception):
    """Stands in for a killed process."""


def test_interrupted_run_resumes_to_identical_weights(tiny_coco_root, tiny_detection_config, tmp_path, monkeypatch):
    straight = tiny_cfg(tiny_detection_config, tiny_coco_root, tmp_path / "straight")
    train_net.run(straight)

    original_losses = train_net.detection_losses
    calls = {"n": 0}

    def dying_losses(device):
        compute = original_losses(device)

        def compute_or_die(model, batch):
            calls["n"] += 1
            if calls["n"] == 5:  # iteration 4, after the checkpoint at iteration 3
                raise Interrupt
            return compute(model, batch)
        return compute_or_die

    interrupted = tiny_cfg(tiny_detection_config, tiny_coco_root, tmp_path / "interrupted")
    monkeypatch.setattr(train_net, "detection_losses", dying_losses)
    with pytest.raises(Interrupt):
        train_net.run(interrupted)
    monkeypatch.setattr(train_net, "detection_losses", original_losses)
    assert (tmp_path / "interrupted" / "last_checkpoint").read_text() == "model_0000002.pth"
    assert not (tmp_path / "interrupted" / "model_final.pth").exists()
    train_net.run(interrupted, resume=True)

    expected = load_torch_file(tmp_path / "straight" / "model_final.pth")
    resumed = load_torch_file(tmp_path / "interrupted" / "model_final.pth")
    assert expected["iteration"] == resumed["iteration"] == 6
    for key, value in expected["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    for group_a, group_b in zip(expected["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert torch.equal(group_a["momentum_buffer"], group_b["momentum_buffer"])
    metrics_a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    metrics_b = json.loads((tmp_path / "interrupted" / "metrics.json").read_text())
    assert metrics_a == metrics_b


def test_outputs_and_evaluation_match_pycocotools(tiny_coco_root, tiny_detection_config, tmp_path):
    output = tmp_path / "run"
    metrics = train_net.run(tiny_cfg(tiny_detection_config, tiny_coco_root, output, "SOLVER.MAX_ITER", "2",
                                     "TEST.DIAGNOSIS.ENABLED", "True"))
    for name in ("config.yaml", "metrics.json", "results.md", "coco_instances_results.json", "model_final.pth",
                 "tide.json", "hoiem.json", "diagnosis.md", "tide_segm.png", "hoiem_trend_bbox.svg"):
        assert (output / name).is_file(), name
    assert json.loads((output / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert set(metrics) == {"bbox", "segm"}
    assert "| bbox |" in (output / "results.md").read_text()

    # the written detections, evaluated by pycocotools directly, give the reported numbers
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tiny_coco_root / "annotations" / "instances_val.json"))
        results = json.loads((output / "coco_instances_results.json").read_text())
        if results:
            evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            assert metrics["bbox"]["AP"] == pytest.approx(evaluator.stats[0] * 100, abs=1e-9)
            assert metrics["bbox"]["AP50"] == pytest.approx(evaluator.stats[1] * 100, abs=1e-9)


def test_ground_truth_as_detections_scores_100(tiny_coco_root):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tiny_coco_root / "annotations" / "instances_val.json"))
    results = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
         "segmentation": a["segmentation"]}
        for a in gt.dataset["annotations"] if not a["iscrowd"]
    ]
    metrics = evaluate_coco(gt, results, ("bbox", "segm"))
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] == pytest.approx(100.0)
        assert metrics[iou_type]["AP50"] == pytest.approx(100.0)


def test_no_detections_gives_zero_ap(tiny_coco_root):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tiny_coco_root / "annotations" / "instances_val.json"))
    metrics = evaluate_coco(gt, [], ("bbox",))
    assert metrics["bbox"]["AP"] == 0.0 and metrics["bbox"]["AP50"] == 0.0


def test_fresh_run_refuses_to_overwrite_an_existing_one(tiny_coco_root, tiny_detection_config, tmp_path):
    output = tmp_path / "run"
    train_net.run(tiny_cfg(tiny_detection_config, tiny_coco_root, output, "SOLVER.MAX_ITER", "1"))
    before = (output / "model_final.pth").read_bytes()
    with pytest.raises(ExistingRunError, match="--resume"):
        train_net.run(tiny_cfg(tiny_detection_config, tiny_coco_root, output, "SOLVER.MAX_ITER", "1"))
    assert (output / "model_final.pth").read_bytes() == before


def test_eval_only_without_checkpoint_is_a_clear_error(tiny_coco_root, tiny_detection_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_net.run(tiny_cfg(tiny_detection_config, tiny_coco_root, tmp_path / "empty"), eval_only=True)


def run_tool(*args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, env=env, **kwargs)


def test_transfer_tool_rejects_unknown_task_and_unreadable_weights(tmp_path):
    result = run_tool("tools/transfer.py", "--task", "imagenet_magic", "--weights", "none")
    assert result.returncode != 0 and "coco_maskrcnn" in result.stderr
    result = run_tool("tools/transfer.py", "--task", "voc_fasterrcnn", "--weights", "none")
    assert result.returncode != 0 and "'voc_fasterrcnn'" in result.stderr and "not implemented yet" in result.stderr
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    result = run_tool("tools/transfer.py", "--task", "coco_maskrcnn", "--weights", str(bad),
                      "--output", str(tmp_path / "out"), "--data-root", str(tmp_path / "nowhere"))
    assert result.returncode != 0 and "error" in result.stderr


def test_torchrun_two_processes_on_cpu(tiny_coco_root, tiny_detection_config, tmp_path):
    """DDP over gloo with SyncBN resolved to naiveSyncBN, distributed sampler, gathered evaluation."""
    result = run_tool(
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "tools/transfer.py",
        "--task", "coco_maskrcnn", "--config", str(tiny_detection_config), "--data-root", str(tiny_coco_root),
        "--weights", "none", "--output", str(tmp_path / "ddp"), "SOLVER.MAX_ITER", "2", timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (tmp_path / "ddp" / "log.txt").read_text()
    assert "naiveSyncBN" in log
    ddp_metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp_metrics["bbox"].keys() >= {"AP", "AP50", "AP75"}
    # One process re-evaluating the saved model, with only --output (the run's saved config supplies the rest),
    # must reproduce the evaluation that two processes gathered.
    result = run_tool("tools/transfer.py", "--task", "coco_maskrcnn", "--output", str(tmp_path / "ddp"), "--eval-only")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the resolved config of the run in --output" in (tmp_path / "ddp" / "log.txt").read_text()
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text()) == ddp_metrics


def test_benchmark_tool_prints_training_and_inference_speed(tiny_coco_root, tiny_detection_config):
    result = run_tool("tools/benchmark.py", "--task", "coco_maskrcnn", "--config", str(tiny_detection_config),
                      "--data-root", str(tiny_coco_root), "--iters", "2", "--images", "2", "--warmup", "1",
                      timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    speed = json.loads(result.stdout[result.stdout.index("{"):])
    assert speed["train_s_per_iter"] > 0 and speed["inference_s_per_image"] > 0
    assert speed["train_images_per_iter"] == 2
