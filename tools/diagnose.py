#!/usr/bin/env python
"""Diagnose detection errors of one or more models on the same ground truth: TIDE and Hoiem-style false positives.

  python tools/diagnose.py --gt instances_val.json --dets sup.json --dets moco.json --names sup,moco --out work/diag

Writes tide.json, hoiem.json, diagnosis.md and the charts (tide_<mode>, hoiem_trend_<mode>, hoiem_pies_<mode>,
as PNG and SVG) into --out, and prints the summary tables. Detections are COCO result files, e.g. the
coco_instances_results.json that tools/transfer.py writes.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.diagnosis.hoiem import SIMILAR_KEYWORDS  # noqa: E402
from benchmarks.diagnosis.report import diagnose  # noqa: E402
from benchmarks.engine.cli import output_directory, run_tool  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", required=True, help="COCO annotation file (instances json)")
    parser.add_argument("--dets", required=True, action="append",
                        help="COCO results file of one model; repeat to compare models side by side")
    parser.add_argument("--names", help="comma-separated model names, one per --dets (default: the file names, or "
                        "their directories when the file names are the same)")
    parser.add_argument("--mode", action="append", choices=("bbox", "segm"),
                        help="box or mask overlaps; repeat for both (default: bbox)")
    parser.add_argument("--similar", help=f"similar-class groups for Hoiem's Sim type: {', '.join(SIMILAR_KEYWORDS)}, "
                        "or a JSON/YAML file mapping group names to category names (default: VOC's groups on VOC "
                        "classes, else the categories' supercategories)")
    parser.add_argument("--max-dets", type=int, default=100, help="detections kept per image, highest scores first")
    parser.add_argument("--out", required=True, help="output directory")
    return parser.parse_args(argv)


def model_names(args) -> list:
    """--names; else the file names; else, for the usual coco_instances_results.json of several runs, their
    directories (the names tools/transfer.py gives its own diagnosis)."""
    if args.names:
        names = args.names.split(",")
    else:
        names = [Path(path).stem for path in args.dets]
        if len(set(names)) < len(names):
            names = [Path(path).resolve().parent.name for path in args.dets]
    if len(names) != len(args.dets):
        raise ValueError(f"--names gives {len(names)} names for {len(args.dets)} --dets files")
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"model names must be unique and non-empty, got {names}; pass --names")
    return names


def main(argv=None):
    args = parse_args(argv)
    output_directory(args.out, "--out")
    detections = dict(zip(model_names(args), args.dets))
    print(diagnose(args.gt, detections, args.out, args.mode or ["bbox"], args.similar, args.max_dets))
    print(f"\nCharts, tide.json, hoiem.json and diagnosis.md (per-class table): {args.out}")


if __name__ == "__main__":
    sys.exit(run_tool("diagnose.py", main))
