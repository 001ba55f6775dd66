"""Charts of a diagnosis: TIDE summaries and Hoiem false-positive distributions, one model or several side by side.

Comparing models on the same data is the point (the Exemplar paper's Fig. 1 and Fig. 7 put supervised and MoCo
next to each other), so every chart takes ``{model name: result}`` and draws the models in adjacent panels on
shared axes. Figures are drawn on matplotlib's Agg canvas directly (no pyplot state, safe in a training process)
in the Okabe-Ito palette, which stays distinguishable under the common colour-vision deficiencies; each is
written as PNG and SVG.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from converters.io import atomic_write

from .hoiem import FP_TYPES
from .tide import MAIN_ERRORS, SPECIAL_ERRORS

# Okabe & Ito (2008); one colour per error type, the same for related types in TIDE and Hoiem.
COLORS = {
    "Cls": "#E69F00", "Loc": "#D55E00", "Both": "#CC79A7", "Dupe": "#F0E442", "Bkg": "#009E73", "Miss": "#56B4E9",
    "FalsePos": "#0072B2", "FalseNeg": "#56B4E9",
    "Sim": "#E69F00", "Oth": "#0072B2", "BG": "#009E73",
}
_LIGHT = {"#E69F00", "#F0E442", "#56B4E9"}  # fills that need dark text on them
EDGE = "#333333"
DPI = 100
PANELS_PER_ROW = 6


def _finite(value) -> float:
    return float(value) if value is not None and math.isfinite(value) else 0.0


def _nice_limit(values) -> float:
    """Axis maximum a step of 5 dAP above the largest value, as TIDE's own plot rescales."""
    return max(5.0, 5.0 * math.ceil(max(values, default=0.0) / 5.0 + 1e-9))


def _save(fig: Figure, stem) -> list:
    """``stem``.png and ``stem``.svg, written atomically. The SVG keeps its text as text (editable, searchable)
    and has no date, so reruns give identical files."""
    FigureCanvasAgg(fig)
    paths = []
    for fmt, metadata in (("png", None), ("svg", {"Date": None})):
        path = Path(f"{stem}.{fmt}")
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "transferlab"}):
            atomic_write(path, lambda file, fmt=fmt, metadata=metadata: fig.savefig(
                file, format=fmt, dpi=DPI, metadata=metadata))
        fig.set_layout_engine("none")  # laid out once by the first save; the second reuses it
        paths.append(path)
    return paths


def _pie(ax, values, names, percent_min: float = 7.0) -> None:
    _, _, labels = ax.pie(values, colors=[COLORS[n] for n in names], startangle=90, counterclock=False,
                          autopct=lambda p: f"{p:.0f}%" if p >= percent_min else "", pctdistance=0.68,
                          wedgeprops={"edgecolor": "white", "linewidth": 1.0}, textprops={"fontsize": 9})
    for label, name in zip(labels, names):
        label.set_color("black" if COLORS[name] in _LIGHT else "white")
        label.set_fontweight("bold")


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, color="#555555", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_tide(results: dict, stem) -> list:
    """Per model one row: each main error's share of the total (pie), main dAP (bars), special dAP (bars).

    ``results`` maps model names to ``evaluate_tide`` results; the rows share their dAP axes so that bar
    lengths compare across models. Returns the written PNG and SVG paths.
    """
    models = list(results)
    main = {m: [_finite(results[m]["main"].get(t)) for t in MAIN_ERRORS] for m in models}
    special = {m: [_finite(results[m]["special"].get(t)) for t in SPECIAL_ERRORS] for m in models}
    main_limit = _nice_limit(v for m in models for v in main[m])
    special_limit = _nice_limit(v for m in models for v in special[m])

    fig = Figure(figsize=(10.5, 0.6 + 2.7 * len(models)), layout="constrained")
    axes = fig.subplots(len(models), 3, squeeze=False, gridspec_kw={"width_ratios": [1.0, 1.5, 0.7]})
    for row, model in enumerate(models):
        pie_ax, main_ax, special_ax = axes[row]
        result = results[model]
        title = f"{model}: AP50 {_finite(result.get('AP50')):.1f}, AP {_finite(result.get('AP')):.1f}"
        pie_ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
        if sum(main[model]) > 0:
            _pie(pie_ax, main[model], MAIN_ERRORS)
        else:
            _empty(pie_ax, "no error to fix\n(all dAP are 0)")
            pie_ax.set_frame_on(False)

        positions = np.arange(len(MAIN_ERRORS))
        main_ax.barh(positions, main[model], color=[COLORS[t] for t in MAIN_ERRORS], edgecolor=EDGE, linewidth=0.6)
        main_ax.set_yticks(positions, MAIN_ERRORS, fontsize=10)
        main_ax.invert_yaxis()
        main_ax.set_xlim(0, main_limit)
        main_ax.set_xlabel("dAP50 when fixed (main errors)", fontsize=9)
        for position, value in zip(positions, main[model]):
            main_ax.text(value + main_limit * 0.01, position, f"{value:.2f}", va="center", fontsize=8)

        positions = np.arange(len(SPECIAL_ERRORS))
        special_ax.bar(positions, special[model], color=[COLORS[t] for t in SPECIAL_ERRORS], edgecolor=EDGE,
                       linewidth=0.6, width=0.6)
        special_ax.set_xticks(positions, ["False\npositives", "False\nnegatives"], fontsize=9)
        special_ax.set_ylim(0, special_limit)
        special_ax.set_ylabel("dAP50 (special)", fontsize=9)
        for position, value in zip(positions, special[model]):
            special_ax.text(position, value + special_limit * 0.01, f"{value:.1f}", ha="center", fontsize=8)
        for ax in (main_ax, special_ax):
            ax.tick_params(labelsize=9)
            ax.grid(axis="x" if ax is main_ax else "y", color="#dddddd", linewidth=0.6)
            ax.set_axisbelow(True)
    _legend(fig, MAIN_ERRORS, "TIDE errors; dAP: AP50 points gained by fixing one error type")
    return _save(fig, stem)


