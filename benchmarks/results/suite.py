"""The checkpoint x task x seed suite on Ray: every cell a transfer run, cells already in the store skipped, then
the leaderboard.

A cell is (task, weights sha256, config hash, seed). It is done when the store holds a ``finished`` row with those
four values, where the config hash is ``store.config_hash`` of the config ``benchmarks.tasks.run_config`` resolves
for the cell, the same function tools/transfer.py stores, so the two agree. A ``running`` row (a killed suite) or a
``failed`` one does not count: the cell runs again and appends its own row, the old one stays as evidence. So a
suite resumes after a crash, and adding a checkpoint runs only its cells. Each cell runs in
``OUTPUT/<task>/<weights name>/seed_<k>/``; a directory left by a killed run of the same cell is resumed (--resume).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from converters.io import atomic_write_text

from ..tasks import get_task, run_config
from .store import ResultsStore, config_hash, default_db_path, file_sha256, flat_metrics
from .tables import SCRATCH
from .transfer_runs import (
    REPO_ROOT,
    absolute,
    main_metrics,
    parse_resources,
    ray_session,
    run_transfer,
    transfer_command,
    trial_environment,
)

REPORT_SCRIPT = REPO_ROOT / "tools" / "report.py"


@dataclass
class Cell:
    task: str
    weights: str
    weights_sha256: str | None
    seed: int
    config_hash: str
    output_dir: Path
    data_root: str | None
    status: str = "pending"  # skipped (a finished row exists) | finished | failed
    resume: bool = False
    run_id: str | None = None
    error: str | None = None
    metrics: dict = field(default_factory=dict)


def parse_tasks(text: str) -> list[str]:
    tasks = [name.strip() for name in text.split(",") if name.strip()]
    if not tasks:
        raise ValueError(f"--tasks {text!r}: give task names separated by commas, e.g. linear,knn")
    if len(set(tasks)) < len(tasks):
        raise ValueError(f"--tasks {text!r}: a task is named twice")
    for name in tasks:
        get_task(name)
    return tasks


def parse_data_roots(items: Sequence[str], tasks: Sequence[str]) -> dict[str, str | None]:
    """``--data-root PATH`` for every task, or ``--data-root TASK=PATH`` per task; absent: the built-in data."""
    roots = dict.fromkeys(tasks)
    for item in items:
        task, sep, path = item.partition("=")
        if not sep:
            task, path = None, item
        if task is not None and task not in roots:
            raise ValueError(f"--data-root {item!r}: {task} is not one of --tasks {', '.join(tasks)}")
        if not Path(path).is_dir():
            raise FileNotFoundError(f"--data-root {item!r}: no such directory {path}")
        for name in ([task] if task else tasks):
            roots[name] = absolute(path)
    return roots


def weights_names(weights: Sequence[str]) -> dict[str, str]:
    """Each checkpoint's directory name in the suite: its file stem, or ``<parent>-<stem>`` where stems repeat
    (``work/mocov2/last.pth`` and ``work/hpt/last.pth`` -> ``mocov2-last``, ``hpt-last``)."""
    if len(set(weights)) < len(weights):
        raise ValueError(f"--weights names a checkpoint twice: {list(weights)}")
    stems = [Path(w).stem for w in weights]
    names = {w: stem if stems.count(stem) == 1 else f"{Path(w).parent.name}-{stem}" for w, stem in zip(weights, stems)}
    if len(set(names.values())) < len(names):
        raise ValueError(f"--weights {list(weights)}: two checkpoints get the same directory name "
                         f"({sorted(names.values())}); copy one under another name")
    return names


def plan_cells(weights: Sequence[str], tasks: Sequence[str], seeds: int, output: Path,
               data_roots: dict, overrides: Sequence[str] = ()) -> tuple[list[Cell], dict[str, list[str]]]:
    """Every cell with its identity in the store, in weights x task x seed order; and each task's main metrics."""
    if seeds < 1:
        raise ValueError(f"--seeds {seeds}: at least 1")
    digests = {}
    for path in weights:
        if path != "none":
            if not Path(path).is_file():
                raise FileNotFoundError(f"--weights {path}: no such file")
            digests[path] = file_sha256(path)
    cells, metrics = [], {}
    for path, name in weights_names(weights).items():
        for task in tasks:
            for seed in range(seeds):
                cell_dir = output / task / name / f"seed_{seed}"
                cfg, _, _ = run_config(task, cell_dir, path, None, data_roots[task], overrides, seed)
                metrics.setdefault(task, main_metrics(cfg))
                cells.append(Cell(task, path, digests.get(path), seed, config_hash(yaml.safe_load(cfg.dump())),
                                  cell_dir, data_roots[task]))
    return cells, metrics


