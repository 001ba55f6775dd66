#!/usr/bin/env python
"""Paper-style tables, utility and an HTML report from the results store (one row per transfer run).

  python tools/report.py --preset moco_table2 --format latex
  python tools/report.py --cols voc_fasterrcnn:bbox/AP50,coco_maskrcnn:segm/AP --agg mean_std --baseline sup_r50
  python tools/report.py --rows method --preset moco_table5 --baseline sl
  python tools/report.py --utility --plot work/utility.png
  python tools/report.py --html work/report.html

A table has one row per backbone (--rows weights: per checkpoint sha256, labelled by its file stem, "scratch" for
--weights none; --rows method: per pretraining method) and one column per task metric, TASK:METRIC with METRIC a
key of the run's metrics.json flattened with "/" (bbox/AP50, segm/AP, sem_seg/mIoU, linear/top1,
fewshot/5way5shot/top1), or TASK@DATASET:METRIC for one dataset of a probe. Each cell is the median (HPT) or the
mean ± sample std (MoCo) over seeds, with the number of seeds; --baseline ROW adds each row's difference to that
row, (+1.2), green/red in HTML. Only finished runs count; a missing cell prints as "–", never filled.

Presets lay out the papers' tables from whatever runs exist (their defaults: the paper's aggregation; deltas only
with --baseline, since the paper's baseline, supervised IN-1M for MoCo, is a checkpoint only the user can name):
  moco_table2      MoCo Table 2, VOC07+12 Faster R-CNN R50-C4: AP50, AP, AP75 (mean ± std)
  moco_table5      MoCo Table 5, COCO Mask R-CNN R50-FPN and R50-C4 1x: box and mask AP, AP50, AP75 (mean ± std)
  hpt_table1       HPT Table 1, Faster R-CNN C4 on VOC and BDD100K: AP, AP50, AP75 (median)
  hpt_figs2_3      HPT Figs. 2-3 as a table: linear probe and 1000-label finetuning per dataset (median)
  exemplar_table7  Exemplar Table 7: VOC07 det, COCO det and seg, Cityscapes mIoU/mAcc/aAcc (median)
  slmlp_table2     SL-MLP Table 2: linear-probe top-1 per dataset (median)
  slmlp_table4     SL-MLP Table 4: linear, 1000-label finetuning, 5-way 5-shot per dataset (median)

--utility prints Newell & Deng's utility n_scratch / N - 1 of every model's label-budget runs (--labels N of the
finetune or linear task) against the scratch model's curve, and draws the curves (--plot). --html FILE writes one
self-contained page (inline CSS and images) with the tables (every preset that has runs, unless --preset/--cols
chooses), model comparison charts, label-budget and utility curves, each run's TIDE and Hoiem charts, and links to
each run's directory and config.yaml.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine.cli import run_tool  # noqa: E402
from benchmarks.results import report  # noqa: E402
from benchmarks.results.presets import PRESETS  # noqa: E402
from benchmarks.results.tables import AGGREGATIONS, ROWS  # noqa: E402
from benchmarks.results.utility import BUDGET_TASKS, utility_markdown  # noqa: E402
from converters.io import atomic_write, atomic_write_text  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="results database (default: $TRANSFERLAB_DB, else work/results.db)")
    parser.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                        help="keep runs whose store column equals VALUE (task=, dataset_name=, config_hash=, "
                             "seed=, ...); repeat for several columns, or the same column for either value")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--preset", choices=list(PRESETS), help="a paper table's layout (see above)")
    what.add_argument("--cols", help="comma-separated TASK:METRIC columns, e.g. voc_fasterrcnn:bbox/AP50; a short "
                                     "metric (AP50) is accepted when one key of the task's runs ends in it")
    what.add_argument("--utility", action="store_true", help="the utility table of the label-budget runs")
    parser.add_argument("--rows", choices=ROWS, default="weights", help="one row per checkpoint or per method")
    parser.add_argument("--agg", choices=AGGREGATIONS, help="median (HPT) or mean_std (MoCo) over seeds (default: "
                                                            "the preset's, else median)")
    parser.add_argument("--baseline", metavar="ROW", help="row label to print differences against, e.g. scratch")
    parser.add_argument("--format", choices=report.FORMATS, default="md", help="md, csv, latex or html")
    parser.add_argument("--out", type=Path, help="write to FILE instead of printing")
    parser.add_argument("--html", type=Path, metavar="FILE", help="write the self-contained HTML report to FILE")
    parser.add_argument("--utility-task", choices=BUDGET_TASKS, help="task of the label-budget runs (default: the "
                                                                     "one that has them)")
    parser.add_argument("--utility-metric", help="metric of the utility (default: TASK/top1, or TASK/auroc)")
    parser.add_argument("--plot", type=Path, help="--utility: the curves' PNG (default: utility.png beside the "
                                                  "database)")
    args = parser.parse_args(argv)
    if args.html and (args.out or args.format not in ("md", "html")):
        parser.error("--html FILE is the report's output; use --format html --out FILE, or drop --out/--format")
    if args.utility and args.format != "md":
        parser.error("--utility prints a markdown table (and --plot draws the curves); --format does not apply")
    if not (args.preset or args.cols or args.utility or args.html or args.format == "html"):
        parser.error("choose what to report: --preset NAME, --cols TASK:METRIC,..., --utility or --html FILE")
    return args


def write(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
        print(f"wrote {out}", file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(argv)
    db, records = report.load_runs(args.db, args.where)
    if args.utility:
        analysis = report.utility(records, args.utility_task, args.utility_metric, rows=args.rows)
        plot = args.plot or db.parent / "utility.png"
        png = analysis.png()
        atomic_write(plot, lambda file: file.write(png))
        write(utility_markdown(analysis.points, analysis.metric), args.out)
        print(f"curves: {plot}", file=sys.stderr)
        return 0
    if args.preset:
        tables = [report.preset_table(args.preset, records, args.rows, args.agg, args.baseline)]
    elif args.cols:
        tables = [report.columns_table(args.cols, records, args.rows, args.agg, args.baseline)]
    else:
        tables = report.filled_presets(records, args.rows, args.agg, args.baseline)
    if args.preset and not tables[0].cells:
        raise ValueError(f"--preset {args.preset}: no finished run fills any of its cells ("
                         f"{', '.join(sorted({c.task for c in tables[0].columns})) or 'no runs of its tasks'})")
    if args.html or args.format == "html":
        out = args.html or args.out
        write(report.html_report(records, tables, out or Path.cwd() / "report.html", db, args.rows), out)
    else:
        write(report.render(tables, args.format), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("report.py", main))
