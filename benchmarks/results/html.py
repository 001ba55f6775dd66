"""One self-contained HTML report of the results store: tables, model comparisons, label-budget and utility curves,
each run's TIDE and Hoiem charts, and links to every run's directory and config.

Self-contained means a reader needs nothing but the file: the CSS is inline and every image is a base64 data URI
(the runs' chart PNGs read from their output directories, the comparison and utility charts drawn here with
matplotlib in memory), so it opens offline, mails as one attachment and prints (``@media print``). Links to run
directories are relative to the report's folder (a run directory the store holds as a relative path is taken
relative to the current directory, where tools/transfer.py ran), so they keep working when work/ and the report
move together.
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

from .store import RunRecord
from .tables import IOU_TYPES, MISSING, Cell, Table, aggregate_description, number
from .utility import UtilityPoint

# the charts tools/transfer.py's diagnosis writes into a detection run's directory, in reading order
RUN_CHARTS = ("tide_bbox.png", "tide_segm.png", "hoiem_pies_bbox.png", "hoiem_pies_segm.png",
              "hoiem_trend_bbox.png", "hoiem_trend_segm.png")

CSS = """
:root { --ink: #1d1d1f; --muted: #5f6368; --rule: #d0d4d9; --good: #1a7f37; --bad: #c62828; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
       max-width: 1200px; margin: 0 auto; padding: 1.5rem 1.25rem 3rem; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; } h2 { font-size: 1.25rem; margin: 2rem 0 .5rem;
     border-bottom: 2px solid var(--rule); padding-bottom: .2rem; } h3 { font-size: 1.05rem; margin: 1.25rem 0 .4rem; }