def mark_done_and_resumable(cells: Sequence[Cell], store: ResultsStore) -> None:
    """Skip the cells with a finished row; resume those whose directory holds a killed run of the same config.

    A directory holding a run of another config (the overrides changed since) is an error before anything runs:
    resuming it would continue the old run, and a fresh run there would overwrite it.
    """
    conflicts = []
    for cell in cells:
        rows = store.query(status="finished", task=cell.task, weights_sha256=cell.weights_sha256,
                           config_hash=cell.config_hash, seed=cell.seed)
        if rows:
            cell.status, cell.run_id, cell.metrics = "skipped", rows[-1].run_id, flat_metrics(rows[-1].metrics)
            continue
        saved = cell.output_dir / "config.yaml"
        if saved.is_file():
            if config_hash(yaml.safe_load(saved.read_text())) != cell.config_hash:
                conflicts.append(str(cell.output_dir))
            cell.resume = True
    if conflicts:
        raise FileExistsError(f"{len(conflicts)} cell directories hold a run of another config (the overrides or the "
                              f"task's recipe changed since): {', '.join(conflicts)}; choose another --output")


def run_suite(weights: Sequence[str], tasks: str, seeds: int, output, resources: str | None = None,
              address: str | None = None, db=None, data_roots: Sequence[str] = (),
              overrides: Sequence[str] = ()) -> dict:
    """Plan, skip, run the remaining cells on Ray, write suite.json, then the leaderboard (see module doc)."""
    task_names = parse_tasks(tasks)
    output = Path(output).resolve()
    share = parse_resources(resources)
    cells, metrics = plan_cells([absolute(path) for path in weights], task_names, seeds, output,
                                parse_data_roots(data_roots, task_names), overrides)
    db_path = default_db_path(db).resolve()
    store = ResultsStore(db_path)
    mark_done_and_resumable(cells, store)
    pending = [cell for cell in cells if cell.status == "pending"]
    print(f"Suite: {len(weights)} checkpoint(s) x {len(task_names)} task(s) x {seeds} seed(s) = {len(cells)} cells; "
          f"{len(cells) - len(pending)} already finished in {db_path}, {len(pending)} to run with "
          f"{share['cpu']:g} CPU and {share['gpu']:g} GPU each", flush=True)
    if pending:
        _run_cells(pending, share, address, db_path, overrides)
    _check_rows(pending, store)
    record = {"db": str(db_path), "tasks": task_names, "weights": list(weights), "seeds": seeds,
              "main_metrics": metrics, **{status: sum(cell.status == status for cell in cells)
                                          for status in ("skipped", "finished", "failed")},
              "cells": [{"task": c.task, "weights": c.weights, "weights_sha256": c.weights_sha256, "seed": c.seed,
                         "config_hash": c.config_hash, "output_dir": str(c.output_dir), "status": c.status,
                         "resumed": c.resume, "run_id": c.run_id, "metrics": c.metrics, "error": c.error}
                        for c in cells]}
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "suite.json", json.dumps(record, indent=2, allow_nan=True) + "\n")
    print(f"Suite: {record['finished']} cells finished, {record['failed']} failed, {record['skipped']} skipped; "
          f"{output / 'suite.json'}", flush=True)
    write_leaderboard(db_path, cells, metrics, output)
    return record


