#!/usr/bin/env python
"""Training seconds per iteration and inference seconds per image of a task's recipe, after warm-up.

  python tools/benchmark.py --task coco_maskrcnn                       # the demo recipe on built-in data
  python tools/benchmark.py --task coco_maskrcnn --data-root /data/coco  # the paper recipe
  python tools/benchmark.py --task coco_maskrcnn MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE 64 INPUT.MIN_SIZE_TEST 512
  python tools/benchmark.py --task cityscapes_deeplabv3 --data-root /data   # 2 crops of 512x1024 per process

Numbers are medians over timed iterations with random-init weights, as Detectron2's tools/benchmark.py
reports them, so engines can be compared on the same settings.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine.cli import input_directory, run_tool  # noqa: E402
from benchmarks.engine.distributed import init_distributed, is_main_process  # noqa: E402
from benchmarks.engine.logging import setup_logger  # noqa: E402
from benchmarks.tasks import TASKS, get_task, load_task_config  # noqa: E402


def check_args(args) -> None:
    """One clear line per bad value, before the data is read."""
    if args.data_root:
        input_directory(args.data_root, "--data-root")
    for option, value in (("--iters", args.iters), ("--images", args.images), ("--warmup", args.warmup)):
        if value < 0:
            raise ValueError(f"{option} {value}: must be >= 0")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="one of: " + ", ".join(TASKS))
    parser.add_argument("--config", help="a config file instead of the task's default one")
    parser.add_argument("--data-root", help="dataset root (absent: built-in data and the demo recipe)")
    parser.add_argument("--iters", type=int, default=10, help="timed training iterations (0 skips training)")
    parser.add_argument("--images", type=int, default=20, help="timed inference images (0 skips inference)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations / images first")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    check_args(args)

    init_distributed()
    logger = setup_logger()
    task = get_task(args.task)
    if task.measure_speed is None:
        raise ValueError(f"--task {args.task}: tools/benchmark.py times the detection and segmentation tasks ("
                         + ", ".join(name for name, t in TASKS.items() if t.measure_speed) + ")")
    cfg, config_file, reason = load_task_config(task, args.config, args.data_root, args.opts)
    cfg.freeze()
    logger.info("Task %s: config %s (%s)", args.task, config_file, reason)
    results = task.measure_speed(cfg, args.iters, args.images, args.warmup)
    if is_main_process():
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(run_tool("benchmark.py", main))
