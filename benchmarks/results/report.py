"""What ``tools/report.py`` does, importable: read the store, build the requested tables, utility and the HTML
report, and render them in the requested format."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .html import render_report
from .presets import PRESETS, get_preset
from .store import ResultsStore, RunRecord, default_db_path
from .tables import (
    SCRATCH,
    Table,
    build_table,
    filter_records,
    parse_columns,
    parse_where,
    resolve,
    to_csv,
    to_latex,
    to_markdown,
)
from .utility import BUDGET_TASKS, budget_curves, budget_task, curves_png, default_metric, utility_points

FORMATS = ("md", "csv", "latex", "html")


def load_runs(db: str | os.PathLike | None, where: Sequence[str] = ()) -> tuple[Path, list[RunRecord]]:
    """Every run of the store (any status) passing ``--where``; an absent database is an error, not a new one."""
    path = default_db_path(db)
    if not path.is_file():
        raise FileNotFoundError(f"results database {path} does not exist (--db PATH, or $TRANSFERLAB_DB; "
                                "tools/transfer.py writes one run per row)")
    return path, filter_records(ResultsStore(path).query(status=None), parse_where(where))


def finished(records: Sequence[RunRecord]) -> list[RunRecord]:
    return [record for record in records if record.status == "finished"]


def preset_table(name: str, records: Sequence[RunRecord], rows: str = "weights", agg: str | None = None,
                 baseline: str | None = None) -> Table:
    preset = get_preset(name)
    return build_table(finished(records), preset.columns(finished(records)), rows=rows, agg=agg or preset.agg,
                       baseline=baseline, title=preset.title, note=f"Layout: {preset.source}.", name=name)


def columns_table(cols: str, records: Sequence[RunRecord], rows: str = "weights", agg: str | None = None,
                  baseline: str | None = None) -> Table:
    done = finished(records)
    return build_table(done, resolve(parse_columns(cols), done), rows=rows, agg=agg or "median", baseline=baseline)


def filled_presets(records: Sequence[RunRecord], rows: str = "weights", agg: str | None = None,
                   baseline: str | None = None) -> list[Table]:
    """Every preset that has at least one filled cell; the baseline applies to those that have that row."""
    tables = []
    for name in PRESETS:
        table = preset_table(name, records, rows, agg)
        if table.cells:
            tables.append(preset_table(name, records, rows, agg, baseline if baseline in table.rows else None))
    return tables


@dataclass
class Utility:
    task: str
    metric: str
    curves: dict
    points: list

    def png(self) -> bytes:
        return curves_png(self.curves, self.points, self.metric)


def utility(records: Sequence[RunRecord], task: str | None = None, metric: str | None = None,
            rows: str = "weights", scratch: str = SCRATCH) -> Utility:
    done = finished(records)
    task = budget_task(done, task)
    metric = metric or default_metric(done, task)
    curves = budget_curves(done, task, metric, rows=rows)
    return Utility(task, metric, curves, utility_points(curves, scratch))


def utilities_for_report(records: Sequence[RunRecord], rows: str) -> list[Utility]:
    """One utility analysis per budget task that has runs of both a pretrained and the scratch model."""
    found = []
    for task in BUDGET_TASKS:
        if any(r.task == task and r.labels is not None and r.status == "finished" and r.weights == "none"
               for r in records):
            found.append(utility(records, task, rows=rows))
    return found


def render(tables: Sequence[Table], fmt: str) -> str:
    """md, csv or latex text of the tables (one after another)."""
    if fmt == "md":
        return "\n".join(to_markdown(table) for table in tables)
    if fmt == "csv":
        if len(tables) != 1:
            raise ValueError("--format csv writes one table; choose it with --preset or --cols")
        return to_csv(tables[0])
    if fmt == "latex":
        return "\n".join(to_latex(table) for table in tables)
    raise ValueError(f"--format {fmt!r}: one of {', '.join(FORMATS)}")


def html_report(records: Sequence[RunRecord], tables: Sequence[Table], out: Path, db: Path, rows: str) -> str:
    utilities = [(u.task, u.png(), u.points, u.metric) for u in utilities_for_report(records, rows)]
    return render_report(records, tables, out, source=f"results database {db}", utilities=utilities)
