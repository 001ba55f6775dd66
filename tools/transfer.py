#!/usr/bin/env python
"""Fine-tune a pretrained backbone on a transfer benchmark and report its metrics.

  python tools/transfer.py --task coco_maskrcnn --weights work/demo/pretrain/last.pth
  torchrun --nproc_per_node 8 tools/transfer.py --task coco_maskrcnn --weights moco_v2.pth --data-root /data/coco

Without --data-root the task runs on the built-in generated data with its CPU-sized demo recipe;
with it, the paper recipe on the dataset's usual layout. Extra KEY VALUE pairs override the config
(Detectron2 key names, e.g. SOLVER.MAX_ITER 100 MODEL.RESNETS.NORM FrozenBN).

Every run (each seed of --seeds, and --eval-only) is a row of the results store (--db): "running" when it starts,
"finished" with its metrics or "failed" with its error when it ends. A run whose row cannot be written exits with
an error naming the database after its files are written; tools/results.py import adds it later.
"""
import argparse
import json
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine.cli import input_directory, output_directory, run_tool  # noqa: E402
from benchmarks.engine.distributed import init_distributed, is_main_process  # noqa: E402
from benchmarks.engine.lock import lock_output_dir  # noqa: E402
from benchmarks.engine.logging import setup_logger  # noqa: E402
from benchmarks.engine.trials import summarize_trials, trials_table  # noqa: E402
from benchmarks.results.records import RecordedRun, run_record  # noqa: E402
from benchmarks.results.store import DB_ENV, DEFAULT_DB, default_db_path  # noqa: E402
from benchmarks.tasks import TASKS, get_task, run_config  # noqa: E402
from converters.io import atomic_write_text  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True,
                        help="one of: " + "; ".join(f"{name} ({task.description})" for name, task in TASKS.items()))
    parser.add_argument("--weights", help="pretrained backbone: any checkpoint converters.load_backbone reads "
                        "(transferlab, MoCo, torchvision, ...), or 'none' for the random-init baseline")
    parser.add_argument("--data-root", help="directory holding the dataset in its usual layout (e.g. /data/coco "
                        "with annotations/ and train2017/); absent: the built-in generated data")
    parser.add_argument("--config", help="a config file instead of the task's default one")
    parser.add_argument("--output", help="output directory (default: work/transfer/<task>-<weights name>)")
    parser.add_argument("--seed", type=int, action="append",
                        help="run seed (SEED); repeat for several trials (OUTPUT/seed_<k>/ each, and a summary)")
    parser.add_argument("--seeds", type=int, help="N trials with seeds 0..N-1 into OUTPUT/seed_<k>/, then "
                        "OUTPUT/summary.json and summary.md: per metric the median (HPT) and mean ± std (MoCo)")
    parser.add_argument("--labels", type=int, help="classification tasks: train on a seeded subset of N labelled "
                        "images in which every class occurs (HPT's 1000-label protocol; DATASETS.LABELS)")
    parser.add_argument("--shots", type=int, help="classification tasks: train on K images per class "
                        "(DATASETS.SHOTS)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint "
                        "(with the config it saved, unless --config is given)")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the last checkpoint in --output "
                        "(with the config it saved, unless --config is given)")
    parser.add_argument("--db", help=f"results store (SQLite) that gets one row per run (default: ${DB_ENV} if set, "
                        f"else {DEFAULT_DB})")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes to start on this machine when not launched by torchrun (one per GPU)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def default_output(task: str, weights) -> Path:
    name = "scratch" if weights in (None, "none") else Path(weights).stem
    return Path("work") / "transfer" / f"{task}-{name}"


def trial_seeds(args) -> list | None:
    """The seeds of a multi-trial run (--seeds, or --seed given more than once); None for one run."""
    if args.seeds is not None:
        if args.seed:
            raise ValueError("give --seeds N or --seed values, not both")
        if args.seeds < 2:
            raise ValueError(f"--seeds {args.seeds}: a summary needs at least 2 trials (one seed is --seed K)")
        return list(range(args.seeds))
    if args.seed and len(args.seed) > 1:
        if len(set(args.seed)) < len(args.seed):
            raise ValueError(f"--seed values repeat: {args.seed}")
        return args.seed
    return None


def main(args):
    init_distributed()
    task = get_task(args.task)
    if args.num_gpus < 1:
        raise ValueError(f"--num-gpus {args.num_gpus}: give at least 1 process")
    if args.data_root:
        input_directory(args.data_root, "--data-root")
    output = output_directory(args.output or default_output(args.task, args.weights), "--output")
    seeds = trial_seeds(args)
    if seeds is None:
        run_trial(args, task, output, args.seed[0] if args.seed else None)
        return
    metrics = {seed: run_trial(args, task, output / f"seed_{seed}", seed) for seed in seeds}
    if is_main_process():
        summary = summarize_trials(metrics)
        atomic_write_text(output / "summary.json", json.dumps(summary, indent=2))
        table = trials_table(summary, seeds)
        atomic_write_text(output / "summary.md", table)
        print(f"\n{args.task} ({args.weights}), {len(seeds)} seeds:\n{table}\nSummary: {output / 'summary.json'}, "
              f"{output / 'summary.md'}; each trial in {output}/seed_<k>/")


def run_trial(args, task, output: Path, seed):
    """One run into ``output``; its metrics on the main process."""
    cfg, config_file, reason = run_config(args.task, output, args.weights, args.config, args.data_root, args.opts,
                                          seed, args.labels, args.shots, reuse_saved=args.resume or args.eval_only)
    with lock_output_dir(output):  # before log.txt opens: a second run into it stops here
        logger = setup_logger(output)
        logger.info("Task %s: config %s (%s)", args.task, config_file, reason)
        if not cfg.MODEL.WEIGHTS and not (args.resume or args.eval_only):
            raise ValueError("no backbone weights: pass --weights PATH (any checkpoint converters.load_backbone "
                             "reads) or --weights none for the random-init baseline")
        if cfg.MODEL.WEIGHTS not in ("", "none") and not Path(cfg.MODEL.WEIGHTS).is_file():
            raise FileNotFoundError(f"--weights {cfg.MODEL.WEIGHTS}: no such file")
        row = RecordedRun(default_db_path(args.db), run_record(cfg)) if is_main_process() else None
        run = partial(task.run, cfg, resume=args.resume, eval_only=args.eval_only)
        metrics = row.track(run) if row is not None else run()
        if row is not None and metrics is not None:  # still locked: these are this run's results
            table = (output / "results.md").read_text()
            print(f"\n{args.task} ({cfg.MODEL.WEIGHTS}):\n{table}")
            detections = [output / name for name in ("coco_instances_results.json", "voc_instances_results.json")
                          if (output / name).is_file()]
            print(f"Results: {output / 'results.md'}  metrics: {output / 'metrics.json'}  "
                  + "".join(f"detections: {path}  " for path in detections) + f"log: {output / 'log.txt'}")
            if (output / "diagnosis.md").is_file():
                print(f"Error diagnosis (TIDE, Hoiem): {output / 'diagnosis.md'}, tide.json, hoiem.json and charts "
                      f"(tide_*.png, hoiem_*.png) in {output}")
        if row is not None:
            row.finish(metrics)
        return metrics


if __name__ == "__main__":
    arguments = parse_args()
    sys.exit(run_tool("transfer.py", main, arguments, num_processes=arguments.num_gpus))
