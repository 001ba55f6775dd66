#!/usr/bin/env python
"""Sweep a transfer task's hyperparameters on Ray Tune and report the best trial.

  python tools/sweep.py --task voc_fasterrcnn --weights moco_v2.pth --grid SOLVER.BASE_LR=0.01,0.02 --grid SEED=1,2,3
  python tools/sweep.py --task finetune --weights moco_v2.pth --preset hpt_finetune --resources cpu=4,gpu=1
  python tools/sweep.py --task linear --weights moco_v2.pth --preset linear_lr --address ray://head:10001

Every grid point is one tools/transfer.py run in OUTPUT/trial_<i>/ (a fresh process with OMP_NUM_THREADS = its
CPUs); with the results store (--db) each run writes its own row there. SEED in a grid is the run's --seed, every
other key a config key (KEY=v1,v2; commas inside brackets stay: PROBE.LRS=(0.3,),(3.0,)). The sweep ends by
writing OUTPUT/sweep.json and sweep.md: each trial's parameters, status and metric, and the best by --metric.
Selection is on val where the task reports val metrics (linear, finetune) and otherwise on its one evaluation
split, which sweep.md names. Without --address a local Ray uses this machine's CPUs. Presets:
  hpt_finetune  finetune: lr {0.01, 0.001} x {2500 steps, 90 epochs} (HPT appendix A, Table 4)
  linear_lr     linear: lr {0.3, 3, 30}, one trial each (HPT appendix A, Table 4)
  newell_deng   linear and the detection/segmentation tasks: lr x weight decay around the recipe's values (Newell
                & Deng's supplement tunes these two; its values are not published there, so these are ours)
Extra KEY VALUE pairs after the options apply to every trial.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine.cli import run_tool  # noqa: E402
from benchmarks.results.sweeps import PRESETS, run_sweep  # noqa: E402
from benchmarks.results.transfer_runs import finite  # noqa: E402
from benchmarks.tasks import TASKS  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="one of: " + ", ".join(TASKS))
    parser.add_argument("--weights", required=True, help="the backbone every trial starts from (a checkpoint "
                        "converters.load_backbone reads, or 'none')")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="values of one key (repeat for a product); SEED is the run seed")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named grid (see above); --grid adds to it")
    parser.add_argument("--metric", help="the metric to select by, a flat metrics.json name (knn/k20/top1, "
                        "bbox/AP50) or its unique last part (top1, AP50); default: the task's main metric")
    parser.add_argument("--mode", choices=("max", "min"), default="max", help="best is the largest (default) or "
                        "the smallest value")
    parser.add_argument("--resources", help="per trial, e.g. cpu=2,gpu=1 (default cpu=1,gpu=0)")
    parser.add_argument("--address", help="an existing Ray cluster (ray.init address, e.g. auto or ray://host:10001)"
                        "; its nodes need this repository at the same path; default: a local Ray")
    parser.add_argument("--output", help="sweep directory (default: work/sweeps/<task>)")
    parser.add_argument("--db", help="results store every trial writes its row to (default: $TRANSFERLAB_DB, else "
                        "work/results.db)")
    parser.add_argument("--data-root", help="the dataset, as tools/transfer.py --data-root (default: built-in data)")
    parser.add_argument("--config", help="a config file instead of the task's default one")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every trial")
    return parser.parse_args(argv)


def main(args):
    output = Path(args.output or Path("work") / "sweeps" / args.task)
    record = run_sweep(args.task, args.weights, output, args.grid, args.preset, args.metric, args.mode,
                       args.resources, args.address, args.db, args.data_root, args.config, args.opts)
    print((output / "sweep.md").read_text())
    print(f"Sweep: {output / 'sweep.json'}, {output / 'sweep.md'}; trials in {output}/trial_<i>/")
    failed = [row["trial"] for row in record["trials"] if row["status"] != "finished"]
    if failed:
        print(f"sweep.py: {len(failed)} trial(s) failed: {failed}; their output is in trial_<i>/transfer_output.txt",
              file=sys.stderr)
        return 1
    if record["best"] is None or not finite(record["trials"][record["best"]]["value"]):
        print(f"sweep.py: no trial reported {record['metric']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("sweep.py", main, parse_args()))
