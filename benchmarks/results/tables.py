"""Paper-style tables from the results store: one row per backbone (or pretraining method), one column per task
metric, each cell the median (HPT) or mean ± std (MoCo) over seeds with the number of seeds, and optionally the
difference to a baseline row as MoCo prints it.

A column is ``task:metric`` with ``metric`` a :func:`~.store.flat_metrics` key (``voc_fasterrcnn:bbox/AP50``), or
``task@dataset:metric`` for the probes that run on many datasets (``linear@resisc:linear/top1``). A cell only
ever holds runs that share one config hash: two recipes of one task in a cell (a demo and a paper run, two label
budgets) are refused with the hashes named, since averaging them would print a number no recipe produced.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .store import RunRecord, flat_metrics

AGGREGATIONS = ("median", "mean_std")
ROWS = ("weights", "method")
MISSING = "–"
SCRATCH = "scratch"
# store columns --where can compare (the JSON and YAML ones cannot be matched as text)
WHERE_COLUMNS = [f.name for f in dataclasses.fields(RunRecord) if f.name not in ("metrics", "lineage", "config")]


@dataclass(frozen=True)
class Column:
    """One table column: a task's metric, optionally restricted to one dataset and further store columns."""

    task: str
    metric: str
    dataset: str | None = None
    where: tuple = ()  # ((store column, value), ...) every run of the cell must match, e.g. (("labels", 1000),)
    title: str | None = None  # header text; default: the task (and dataset) over the metric

    @property
    def group(self) -> str:
        """The upper header: what the column's runs are (task and dataset)."""
        if self.title:
            return self.title
        name = self.task if self.dataset is None else f"{self.task} {self.dataset}"
        return name + "".join(f" {key}={value}" for key, value in self.where)

    @property
    def spec(self) -> str:
        return f"{self.task}{'' if self.dataset is None else '@' + self.dataset}:{self.metric}"

    def matches(self, record: RunRecord) -> bool:
        return (record.task == self.task and (self.dataset is None or record.dataset_name == self.dataset)
                and all(getattr(record, key) == value for key, value in self.where))


def parse_column(spec: str) -> Column:
    """``task:metric`` or ``task@dataset:metric``; the metric may be a short form resolved by :func:`resolve`."""
    head, sep, metric = spec.partition(":")
    task, at, dataset = head.partition("@")
    if not sep or not task or not metric or (at and not dataset):
        raise ValueError(f"--cols {spec!r}: expected task:metric or task@dataset:metric, e.g. "
                         "voc_fasterrcnn:bbox/AP50 or linear@resisc:linear/top1")
    return Column(task=task, metric=metric, dataset=dataset or None)


def parse_columns(text: str) -> list[Column]:
    """``--cols a:m,b:n`` (commas separate columns)."""
    specs = [part.strip() for part in text.split(",") if part.strip()]
    if not specs:
        raise ValueError("--cols is empty; give task:metric[,task:metric...]")
    return [parse_column(spec) for spec in specs]


def resolve(columns: Sequence[Column], records: Sequence[RunRecord]) -> list[Column]:
    """Each column with its metric spelled out in full; a short metric (``AP50``) stands for the one full key ending
    in ``/AP50`` among the task's runs. A column that names no task, dataset or metric of any run is an error that
    lists what exists."""
    resolved = []
    for column in columns:
        runs = [record for record in records if column.matches(record)]
        if not runs:
            tasks = sorted({record.task for record in records})
            datasets = sorted({record.dataset_name for record in records if record.task == column.task})
            known = (f"datasets of {column.task}: {', '.join(datasets)}" if datasets and column.dataset else
                     f"tasks with finished runs: {', '.join(tasks) or 'none'}")
            raise ValueError(f"column {column.spec}: no finished run matches it; {known}")
        keys = sorted({key for record in runs for key in flat_metrics(record.metrics)})
        if column.metric in keys:
            resolved.append(column)
            continue
        candidates = [key for key in keys if key.endswith("/" + column.metric)]
        if len(candidates) != 1:
            problem = "is ambiguous: " + ", ".join(candidates) if candidates else "is no metric of its runs"
            raise ValueError(f"column {column.spec}: {column.metric!r} {problem}; metrics of {column.task}: "
                             f"{', '.join(key for key in keys if '-' not in key) or 'none'}")
        resolved.append(Column(column.task, candidates[0], column.dataset, column.where, column.title))
    return resolved


