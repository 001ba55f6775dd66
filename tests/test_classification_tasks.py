"""The classification tasks end to end through tools/transfer.py on a tiny generated image folder: each writes its
metrics.json in the documented layout, results.md and the resolved config, and bad options fail before work."""
import json
import os
import subprocess
import sys

import pytest

from benchmarks.classification.config import CLASSIFICATION_RULES, get_classification_defaults
from benchmarks.data import SceneSpec
from benchmarks.data.writers import write_image_folder, write_multilabel_csv
from benchmarks.engine.validation import leaf_keys

from .conftest import REPO

TINY = SceneSpec(height=32, width=32)
# ResNet-18 at 32 px, small sweeps: the code paths of the paper recipe in seconds.
FAST = ["MODEL.ARCH", "resnet18", "INPUT.CROP_SIZE", "32", "INPUT.RESIZE", "32", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.BATCH_SIZE", "64", "PROBE.STEPS", "30", "PROBE.BATCH_SIZE", "32", "KNN.KS", "(3, 10)",
        "FEWSHOT.EPISODES", "20", "FEWSHOT.QUERIES", "2", "FEWSHOT.SHOTS", "(1, 2)", "FEWSHOT.SPLIT", "train",
        "FINETUNE.LRS", "(0.01,)", "FINETUNE.SCHEDULES", "('4steps',)", "FINETUNE.BATCH_SIZE", "8",
        "FINETUNE.CHECKPOINT_PERIOD", "2", "FINETUNE.EVALUATIONS", "2", "PROBE.STAGES", "('stem', 'layer4')"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_image_folder(root, "train", 90, TINY, seed=1)
    write_image_folder(root, "test", 40, TINY, seed=2)
    return root


def transfer(*args, cache):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFERLAB_CACHE": str(cache)}
    return subprocess.run([sys.executable, "tools/transfer.py", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=600)


def test_every_classification_key_has_a_rule():
    assert set(CLASSIFICATION_RULES) == set(leaf_keys(get_classification_defaults()))


@pytest.mark.parametrize("task, layout", [
    ("linear", {"linear": ["top1", "top5"]}),
    ("knn", {"knn": {"k3": ["top1", "top5"], "k10": ["top1", "top5"]}}),
    ("fewshot", {"fewshot": {"5way1shot": ["top1", "top1_ci95"], "5way2shot": ["top1", "top1_ci95"]}}),
    ("stagewise", {"stagewise": {"stem": ["top1", "top5"], "layer4": ["top1", "top5"]}}),
    ("finetune", {"finetune": ["top1", "top5"]}),
])
def test_each_task_writes_its_metrics_results_and_config(task, layout, image_folder, tmp_path):
    output = tmp_path / task
    result = transfer("--task", task, "--weights", "none", "--data-root", str(image_folder), "--output",
                      str(output), *FAST, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((output / "metrics.json").read_text())

    def check(values, expected):
        if isinstance(expected, list):
            assert sorted(values) == sorted(expected)
            assert all(0 <= v <= 100 for v in values.values())
        else:
            assert sorted(values) == sorted(expected)
            for key in expected:
                check(values[key], expected[key])
    check(metrics, layout)
    assert (output / "results.md").read_text().startswith(("Linear", "Cosine", "20 seeded", "Finetuned"))
    assert "PROBE:" in (output / "config.yaml").read_text()
    log = (output / "log.txt").read_text()
    assert "no val split" in log  # the folder has train and test only: val drawn from train, and the log says so


def test_features_are_cached_across_tasks_and_runs(image_folder, tmp_path):
    common = ["--weights", "none", "--data-root", str(image_folder), *FAST]
    first = transfer("--task", "linear", "--output", str(tmp_path / "a"), *common, cache=tmp_path / "cache")
    assert first.returncode == 0, first.stderr[-3000:]
    second = transfer("--task", "knn", "--output", str(tmp_path / "b"), *common, cache=tmp_path / "cache")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Features: 0 cached, 3 extracted" in (tmp_path / "a" / "log.txt").read_text()
    assert "Features: 3 cached, 0 extracted" in (tmp_path / "b" / "log.txt").read_text()
    third = transfer("--task", "knn", "--output", str(tmp_path / "c"), *common, "KNN.SPLIT", "val",
                     cache=tmp_path / "cache")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "train images as the memory, val images as queries" in (tmp_path / "c" / "results.md").read_text()
    assert "train images as the memory, test images as queries" in (tmp_path / "b" / "results.md").read_text()


def test_multilabel_linear_reports_auroc_and_map(tmp_path):
    root = tmp_path / "multi"
    write_multilabel_csv(root, "train", 60, SceneSpec(height=32, width=32, max_objects=3, crowd_prob=0.0), seed=1)
    result = transfer("--task", "linear", "--weights", "none", "--data-root", str(root), "--output",
                      str(tmp_path / "out"), *FAST, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert sorted(metrics["linear"]) == ["auroc", "mAP"]


@pytest.mark.parametrize("args, message", [
    (["--labels", "3"], "label budget 3"),  # fewer labels than classes
    (["--labels", "5", "--shots", "2"], "DATASETS.SHOTS"),
    (["PROBE.PROTOCOL", "fast"], "PROBE.PROTOCOL 'fast'"),
    (["PROBE.PROTOCOL", "augmented", "PROBE.SOLVER", "lbfgs"], "PROBE.SOLVER 'lbfgs': fits cached features"),
    (["--eval-only"], "--eval-only"),
])
def test_bad_options_are_one_line_errors(args, message, image_folder, tmp_path):
    result = transfer("--task", "linear", "--weights", "none", "--data-root", str(image_folder), "--output",
                      str(tmp_path / "out"), *args, *FAST, cache=tmp_path / "cache")
    assert result.returncode == 2
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_labels_option_is_refused_by_detection(tmp_path):
    result = transfer("--task", "coco_maskrcnn", "--weights", "none", "--labels", "10", "--output",
                      str(tmp_path / "out"), cache=tmp_path / "cache")
    assert result.returncode == 2 and "--labels applies to the classification tasks" in result.stderr
