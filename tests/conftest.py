"""Shared fixtures: a results store per test, a tiny generated COCO-format set and a detection config sized for
seconds on a CPU."""
from pathlib import Path

import pytest
import torch
import torchvision

from benchmarks.data import SceneSpec, write_coco

REPO = Path(__file__).resolve().parents[1]
TINY_SPEC = SceneSpec(height=64, width=64, min_objects=1, max_objects=3, min_object_size=0.3, max_object_size=0.6,
                      min_visible_pixels=24)


@pytest.fixture(scope="session", autouse=True)
def session_results_db(tmp_path_factory):
    """TRANSFERLAB_DB for what module and session fixtures run, before the per-test store below applies."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("results") / "results.db"
        patch.setenv("TRANSFERLAB_DB", str(path))
        yield path


@pytest.fixture(autouse=True)
def results_db(tmp_path, monkeypatch) -> Path:
    """Every test's runs (tools started in subprocesses inherit the variable) write a store of their own, never the
    developer's work/results.db."""
    path = tmp_path / "results.db"
    monkeypatch.setenv("TRANSFERLAB_DB", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_coco_root(tmp_path_factory) -> Path:
    """``builtin_coco_{train,val}`` layout with 12 train and 6 val images of 64x64 px."""
    root = tmp_path_factory.mktemp("tiny_coco")
    write_coco(root, "train", 12, TINY_SPEC, seed=1)
    write_coco(root, "val", 6, TINY_SPEC, seed=2)
    return root


@pytest.fixture(scope="session")
def tiny_detection_config(tmp_path_factory) -> Path:
    """The demo recipe shrunk to ResNet-18, 64 px inputs and a handful of RoIs: the same code paths, fast."""
    path = tmp_path_factory.mktemp("configs") / "tiny_R_18_C4.yaml"
    path.write_text(f"""\
_BASE_: "{REPO / 'configs/detection/coco_R_50_C4_demo.yaml'}"
MODEL:
  RESNETS:
    DEPTH: 18
  ANCHOR_GENERATOR:
    SIZES: [[16, 32, 64]]
  ROI_HEADS:
    BATCH_SIZE_PER_IMAGE: 8
  RPN:
    BATCH_SIZE_PER_IMAGE: 32
    PRE_NMS_TOPK_TRAIN: 200
    POST_NMS_TOPK_TRAIN: 50
    PRE_NMS_TOPK_TEST: 200
    POST_NMS_TOPK_TEST: 20
INPUT:
  MIN_SIZE_TRAIN: (56, 64)
  MAX_SIZE_TRAIN: 128
  MIN_SIZE_TEST: 64
  MAX_SIZE_TEST: 128
DATALOADER:
  NUM_WORKERS: 0
SOLVER:
  IMS_PER_BATCH: 2
  WARMUP_ITERS: 2
  STEPS: (4,)
  MAX_ITER: 6
  CHECKPOINT_PERIOD: 3
TEST:
  PRECISE_BN:
    NUM_ITER: 2
  DIAGNOSIS:
    ENABLED: False  # seconds of charts per evaluation; test_outputs_and_evaluation_match_pycocotools turns it on
""")
    return path


@pytest.fixture(scope="module")
def resnet18() -> torchvision.models.ResNet:
    """A seeded resnet18 whose BN running stats are not the defaults, so losing them would show."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(1234)
    return model.eval()
