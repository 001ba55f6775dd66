"""The transfer tasks a user names with ``--task``: which recipe, which engine. A plain dict, no registry."""
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fvcore.common.config import CfgNode

from .detection.config import get_detection_defaults
from .detection.train_net import run as run_detection
from .engine.config import load_config

CONFIG_ROOT = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class Task:
    description: str
    paper_config: str  # used on a real dataset (--data-root)
    demo_config: str  # used on the built-in generated data and on sets written by tools/make_data.py
    defaults: Callable[[], CfgNode]
    run: Callable


TASKS = {
    "coco_maskrcnn": Task(
        description="Mask R-CNN R50-C4 1x on COCO 2017 (box and mask AP), MoCo's protocol",
        paper_config="detection/coco_R_50_C4_1x.yaml",
        demo_config="detection/coco_R_50_C4_demo.yaml",
        defaults=get_detection_defaults,
        run=run_detection,
    ),
}


# The benchmarks of DESIGN.md that are not built yet: named here so that asking for one says so plainly.
PLANNED_TASKS = {
    "voc_fasterrcnn": "Faster R-CNN R50-C4 on VOC07+12 with VOC07 11-point AP",
    "bdd_fasterrcnn": "Faster R-CNN R50-C4 on BDD100K",
    "cityscapes_deeplab": "DeepLab-v3 R50-D8 on Cityscapes (mIoU)",
    "linear_probe": "classification probes on frozen features",
}


def get_task(name: str) -> Task:
    if name in PLANNED_TASKS:
        raise NotImplementedError(f"task {name!r} ({PLANNED_TASKS[name]}) is not implemented yet; implemented: "
                                  + ", ".join(sorted(TASKS)))
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: " + ", ".join(sorted(TASKS)))
    return TASKS[name]


def generated_set_version(data_root):
    """The ``generator_version`` in ``data_root/manifest.json`` if it is a transferlab generated set, else None."""
    try:
        manifest = json.loads((Path(data_root) / "manifest.json").read_text())
    except (OSError, ValueError):  # no manifest, or someone else's that is not JSON
        return None
    return manifest.get("generator_version") if isinstance(manifest, dict) else None


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