def parse_where(items: Iterable[str]) -> dict[str, list]:
    """``--where col=value`` (repeated): store column -> accepted values; a column given twice accepts either."""
    equal: dict[str, list] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--where {item!r}: expected column=value, e.g. task=voc_fasterrcnn")
        if key not in WHERE_COLUMNS:
            raise ValueError(f"--where {item!r}: unknown column {key!r}; columns: {', '.join(WHERE_COLUMNS)}")
        equal.setdefault(key, []).append(value)
    return equal


def filter_records(records: Iterable[RunRecord], equal: dict[str, list]) -> list[RunRecord]:
    """The records whose columns equal one of the accepted values (compared as text: ``seed=1`` matches 1)."""
    def keep(record):
        return all(_text(getattr(record, key)) in values for key, values in equal.items())
    return [record for record in records if keep(record)]


def _text(value) -> str:
    return "none" if value is None else str(value)


def row_keys(records: Sequence[RunRecord], rows: str) -> dict[str, str]:
    """run_id -> row label. ``weights``: one row per checkpoint (by sha256), labelled by its file stem ("scratch"
    for ``--weights none``), equal stems told apart by their parent directories; ``method``: one row per
    pretraining method."""
    if rows not in ROWS:
        raise ValueError(f"--rows {rows!r}: one of {', '.join(ROWS)}")
    if rows == "method":
        return {record.run_id: SCRATCH if record.weights == "none" else (record.method or "unknown method")
                for record in records}
    identity = {record.run_id: _weights_identity(record) for record in records}
    paths = {}
    for record in records:
        paths.setdefault(identity[record.run_id], Path(record.weights))
    labels = _distinct_labels(paths)
    return {run_id: labels[key] for run_id, key in identity.items()}


def _weights_identity(record: RunRecord) -> str:
    if record.weights == "none":
        return "none"
    return record.weights_sha256 or f"path:{record.weights}"


def _distinct_labels(paths: dict[str, Path]) -> dict[str, str]:
    """Shortest path suffixes (stem, then parent/stem, ...) that tell the checkpoints apart; a sha prefix when even
    the full paths coincide (one file rewritten between runs)."""
    labels = {key: SCRATCH if key == "none" else path.stem for key, path in paths.items()}
    depth = 0
    while True:
        clashes = [key for key in labels if key != "none" and list(labels.values()).count(labels[key]) > 1]
        if not clashes:
            return labels
        depth += 1
        for key in clashes:
            parts = paths[key].with_suffix("").parts
            labels[key] = "/".join(parts[-depth - 1:]) if depth < len(parts) else f"{'/'.join(parts)}@{key[:8]}"
        if depth > max(len(path.parts) for path in paths.values()):
            return labels  # only identical paths with identical sha prefixes are left, which cannot happen


@dataclass
class Cell:
    """The runs of one row and column, one value per seed."""

    values: list = field(default_factory=list)
    center: float | None = None  # median, or mean
    spread: float | None = None  # std (mean_std with 2+ seeds)
    delta: float | None = None  # center - the baseline row's center

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass
class Table:
    title: str
    rows: list  # row labels, in order
    columns: list  # Column
    cells: dict  # (row label, column index) -> Cell
    agg: str
    baseline: str | None = None
    note: str = ""  # what the table mirrors, printed under it
    name: str = ""  # the preset's name: the LaTeX label and the HTML anchor

    def cell(self, row: str, index: int) -> Cell | None:
        return self.cells.get((row, index))


