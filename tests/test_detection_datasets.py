"""The VOC and BDD100K detection tasks: dataset names resolved as Detectron2's catalog, VOC07+12 concatenation, the
VOC metric chosen by year, detections written in Detectron2's VOC conventions, each paper config on the real
layouts, end to end in one process and under torchrun."""
import json

import pytest

from benchmarks.data import write_bdd, write_coco, write_voc
from benchmarks.data.synthetic import CATEGORIES
from benchmarks.detection import train_net
from benchmarks.detection.config import validate_detection_config
from benchmarks.detection.datasets import concatenate, resolve_detection_split, to_voc_results
from benchmarks.engine.validation import ConfigError

from .conftest import REPO, TINY_SPEC
from .test_detection_engine import run_tool, tiny_cfg

SHAPES = [category["name"] for category in CATEGORIES]


@pytest.fixture(scope="module")
def tiny_voc_root(tmp_path_factory):
    """VOC2007 (trainval 8, test 4) and VOC2012 (train 6, val 4) of 64x64 generated scenes."""
    root = tmp_path_factory.mktemp("tiny_voc")
    write_voc(root / "VOC2007", {"trainval": ("train", 8), "test": ("val", 4)}, TINY_SPEC, seed=1)
    write_voc(root / "VOC2012", {"train": ("train", 6), "val": ("val", 4)}, TINY_SPEC, seed=2)
    return root


@pytest.fixture(scope="module")
def tiny_voc_config(tiny_detection_config, tmp_path_factory):
    path = tmp_path_factory.mktemp("voc_configs") / "tiny_voc_R_18_C4.yaml"
    path.write_text(f"""\
_BASE_: "{tiny_detection_config}"
MODEL:
  MASK_ON: False
DATASETS:
  TRAIN: ("voc_2007_trainval", "voc_2012_train")
  TEST: ("voc_2007_test",)
  CLASS_NAMES: {tuple(SHAPES)}
""")
    return path


@pytest.fixture(scope="module")
def tiny_bdd(tiny_detection_config, tmp_path_factory):
    """A tiny BDD100K layout (det_20 labels; train 8, val 4) and a config for it: ``(data root, config)``."""
    root = write_bdd(tmp_path_factory.mktemp("tiny_bdd"), {"train": ("train", 8), "val": ("val", 4)}, TINY_SPEC,
                     seed=1)
    config = root / "tiny_bdd.yaml"
    config.write_text(f'_BASE_: "{tiny_detection_config}"\nMODEL:\n  MASK_ON: False\n  ROI_HEADS:\n'
                      '    NUM_CLASSES: 10\nDATASETS:\n  TRAIN: ("bdd100k_det_train",)\n  TEST: ("bdd100k_det_val",)\n')
    return root, config


def test_voc_names_resolve_with_the_metric_of_their_year(tiny_voc_root):
    test07 = resolve_detection_split(("voc_2007_test",), tiny_voc_root, SHAPES)
    assert test07.metric == "voc" and test07.use_07_metric
    assert [image["voc_id"] for image in test07.annotations["images"]] == ["000009", "000010", "000011", "000012"]
    assert set(test07.voc_ground_truth) == {"000009", "000010", "000011", "000012"}
    val12 = resolve_detection_split(("voc_2012_val",), tiny_voc_root, SHAPES)
    assert val12.metric == "voc" and not val12.use_07_metric  # VOC2012 is scored with the area method
    with pytest.raises(FileNotFoundError, match="VOC2007"):
        resolve_detection_split(("voc_2007_test",), tiny_voc_root / "nowhere", SHAPES)
    with pytest.raises(ValueError, match=r"000009.xml object #0: class '\w+' is not one of the 20 classes"):
        resolve_detection_split(("voc_2007_test",), tiny_voc_root)  # shapes are not VOC's 20 classes


def test_concatenated_training_sets_keep_every_image_and_box(tiny_voc_root):
    first = resolve_detection_split(("voc_2007_trainval",), tiny_voc_root, SHAPES).annotations
    second = resolve_detection_split(("voc_2012_train",), tiny_voc_root, SHAPES).annotations
    both = resolve_detection_split(("voc_2007_trainval", "voc_2012_train"), tiny_voc_root, SHAPES)
    merged = both.annotations
    assert both.image_dir == tiny_voc_root
    assert [image["id"] for image in merged["images"]] == list(range(1, 15))
    assert [a["id"] for a in merged["annotations"]] == list(range(1, len(merged["annotations"]) + 1))
    assert merged["images"][0]["file_name"] == "VOC2007/JPEGImages/000001.jpg"
    assert merged["images"][8]["file_name"] == "VOC2012/JPEGImages/000001.jpg"
    assert all((both.image_dir / image["file_name"]).is_file() for image in merged["images"])
    boxes = [(a["image_id"], a["bbox"], a["category_id"]) for a in merged["annotations"]]
    expected = [(a["image_id"], a["bbox"], a["category_id"]) for a in first["annotations"]]
    expected += [(a["image_id"] + 8, a["bbox"], a["category_id"]) for a in second["annotations"]]
    assert boxes == expected


