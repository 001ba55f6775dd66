"""Utility of pretraining (Newell & Deng, "How useful is self-supervised pretraining for visual tasks?", CVPR 2020):
how many labels pretraining saves.

From label-budget runs (``--labels N`` for a pretrained model and for ``--weights none``), utility at N is
``n_scratch / N - 1``, where ``n_scratch`` is the number of labels the scratch model needs to match the pretrained
model's score at N, read off the scratch curve interpolated linearly in log N (the paper's plots use a log label
axis). 0 means no labels saved, 1 means pretraining is worth as many labels again.

Outside the scratch curve the number is a bound, not a value, and is printed as one:
- the pretrained score is above every score the scratch model reached: scratch needs more labels than its largest
  budget N_max, so utility is *at least* N_max / N - 1 (``> x``);
- the scratch model already matches it at its smallest budget N_min: utility is *at most* N_min / N - 1 (``< x``).
On a curve that is not monotonic ``n_scratch`` is the smallest budget at which the interpolated curve reaches the
score.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .store import RunRecord, flat_metrics
from .tables import SCRATCH, Column, build_table

BUDGET_TASKS = ("finetune", "linear")


@dataclass(frozen=True)
class UtilityPoint:
    model: str
    labels: int
    score: float
    n_scratch: float | None  # None when it is only bounded
    utility: float  # the value, or the bound
    bound: str = "exact"  # "exact", "lower" (utility >= value) or "upper" (utility <= value)

    @property
    def text(self) -> str:
        prefix = {"exact": "", "lower": "> ", "upper": "< "}[self.bound]
        return f"{prefix}{self.utility:.2f}"


def labels_needed(curve: Sequence[tuple[int, float]], score: float) -> tuple[float | None, str]:
    """``(n, "exact")`` with the smallest n at which the scratch curve ``[(N, score), ...]`` reaches ``score``
    (linear in log N between measured budgets); ``(None, "lower")`` when it never does and ``(None, "upper")``
    when it is already above at its smallest budget."""
    points = sorted(curve)
    if not points:
        raise ValueError("the scratch model has no label-budget runs to compare with")
    if points[0][1] >= score:
        return (float(points[0][0]), "exact") if points[0][1] == score else (None, "upper")
    for (n0, s0), (n1, s1) in zip(points, points[1:]):
        if s1 >= score:
            fraction = (score - s0) / (s1 - s0)
            return math.exp(math.log(n0) + fraction * (math.log(n1) - math.log(n0))), "exact"
    return None, "lower"


def utility_points(curves: dict[str, dict[int, float]], scratch: str = SCRATCH) -> list[UtilityPoint]:
    """Utility of every model at each of its budgets, against the ``scratch`` row's curve."""
    if scratch not in curves:
        raise ValueError(f"no label-budget runs of the scratch model ({scratch!r}, --weights none) to compare with; "
                         f"models with budget runs: {', '.join(curves) or 'none'}")
    reference = sorted(curves[scratch].items())
    smallest, largest = reference[0][0], reference[-1][0]
    points = []
    for model, curve in curves.items():
        if model == scratch:
            continue
        for labels, score in sorted(curve.items()):
            if math.isnan(score):
                continue
            n, bound = labels_needed(reference, score)
            if bound == "exact":
                points.append(UtilityPoint(model, labels, score, n, n / labels - 1))
            else:
                edge = largest if bound == "lower" else smallest
                points.append(UtilityPoint(model, labels, score, None, edge / labels - 1, bound))
    return points


def default_metric(records: Sequence[RunRecord], task: str) -> str:
    """``task/top1``, or ``task/auroc`` for multi-label data (HPT's metrics)."""
    keys = {key for record in records if record.task == task for key in flat_metrics(record.metrics)}
    return f"{task}/auroc" if f"{task}/auroc" in keys and f"{task}/top1" not in keys else f"{task}/top1"


