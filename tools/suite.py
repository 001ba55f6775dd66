#!/usr/bin/env python
"""Run every checkpoint on every task with several seeds on Ray, then write the leaderboard.

  python tools/suite.py --weights work/demo/pretrain/last.pth none --tasks linear,knn --seeds 2
  python tools/suite.py --weights moco_v2.pth hpt.pth none --tasks voc_fasterrcnn,coco_maskrcnn --seeds 3 \\
      --data-root voc_fasterrcnn=/data/voc --data-root coco_maskrcnn=/data/coco --resources cpu=8,gpu=1 --address auto

Each cell (checkpoint x task x seed k, seeds 0..N-1) is one tools/transfer.py run in
OUTPUT/<task>/<weights name>/seed_<k>/ (a fresh process with OMP_NUM_THREADS = its CPUs), scheduled as a Ray task:
a local Ray on this machine's CPUs, or the cluster at --address. A cell is skipped when the results store (--db)
already holds a finished row with the same task, weights sha256, config hash and seed, so a suite resumes after a
crash (a killed run's "running" row does not count; the cell runs again) and adding a checkpoint runs only its
cells. The suite writes OUTPUT/suite.json (every cell: skipped, finished or failed) and ends with the leaderboard
from the store, OUTPUT/leaderboard.md and OUTPUT/report.html (tools/report.py: a row per checkpoint, a column per
task's main metric, the median over seeds). Extra KEY VALUE pairs after the options apply to every task.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine.cli import run_tool  # noqa: E402
from benchmarks.results.suite import run_suite  # noqa: E402
from benchmarks.tasks import TASKS  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", required=True, help="checkpoints to compare (any format "
                        "converters.load_backbone reads), and/or 'none' for the random-init baseline")
    parser.add_argument("--tasks", required=True, help="comma-separated, from: " + ", ".join(TASKS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per checkpoint and task (default 3, "
                        "HPT's median of 3)")
    parser.add_argument("--resources", help="per cell, e.g. cpu=2,gpu=1 (default cpu=1,gpu=0)")
    parser.add_argument("--address", help="an existing Ray cluster (ray.init address, e.g. auto or ray://host:10001)"
                        "; its nodes need this repository at the same path; default: a local Ray")
    parser.add_argument("--output", default="work/suite", help="suite directory (default: work/suite)")
    parser.add_argument("--db", help="results store (default: $TRANSFERLAB_DB, else work/results.db)")
    parser.add_argument("--data-root", action="append", default=[], metavar="[TASK=]PATH",
                        help="a dataset for every task, or TASK=PATH for one (repeatable); default: built-in data")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every task")
    return parser.parse_args(argv)


def main(args):
    record = run_suite(args.weights, args.tasks, args.seeds, args.output, args.resources, args.address, args.db,
                       args.data_root, args.opts)
    if record["failed"]:
        failed = [f"{c['task']} {c['weights']} seed {c['seed']}" for c in record["cells"] if c["status"] == "failed"]
        print(f"suite.py: {record['failed']} cell(s) failed: {'; '.join(failed)}; see their transfer_output.txt",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("suite.py", main, parse_args()))