def test_sets_with_other_classes_cannot_be_trained_together(tiny_voc_root, tiny_coco_root):
    shapes = resolve_detection_split(("voc_2007_trainval",), tiny_voc_root, SHAPES)
    reordered = resolve_detection_split(("voc_2012_train",), tiny_voc_root, SHAPES[::-1])
    with pytest.raises(ValueError, match="different categories"):
        concatenate([shapes, reordered])
    coco_pair = f"{tiny_coco_root}/annotations/instances_train.json:{tiny_coco_root}/train"
    mixed = resolve_detection_split(("voc_2012_train", coco_pair), tiny_voc_root, SHAPES)
    assert len(mixed.annotations["images"]) == 6 + 12 and mixed.image_dir == tiny_voc_root.parent
    with pytest.raises(ValueError, match="DATASETS.CLASS_NAMES is"):
        resolve_detection_split((coco_pair,), tiny_voc_root, SHAPES[::-1])


def test_voc_results_carry_the_voc_file_id():
    images = {1: {"voc_id": "000005"}, 2: {"voc_id": "2008_000002"}}
    records = [{"image_id": 2, "category_id": 3, "bbox": [0.0, 1.0, 5.0, 6.0], "score": 0.5}]
    assert to_voc_results(records, images) == [{"image_id": "2008_000002", "category_id": 3,
                                                "bbox": [0.0, 1.0, 5.0, 6.0], "score": 0.5}]


def test_masks_on_voc_and_bad_class_names_are_refused(tiny_voc_root, tiny_voc_config, tmp_path):
    cfg = tiny_cfg(tiny_voc_config, tiny_voc_root, tmp_path / "mask", "MODEL.MASK_ON", "True")
    with pytest.raises(ValueError, match="VOC detection data"):
        train_net.load_datasets(cfg)
    cfg = tiny_cfg(tiny_voc_config, tiny_voc_root, tmp_path / "dup", "DATASETS.CLASS_NAMES", "('circle', 'circle')")
    with pytest.raises(ConfigError, match="DATASETS.CLASS_NAMES"):
        validate_detection_config(cfg)


def test_voc_task_end_to_end_and_its_detections_re_evaluate_to_its_metrics(tiny_voc_root, tiny_voc_config, tmp_path):
    out = tmp_path / "voc"
    result = run_tool("tools/transfer.py", "--task", "voc_fasterrcnn", "--config", str(tiny_voc_config),
                      "--data-root", str(tiny_voc_root), "--weights", "none", "--output", str(out),
                      "SOLVER.MAX_ITER", "2", "TEST.DIAGNOSIS.ENABLED", "True")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"bbox"} and metrics["bbox"].keys() >= {"AP", "AP50", "AP75", "AP50-circle"}
    log = (out / "log.txt").read_text()
    assert "VOC AP, VOC07 11-point" in log and "14 images" in log  # 8 VOC07 trainval + 6 VOC12 train
    assert "| task | AP | AP50 | AP75 |" in (out / "results.md").read_text()
    detections = json.loads((out / "voc_instances_results.json").read_text())
    assert detections and all(isinstance(d["image_id"], str) and len(d["image_id"]) == 6 for d in detections)
    assert (out / "diagnosis.md").is_file()
    result = run_tool("tools/evaluate.py", "--gt", str(tiny_voc_root / "VOC2007"), "--split", "test", "--dets",
                      str(out / "voc_instances_results.json"), "--metric", "voc", "--classes", ",".join(SHAPES),
                      "--out", str(tmp_path / "evaluated"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "evaluated" / "metrics.json").read_text()) == metrics


