"""The detection engine end to end on tiny generated data: exact resume, outputs, evaluation parity, DDP."""
import contextlib
import importlib.util
import io
import json
import math
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
from benchmarks.engine.distributed import get_rank, get_world_size, init_distributed
from benchmarks.engine.launch import launch
from benchmarks.engine.solver import build_sgd
from benchmarks.modeling.norm import resolve_norm
from benchmarks.modeling.rcnn import build_rcnn_c4
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
        assert results, "an untrained detector still gives detections above the 0.05 score threshold"
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert metrics["bbox"]["AP"] == pytest.approx(evaluator.stats[0] * 100, abs=1e-9)
    assert metrics["bbox"]["AP50"] == pytest.approx(evaluator.stats[1] * 100, abs=1e-9)


def test_coco_metrics_on_a_hand_computed_case():
    """Two objects, three detections: a hit, a background false positive, and a hit at IoU 77/123 = 0.626.

    Precision at COCO's 101 recall points: at IoU thresholds .50, .55, .60 it is 1 up to recall .5 (51 points) and
    2/3 above it (50 points); from .65 on the third detection misses, recall stops at .5: 51 points of 1. A wrong
    percent scale, category mapping or area range would change these.
    """
    dataset = {"images": [{"id": 1, "width": 500, "height": 400, "file_name": "a.jpg"}],
               "categories": [{"id": 7, "name": "thing"}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 100, 100], "area": 10000,
                                "iscrowd": 0},
                               {"id": 2, "image_id": 1, "category_id": 7, "bbox": [200, 200, 100, 100],
                                "area": 10000, "iscrowd": 0}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
    results = [{"image_id": 1, "category_id": 7, "bbox": [10, 10, 100, 100], "score": 0.9},
               {"image_id": 1, "category_id": 7, "bbox": [400, 10, 50, 50], "score": 0.8},
               {"image_id": 1, "category_id": 7, "bbox": [200, 223, 100, 100], "score": 0.7}]
    metrics = evaluate_coco(gt, results, ("bbox",))["bbox"]
    hit_all = (51 + 50 * 2 / 3) / 101 * 100
    hit_half = 51 / 101 * 100
    assert metrics["AP50"] == pytest.approx(hit_all)
    assert metrics["AP75"] == pytest.approx(hit_half)
    assert metrics["AP"] == pytest.approx((3 * hit_all + 7 * hit_half) / 10)
    # APl: the 50x50 false positive is medium-sized, so the large-object evaluation ignores it
    assert metrics["APl"] == pytest.approx((3 * 100 + 7 * hit_half) / 10)
    assert math.isnan(metrics["APs"]) and math.isnan(metrics["APm"])
    assert metrics["AP-thing"] == pytest.approx(metrics["AP"])


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


