"""The results store: one SQLite row per transfer run, appended by every run and read by the reports.

SQLite in WAL mode lets many processes (a Ray suite, several torchrun jobs on one filesystem) append at once:
each write is one short ``BEGIN IMMEDIATE`` transaction, and a writer that finds the database locked waits
(``busy_timeout``) instead of failing. A run inserts its row as ``running`` when it starts and turns it into
``finished`` or ``failed`` in one UPDATE when it ends, so a killed run leaves a ``running`` row with its start
time and never a half-written one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Mapping
from contextlib import closing, contextmanager
from pathlib import Path

DEFAULT_DB = Path("work") / "results.db"
DB_ENV = "TRANSFERLAB_DB"
STATUSES = ("running", "finished", "failed")
BUSY_TIMEOUT_MS = 120_000  # a writer waits this long for another's transaction before the run fails loudly


class ResultsStoreError(OSError):
    """The store cannot be written (a directory, a read-only file, a full disk); an OSError, so a tool reports it as
    one line naming the database."""


def default_db_path(path: str | os.PathLike | None = None) -> Path:
    """``--db PATH`` if given, else ``$TRANSFERLAB_DB``, else ``work/results.db``."""
    return Path(path or os.environ.get(DB_ENV) or DEFAULT_DB)


@dataclasses.dataclass
class RunRecord:
    """One transfer run; ``metrics`` holds the task's metrics.json (``{"bbox": {"AP": ...}, ...}``)."""

    task: str
    weights: str  # the path given to --weights, or "none"
    weights_sha256: str | None = None  # None for "none"
    method: str | None = None  # pretraining method from the canonical checkpoint's metadata
    lineage: list = dataclasses.field(default_factory=list)  # parent checkpoints, nearest first
    dataset_name: str = ""
    dataset_root: str = ""
    dataset_sha256: str | None = None  # of the annotation file(s) the run read
    seed: int | None = None
    labels: int | None = None  # label budget (DATASETS.LABELS) for the classification tasks
    config_hash: str = ""
    config: str = ""  # the full resolved config, YAML
    code_version: str = ""  # transferlab's git sha, or its version
    metrics: dict = dataclasses.field(default_factory=dict)
    wall_time: float | None = None  # seconds
    host: str = ""
    output_dir: str = ""
    started_at: float | None = None  # Unix time
    ended_at: float | None = None
    status: str = "running"
    error: str | None = None
    run_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)


_JSON_FIELDS = ("lineage", "metrics")
_COLUMNS = [field.name for field in dataclasses.fields(RunRecord)]
_SQL_TYPES = {"wall_time": "REAL", "started_at": "REAL", "ended_at": "REAL", "seed": "INTEGER", "labels": "INTEGER"}
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    {", ".join(f"{name} {_SQL_TYPES.get(name, 'TEXT')}" for name in _COLUMNS if name != "run_id")},
    CHECK (status IN {STATUSES})
);
CREATE INDEX IF NOT EXISTS runs_cell ON runs (task, weights_sha256, config_hash, seed);
"""


class ResultsStore:
    """``ResultsStore(path).add(record)`` / ``.query(...)``; a connection per call, so it is safe in any process."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = default_db_path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ResultsStoreError(f"results store {self.path}: cannot create its directory ({error})") from error
        with self._errors(), closing(self._connect()) as db:  # WAL is a property of the file: set once, kept
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _errors(self):
        """sqlite3's operational errors (not a database, read-only, locked past the timeout) as ResultsStoreError
        naming the file."""
        try:
            yield
        except sqlite3.OperationalError as error:
            raise ResultsStoreError(f"results store {self.path}: {error}") from error

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return db

    @contextmanager
    def _transaction(self):
        with self._errors(), closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def add(self, record: RunRecord) -> str:
        """Append ``record`` as a new row (any status); its run id."""
        if record.status not in STATUSES:
            raise ValueError(f"run status {record.status!r}: one of {', '.join(STATUSES)}")
        row = dataclasses.asdict(record)
        for name in _JSON_FIELDS:
            row[name] = json.dumps(row[name], allow_nan=True)
        with self._transaction() as db:
            db.execute(f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                       [row[name] for name in _COLUMNS])
        return record.run_id

    def start(self, record: RunRecord) -> str:
        """Append ``record`` as ``running`` now; finish it with :meth:`finish` or :meth:`fail`."""
        record.status, record.started_at = "running", record.started_at or time.time()
        return self.add(record)

    def finish(self, run_id: str, metrics: Mapping) -> None:
        self._end(run_id, status="finished", metrics=json.dumps(dict(metrics), allow_nan=True), error=None)

    def fail(self, run_id: str, error: str) -> None:
        self._end(run_id, status="failed", error=error)

    def _end(self, run_id: str, **values) -> None:
        with self._transaction() as db:
            started = db.execute("SELECT started_at FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if started is None:
                raise KeyError(f"{self.path}: no run {run_id}")
            ended = time.time()
            values.update(ended_at=ended, wall_time=ended - started[0] if started[0] is not None else None)
            db.execute(f"UPDATE runs SET {', '.join(f'{name} = ?' for name in values)} WHERE run_id = ?",
                       [*values.values(), run_id])

    def query(self, status: str | None = "finished", **equal) -> list[RunRecord]:
        """Rows whose columns equal the given values (``task="voc_fasterrcnn", seed=1``), oldest first;
        ``status=None`` for every status."""
        unknown = set(equal) - set(_COLUMNS)
        if unknown:
            raise KeyError(f"unknown results column(s) {', '.join(sorted(unknown))}; columns: {', '.join(_COLUMNS)}")
        if status is not None:
            equal["status"] = status
        clauses = [f"{name} IS ?" for name in equal]
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(clauses) if clauses else "") + \
            " ORDER BY started_at, rowid"
        with self._errors(), closing(self._connect()) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(sql, list(equal.values())).fetchall()
        return [_record(row) for row in rows]


def _record(row: sqlite3.Row) -> RunRecord:
    values = dict(row)
    for name in _JSON_FIELDS:
        values[name] = json.loads(values[name]) if values[name] else ({} if name == "metrics" else [])
    return RunRecord(**values)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# What identifies a cell of the leaderboard besides the config: the weights (by sha256), the seed and where the
# run writes; they are left out of the config hash.
_UNHASHED_KEYS = (("OUTPUT_DIR",), ("SEED",), ("MODEL", "WEIGHTS"))


def config_hash(config: Mapping) -> str:
    """sha256 of the resolved config without the output directory, the seed and the weights path."""
    plain = json.loads(json.dumps(config, default=str))
    for keys in _UNHASHED_KEYS:
        node = plain
        for key in keys[:-1]:
            node = node.get(key, {})
        node.pop(keys[-1], None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


def flat_metrics(metrics: Mapping, prefix: str = "") -> dict[str, float]:
    """``{"bbox": {"AP": 1.0}}`` -> ``{"bbox/AP": 1.0}``: the names report columns use (``task:bbox/AP``)."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_metrics(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat

