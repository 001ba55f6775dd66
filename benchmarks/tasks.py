"""The transfer tasks a user names with ``--task``: which recipe, which engine. A plain dict, no registry."""
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fvcore.common.config import CfgNode

from .classification import train_net as classification
from .classification.config import get_classification_defaults
from .data.builtin import generated_set_version
from .detection.config import get_detection_defaults
from .detection.speed import measure_speed as measure_detection_speed
from .detection.train_net import run as run_detection
from .engine.config import load_config
from .segmentation.config import get_segmentation_defaults
from .segmentation.speed import measure_speed as measure_segmentation_speed
from .segmentation.train_net import run as run_segmentation

CONFIG_ROOT = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class Task:
    description: str
    paper_config: str  # used on a real dataset (--data-root)
    demo_config: str  # used on the built-in generated data and on sets written by tools/make_data.py
    defaults: Callable[[], CfgNode]
    run: Callable
    measure_speed: Callable | None = None  # tools/benchmark.py: (cfg, iters, images, warmup) -> seconds


# The detection benchmarks share the detection engine and its config tree: (description, paper config, demo config).
_DETECTION = {
    "coco_maskrcnn": ("Mask R-CNN R50-C4 1x on COCO 2017 (box and mask AP), MoCo's protocol",
                      "coco_R_50_C4_1x.yaml", "coco_R_50_C4_demo.yaml"),
    "voc_fasterrcnn": ("Faster R-CNN R50-C4 24k on VOC07+12 trainval, VOC07 test (VOC07 11-point AP), MoCo Table 2",
                       "pascal_voc_R_50_C4_24k.yaml", "pascal_voc_R_50_C4_demo.yaml"),
    "bdd_fasterrcnn": ("Faster R-CNN R50-C4 90k on BDD100K det_20 train, val (COCO AP), HPT's recipe (Table 2)",
                       "bdd100k_R_50_C4_90k.yaml", "bdd100k_R_50_C4_demo.yaml"),
    "coco_maskrcnn_fpn": ("Mask R-CNN R50-FPN 1x on COCO 2017 (box and mask AP), SL-MLP Table 3's protocol (SyncBN "
                          "in backbone, FPN and heads)", "coco_mask_rcnn_R_50_FPN_1x.yaml",
                          "coco_mask_rcnn_R_50_FPN_demo.yaml"),
    "coco_fasterrcnn_fpn": ("Faster R-CNN R50-FPN 1x on COCO 2017 (box AP), the same protocol without masks",
                            "coco_faster_rcnn_R_50_FPN_1x.yaml", "coco_faster_rcnn_R_50_FPN_demo.yaml"),
}
TASKS = {name: Task(description=description, paper_config=f"detection/{paper}", demo_config=f"detection/{demo}",
                    defaults=get_detection_defaults, run=run_detection, measure_speed=measure_detection_speed)
         for name, (description, paper, demo) in _DETECTION.items()}

# The classification probes share one config tree; each reads its own section (benchmarks/classification/config.py).
_PROBES = {
    "linear": ("linear probe on frozen features, cached (default) or augmented protocol (HPT Table 1, appendix A; "
               "SL-MLP Table 2)", classification.run_linear),
    "knn": ("cosine kNN, k 20 and 200, temperature-weighted votes (InstDisc, MoCo's monitor)", classification.run_knn),
    "fewshot": ("5-way 1- and 5-shot episodes, logistic regression on frozen features (Exemplar; SL-MLP Table 4)",
                classification.run_fewshot),
    "finetune": ("the whole network on a label budget, HPT appendix A's sweep (HPT's 1000-label finetuning)",
                 classification.run_finetune),
    "stagewise": ("linear probes on the stem and each stage's pooled features (SL-MLP Fig. 1)",
                  classification.run_stagewise),
}
TASKS["cityscapes_deeplabv3"] = Task(
    description="DeepLab-v3 R50-D8 40k on Cityscapes fine 512x1024 (mIoU), mmseg's recipe (Exemplar Table 7)",
    paper_config="segmentation/cityscapes_deeplabv3_R_50_D8_40k.yaml",
    demo_config="segmentation/cityscapes_deeplabv3_R_50_D8_demo.yaml",
    defaults=get_segmentation_defaults,
    run=run_segmentation,
    measure_speed=measure_segmentation_speed,
)
TASKS.update({name: Task(description=description, paper_config="classification/probe_R_50.yaml",
                         demo_config="classification/probe_R_50_demo.yaml", defaults=get_classification_defaults,
                         run=run) for name, (description, run) in _PROBES.items()})


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: " + ", ".join(sorted(TASKS)))
    return TASKS[name]


def choose_config(task: Task, config_file=None, data_root=None, run_dir=None):
    """The config a run uses and a sentence saying why, so the log explains the choice.

    A run being resumed or re-evaluated (``run_dir``) keeps the config it saved, so a user repeats only
    ``--output``; ``--config`` still wins. A data root holding a generated set (``tools/make_data.py --out``,
    or the built-in cache) gets the demo recipe made for that data; any other data root the paper recipe.
    """
    if config_file:
        return Path(config_file), "given with --config"
    if run_dir is not None and (Path(run_dir) / "config.yaml").is_file():
        return Path(run_dir) / "config.yaml", "the resolved config of the run in --output"
    if data_root:
        version = generated_set_version(data_root)
        if version is not None:
            return CONFIG_ROOT / task.demo_config, (f"--data-root {data_root} is a transferlab generated set "
                                                    f"(manifest.json, generator version {version}): the demo recipe "
                                                    "made for that data")
        return CONFIG_ROOT / task.paper_config, f"--data-root {data_root}: the paper recipe"
    return CONFIG_ROOT / task.demo_config, "no --data-root: the built-in generated data with the CPU-sized demo recipe"


def load_task_config(task: Task, config_file=None, data_root=None, overrides=(), run_dir=None):
    """The task's defaults, the chosen file, ``KEY VALUE`` overrides and ``--data-root``, left unfrozen for the
    caller's own keys; with the file and why it was chosen."""
    path, reason = choose_config(task, config_file, data_root, run_dir)
    cfg = load_config(task.defaults(), path, overrides)
    cfg.defrost()
    if data_root:
        cfg.DATASETS.ROOT = str(data_root)
    return cfg, path, reason


def run_config(task_name: str, output, weights=None, config_file=None, data_root=None, overrides=(), seed=None,
               labels=None, shots=None, reuse_saved=False):
    """The frozen config of one transfer run, as ``tools/transfer.py`` runs it (the store hashes exactly this);
    with the file and why it was chosen. ``reuse_saved``: a resumed or re-evaluated run keeps its saved config."""
    task = get_task(task_name)
    cfg, config_file, reason = load_task_config(task, config_file, data_root, overrides,
                                                run_dir=output if reuse_saved else None)
    cfg.TASK = task_name
    if weights:
        cfg.MODEL.WEIGHTS = weights
    if seed is not None:
        cfg.SEED = seed
    for option, key, value in (("labels", "LABELS", labels), ("shots", "SHOTS", shots)):
        if value is not None:
            if "LABELS" not in cfg.DATASETS:
                raise ValueError(f"--{option} applies to the classification tasks, not to {task_name}")
            cfg.DATASETS[key] = value
    cfg.OUTPUT_DIR = str(output)
    cfg.freeze()
    return cfg, config_file, reason