def test_bdd_task_end_to_end(tiny_bdd, tmp_path):
    """bdd_fasterrcnn: BDD's 10 classes, COCO AP from the in-memory conversion, detections in COCO result format."""
    root, config = tiny_bdd
    out = tmp_path / "bdd"
    result = run_tool("tools/transfer.py", "--task", "bdd_fasterrcnn", "--config", str(config), "--data-root",
                      str(root), "--weights", "none", "--output", str(out), "SOLVER.MAX_ITER", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bbox"].keys() >= {"AP", "AP50", "AP75", "APs", "AP-pedestrian", "AP-traffic sign"}
    assert "det_val.json" in (out / "log.txt").read_text()
    detections = json.loads((out / "coco_instances_results.json").read_text())
    assert all(isinstance(d["image_id"], int) for d in detections)


@pytest.mark.parametrize("task", ["voc_fasterrcnn", "bdd_fasterrcnn"])
def test_task_under_torchrun(task, tiny_voc_root, tiny_voc_config, tiny_bdd, tmp_path):
    root, config = (tiny_voc_root, tiny_voc_config) if task == "voc_fasterrcnn" else tiny_bdd
    result = run_tool(
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "tools/transfer.py",
        "--task", task, "--config", str(config), "--data-root", str(root),
        "--weights", "none", "--output", str(tmp_path / "ddp"), "SOLVER.MAX_ITER", "2", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "naiveSyncBN" in (tmp_path / "ddp" / "log.txt").read_text()
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["bbox"].keys() >= {"AP", "AP50", "AP75"}


@pytest.fixture(scope="module")
def real_layout_root(tmp_path_factory):
    """COCO 2017 and VOCdevkit 2007/2012 layouts with the real file names, a few tiny images each."""
    root = tmp_path_factory.mktemp("real_layout")
    for split in ("train2017", "val2017"):
        write_coco(root, split, 3, TINY_SPEC, seed=3)
    write_voc(root / "VOC2007", {"train": ("train", 3), "val": ("val", 2), "test": ("test", 2)}, TINY_SPEC, seed=4)
    write_voc(root / "VOC2012", {"train": ("train", 2), "val": ("val", 2)}, TINY_SPEC, seed=5)
    write_bdd(root, {"train": ("train", 4), "val": ("val", 2)}, TINY_SPEC, seed=6)
    return root


@pytest.mark.parametrize("config, train_images, test_metric", [
    ("coco_R_50_C4_1x.yaml", 3, "COCO AP"),
    ("coco_R_50_C4_2x.yaml", 3, "COCO AP"),
    ("coco_R_50_C4_1x_bs8.yaml", 3, "COCO AP"),
    ("pascal_voc_R_50_C4_24k.yaml", 5 + 4, "VOC07 11-point"),  # VOC07 trainval + VOC12 trainval
    ("pascal_voc07_R_50_C4_9k.yaml", 5, "VOC07 11-point"),
    ("pascal_voc0712_val2012_R_50_C4_24k.yaml", 3 + 2, "area under the precision envelope"),  # train only
    ("bdd100k_R_50_C4_90k.yaml", 4, "COCO AP"),
])
def test_paper_configs_read_the_real_layouts(config, train_images, test_metric, real_layout_root, tmp_path, caplog):
    """Each paper recipe's dataset names resolve under a data root in the real layout, scored by the paper's metric
    (the generated shapes stand in for VOC's classes through DATASETS.CLASS_NAMES)."""
    overrides = [] if config.startswith("bdd") else ["MODEL.ROI_HEADS.NUM_CLASSES", "6"]
    if config.startswith("pascal"):
        overrides += ["DATASETS.CLASS_NAMES", repr(tuple(SHAPES))]
    cfg = tiny_cfg(REPO / "configs" / "detection" / config, real_layout_root, tmp_path, *overrides)
    validate_detection_config(cfg, world_size=1)
    with caplog.at_level("INFO", logger="transferlab"):
        train_set, test_set, _ = train_net.load_datasets(cfg)
    assert len(train_set) == train_images
    assert test_metric in caplog.text




@pytest.mark.parametrize("task", ["voc_fasterrcnn", "bdd_fasterrcnn"])
def test_benchmark_tool_runs_the_task(task, tiny_voc_root, tiny_voc_config, tiny_bdd):
    root, config = (tiny_voc_root, tiny_voc_config) if task == "voc_fasterrcnn" else tiny_bdd
    result = run_tool("tools/benchmark.py", "--task", task, "--config", str(config), "--data-root", str(root),
                      "--iters", "1", "--images", "1", "--warmup", "1", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    speed = json.loads(result.stdout[result.stdout.index("{"):])
    assert speed["train_s_per_iter"] > 0 and speed["inference_s_per_image"] > 0
