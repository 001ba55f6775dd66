"""Charts of a diagnosis: TIDE summaries and Hoiem false-positive distributions, one model or several side by side.

Comparing models on the same data is the point (the Exemplar paper's Fig. 1 and Fig. 7 put supervised and MoCo
next to each other), so every chart takes ``{model name: result}`` and draws the models in adjacent panels on
shared axes, in the Okabe-Ito palette, which stays distinguishable under the common colour-vision deficiencies.
Each is written as PNG and SVG from one :class:`~.drawing.Canvas` (no matplotlib state, safe in a training process;
a COCO diagnosis draws its ~170 panels in ~0.5-1.5 s depending on load, where matplotlib took ~10 s).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from converters.io import atomic_write, atomic_write_text

from .drawing import Canvas
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
GRID = "#dddddd"
DPI = 100
PANELS_PER_ROW = 6
_TICK = 3.5 / 72  # matplotlib's default major tick length, inches


def _finite(value) -> float:
    return float(value) if value is not None and math.isfinite(value) else 0.0


def _nice_limit(values) -> float:
    """Axis maximum a step of 5 dAP above the largest value, as TIDE's own plot rescales."""
    return max(5.0, 5.0 * math.ceil(max(values, default=0.0) / 5.0 + 1e-9))


def _ticks(limit: float, most: int = 9) -> list:
    """Tick values from 0 to ``limit`` at the first step of 1, 2, 2.5 or 5 x 10^k giving at most ``most`` ticks
    (matplotlib's default locator picks the same on these axes)."""
    magnitude = 10.0 ** math.floor(math.log10(limit / (most - 1)))
    step = next(m * magnitude * scale for scale in (1, 10) for m in (1, 2, 2.5, 5)
                if limit / (m * magnitude * scale) <= most - 1 + 1e-9)
    return [k * step for k in range(int(limit / step + 1e-9) + 1)]


def _tick_labels(values) -> list:
    """As matplotlib writes them: integers, or every label with one decimal when a step has one."""
    decimals = 0 if all(v == int(v) for v in values) else 1
    return [f"{v:.{decimals}f}" for v in values]


def _save(canvas: Canvas, stem) -> list:
    """``stem``.png and ``stem``.svg, written atomically; the SVG keeps its text as text (editable, searchable)
    and has no date, so reruns give identical files."""
    paths = [Path(f"{stem}.png"), Path(f"{stem}.svg")]
    atomic_write(paths[0], lambda file: file.write(canvas.png(DPI)))
    atomic_write_text(paths[1], canvas.svg())
    return paths


def _pie(canvas: Canvas, center, radius: float, values, names, percent_min: float) -> None:
    """Wedges clockwise from 12 o'clock, as matplotlib's ``pie(startangle=90, counterclock=False)``, each share of
    at least ``percent_min`` % printed on it."""
    shares = np.asarray(values, dtype=np.float64) / sum(values)
    angles = -90.0 + 360.0 * np.concatenate([[0.0], np.cumsum(shares)])  # y points down: clockwise on the page
    for name, share, start, end in zip(names, shares, angles[:-1], angles[1:]):
        if share:
            canvas.wedge(center, radius, start, end, COLORS[name], "#ffffff", 1.0)
    for name, share, start, end in zip(names, shares, angles[:-1], angles[1:]):
        if 100 * share >= percent_min:
            middle = math.radians((start + end) / 2)
            color = "#000000" if COLORS[name] in _LIGHT else "#ffffff"
            canvas.text(center[0] + 0.68 * radius * math.cos(middle), center[1] + 0.68 * radius * math.sin(middle),
                        f"{100 * share:.0f}%", size=9, bold=True, color=color)


def _legend(canvas: Canvas, types, title: str) -> None:
    """The figure's title and under it the colour key, centred."""
    width = canvas.size[0]
    canvas.text(width / 2, 0.06, title, size=12, va="top")
    key_widths = [0.45 + 0.1 * len(t) for t in types]  # patch, gap and label at 10 pt
    x = (width - sum(key_widths)) / 2
    for t, key_width in zip(types, key_widths):
        canvas.polygon([(x, 0.34), (x + 0.28, 0.34), (x + 0.28, 0.48), (x, 0.48)], COLORS[t], EDGE, 0.5)
        canvas.text(x + 0.36, 0.41, t, size=10, ha="left")
        x += key_width