.meta, .note, figcaption { color: var(--muted); font-size: .88rem; }
nav a { margin-right: 1rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .5rem 0; font-variant-numeric: tabular-nums; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid var(--rule); text-align: center; white-space: nowrap; }
th { background: #f3f5f7; font-weight: 600; } td.row, th.row { text-align: left; }
tr.baseline td { background: #fafbfc; font-style: italic; }
.delta { font-size: .85em; margin-left: .25em; } .delta.up { color: var(--good); } .delta.down { color: var(--bad); }
sup.n { color: var(--muted); font-size: .7em; margin-left: .1em; }
.missing { color: var(--muted); }
figure { margin: .75rem 0 1.25rem; } figure img { max-width: 100%; height: auto; border: 1px solid var(--rule); }
.runs td { text-align: left; font-size: .88rem; } .runs td.path { white-space: normal; overflow-wrap: anywhere; }
.status-failed { color: var(--bad); }
@media print {
  body { font-size: 10pt; max-width: none; padding: 0; }
  nav { display: none; }
  a { color: inherit; text-decoration: none; }
  .scroll { overflow: visible; }
  th, td { padding: .15rem .35rem; } table.results { font-size: 8pt; }
  table, figure, .run { break-inside: avoid; }
  h2 { break-after: avoid; }
  tr.baseline td, th { background: none; }
}
@page { margin: 14mm; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(png: bytes, caption: str, alt: str) -> str:
    return (f'<figure><img src="{data_uri(png)}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _cell_html(cell: Cell | None) -> str:
    if cell is None:
        return f'<td class="missing" title="no finished run">{MISSING}</td>'
    text = html.escape(number(cell.center))
    if cell.spread is not None:
        text += f" ± {html.escape(number(cell.spread))}"
    if cell.delta is not None:
        kind = "up" if cell.delta > 0 else "down" if cell.delta < 0 else ""
        text += f'<span class="delta {kind}">({cell.delta:+.1f})</span>'
    seeds = f"{cell.n} seed{'s' if cell.n != 1 else ''}"
    return f'<td>{text}<sup class="n" title="{seeds}">{cell.n}</sup></td>'


def metric_html(metric: str) -> str:
    """``bbox/AP50`` -> AP with subscript 50 and superscript bb, as MoCo's tables write it; else the last part."""
    kind, _, name = metric.rpartition("/")
    if name.startswith("AP") and kind in IOU_TYPES:
        return f"AP<sub>{html.escape(name[2:])}</sub><sup>{IOU_TYPES[kind]}</sup>"
    return html.escape(name)


def table_html(table: Table) -> str:
    groups = []
    for column in table.columns:
        if groups and groups[-1][0] == column.group:
            groups[-1][1] += 1
        else:
            groups.append([column.group, 1])
    head = ['<tr><th class="row" rowspan="2">model</th>' + "".join(
        f'<th colspan="{span}">{html.escape(group)}</th>' for group, span in groups) + "</tr>",
        "<tr>" + "".join(f"<th>{metric_html(column.metric)}</th>" for column in table.columns) + "</tr>"]
    body = []
    for row in table.rows:
        attrs = ' class="baseline"' if row == table.baseline else ""
        cells = "".join(_cell_html(table.cell(row, index)) for index in range(len(table.columns)))
        body.append(f'<tr{attrs}><td class="row">{html.escape(row)}</td>{cells}</tr>')
    note = html.escape(aggregate_description(table)) + "." + (f" {html.escape(table.note)}" if table.note else "")
    anchor = f' id="{html.escape(table.name)}"' if table.name else ""
    title = f"<h3{anchor}>{html.escape(table.title)}</h3>" if table.title else ""
    return (f'{title}<div class="scroll"><table class="results"><thead>{"".join(head)}</thead>'
            f'<tbody>{"".join(body)}</tbody></table></div><p class="note">{note}</p>')


def _tick(metric: str) -> str:
    kind, _, name = metric.rpartition("/")
    return f"{name}$^{{\\mathrm{{{IOU_TYPES[kind]}}}}}$" if kind in IOU_TYPES else name


def comparison_png(table: Table, colors: dict[str, str]) -> bytes | None:
    """Grouped bars, one panel per column group, one bar per model and metric, whiskers spanning the seeds
    (± std for mean_std, min to max for median); ``colors``: row -> colour, the same in every chart. None when the
    table has no finite cell."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    groups: dict[str, list[int]] = {}
    for index, column in enumerate(table.columns):
        groups.setdefault(column.group, []).append(index)
    groups = {group: indices for group, indices in groups.items()
              if any(_finite_cell(table.cell(row, i)) for row in table.rows for i in indices)}
    if not groups:
        return None
    ticks = sum(len(indices) for indices in groups.values())
    figure = Figure(figsize=(min(12.0, 2.5 + 1.2 * len(groups) + 0.8 * ticks), 3.4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(groups), squeeze=False)[0]
    width = 0.8 / max(len(table.rows), 1)
    for ax, (group, indices) in zip(axes, groups.items()):
        for position, row in enumerate(table.rows):
            xs, heights, low, high = [], [], [], []
            for slot, index in enumerate(indices):
                cell = table.cell(row, index)
                if not _finite_cell(cell):
                    continue
                xs.append(slot + (position - (len(table.rows) - 1) / 2) * width)
                heights.append(cell.center)
                below, above = ((cell.spread, cell.spread) if cell.spread is not None else
                                (cell.center - min(cell.values), max(cell.values) - cell.center))
                low.append(below)
                high.append(above)
            ax.bar(xs, heights, width, yerr=[low, high], capsize=2, color=colors[row])
        ax.set_xticks(range(len(indices)), [_tick(table.columns[i].metric) for i in indices])
        ax.set_title(group, fontsize="medium")
        ax.grid(True, axis="y", alpha=0.3)
    figure.legend(handles=[Patch(color=colors[row], label=row) for row in table.rows], loc="outside right upper",
                  fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _finite_cell(cell: Cell | None) -> bool:
    return cell is not None and cell.center is not None and math.isfinite(cell.center)


def _link(path: Path, report_dir: Path, text: str) -> str:
    target = os.path.relpath(path.resolve(), report_dir.resolve())
    return f'<a href="{html.escape(Path(target).as_posix())}">{html.escape(text)}</a>'


def _run_dir(record: RunRecord) -> Path | None:
    return Path(record.output_dir) if record.output_dir else None


def run_charts_html(records: Sequence[RunRecord], report_dir: Path) -> str:
    """The TIDE and Hoiem charts of every finished run that has them, with what the run was."""
    parts = []
    for record in records:
        directory = _run_dir(record)
        if record.status != "finished" or directory is None:
            continue
        charts = [directory / name for name in RUN_CHARTS if (directory / name).is_file()]
        if not charts:
            continue
        figures = "".join(_figure(chart.read_bytes(), chart.name, f"{chart.stem} of {directory.name}")
                          for chart in charts)
        parts.append(f'<div class="run"><h3>{html.escape(record.task)} — {html.escape(directory.name)} '
                     f'(seed {html.escape(str(record.seed))})</h3><p class="meta">weights '
                     f'{html.escape(record.weights)} · {_link(directory, report_dir, "run directory")}</p>'
                     f"{figures}</div>")
    return "".join(parts) or '<p class="note">No run in the store has TIDE or Hoiem charts in its directory.</p>'


def runs_html(records: Sequence[RunRecord], report_dir: Path) -> str:
    rows = []
    for record in records:
        directory = _run_dir(record)
        links = MISSING
        if directory is not None:
            links = _link(directory, report_dir, str(directory))
            if (directory / "config.yaml").is_file():
                links += " · " + _link(directory / "config.yaml", report_dir, "config.yaml")
        ended = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.ended_at)) if record.ended_at else MISSING
        status = html.escape(record.status) + (f": {html.escape(record.error)}" if record.error else "")
        rows.append(f"<tr><td>{html.escape(record.task)}</td><td>{html.escape(record.dataset_name or MISSING)}</td>"
                    f'<td class="path">{html.escape(record.weights)}</td><td>{html.escape(str(record.seed))}</td>'
                    f"<td>{html.escape(str(record.labels) if record.labels is not None else MISSING)}</td>"
                    f'<td class="status-{html.escape(record.status)}">{status}</td><td>{ended}</td>'
                    f'<td class="path">{links}</td></tr>')
    return ('<div class="scroll"><table class="runs"><thead><tr><th>task</th><th>dataset</th><th>weights</th>'
            "<th>seed</th><th>labels</th><th>status</th><th>ended</th><th>directory, config</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def utility_html(points: Sequence[UtilityPoint], metric: str) -> str:
    rows = "".join(
        f"<tr><td class=\"row\">{html.escape(p.model)}</td><td>{p.labels}</td><td>{p.score:.1f}</td>"
        f"<td>{f'{p.n_scratch:.0f}' if p.n_scratch is not None else MISSING}</td><td>{html.escape(p.text)}</td></tr>"
        for p in points)
    return (f'<div class="scroll"><table class="utility"><thead><tr><th class="row">model</th><th>labels N</th>'
            f"<th>{html.escape(metric)}</th><th>scratch labels to match</th><th>utility</th></tr></thead>"
            f'<tbody>{rows}</tbody></table></div><p class="note">Utility = n_scratch / N − 1 (Newell &amp; Deng '
            "2020), n_scratch interpolated on the scratch curve on a log scale; &gt; x and &lt; x are bounds "
            "where the score lies above or below that curve.</p>")


def render_report(records: Sequence[RunRecord], tables: Sequence[Table], report_path: Path, source: str,
                  utilities: Sequence[tuple[str, bytes, Sequence[UtilityPoint], str]] = ()) -> str:
    """The whole report as one HTML string. ``records``: every run to list (any status); ``utilities``: per
    label-budget task its name, the curves' PNG, the utility points and the metric; ``source``: what was read."""
    report_dir = Path(report_path).parent
    sections = [("tables", "Tables", "".join(table_html(table) for table in tables)
                 or '<p class="note">No table: no finished run matches any column.</p>')]
    models = list(dict.fromkeys(row for table in tables for row in table.rows))
    colors = {row: f"C{index % 10}" for index, row in enumerate(models)}
    comparisons = []
    for table in tables:
        png = comparison_png(table, colors)
        if png is not None:
            comparisons.append(_figure(png, f"{table.title or 'Table'}: models side by side; whiskers span the "
                                            "seeds (± std, or min to max around the median)",
                                       f"comparison chart {table.title}"))
    sections.append(("comparison", "Model comparison", "".join(comparisons)
                     or '<p class="note">Nothing to compare yet.</p>'))
    if utilities:
        sections.append(("utility", "Label budget and utility", "".join(
            f"<h3>{html.escape(task)}</h3>" + _figure(png, f"{task}: {metric} and utility against the label budget "
                                                          "(log scale)", f"label-budget and utility curves {task}")
            + utility_html(points, metric) for task, png, points, metric in utilities)))
    sections.append(("diagnosis", "Error diagnosis per run (TIDE, Hoiem)", run_charts_html(records, report_dir)))
    sections.append(("runs", "Runs", runs_html(records, report_dir)))
    nav = " ".join(f'<a href="#{key}">{html.escape(title)}</a>' for key, title, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{html.escape(title)}</h2>{content}</section>'
                   for key, title, content in sections)
    finished = sum(record.status == "finished" for record in records)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>transferlab report</title><style>{CSS}</style></head><body>"
            f"<h1>transferlab report</h1><p class=\"meta\">{html.escape(source)} · {finished} finished of "
            f"{len(records)} runs · written {time.strftime('%Y-%m-%d %H:%M')}</p><nav>{nav}</nav>{body}"
            "</body></html>\n")
