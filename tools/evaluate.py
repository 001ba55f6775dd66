#!/usr/bin/env python
"""Evaluate a COCO-format detections file: COCO AP (faster-coco-eval or pycocotools) or PASCAL VOC AP (Detectron2's
semantics).

  python tools/evaluate.py --gt instances_val2017.json --dets coco_instances_results.json --metric coco --mode bbox
  python tools/evaluate.py --gt VOCdevkit/VOC2007 --split test --dets voc_results.json --metric voc --out work/eval

Prints the table and, with --out, writes metrics.json there ({"bbox": {"AP": ...}, "segm": ...}, percent), the
same file and numbers a tools/transfer.py run writes. For --metric voc the detections follow Detectron2's
conventions: image_id the VOC file id ("000005"), category_id 1-20 in Detectron2's CLASS_NAMES order, bbox XYWH
in its 0-based coordinates (the xml's xmin and ymin minus 1); VOC2007 uses the 11-point AP, other years the area.
"""
import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.data.voc import VOC_CLASS_NAMES, read_voc_split  # noqa: E402
from benchmarks.detection.evaluation import COCO_BACKENDS, evaluate_coco, results_table  # noqa: E402
from benchmarks.detection.voc_evaluation import VOC_METRICS, evaluate_voc  # noqa: E402
from benchmarks.diagnosis.inputs import load_detections, load_ground_truth, read_results_file  # noqa: E402
from benchmarks.engine.cli import input_directory, output_directory, run_tool  # noqa: E402
from converters.io import atomic_write_text  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gt", required=True,
                        help="COCO annotation file (--metric coco) or a VOC year directory such as VOCdevkit/VOC2007 "
                        "(--metric voc)")
    parser.add_argument("--dets", required=True, help="COCO-format results file (list of detection records)")
    parser.add_argument("--metric", required=True, choices=("coco", "voc"), help="COCO AP or PASCAL VOC AP")
    parser.add_argument("--mode", action="append", choices=("bbox", "segm"),
                        help="box or mask AP (COCO only); repeat for both (default: bbox)")
    parser.add_argument("--split", help="VOC ImageSets/Main split to evaluate on, e.g. test (required with --metric "
                        "voc)")
    parser.add_argument("--backend", default="auto", choices=COCO_BACKENDS,
                        help="COCO AP implementation: faster-coco-eval when installed (auto), or pycocotools; both "
                        "give the same numbers")
    parser.add_argument("--classes", help="VOC: comma-separated class names, category_id k being the k-th (default: "
                        "the 20 VOC classes in Detectron2's order)")
    parser.add_argument("--voc-ap", default="auto", choices=("auto", "11point", "area"),
                        help="VOC: the 11-point AP (VOC2007's) or the area under the precision envelope (VOC2010+); "
                        "auto: 11-point for a VOC2007 directory, area for other years, as Detectron2 chooses")
    parser.add_argument("--out", help="directory to write metrics.json into")
    return parser.parse_args(argv)


def evaluate_coco_file(gt, dets, modes, backend: str) -> dict:
    coco = load_ground_truth(gt, modes)
    return evaluate_coco(coco, load_detections(dets, coco, modes), tuple(modes), backend)


def use_07_metric(year_dir: Path, choice: str) -> bool:
    if choice != "auto":
        return choice == "11point"
    match = re.fullmatch(r"VOC(\d{4})", year_dir.resolve().name)
    if not match:
        raise ValueError(f"--gt {year_dir}: cannot tell the VOC year from the directory name (VOC2007, VOC2012, ...); "
                         "pass --voc-ap 11point or --voc-ap area")
    return match.group(1) == "2007"


def evaluate_voc_file(args) -> dict:
    if args.mode and args.mode != ["bbox"]:
        raise ValueError("--metric voc evaluates boxes only (--mode bbox)")
    if not args.split:
        raise ValueError("--metric voc needs --split (the ImageSets/Main split the detections are on, e.g. test)")
    year_dir = input_directory(args.gt, "--gt")
    class_names = tuple(args.classes.split(",")) if args.classes else VOC_CLASS_NAMES
    _, ground_truth = read_voc_split(year_dir, args.split, class_names)
    return evaluate_voc(ground_truth, read_results_file(args.dets), class_names, use_07_metric(year_dir, args.voc_ap))


def main(argv=None):
    args = parse_args(argv)
    if args.out:
        output_directory(args.out, "--out")
    modes = args.mode or ["bbox"]
    if args.metric == "coco":
        if args.split:
            raise ValueError("--split names a VOC split; a COCO annotation file is one split already")
        if args.classes or args.voc_ap != "auto":
            raise ValueError("--classes and --voc-ap apply to --metric voc; COCO's classes are in its json")
        metrics = evaluate_coco_file(args.gt, args.dets, modes, args.backend)
        print(results_table(metrics))
    else:
        if args.backend != "auto":
            raise ValueError("--backend picks the COCO AP implementation; --metric voc has one")
        metrics = evaluate_voc_file(args)
        print(results_table(metrics, VOC_METRICS))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out) / "metrics.json", json.dumps(metrics, indent=2))
        print(f"\nmetrics.json: {Path(args.out) / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("evaluate.py", main))