def build_table(records: Sequence[RunRecord], columns: Sequence[Column], rows: str = "weights",
                agg: str = "median", baseline: str | None = None, title: str = "", note: str = "",
                name: str = "") -> Table:
    """Aggregate finished runs into a :class:`Table`. A seed run twice counts once (its newest run); a cell whose
    runs have different config hashes is an error. ``baseline`` names a row label."""
    if agg not in AGGREGATIONS:
        raise ValueError(f"--agg {agg!r}: one of {', '.join(AGGREGATIONS)}")
    finished = [record for record in records if record.status == "finished"]
    labels = row_keys(finished, rows)
    by_cell: dict = {}
    for record in sorted(finished, key=lambda r: (r.ended_at or 0.0, r.started_at or 0.0)):
        for index, column in enumerate(columns):
            if column.matches(record) and column.metric in flat_metrics(record.metrics):
                by_cell.setdefault((labels[record.run_id], index), {})[record.seed] = record  # newest wins
    order = _row_order(finished, labels, by_cell)
    if baseline is not None and baseline not in order:
        raise ValueError(f"--baseline {baseline!r} is no row of this table; rows: {', '.join(order) or 'none'}")
    cells = {}
    for (row, index), by_seed in by_cell.items():
        runs = list(by_seed.values())
        _check_one_recipe(row, columns[index], runs)
        cells[(row, index)] = _aggregate([flat_metrics(run.metrics)[columns[index].metric] for run in runs], agg)
    if baseline is not None:
        for (row, index), cell in cells.items():
            reference = cells.get((baseline, index))
            if row != baseline and reference is not None and _finite(cell.center) and _finite(reference.center):
                cell.delta = cell.center - reference.center
    return Table(title=title, rows=order, columns=list(columns), cells=cells, agg=agg, baseline=baseline, note=note,
                 name=name)


def _row_order(records, labels, by_cell) -> list[str]:
    """Scratch first (papers print random init at the top), then in order of each row's first run."""
    seen = []
    for record in sorted(records, key=lambda r: (r.started_at or 0.0)):
        label = labels[record.run_id]
        if label not in seen:
            seen.append(label)
    filled = {row for row, _ in by_cell}
    order = [row for row in seen if row in filled]
    return sorted(order, key=lambda row: row != SCRATCH)


def _check_one_recipe(row: str, column: Column, runs: Sequence[RunRecord]) -> None:
    hashes = sorted({run.config_hash for run in runs})
    if len(hashes) > 1:
        detail = "; ".join(f"{h[:12]}: {', '.join(r.output_dir or r.run_id for r in runs if r.config_hash == h)}"
                           for h in hashes)
        raise ValueError(f"row {row}, column {column.spec}: its runs used {len(hashes)} different configs ({detail});"
                         " pick one with --where config_hash=HASH (repeat --where for several tasks) or another "
                         "--where column (dataset_root=, labels=)")


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _aggregate(values: list, agg: str) -> Cell:
    """A NaN seed (a metric undefined on the data, as APs without small objects) makes the cell NaN."""
    cell = Cell(values=values)
    if any(math.isnan(value) for value in values):
        cell.center = math.nan
    elif agg == "median":
        cell.center = statistics.median(values)
    else:
        cell.center = statistics.fmean(values)
        cell.spread = statistics.stdev(values) if len(values) > 1 else None  # sample std, n - 1
    return cell


def number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return MISSING
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def delta_text(delta: float, digits: int = 1) -> str:
    return f"({delta:+.{digits}f})"


def cell_text(cell: Cell | None, digits: int = 1) -> str:
    """Markdown/plain: ``55.6 (n=3)``, ``55.6 ± 0.4 (+1.2) (n=3)``; missing cells ``–``."""
    if cell is None:
        return MISSING
    text = number(cell.center, digits)
    if cell.spread is not None:
        text += f" ± {number(cell.spread, digits)}"
    if cell.delta is not None:
        text += " " + delta_text(cell.delta, digits)
    return f"{text} (n={cell.n})"


def aggregate_description(table: Table) -> str:
    how = "median over seeds" if table.agg == "median" else "mean ± sample std over seeds"
    baseline = f"; (±x): difference to {table.baseline}" if table.baseline else ""
    return f"{how} (n: number of seeds){baseline}; {MISSING}: no finished run"


