"""What the results store records of a run, read from the frozen config it runs; the row a run keeps up to date; the
import of run directories written before the store existed.

``dataset_sha256`` identifies the annotations a run read, cheaply and independently of where the data lives: sha256
over one line per dataset the config names, in order (DATASETS.TRAIN, then TEST; the one data directory of a
classification task), holding the dataset's digest (the names are ``dataset_name``):

- COCO json (a catalog name or ``ANN.json:IMAGE_DIR``) and BDD100K label json: the sha256 of that file;
- VOC: over the split file ``ImageSets/Main/<split>.txt`` and every ``Annotations/<id>.xml`` it lists;
- Cityscapes: over the split's label PNGs (``gtFine/<split>/<city>/*_gtFine_label*.png``, the ones the reader uses);
- multi-label CSV: over the ``train/val/test.csv`` files present;
- image folders: over the image files' paths only (the folder is the label; reading every image of ImageNet would
  cost minutes per run).

"Over files" means over each file's path relative to the dataset's directory and the sha256 of its content, so a
copied or moved dataset keeps its digest and an edited annotation changes it. The built-in generated set is digested
like any other set in the same layout.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import yaml
from fvcore.common.config import CfgNode

from converters.report import ancestors

from ..engine.cli import one_line
from .store import ResultsStore, ResultsStoreError, RunRecord, config_hash, file_sha256, flat_metrics

REPO = Path(__file__).resolve().parents[2]
RUN_FILES = ("config.yaml", "metrics.json")  # what makes a directory a run directory for import
# The metrics ``tools/results.py list`` shows: each task's headline numbers (box/mask AP, mIoU, top-1, multi-label).
MAIN_METRICS = ("AP", "mIoU", "top1", "mAP", "auroc")

# What a store that cannot be written raises: sqlite3's errors, and OSError (its directory cannot be created).
_STORE_ERRORS = (sqlite3.Error, OSError)

logger = logging.getLogger("transferlab")


def code_version() -> str:
    """``git rev-parse HEAD`` of this transferlab checkout, with ``-dirty`` when ``git status --porcelain`` lists
    anything; the installed package's version when transferlab is not a git checkout."""
    def git(*args) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True,
                              timeout=60).stdout.strip()
    try:
        # A package installed inside some other repository (a venv in a project) is not that repository's code.
        if Path(git("rev-parse", "--show-toplevel")).resolve() == REPO:
            return git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain") else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return importlib.metadata.version("transferlab")
    except importlib.metadata.PackageNotFoundError:
        return f"unknown: {REPO} is neither a git checkout nor an installed transferlab"


def weights_fields(weights: str) -> tuple[str | None, str | None, list]:
    """``(sha256, method, lineage)`` of a backbone checkpoint, the last two from its metadata (read without
    unpickling code); Nones for ``none`` and for a file that no longer exists (an imported run)."""
    if weights in ("", "none") or not Path(weights).is_file():
        return None, None, []
    from converters import load_backbone  # torch: only when there is a checkpoint to read

    _, meta = load_backbone(weights)
    return file_sha256(weights), meta.get("method"), ancestors(meta.get("parent"))


