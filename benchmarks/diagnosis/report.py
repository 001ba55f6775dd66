"""A whole diagnosis of one or more models on the same ground truth: TIDE and Hoiem, JSON, charts and tables.

Shared by ``tools/diagnose.py`` and the detection benchmark, which runs it after every evaluation.
"""
from __future__ import annotations

import json
from pathlib import Path

from converters.io import atomic_write_text

from .hoiem import FP_TYPES, analyze_false_positives_loaded
from .inputs import load_detections, load_ground_truth
from .tide import MAIN_ERRORS, SPECIAL_ERRORS, evaluate_tide_loaded


def diagnose(gt, detections: dict, out_dir, modes=("bbox",), similar=None, max_dets: int = 100) -> str:
    """Write ``tide.json``, ``hoiem.json``, ``diagnosis.md`` and the charts of every mode into ``out_dir``.

    ``gt``: COCO annotation file, dict or COCO object; ``detections``: ``{model name: results file or list}``.
    Both JSON files are ``{model: {mode: result}}``. Returns the summary tables (markdown).
    """
    # Pillow only when charts are drawn: the detection benchmark imports this module in every run
    from .charts import plot_hoiem_pies, plot_hoiem_trend, plot_tide

    # every file is read and checked once, for all modes, before any work
    coco = load_ground_truth(gt, modes)
    records = {name: load_detections(dets, coco, modes) for name, dets in detections.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tide, hoiem = {name: {} for name in detections}, {name: {} for name in detections}
    for mode in modes:
        for name in detections:
            tide[name][mode] = evaluate_tide_loaded(coco, records[name], mode, max_dets=max_dets)
            hoiem[name][mode] = analyze_false_positives_loaded(coco, records[name], mode, similar, max_dets)
        plot_tide({name: tide[name][mode] for name in detections}, out_dir / f"tide_{mode}")
        plot_hoiem_trend({name: hoiem[name][mode] for name in detections}, out_dir / f"hoiem_trend_{mode}")
        plot_hoiem_pies({name: hoiem[name][mode] for name in detections}, out_dir / f"hoiem_pies_{mode}")
    atomic_write_text(out_dir / "tide.json", json.dumps(tide, indent=2))
    atomic_write_text(out_dir / "hoiem.json", json.dumps(hoiem, indent=2))
    summary = summary_tables(tide, hoiem)
    atomic_write_text(out_dir / "diagnosis.md", summary + "\n\n" + hoiem_class_table(hoiem) + "\n")
    return summary


def _share(count: int, total: int) -> str:
    return f"{100.0 * count / total:.1f}" if total else "–"


def _table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def summary_tables(tide: dict, hoiem: dict) -> str:
    """TIDE dAP per model and mode, and the Hoiem FP-type shares (%) in the top N of all classes and each group."""
    tide_rows = [[name, mode, f"{result['AP50']:.2f}", f"{result['AP']:.2f}",
                  *(f"{result['main'][t]:.2f}" for t in MAIN_ERRORS),
                  *(f"{result['special'][t]:.2f}" for t in SPECIAL_ERRORS)]
                 for name, by_mode in tide.items() for mode, result in by_mode.items()]
    hoiem_rows = []
    for name, by_mode in hoiem.items():
        for mode, result in by_mode.items():
            subsets = [("all classes", result["overall"])] + list(result["per_group"].items())
            for label, summary in subsets:
                top_n = summary["top_n"]
                false_positives = sum(top_n[t] for t in FP_TYPES)
                hoiem_rows.append([name, mode, label, summary["num_gt"], false_positives,
                                   *(_share(top_n[t], false_positives) for t in FP_TYPES)])
    return "\n\n".join([
        "TIDE (dAP: AP50 points gained by fixing each error type)",
        _table(["model", "type", "AP50", "AP", *MAIN_ERRORS, *SPECIAL_ERRORS], tide_rows),
        "Hoiem false positives in the top N detections (N = objects), % of FPs by type",
        _table(["model", "type", "classes", "N", "FPs", *(f"{t} %" for t in FP_TYPES)], hoiem_rows),
    ])


def hoiem_class_table(hoiem: dict) -> str:
    """Per class: the top-N counts by type and the classes its confusions fired on."""
    rows = []
    for name, by_mode in hoiem.items():
        for mode, result in by_mode.items():
            for label, summary in result["per_class"].items():
                top_n = summary["top_n"]
                confusions = ", ".join(f"{other} {count}" for other, count in summary["confused_with"].items())
                rows.append([name, mode, label, summary["num_gt"], top_n["Cor"], *(top_n[t] for t in FP_TYPES),
                             confusions or "–"])
    return "\n\n".join([
        "Hoiem per class: detections in the top N by kind (counts)",
        _table(["model", "type", "class", "N", "Cor", *FP_TYPES, "confused with"], rows),
    ])
