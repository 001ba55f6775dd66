#!/usr/bin/env python
"""The results store: add earlier run directories to it, and list its rows.

  python tools/results.py import work/transfer/          # every run directory under it, once
  python tools/results.py list --where task=voc_fasterrcnn --where status=finished

import DIR...: a run directory of tools/transfer.py (config.yaml + metrics.json), or any directory holding run
directories at any depth (a --seeds output's seed_<k>/). Each becomes a "finished" row whose start and end times are
the modification times of its config.yaml and metrics.json; its weights and dataset sha256 are taken from the files
as they are now (none when they are gone; a run on the built-in data reads the cached built-in set, generating it if
the cache lacks it). A run directory the store already holds (same output directory and config hash) is skipped.

list: one line per row, oldest first: run id prefix, task, weights, seed, status, main metrics (or the error of a
failed run), output directory. --where COLUMN=VALUE (repeatable) keeps the rows whose column equals the value
(COLUMN= keeps those where it is empty); columns are the fields of benchmarks.results.store.RunRecord.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine.cli import run_tool  # noqa: E402
from benchmarks.results.records import import_runs, runs_table, where_filters  # noqa: E402
from benchmarks.results.store import DB_ENV, DEFAULT_DB, ResultsStore, default_db_path  # noqa: E402


def parse_args(argv=None):
    db_help = f"results store (SQLite; default: ${DB_ENV} if set, else {DEFAULT_DB})"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help=db_help)
    db = argparse.ArgumentParser(add_help=False)  # --db after the command too; SUPPRESS keeps one given before it
    db.add_argument("--db", default=argparse.SUPPRESS, help=db_help)
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("import", parents=[db], help="add earlier run directories as finished rows")
    add.add_argument("dirs", nargs="+", metavar="DIR", help="a run directory, or a directory holding run directories")
    show = commands.add_parser("list", parents=[db], help="print the store's rows")
    show.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                      help="keep rows whose COLUMN equals VALUE (repeatable; e.g. task=knn, seed=1, status=failed)")
    return parser.parse_args(argv)


def main(args) -> int:
    store = ResultsStore(default_db_path(args.db))
    if args.command == "import":
        report = import_runs(store, args.dirs)
        for run_dir, outcome in report:
            print(f"{run_dir}: {outcome}")
        added = sum(outcome.startswith("added") for _, outcome in report)
        print(f"{store.path}: {added} run(s) added, {len(report) - added} skipped")
        return 0
    filters = where_filters(args.where)
    records = store.query(status=filters.pop("status", None), **filters)
    print(runs_table(records) if records else f"{store.path}: no rows" + (" match" if args.where else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool("results.py", main, parse_args()))