def _subsets(result: dict) -> list:
    """``(label, summary)`` for everything a Hoiem chart shows: all classes, each group, each class."""
    subsets = [("all classes", result["overall"])]
    subsets += [(f"{group} (group)", summary) for group, summary in result["per_group"].items()]
    subsets += list(result["per_class"].items())
    return subsets


def _block_grid(num_subsets: int, models: list, panel_size: tuple):
    """A figure with, per subset, one panel per model side by side; returns it, ``axes[subset][model]`` and the
    number of subsets per row. With several models a narrow empty column separates the subsets, so that each
    block reads as one comparison.
    """
    per_row = max(1, min(num_subsets, PANELS_PER_ROW // len(models)))
    rows = math.ceil(num_subsets / per_row)
    spacer = int(len(models) > 1)
    stride = len(models) + spacer
    ratios = (([1.0] * len(models) + [0.25] * spacer) * per_row)[: stride * per_row - spacer]
    fig = Figure(figsize=(panel_size[0] * sum(ratios), 1.0 + panel_size[1] * rows), layout="constrained")
    grid = fig.add_gridspec(rows, len(ratios), width_ratios=ratios)
    axes = [[fig.add_subplot(grid[s // per_row, (s % per_row) * stride + m]) for m in range(len(models))]
            for s in range(num_subsets)]
    return fig, axes, per_row


def _panel_title(ax, label: str, model: str, detail: str, several: bool) -> None:
    ax.set_title(f"{label}\n{model}\n{detail}" if several else f"{label}\n{detail}", fontsize=9)


def _legend(fig: Figure, types, title: str) -> None:
    """The colour key, under the figure's title (a legend title: constrained layout keeps the two apart)."""
    handles = [Patch(facecolor=COLORS[t], edgecolor=EDGE, linewidth=0.5, label=t) for t in types]
    fig.legend(handles=handles, loc="outside upper center", ncol=len(types), fontsize=10, frameon=False, title=title,
               title_fontproperties={"size": 12})


def plot_hoiem_trend(results: dict, stem) -> list:
    """The Exemplar paper's Fig. 1 for all classes, each group and each class: the share of each FP type among
    the top K false positives, K = 25 ... 400 (a class with fewer FPs shows all of them from there on).

    ``results`` maps model names to ``analyze_false_positives`` results on the same ground truth.
    """
    models = list(results)
    subsets = [dict(_subsets(results[m])) for m in models]
    labels = [label for label, _ in _subsets(results[models[0]])]
    fig, axes, per_row = _block_grid(len(labels), models, (2.1, 1.9))
    points = results[models[0]]["fp_points"]
    x = np.arange(len(points))
    for s, label in enumerate(labels):
        for m, model in enumerate(models):
            ax, summary = axes[s][m], subsets[m][label]
            _panel_title(ax, label, model, f"{summary['num_fp']} FPs", len(models) > 1)
            if summary["num_fp"] == 0:
                _empty(ax, "no false positives")
                continue
            shares = np.array([[100.0 * p[t] / p["n_fp"] for p in summary["curve"]] for t in FP_TYPES])
            ax.stackplot(x, shares, colors=[COLORS[t] for t in FP_TYPES], edgecolor="white", linewidth=0.4)
            ax.set_xlim(0, len(points) - 1)
            ax.set_ylim(0, 100)
            # tick labels on the outer panels only: the axes are shared, and text is most of the drawing time
            bottom, left = s + per_row >= len(labels), s % per_row == 0 and m == 0
            ax.set_xticks(x, [str(p) for p in points] if bottom else [], fontsize=8)
            ax.set_yticks([0, 50, 100], ["0", "50", "100"] if left else [], fontsize=8)
    fig.supxlabel("top K false positives (total false positives)", fontsize=10)
    fig.supylabel("share of each type (%)", fontsize=10)
    _legend(fig, FP_TYPES, f"False-positive types among the top K false positives: {' vs '.join(models)}")
    return _save(fig, stem)


def plot_hoiem_pies(results: dict, stem) -> list:
    """The Exemplar paper's Fig. 7 for all classes, each group and each class: FP types among the top N
    detections, N being the number of objects (groups and all classes add up their classes' top N)."""
    models = list(results)
    subsets = [dict(_subsets(results[m])) for m in models]
    labels = [label for label, _ in _subsets(results[models[0]])]
    fig, axes, _ = _block_grid(len(labels), models, (1.9, 2.0))
    for s, label in enumerate(labels):
        for m, model in enumerate(models):
            ax, summary = axes[s][m], subsets[m][label]
            counts = [summary["top_n"][t] for t in FP_TYPES]
            _panel_title(ax, label, model, f"{sum(counts)} FPs in top {summary['num_gt']}", len(models) > 1)
            if sum(counts) == 0:
                _empty(ax, "no false positives")
                ax.set_frame_on(False)
                continue
            kept = [(count, t) for count, t in zip(counts, FP_TYPES) if count]
            _pie(ax, [count for count, _ in kept], [t for _, t in kept], percent_min=10.0)
    _legend(fig, FP_TYPES, f"False-positive types among the top N detections (N = objects): {' vs '.join(models)}")
    return _save(fig, stem)
