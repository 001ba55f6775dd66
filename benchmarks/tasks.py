"""The transfer tasks a user names with ``--task``: which recipe, which engine. A plain dict, no registry."""
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fvcore.common.config import CfgNode

from .detection.config import get_detection_defaults
from .detection.train_net import run as run_detection

CONFIG_ROOT = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class Task:
    description: str
    paper_config: str  # used on a real dataset (--data-root)
    demo_config: str  # used on the built-in generated data
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


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: " + ", ".join(sorted(TASKS)))
    return TASKS[name]


def choose_config(task: Task, config_file, data_root):
    """The config a run uses and a sentence saying why, so the log explains the choice."""
    if config_file:
        return Path(config_file), "given with --config"
    if data_root:
        return CONFIG_ROOT / task.paper_config, f"--data-root {data_root}: the paper recipe"
    return CONFIG_ROOT / task.demo_config, "no --data-root: the built-in generated data with the CPU-sized demo recipe"