def _files_digest(base: Path, files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for name, path in sorted((os.path.relpath(path, base), path) for path in files):
        digest.update(f"{name}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _names_digest(base: Path, files: Iterable[Path]) -> str:
    return hashlib.sha256("\n".join(sorted(os.path.relpath(path, base) for path in files)).encode()).hexdigest()


def _detection_data(cfg) -> tuple[str, list]:
    from ..data.bdd import BDD_DATASETS, resolve_bdd_dataset
    from ..data.coco import resolve_dataset
    from ..data.voc import resolve_voc_dataset
    from ..detection.datasets import dataset_root, is_voc_dataset

    root = dataset_root(cfg)
    digests = []
    for name in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST):
        if is_voc_dataset(name):
            year_dir, split = resolve_voc_dataset(name, root)
            split_file = year_dir / "ImageSets" / "Main" / f"{split}.txt"
            ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
            digest = _files_digest(year_dir, [split_file, *(year_dir / "Annotations" / f"{i}.xml" for i in ids)])
        elif name in BDD_DATASETS:
            digest = file_sha256(resolve_bdd_dataset(name, root)[1])
        else:
            digest = file_sha256(resolve_dataset(name, root)[1])
        digests.append(digest)
    return str(root or ""), digests


def _segmentation_data(cfg) -> tuple[str, list]:
    from ..segmentation.cityscapes import CityscapesSemSeg, cityscapes_dir
    from ..segmentation.train_net import data_root

    root = data_root(cfg)
    base = cityscapes_dir(root)
    digests = [_files_digest(base, [Path(item["label_file"]) for item in CityscapesSemSeg.from_name(name, root).items])
               for name in (cfg.DATASETS.TRAIN, cfg.DATASETS.TEST)]
    return str(root), digests


def _classification_data(cfg) -> tuple[str, list]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from ..classification.data import SPLITS, data_directory

    directory = data_directory(cfg.DATASETS.ROOT, cfg.DATASETS.BUILTIN)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such data directory")
    if (directory / "train.csv").is_file():
        digest = _files_digest(directory, [directory / f"{split}.csv" for split in SPLITS
                                           if (directory / f"{split}.csv").is_file()])
    else:
        digest = _names_digest(directory, [Path(parent) / name for parent, folders, names in os.walk(directory)
                                           for name in names if name.lower().endswith(IMG_EXTENSIONS)
                                           and not name.startswith(".")])
    return str(directory), [digest]


def dataset_name(cfg) -> str:
    """``TRAIN[+TRAIN…] -> TEST`` of a detection or segmentation config; a classification task's data directory."""
    if "BUILTIN" in cfg.DATASETS:  # the classification config tree
        return Path(cfg.DATASETS.ROOT).name if cfg.DATASETS.ROOT else cfg.DATASETS.BUILTIN
    train, test = cfg.DATASETS.TRAIN, cfg.DATASETS.TEST
    return " -> ".join("+".join([names] if isinstance(names, str) else names) for names in (train, test))


def dataset_fields(cfg, missing_ok: bool = False) -> tuple[str, str | None]:
    """``(dataset_root, dataset_sha256)`` of the data the config reads (see the module docstring);
    ``missing_ok``: ``(DATASETS.ROOT, None)`` when that data is gone (an imported run), instead of the error."""
    from ..classification.config import get_classification_defaults  # the data readers import torch
    from ..segmentation.config import get_segmentation_defaults
    from ..tasks import get_task

    defaults = get_task(cfg.TASK).defaults
    read = (_classification_data if defaults is get_classification_defaults else
            _segmentation_data if defaults is get_segmentation_defaults else _detection_data)
    try:
        root, digests = read(cfg)
    except FileNotFoundError:
        if not missing_ok:
            raise
        return cfg.DATASETS.ROOT, None
    lines = "".join(f"{digest}\n" for digest in digests)
    return root, hashlib.sha256(lines.encode()).hexdigest()


def run_record(cfg, output_dir=None, *, missing_ok: bool = False) -> RunRecord:
    """The row of a run of the frozen config ``cfg`` (as ``benchmarks.tasks.run_config`` returns it), not yet
    started; ``output_dir`` where its files are (default OUTPUT_DIR), ``missing_ok`` for an imported run whose
    weights or data may be gone (their digests are then None)."""
    weights = cfg.MODEL.WEIGHTS or "none"
    weights_sha256, method, lineage = weights_fields(weights)
    root, digest = dataset_fields(cfg, missing_ok)
    text = cfg.dump()
    return RunRecord(
        task=cfg.TASK, weights=weights, weights_sha256=weights_sha256, method=method, lineage=lineage,
        dataset_name=dataset_name(cfg), dataset_root=root, dataset_sha256=digest, seed=cfg.SEED,
        labels=cfg.DATASETS.get("LABELS") or None,  # 0: every label, as the detection tasks
        config_hash=config_hash(yaml.safe_load(text)), config=text, code_version=code_version(),
        host=socket.gethostname(), output_dir=str(Path(output_dir or cfg.OUTPUT_DIR).resolve()))


class RecordedRun:
    """A run's row in the store: ``running`` from :meth:`start`, then ``finished`` or ``failed``.

    A store that cannot be written when the run starts does not stop it (hours of training would be lost to a
    bookkeeping error): the run says so in its log, and its whole row is written at the end. A run whose final row
    cannot be written raises ResultsStoreError, after its files are on disk, naming the database and how to add
    the run later.
    """

    def __init__(self, db, record: RunRecord):
        self.db, self.record, self.started = db, record, False

    def start(self) -> None:
        self.record.started_at = time.time()
        try:
            ResultsStore(self.db).start(self.record)
            self.started = True
        except _STORE_ERRORS as error:
            logger.warning("Results store %s: cannot write this run's row (%s); the run goes on and writes its "
                           "row when it ends", self.db, one_line(error))

    def track(self, run: Callable[[], Mapping]) -> Mapping:
        """``run()`` (a task's run, returning its metrics) with this row ``running`` meanwhile and ``failed`` if it
        raises, Ctrl-C included (only a killed run leaves its row running); the caller finishes the row."""
        self.start()
        try:
            return run()
        except BaseException as error:
            self.fail(error)
            raise

    def finish(self, metrics: Mapping) -> None:
        if not isinstance(metrics, Mapping):
            error = TypeError(f"task {self.record.task} returned {metrics!r} instead of its metrics")
            self.fail(error)
            raise error
        self._end(status="finished", metrics=dict(metrics))

    def fail(self, error: BaseException) -> None:
        """Record ``error``; a store error here is logged, not raised, so that the run's own error is the one
        reported."""
        try:
            message = one_line(error)  # the type's name when the error has no message (KeyboardInterrupt)
            name = type(error).__name__
            self._end(status="failed", error=name if message == name else f"{name}: {message}")
        except ResultsStoreError as store_error:
            logger.error("%s", store_error)

    def _end(self, status: str, metrics: dict | None = None, error: str | None = None) -> None:
        try:
            store = ResultsStore(self.db)
            if self.started:
                if status == "finished":
                    store.finish(self.record.run_id, metrics)
                else:
                    store.fail(self.record.run_id, error)
                return
            record = self.record
            record.status, record.error, record.ended_at = status, error, time.time()
            record.metrics, record.wall_time = metrics or {}, record.ended_at - record.started_at
            store.add(record)
        except _STORE_ERRORS as store_error:
            raise ResultsStoreError(
                f"results store {self.db}: cannot record the {status} run {self.record.output_dir} "
                f"({one_line(store_error)}); its files are on disk: add it later with "
                f"tools/results.py --db DB import {self.record.output_dir}") from store_error


def find_run_dirs(directory) -> list[Path]:
    """The run directories (holding config.yaml and metrics.json) at or under ``directory``, sorted; a run
    directory's own subdirectories are not searched."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory")
    found = []
    for parent, folders, names in os.walk(directory):
        if all(name in names for name in RUN_FILES):
            found.append(Path(parent))
            folders.clear()
        folders.sort()
    return sorted(found)


def imported_record(run_dir: Path) -> RunRecord:
    """The finished row of an earlier run directory: its config.yaml and metrics.json, started at the config's and
    ended at the metrics' modification time."""
    config_file, metrics_file = (run_dir / name for name in RUN_FILES)
    try:
        cfg = CfgNode.load_cfg(config_file.read_text())
        metrics = json.loads(metrics_file.read_text())
    except (yaml.YAMLError, ValueError) as error:
        raise ValueError(f"{run_dir}: unreadable run files: {one_line(error)}") from None
    if not isinstance(metrics, dict):
        raise ValueError(f"{metrics_file}: a JSON object of metrics expected, got {type(metrics).__name__}")
    if not cfg.get("TASK"):
        raise ValueError(f"{config_file}: no TASK key, so not the config of a transfer run")
    record = run_record(cfg, run_dir, missing_ok=True)
    record.started_at, record.ended_at = config_file.stat().st_mtime, metrics_file.stat().st_mtime
    record.status, record.metrics, record.wall_time = "finished", metrics, record.ended_at - record.started_at
    return record


def import_runs(store: ResultsStore, directories) -> list[tuple[Path, str]]:
    """Add every run directory at or under ``directories`` to ``store`` as a finished row, unless the store
    already holds that output directory with the same config hash; ``(run dir, what was done)`` for each."""
    run_dirs = []
    for directory in directories:
        found = find_run_dirs(directory)
        if not found:
            raise FileNotFoundError(f"{directory}: no run directory (with {' and '.join(RUN_FILES)}) in it")
        run_dirs += found
    report = []
    for run_dir in run_dirs:
        record = imported_record(run_dir)
        held = store.query(status=None, output_dir=record.output_dir, config_hash=record.config_hash)
        if held:
            report.append((run_dir, f"skipped: already in the store (run {held[0].run_id[:8]}, {held[0].status})"))
            continue
        store.add(record)
        gone = (["weights"] if record.weights != "none" and record.weights_sha256 is None else []) + \
            (["dataset"] if record.dataset_sha256 is None else [])
        report.append((run_dir, f"added as run {record.run_id[:8]}" +
                       (f" ({' and '.join(gone)} not found: no sha256)" if gone else "")))
    return report


def main_metrics(metrics: Mapping) -> str:
    """A run's headline numbers (MAIN_METRICS), ``bbox/AP 41.20 segm/AP 36.10``."""
    flat = flat_metrics(metrics)
    return " ".join(f"{name} {value:.2f}" for name, value in flat.items() if name.rsplit("/", 1)[-1] in MAIN_METRICS)


def runs_table(records: list[RunRecord]) -> str:
    """One line per row: run id prefix, task, weights, seed, status, headline metrics (or the error), output dir."""
    header = ("run", "task", "weights", "seed", "status", "metrics", "output")
    rows = [(record.run_id[:8], record.task, record.weights, "" if record.seed is None else str(record.seed),
             record.status, (record.error or "") if record.status == "failed" else main_metrics(record.metrics),
             record.output_dir) for record in records]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header, *rows])


_NUMBER_COLUMNS = {"seed": int, "labels": int, "wall_time": float, "started_at": float, "ended_at": float}


def where_filters(items: Iterable[str]) -> dict:
    """``["task=knn", "seed=1"]`` as ``ResultsStore.query`` keywords, numbers as numbers; ``col=`` matches a
    column that is empty (NULL)."""
    filters = {}
    for item in items:
        column, equals, value = item.partition("=")
        if not equals or not column:
            raise ValueError(f"--where {item!r}: give COLUMN=VALUE, e.g. task=knn or seed=1")
        if value == "":
            filters[column] = None
        elif column in _NUMBER_COLUMNS:
            try:
                filters[column] = _NUMBER_COLUMNS[column](value)
            except ValueError:
                raise ValueError(f"--where {item!r}: {column} is a number, not {value!r}") from None
        else:
            filters[column] = value
    return filters