def _run_cells(cells: Sequence[Cell], share: dict, address: str | None, db: Path,
               overrides: Sequence[str]) -> None:
    """Every cell as a Ray task (no retries: a failed run is reported, not repeated), results back in ``cells``."""
    env, cwd = trial_environment(), os.getcwd()
    with ray_session(address) as ray:
        remote = ray.remote(run_transfer).options(num_cpus=share["cpu"], num_gpus=share["gpu"], max_retries=0)
        futures = {}
        for cell in cells:
            command = transfer_command(cell.task, cell.weights, cell.output_dir, seed=cell.seed, db=db,
                                       data_root=cell.data_root, resume=cell.resume, num_gpus=int(share["gpu"]),
                                       overrides=overrides)
            futures[remote.remote(command, cell.task, str(cell.output_dir), share["cpu"], env, cwd)] = cell
        remaining = list(futures)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            cell, result = futures[done[0]], ray.get(done[0])
            cell.metrics, cell.error = result["metrics"], result["error"]
            cell.status = "finished" if result["returncode"] == 0 and not result["error"] else "failed"
            print(f"{cell.task} {cell.weights} seed {cell.seed}: {cell.status}"
                  + ("" if cell.status == "finished" else f" (see {cell.output_dir}/transfer_output.txt)"), flush=True)


def _check_rows(cells: Sequence[Cell], store: ResultsStore) -> None:
    """A cell that ran must now have its finished row: otherwise transfer.py stored another identity (a config
    hash or weights digest the suite did not predict), and the next suite would run the cell again."""
    for cell in cells:
        if cell.status != "finished":
            continue
        rows = store.query(status="finished", task=cell.task, weights_sha256=cell.weights_sha256,
                           config_hash=cell.config_hash, seed=cell.seed)
        if rows:
            cell.run_id = rows[-1].run_id
        else:
            cell.status = "failed"
            cell.error = (f"the run finished but {store.path} has no finished row for this cell (task {cell.task}, "
                          f"weights sha256 {cell.weights_sha256}, config hash {cell.config_hash}, seed {cell.seed})")


def report_columns(metrics: dict[str, list[str]]) -> str:
    """``{"knn": ["knn/k20/top1"]}`` -> ``knn:knn/k20/top1``, tools/report.py's --cols."""
    return ",".join(f"{task}:{name}" for task, names in metrics.items() for name in names)


def write_leaderboard(db: Path, cells: Sequence[Cell], metrics: dict[str, list[str]], output: Path) -> None:
    """leaderboard.md and report.html from the store through tools/report.py: one row per checkpoint, one column
    per task's main metric, the median over seeds (HPT's statistic), and its difference to random init when the
    suite has ``none``. Only runs of the suite's protocol count (its
    tasks, config hashes and seeds); other checkpoints the store holds under the same protocol get rows too."""
    where = [f"{column}={value}" for column in ("task", "config_hash", "seed")
             for value in dict.fromkeys(str(getattr(cell, column)) for cell in cells)]
    common = [sys.executable, str(REPORT_SCRIPT), "--db", str(db), *(f"--where={item}" for item in where),
              "--rows", "weights", "--cols", report_columns(metrics), "--agg", "median"]
    if any(cell.weights == "none" for cell in cells):  # each checkpoint's gain over random init, as the papers print
        common += ["--baseline", SCRATCH]
    for extra in (["--format", "md", "--out", str(output / "leaderboard.md")], ["--html", str(output / "report.html")]):
        result = subprocess.run(common + extra, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"tools/report.py failed (exit {result.returncode}): {result.stderr[-2000:]}")
    print((output / "leaderboard.md").read_text())
    print(f"Leaderboard: {output / 'leaderboard.md'}, {output / 'report.html'}")