def _frame(canvas: Canvas, x0, top, x1, bottom) -> None:
    canvas.polygon([(x0, top), (x1, top), (x1, bottom), (x0, bottom)], None, "#000000", 0.8)


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

    top_band, row_height = 0.65, 2.7
    canvas = Canvas(10.5, top_band + row_height * len(models) + 0.1)
    for row, model in enumerate(models):
        y = top_band + row * row_height
        result = results[model]
        title = f"{model}: AP50 {_finite(result.get('AP50')):.1f}, AP {_finite(result.get('AP')):.1f}"
        canvas.text(0.1, y + 0.2, title, size=11, bold=True, ha="left")
        center = (1.55, y + 1.45)
        if sum(main[model]) > 0:
            _pie(canvas, center, 1.0, main[model], MAIN_ERRORS, percent_min=7.0)
        else:
            canvas.text(*center, "no error to fix\n(all dAP are 0)", size=9, color="#555555")

        # main errors: horizontal bars, the first on top
        x0, x1, top, bottom = 3.45, 7.5, y + 0.4, y + 2.25
        slot = (bottom - top) / len(MAIN_ERRORS)
        scale = (x1 - x0) / main_limit
        ticks = _ticks(main_limit)
        for value, text in zip(ticks, _tick_labels(ticks)):
            x = x0 + value * scale
            canvas.line([(x, top), (x, bottom)], GRID, 0.6)
            canvas.line([(x, bottom), (x, bottom + _TICK)], "#000000")
            canvas.text(x, bottom + _TICK + 0.03, text, size=9, va="top")
        for k, (name, value) in enumerate(zip(MAIN_ERRORS, main[model])):
            middle = top + slot * (k + 0.5)
            canvas.polygon([(x0, middle - 0.4 * slot), (x0 + value * scale, middle - 0.4 * slot),
                            (x0 + value * scale, middle + 0.4 * slot), (x0, middle + 0.4 * slot)], COLORS[name], EDGE,
                           0.6)
            canvas.line([(x0, middle), (x0 - _TICK, middle)], "#000000")
            canvas.text(x0 - _TICK - 0.04, middle, name, size=10, ha="right")
            canvas.text(x0 + value * scale + main_limit * 0.01 * scale, middle, f"{value:.2f}", size=8, ha="left")
        _frame(canvas, x0, top, x1, bottom)
        canvas.text((x0 + x1) / 2, bottom + 0.27, "dAP50 when fixed (main errors)", size=9, va="top")

        # special errors: vertical bars
        x0, x1 = 8.55, 10.4
        slot, scale = (x1 - x0) / len(SPECIAL_ERRORS), (bottom - top) / special_limit
        ticks = _ticks(special_limit)
        for value, text in zip(ticks, _tick_labels(ticks)):
            level = bottom - value * scale
            canvas.line([(x0, level), (x1, level)], GRID, 0.6)
            canvas.line([(x0, level), (x0 - _TICK, level)], "#000000")
            canvas.text(x0 - _TICK - 0.04, level, text, size=9, ha="right")
        for k, (name, value, label) in enumerate(zip(SPECIAL_ERRORS, special[model],
                                                      ("False\npositives", "False\nnegatives"))):
            middle, height = x0 + slot * (k + 0.5), value * scale
            canvas.polygon([(middle - 0.3 * slot, bottom), (middle + 0.3 * slot, bottom),
                            (middle + 0.3 * slot, bottom - height), (middle - 0.3 * slot, bottom - height)],
                           COLORS[name], EDGE, 0.6)
            canvas.line([(middle, bottom), (middle, bottom + _TICK)], "#000000")
            canvas.text(middle, bottom + _TICK + 0.03, label, size=9, va="top")
            canvas.text(middle, bottom - height - 0.02, f"{value:.1f}", size=8, va="bottom")
        _frame(canvas, x0, top, x1, bottom)
        canvas.text(x0 - 0.5, (top + bottom) / 2, "dAP50 (special)", size=9, rotation=90)
    _legend(canvas, MAIN_ERRORS, "TIDE errors; dAP: AP50 points gained by fixing one error type")
    return _save(canvas, stem)


def _subsets(result: dict) -> list:
    """``(label, summary)`` for everything a Hoiem chart shows: all classes, each group, each class."""
    subsets = [("all classes", result["overall"])]
    subsets += [(f"{group} (group)", summary) for group, summary in result["per_group"].items()]
    subsets += list(result["per_class"].items())
    return subsets