def test_no_detections_gives_nan_with_a_warning(tiny_coco_root, caplog):
    """Detectron2's COCOEvaluator reports NaN (and warns) when the model predicts nothing; 0 would read as measured."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tiny_coco_root / "annotations" / "instances_val.json"))
    with caplog.at_level("WARNING", logger="transferlab"):
        metrics = evaluate_coco(gt, [], ("bbox", "segm"))
    assert all(math.isnan(value) for stats in metrics.values() for value in stats.values())
    assert set(metrics["segm"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert "No detections" in caplog.text


def test_model_final_is_written_before_the_final_evaluation(tiny_coco_root, tiny_detection_config, tmp_path,
                                                             monkeypatch):
    """A crash in evaluation must not cost the trained weights; the resumed run only evaluates."""
    output = tmp_path / "run"

    def broken_evaluation(*args, **kwargs):
        raise Interrupt
    monkeypatch.setattr(train_net, "evaluate_coco", broken_evaluation)
    with pytest.raises(Interrupt):
        train_net.run(tiny_cfg(tiny_detection_config, tiny_coco_root, output))
    assert (output / "last_checkpoint").read_text() == "model_final.pth"
    assert load_torch_file(output / "model_final.pth")["iteration"] == 6
    monkeypatch.undo()

    def no_training(device):
        def compute(model, batch):
            raise AssertionError("the resumed run trained again")
        return compute
    monkeypatch.setattr(train_net, "detection_losses", no_training)
    metrics = train_net.run(tiny_cfg(tiny_detection_config, tiny_coco_root, output), resume=True)
    assert json.loads((output / "metrics.json").read_text()) == json.loads(json.dumps(metrics))


def test_periodic_evaluations_go_to_the_events_file_and_metrics_json_holds_the_final(
        tiny_coco_root, tiny_detection_config, tmp_path):
    output = tmp_path / "run"
    metrics = train_net.run(tiny_cfg(tiny_detection_config, tiny_coco_root, output, "TEST.EVAL_PERIOD", "3",
                                     "SOLVER.MAX_ITER", "6"))
    records = [json.loads(line) for line in (output / "events.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if "bbox/AP" in r]
    assert [r["iteration"] for r in evaluations] == [3, 6]
    training = [r for r in records if "total_loss" in r]
    assert [r["iteration"] for r in training] == [6]  # log period 20: the last iteration is always logged
    assert training[0].keys() >= {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask", "lr",
                                  "time", "data_time", "peak_memory_mb"}
    final = json.loads((output / "metrics.json").read_text())
    assert final == json.loads(json.dumps(metrics))
    if importlib.util.find_spec("tensorboard") is not None:  # the test extra installs it
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        board = EventAccumulator(str(output))
        board.Reload()
        assert [event.step for event in board.Scalars("bbox/AP50")] == [3, 6]
        assert board.Scalars("total_loss")[0].value == pytest.approx(training[0]["total_loss"])
    for iou_type, stats in final.items():
        for name, value in stats.items():
            logged = evaluations[-1][f"{iou_type}/{name}"]
            assert (logged is None and math.isnan(value)) or logged == pytest.approx(value)


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
    # Detectron2's way: --eval-only with the whole detector as the weights, into a new directory
    common = ["tools/transfer.py", "--task", "coco_maskrcnn", "--config", str(tiny_detection_config), "--data-root",
              str(tiny_coco_root), "--weights", str(tmp_path / "ddp" / "model_final.pth"), "--eval-only"]
    result = run_tool(*common, "--output", str(tmp_path / "whole"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded the whole detector" in (tmp_path / "whole" / "log.txt").read_text()
    assert json.loads((tmp_path / "whole" / "metrics.json").read_text()) == ddp_metrics
    result = run_tool(*common, "--output", str(tmp_path / "nomask"), "MODEL.MASK_ON", "False")
    assert result.returncode == 2 and "is a detector that does not fit the one this config builds" in result.stderr


def test_benchmark_tool_prints_training_and_inference_speed(tiny_coco_root, tiny_detection_config):
    result = run_tool("tools/benchmark.py", "--task", "coco_maskrcnn", "--config", str(tiny_detection_config),
                      "--data-root", str(tiny_coco_root), "--iters", "2", "--images", "2", "--warmup", "1",
                      timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    speed = json.loads(result.stdout[result.stdout.index("{"):])
    assert speed["train_s_per_iter"] > 0 and speed["inference_s_per_image"] > 0
    assert speed["train_images_per_iter"] == 2


def one_training_step(result_path: str) -> None:
    """One SGD step of a Faster R-CNN R18 (SyncBN) on this process's share of a fixed two-image batch.

    Sampling is made exhaustive (every anchor, every proposal), each image gets exactly 10 proposals plus its 2
    objects, and both images have one size (no padding), so the per-process normalisations add up to the
    one-process ones and the step must be the same up to float summation order.
    """
    init_distributed()
    rank, world_size = get_rank(), get_world_size()
    cfg = load_config(get_detection_defaults(), None, [
        "MODEL.MASK_ON", "False", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.NORM", "SyncBN",
        "MODEL.BACKBONE.FREEZE_AT", "0", "MODEL.ROI_HEADS.NUM_CLASSES", "3",
        "MODEL.ANCHOR_GENERATOR.SIZES", "[[16, 32, 64]]", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "100000",
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "10",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "512", "MODEL.ROI_HEADS.POSITIVE_FRACTION", "1.0"])
    torch.manual_seed(0)
    model = build_rcnn_c4(cfg, resolve_norm(cfg.MODEL.RESNETS.NORM, torch.device("cpu")))
    generator = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 256, (3, 64, 80), generator=generator, dtype=torch.uint8) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 20.0, 75.0, 60.0]]), "labels": torch.tensor([1, 3])},
        {"boxes": torch.tensor([[10.0, 2.0, 30.0, 30.0], [40.0, 30.0, 70.0, 62.0]]), "labels": torch.tensor([2, 2])},
    ]
    share = slice(rank, rank + 1) if world_size == 2 else slice(0, 2)
    train_model = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    optimizer = build_sgd(model, 0.02, 0.9, 1e-4, 0.0)
    train_model.train()
    losses = train_model(images[share], targets[share])
    sum(losses.values()).backward()
    optimizer.step()
    if rank == 0:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, result_path)


def test_two_process_step_equals_one_process_step_on_the_same_global_batch(tmp_path):
    """DDP gradient averaging, naiveSyncBN over gloo and per-process loss normalisation together give the update a
    single process computes on the whole batch (Detectron2's IMS_PER_BATCH semantics)."""
    one_training_step(str(tmp_path / "one.pth"))
    launch(one_training_step, 2, (str(tmp_path / "two.pth"),))
    one, two = (torch.load(tmp_path / name, weights_only=True) for name in ("one.pth", "two.pth"))
    assert one.keys() == two.keys()
    for key in one:
        # float32 sums in a different order; the step itself moves weights by ~1e-3
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)


def test_the_detector_learns(tiny_coco_root, tiny_detection_config, tmp_path):
    """R18-C4 Mask R-CNN from random init, 150 iterations on the 12 tiny training images, evaluated on them: the loss
    falls and box AP50 climbs from ~0 (untrained) past a floor of 25 (47.5 measured on the reference machine; the
    margin covers float rounding on other CPUs, the run itself is seeded)."""
    output = tmp_path / "learn"
    metrics = train_net.run(tiny_cfg(tiny_detection_config, tiny_coco_root, output, "SOLVER.MAX_ITER", "150",
                                     "SOLVER.STEPS", "(120,)", "SOLVER.WARMUP_ITERS", "20", "SOLVER.CHECKPOINT_PERIOD",
                                     "0", "DATASETS.TEST", "('builtin_coco_train',)"))
    losses = [json.loads(line)["total_loss"] for line in (output / "events.jsonl").read_text().splitlines()
              if "total_loss" in line]
    assert len(losses) == 8 and losses[-1] < 0.75 * losses[0], losses
    assert metrics["bbox"]["AP50"] > 25, metrics["bbox"]
    assert metrics["segm"]["AP50"] > 5, metrics["segm"]
