"""cityscapes_deeplabv3 end to end on a tiny Cityscapes layout: outputs, official-format predictions scored by
cityscapesscripts as metrics.json says, exact resume, eval-only, and two processes under torchrun."""
import json
import math

import pytest
import torch

from benchmarks.data import StreetSpec, write_cityscapes
from benchmarks.engine.config import load_config
from benchmarks.segmentation import train_net
from benchmarks.segmentation.config import get_segmentation_defaults
from benchmarks.segmentation.evaluation import evaluate_cityscapes_official
from benchmarks.segmentation.inference import Segmenter
from converters import load_backbone, load_torch_file

from .conftest import REPO
from .test_detection_engine import Interrupt, run_tool

TINY_STREETS = StreetSpec(height=64, width=128)


@pytest.fixture(scope="module")
def tiny_cityscapes(tmp_path_factory):
    """A data root holding cityscapes/ (6 train, 3 val street scenes of 64x128) and a config sized for seconds."""
    root = tmp_path_factory.mktemp("tiny_cityscapes")
    write_cityscapes(root / "cityscapes", {"train": 6, "val": 3}, TINY_STREETS, seed=1)
    config = root / "tiny_deeplabv3.yaml"
    config.write_text(f"""\
_BASE_: "{REPO / 'configs/segmentation/cityscapes_deeplabv3_R_50_D8_demo.yaml'}"
MODEL:
  DECODE_HEAD:
    CHANNELS: 16
  AUXILIARY_HEAD:
    CHANNELS: 8
INPUT:
  SCALE: (128, 64)
  CROP_SIZE: (48, 64)
DATALOADER:
  NUM_WORKERS: 0
SOLVER:
  IMS_PER_BATCH: 2
  MAX_ITER: 4
  CHECKPOINT_PERIOD: 2
TEST:
  SCALE: (128, 64)
  NUM_OVERLAYS: 1
""")
    return root, config


def transfer(root, config, output, *extra):
    return run_tool("tools/transfer.py", "--task", "cityscapes_deeplabv3", "--config", str(config), "--data-root",
                    str(root), "--output", str(output), *extra, timeout=900)


def test_task_writes_metrics_predictions_and_overlays_that_cityscapesscripts_agrees_with(tiny_cityscapes, tmp_path):
    root, config = tiny_cityscapes
    out = tmp_path / "run"
    result = transfer(root, config, out, "--weights", "none")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())["sem_seg"]
    assert metrics.keys() >= {"mIoU", "mAcc", "aAcc", "IoU-road", "Acc-road"}
    assert "| sem_seg |" in (out / "results.md").read_text() or "mIoU" in (out / "results.md").read_text()
    predictions = sorted((out / "predictions").rglob("*_leftImg8bit.png"))
    assert len(predictions) == 3 and predictions[0].parent.name == predictions[0].name.split("_")[0]  # <city>/
    assert len(list((out / "overlays").rglob("*.png"))) == 1
    official = evaluate_cityscapes_official(out / "predictions", root / "cityscapes" / "gtFine" / "val")
    for name, score in official["classScores"].items():
        ours = metrics.get(f"IoU-{name}")
        if ours is None:
            continue  # the official table also lists classes outside the 19 (ignored in evaluation)
        if math.isnan(score):
            assert math.isnan(ours), name
        else:
            assert ours == pytest.approx(100 * score, abs=0.01), name
    assert metrics["mIoU"] == pytest.approx(100 * official["averageScoreClasses"], abs=0.01)


def tiny_run_config(root, config, output):
    cfg = load_config(get_segmentation_defaults(), config)
    cfg.defrost()
    cfg.DATASETS.ROOT, cfg.OUTPUT_DIR, cfg.MODEL.WEIGHTS = str(root), str(output), "none"
    cfg.freeze()
    return cfg