class _Sheet:
    """A grid of small panels on a :class:`Canvas` (inches, y down): per subset one panel per model side by side;
    with several models a narrow empty column separates the subsets, so that each block reads as one comparison.
    """

    TOP, BOTTOM, LEFT = 0.6, 0.3, 0.3  # inches for the legend, the x label and the y label

    def __init__(self, num_subsets: int, models: list, cell: tuple):
        self.per_row = max(1, min(num_subsets, PANELS_PER_ROW // len(models)))
        self.rows = math.ceil(num_subsets / self.per_row)
        self.several, self.cell = len(models) > 1, cell
        gap = 0.25 * cell[0] * self.several
        self.block = cell[0] * len(models) + gap  # a subset's panels and the gap after them
        self.canvas = Canvas(self.LEFT + self.block * self.per_row - gap, self.TOP + cell[1] * self.rows + self.BOTTOM)

    def cell_origin(self, subset: int, model: int) -> tuple:
        """Top left corner (inches) of the cell of ``subset`` and ``model``."""
        row, column = divmod(subset, self.per_row)
        return self.LEFT + column * self.block + model * self.cell[0], self.TOP + row * self.cell[1]

    def title(self, x, y, label: str, model: str, detail: str) -> None:
        self.canvas.text(x, y, f"{label}\n{model}\n{detail}" if self.several else f"{label}\n{detail}", size=9,
                         va="bottom")

    def empty(self, x, y, text: str) -> None:
        self.canvas.text(x, y, text, size=9, color="#555555")

    def finish(self, types, title: str, stem, xlabel: str | None = None, ylabel: str | None = None) -> list:
        """The labels, the title and colour key, then ``stem``.png and ``stem``.svg."""
        canvas, (width, height) = self.canvas, self.canvas.size
        if xlabel:
            canvas.text(width / 2, height - 0.06, xlabel, size=10, va="bottom")
        if ylabel:
            canvas.text(0.14, self.TOP + self.cell[1] * self.rows / 2, ylabel, size=10, rotation=90)
        _legend(canvas, types, title)
        return _save(canvas, stem)


def plot_hoiem_trend(results: dict, stem) -> list:
    """The Exemplar paper's Fig. 1 for all classes, each group and each class: the share of each FP type among
    the top K false positives, K = 25 ... 400 (a class with fewer FPs shows all of them from there on).

    ``results`` maps model names to ``analyze_false_positives`` results on the same ground truth. Returns the
    written PNG and SVG paths.
    """
    models = list(results)
    subsets = [dict(_subsets(results[m])) for m in models]
    labels = [label for label, _ in _subsets(results[models[0]])]
    sheet = _Sheet(len(labels), models, (2.1, 1.9))
    canvas = sheet.canvas
    points = results[models[0]]["fp_points"]
    title_height = 0.5 + 0.15 * sheet.several
    for s, label in enumerate(labels):
        for m, model in enumerate(models):
            cx, cy = sheet.cell_origin(s, m)
            x0, x1, top, bottom = cx + 0.38, cx + sheet.cell[0] - 0.1, cy + title_height, cy + sheet.cell[1] - 0.25
            summary = subsets[m][label]
            sheet.title((x0 + x1) / 2, top - 0.04, label, model, f"{summary['num_fp']} FPs")
            if summary["num_fp"] == 0:
                _frame(canvas, x0, top, x1, bottom)
                sheet.empty((x0 + x1) / 2, (top + bottom) / 2, "no false positives")
                continue
            xs = x0 + (x1 - x0) * np.arange(len(points)) / max(len(points) - 1, 1)
            shares = np.array([[100.0 * p[t] / p["n_fp"] for p in summary["curve"]] for t in FP_TYPES])
            upper = np.cumsum(shares, axis=0)
            for t, high, low in zip(FP_TYPES, upper, np.vstack([np.zeros(len(points)), upper[:-1]])):
                y_high, y_low = bottom - (bottom - top) * high / 100, bottom - (bottom - top) * low / 100
                canvas.polygon(list(zip(xs, y_high)) + list(zip(xs[::-1], y_low[::-1])), COLORS[t], "#ffffff", 0.4)
            _frame(canvas, x0, top, x1, bottom)
            ys = [bottom - (bottom - top) * v / 100 for v in (0, 50, 100)]
            for x in xs:
                canvas.line([(x, bottom), (x, bottom + _TICK)], "#000000")
            for y in ys:
                canvas.line([(x0, y), (x0 - _TICK, y)], "#000000")
            # tick labels on the outer panels only: the axes are shared
            if s + sheet.per_row >= len(labels):
                for x, point in zip(xs, points):
                    canvas.text(x, bottom + _TICK + 0.02, str(point), size=8, va="top")
            if s % sheet.per_row == 0 and m == 0:
                for y, value in zip(ys, (0, 50, 100)):
                    canvas.text(x0 - _TICK - 0.03, y, str(value), size=8, ha="right")
    return sheet.finish(FP_TYPES, f"False-positive types among the top K false positives: {' vs '.join(models)}",
                        stem, "top K false positives (total false positives)", "share of each type (%)")


def plot_hoiem_pies(results: dict, stem) -> list:
    """The Exemplar paper's Fig. 7 for all classes, each group and each class: FP types among the top N
    detections, N being the number of objects (groups and all classes add up their classes' top N)."""
    models = list(results)
    subsets = [dict(_subsets(results[m])) for m in models]
    labels = [label for label, _ in _subsets(results[models[0]])]
    sheet = _Sheet(len(labels), models, (1.9, 2.0))
    canvas = sheet.canvas
    title_height = 0.5 + 0.15 * sheet.several
    radius = min(sheet.cell[0] - 0.3, sheet.cell[1] - title_height - 0.2) / 2
    for s, label in enumerate(labels):
        for m, model in enumerate(models):
            cx, cy = sheet.cell_origin(s, m)
            summary = subsets[m][label]
            counts = [summary["top_n"][t] for t in FP_TYPES]
            sheet.title(cx + sheet.cell[0] / 2, cy + title_height - 0.02, label, model,
                        f"{sum(counts)} FPs in top {summary['num_gt']}")
            center = (cx + sheet.cell[0] / 2, cy + title_height + 0.08 + radius)
            if sum(counts) == 0:
                sheet.empty(*center, "no false positives")
                continue
            _pie(canvas, center, radius, counts, FP_TYPES, percent_min=10.0)
    return sheet.finish(FP_TYPES, "False-positive types among the top N detections (N = objects): "
                        f"{' vs '.join(models)}", stem)