def to_markdown(table: Table) -> str:
    header = ["model"] + [f"{column.group} {column.metric}" for column in table.columns]
    lines = []
    if table.title:
        lines += [f"**{table.title}**", ""]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in table.rows:
        cells = [cell_text(table.cell(row, index)) for index in range(len(table.columns))]
        lines.append("| " + " | ".join([row] + cells) + " |")
    lines += ["", aggregate_description(table) + "."]
    if table.note:
        lines.append(table.note)
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Full precision, one value per CSV column: the aggregate, the seed count, and the std and delta when the
    table has them; empty where no run exists."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["model"]
    for column in table.columns:
        header += [column.spec + "".join(f" {k}={v}" for k, v in column.where), f"{column.spec} n"]
        header += [f"{column.spec} std"] if table.agg == "mean_std" else []
        header += [f"{column.spec} delta"] if table.baseline else []
    writer.writerow(header)
    for row in table.rows:
        values = [row]
        for index in range(len(table.columns)):
            cell = table.cell(row, index)
            values += [_csv_number(cell and cell.center), cell.n if cell else ""]
            values += [_csv_number(cell and cell.spread)] if table.agg == "mean_std" else []
            values += [_csv_number(cell and cell.delta)] if table.baseline else []
        writer.writerow(values)
    return out.getvalue()


def _csv_number(value) -> str:
    return "" if value is None else repr(float(value))


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Special characters escaped, and ``--`` kept two hyphens (LaTeX would set an en dash)."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in str(text)).replace("--", "-{}-")


IOU_TYPES = {"bbox": "bb", "segm": "mk"}  # the superscripts of MoCo's AP^bb and AP^mk


def latex_metric(metric: str) -> str:
    """``bbox/AP50`` -> ``AP$_{50}^{\\mathrm{bb}}$`` as MoCo's tables write it; other metrics escaped."""
    kind, _, name = metric.rpartition("/")
    if name.startswith("AP") and (kind in IOU_TYPES or not kind):
        rest = name[2:]
        sub = f"_{{{latex_escape(rest)}}}" if rest else ""
        sup = f"^{{\\mathrm{{{IOU_TYPES[kind]}}}}}" if kind in IOU_TYPES else ""
        return f"AP${sub}{sup}$" if sub or sup else "AP"
    return latex_escape(name if kind else metric)


def to_latex(table: Table) -> str:
    """A ``table`` environment with booktabs rules, grouped headers and the seed counts as superscripts, labelled
    ``tab:<preset>``."""
    groups = []  # (group text, number of columns)
    for column in table.columns:
        if groups and groups[-1][0] == column.group:
            groups[-1] = (column.group, groups[-1][1] + 1)
        else:
            groups.append((column.group, 1))
    lines = ["% needs \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering",
             "\\begin{tabular}{l" + "c" * len(table.columns) + "}", "\\toprule"]
    lines.append(" & ".join(["pretrain"] + [f"\\multicolumn{{{span}}}{{c}}{{{latex_escape(group)}}}"
                                            for group, span in groups]) + " \\\\")
    start, rules = 2, []
    for _, span in groups:
        rules.append(f"\\cmidrule(lr){{{start}-{start + span - 1}}}")
        start += span
    lines.append(" ".join(rules))
    lines.append(" & ".join([""] + [latex_metric(column.metric) for column in table.columns]) + " \\\\")
    lines.append("\\midrule")
    for row in table.rows:
        cells = [_latex_cell(table.cell(row, index)) for index in range(len(table.columns))]
        lines.append(" & ".join([latex_escape(row)] + cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    how = ("Median" if table.agg == "median" else "Mean $\\pm$ std") + " over seeds; superscripts: number of seeds"
    if table.baseline:
        how += f"; in brackets: difference to {latex_escape(table.baseline)}"
    caption = f"{latex_escape(table.title)}. {how}." if table.title else f"{how}."
    if table.note:
        caption += " " + latex_escape(table.note)
    lines.append(f"\\caption{{{caption}}}")
    if table.name:
        lines.append(f"\\label{{tab:{table.name}}}")
    lines.append("\\end{table}")
    return "\n".join(lines) + "\n"


def _latex_cell(cell: Cell | None) -> str:
    if cell is None:
        return "--"
    text = number(cell.center)
    if cell.spread is not None:
        text += f"$\\pm${number(cell.spread)}"
    text += f"$^{{{cell.n}}}$"
    if cell.delta is not None:
        text += f" {{\\scriptsize {delta_text(cell.delta).replace('-', '$-$')}}}"  # a minus, not a hyphen
    return text