def test_killed_run_resumes_to_identical_weights_and_eval_only_reproduces_the_metrics(tiny_cityscapes, tmp_path,
                                                                                     monkeypatch):
    root, config = tiny_cityscapes
    train_net.run(tiny_run_config(root, config, tmp_path / "straight"))

    original, calls = Segmenter.forward, {"n": 0}

    def dying_forward(self, images, labels):
        calls["n"] += 1
        if calls["n"] == 4:  # iteration 3, after the checkpoint at iteration 2
            raise Interrupt
        return original(self, images, labels)

    interrupted = tiny_run_config(root, config, tmp_path / "interrupted")
    monkeypatch.setattr(Segmenter, "forward", dying_forward)
    with pytest.raises(Interrupt):
        train_net.run(interrupted)
    monkeypatch.setattr(Segmenter, "forward", original)
    assert (tmp_path / "interrupted" / "last_checkpoint").read_text() == "model_0000001.pth"
    train_net.run(interrupted, resume=True)

    expected = load_torch_file(tmp_path / "straight" / "model_final.pth")["model"]
    resumed = load_torch_file(tmp_path / "interrupted" / "model_final.pth")["model"]
    assert expected.keys() == resumed.keys() and "decode_head.conv_seg.weight" in expected  # mmseg's names
    for key, value in expected.items():
        assert torch.equal(value, resumed[key]), key
    metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert json.loads((tmp_path / "interrupted" / "metrics.json").read_text()) == metrics
    result = run_tool("tools/transfer.py", "--task", "cityscapes_deeplabv3", "--output", str(tmp_path / "straight"),
                      "--eval-only")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "straight" / "metrics.json").read_text()) == metrics

    # to mmseg whole and back: the exported checkpoint evaluates to the same metrics
    exported = tmp_path / "deeplabv3_mmseg.pth"
    result = run_tool("tools/convert.py", str(tmp_path / "straight" / "model_final.pth"), str(exported), "--to",
                      "mmseg")
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = load_torch_file(exported)
    assert set(checkpoint) == {"meta", "state_dict"} and checkpoint["state_dict"].keys() == expected.keys()
    assert checkpoint["meta"]["dataset_meta"]["classes"][0] == "road"
    result = transfer(root, config, tmp_path / "from_mmseg", "--weights", str(exported), "--eval-only")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded the whole DeepLab-v3" in (tmp_path / "from_mmseg" / "log.txt").read_text()
    assert json.loads((tmp_path / "from_mmseg" / "metrics.json").read_text()) == metrics
    # its backbone is what --weights reads from it for any task
    state_dict, meta = load_backbone(exported)
    assert meta["source_format"] == "mmselfsup" and torch.equal(state_dict["conv1.weight"],
                                                                expected["backbone.conv1.weight"])


def test_task_under_torchrun(tiny_cityscapes, tmp_path):
    root, config = tiny_cityscapes
    result = run_tool("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "tools/transfer.py",
                      "--task", "cityscapes_deeplabv3", "--config", str(config), "--data-root", str(root),
                      "--weights", "none", "--output", str(tmp_path / "ddp"), "SOLVER.MAX_ITER", "2", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "naiveSyncBN" in (tmp_path / "ddp" / "log.txt").read_text()
    assert len(list((tmp_path / "ddp" / "predictions").rglob("*.png"))) == 3  # both ranks wrote their shard


def test_benchmark_tool_times_the_segmentation_task(tiny_cityscapes):
    root, config = tiny_cityscapes
    result = run_tool("tools/benchmark.py", "--task", "cityscapes_deeplabv3", "--config", str(config), "--data-root",
                      str(root), "--iters", "1", "--images", "1", "--warmup", "1", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    speed = json.loads(result.stdout[result.stdout.index("{"):])
    assert speed["train_s_per_iter"] > 0 and speed["inference_s_per_image"] > 0 and speed["train_images_per_iter"] == 2
    result = run_tool("tools/benchmark.py", "--task", "knn")
    assert result.returncode == 2 and "times the detection and segmentation tasks" in result.stderr
