#!/usr/bin/env python
"""Print one metric of two or more finished runs side by side, each against the first (the baseline).

  python tools/compare_runs.py work/demo/knn_scratch work/demo/knn_pretrained --metric knn.k20.top1

Each RUN is an output directory of tools/transfer.py (it reads RUN/metrics.json, and RUN/config.yaml for the
backbone the run used); --metric is a dotted path into metrics.json, e.g. bbox.AP or linear.test.top1.
"""
import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from benchmarks.engine.cli import run_tool  # noqa: E402


def metric_value(run: Path, metric: str) -> float:
    path = run / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (is {run} a finished tools/transfer.py run?)")
    try:
        node = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    for depth, key in enumerate(metric.split(".")):
        if not isinstance(node, dict) or key not in node:
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "none (a number)"
            raise KeyError(f"{path} has no {'.'.join(metric.split('.')[:depth + 1])}; keys at that level: {known}")
        node = node[key]
    if not isinstance(node, (int, float)):
        raise ValueError(f"{path}: {metric} is not a number but {type(node).__name__}; name a leaf of metrics.json")
    return float(node)


def run_backbone(run: Path) -> str:
    """MODEL.WEIGHTS of the run's resolved config, or '?' when the run saved none."""
    config = run / "config.yaml"
    if not config.is_file():
        return "?"
    weights = (yaml.safe_load(config.read_text()) or {}).get("MODEL", {}).get("WEIGHTS")
    return str(weights) if weights else "?"


def comparison_line(runs: list, metric: str) -> str:
    """``metric: name value (backbone), name value (backbone, +difference) ...``, the first run the baseline."""
    values = [metric_value(run, metric) for run in runs]
    parts = []
    for index, (run, value) in enumerate(zip(runs, values)):
        difference = "" if index == 0 or math.isnan(value) else f", {value - values[0]:+.2f} over {runs[0].name}"
        parts.append(f"{run.name} {value:.2f} ({run_backbone(run)}{difference})")
    return f"{metric}: " + " | ".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="output directories; the first is the "
                                                                          "baseline the others are compared with")
    parser.add_argument("--metric", required=True, help="dotted path into metrics.json, e.g. knn.k20.top1")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("give at least two runs to compare")
    print(comparison_line(args.runs, args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("compare_runs.py", main))