def budget_task(records: Sequence[RunRecord], task: str | None) -> str:
    """The task whose label-budget runs to use: the one given, or the only one of finetune/linear that has them."""
    with_budgets = [name for name in BUDGET_TASKS
                    if any(record.task == name and record.labels is not None for record in records)]
    if task is not None:
        if task not in with_budgets:
            raise ValueError(f"--utility-task {task}: no finished {task} runs with --labels N; tasks with "
                             f"label-budget runs: {', '.join(with_budgets) or 'none'}")
        return task
    if len(with_budgets) != 1:
        problem = "both have" if with_budgets else "neither has"
        raise ValueError(f"--utility: {' and '.join(BUDGET_TASKS)} {problem} label-budget runs (--labels N); "
                         "choose with --utility-task")
    return with_budgets[0]


def budget_curves(records: Sequence[RunRecord], task: str, metric: str, rows: str = "weights",
                  agg: str = "median") -> dict[str, dict[int, float]]:
    """Row label -> {label budget: score aggregated over seeds}, one table column per budget."""
    budgets = sorted({record.labels for record in records if record.task == task and record.labels is not None})
    columns = [Column(task, metric, where=(("labels", n),)) for n in budgets]
    table = build_table(records, columns, rows=rows, agg=agg)
    return {row: {n: table.cell(row, index).center for index, n in enumerate(budgets)
                  if table.cell(row, index) is not None} for row in table.rows}


def utility_markdown(points: Sequence[UtilityPoint], metric: str, scratch: str = SCRATCH) -> str:
    lines = ["| model | labels | " + metric + " | scratch labels to match | utility |", "|---|---|---|---|---|"]
    for point in points:
        needed = f"{point.n_scratch:.0f}" if point.n_scratch is not None else \
            ("more than its largest budget" if point.bound == "lower" else "fewer than its smallest budget")
        lines.append(f"| {point.model} | {point.labels} | {point.score:.1f} | {needed} | {point.text} |")
    lines += ["", f"Utility = n_scratch / N - 1 (Newell & Deng 2020), n_scratch read off the {scratch} curve on a log "
              "scale; '> x' and '< x' are bounds where the score lies outside that curve."]
    return "\n".join(lines) + "\n"


def curves_png(curves: dict[str, dict[int, float]], points: Sequence[UtilityPoint], metric: str,
               scratch: str = SCRATCH) -> bytes:
    """Two panels, score and utility against the label budget (log axis), as PNG bytes; bounds drawn as open
    triangles pointing the way the true value lies."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    scores, utility = figure.subplots(1, 2)
    for model, curve in curves.items():
        budgets = sorted(curve)
        style = dict(color="black", linestyle="--") if model == scratch else {}
        scores.plot(budgets, [curve[n] for n in budgets], marker="o", label=model, **style)
    scores.set(xscale="log", xlabel="labels (N)", ylabel=metric, title="Label budget")
    scores.grid(True, which="both", alpha=0.3)
    scores.legend(fontsize="small")
    for index, model in enumerate(model for model in curves if model != scratch):
        mine = [point for point in points if point.model == model]
        color = f"C{index}"
        exact = [point for point in mine if point.bound == "exact"]
        utility.plot([p.labels for p in exact], [p.utility for p in exact], marker="o", color=color, label=model)
        for bound, marker in (("lower", "^"), ("upper", "v")):
            chosen = [point for point in mine if point.bound == bound]
            utility.scatter([p.labels for p in chosen], [p.utility for p in chosen], marker=marker,
                            facecolors="none", edgecolors=color)
    utility.axhline(0.0, color="black", linewidth=0.8)
    utility.set(xscale="log", xlabel="labels (N)", ylabel="utility  n_scratch / N - 1",
                title="Utility (open triangles: bounds)")
    utility.grid(True, which="both", alpha=0.3)
    if len(curves) > 1:
        utility.legend(fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
