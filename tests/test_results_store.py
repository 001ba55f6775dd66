"""The results store wired into every run: concurrent writers lose nothing, a killed run leaves its row running, a
failed one records its error, a finished one every field, an unwritable store fails the run after its files are
written, and tools/results.py imports earlier run directories once."""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from benchmarks.results.records import RecordedRun, dataset_fields, runs_table, where_filters
from benchmarks.results.store import ResultsStore, ResultsStoreError, RunRecord, config_hash
from benchmarks.tasks import run_config
from converters import save_canonical
from converters.report import SourceSummary, ancestors

from .conftest import REPO
from .test_classification_tasks import FAST, image_folder, transfer  # noqa: F401 (image_folder is a fixture)

PARENT = {"path": "/pretrain/base.pth", "sha256": "ab" * 32, "method": "sl", "parent": None}


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def results_tool(*args):
    return subprocess.run([sys.executable, "tools/results.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


WRITER = textwrap.dedent("""\
    import sys, time
    from pathlib import Path
    from benchmarks.results.store import ResultsStore, RunRecord
    db, worker, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    store = ResultsStore(db)
    while not go.exists():
        time.sleep(0.01)
    for index in range(50):
        store.add(RunRecord(task="knn", weights="none", seed=worker, labels=index, status="finished"))
""")


def test_eight_concurrent_writers_lose_no_row(tmp_path):
    db, go = tmp_path / "results.db", tmp_path / "go"
    ResultsStore(db)  # the schema exists before the writers race for it
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(worker), str(go)], cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, stderr=subprocess.PIPE, text=True)
               for worker in range(8)]
    time.sleep(1.0)  # every writer is waiting for the signal: they append at once
    go.touch()
    for writer in writers:
        assert writer.wait(timeout=120) == 0, writer.stderr.read()
    rows = ResultsStore(db).query()
    assert len(rows) == 400 and len({row.run_id for row in rows}) == 400
    assert sorted((row.seed, row.labels) for row in rows) == [(w, i) for w in range(8) for i in range(50)]
    assert ResultsStore(db).query(seed=3, labels=49)[0].task == "knn"


def test_a_killed_run_leaves_its_row_running(image_folder, tmp_path):  # noqa: F811
    db = tmp_path / "results.db"
    # a finetune far longer than the test: the row is running when the process is killed
    command = [sys.executable, "tools/transfer.py", "--task", "finetune", "--weights", "none", "--data-root",
               str(image_folder), "--output", str(tmp_path / "run"), "--db", str(db), *FAST,
               "FINETUNE.SCHEDULES", "('100000steps',)"]
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "TRANSFERLAB_CACHE": str(tmp_path / "cache")})
    deadline, rows = time.time() + 120, []
    while not rows and time.time() < deadline and run.poll() is None:
        time.sleep(0.1)
        rows = db.exists() and ResultsStore(db).query(status="running")
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    assert rows, f"no running row appeared; the run exited with {run.returncode}: {run.stderr.read()[-2000:]}"
    [row] = ResultsStore(db).query(status=None)
    assert row.status == "running" and row.started_at <= time.time() and row.started_at > deadline - 130
    assert row.ended_at is None and row.wall_time is None and row.metrics == {} and row.error is None
    assert row.task == "finetune" and row.config_hash


def test_a_failing_run_records_its_error(image_folder, tmp_path):  # noqa: F811
    db = tmp_path / "results.db"
    result = transfer("--task", "linear", "--weights", "none", "--data-root", str(image_folder), "--output",
                      str(tmp_path / "run"), "--db", str(db), "--eval-only", *FAST, cache=tmp_path / "cache")
    assert result.returncode == 2 and "--eval-only" in result.stderr
    [row] = ResultsStore(db).query(status=None)
    assert row.status == "failed" and row.error.startswith("ValueError: --eval-only: task linear evaluates")
    assert row.started_at <= row.ended_at and row.wall_time == pytest.approx(row.ended_at - row.started_at)


@pytest.fixture(scope="module")
def seeded_run(image_folder, resnet18, tmp_path_factory):  # noqa: F811
    """kNN with a real (tiny) canonical checkpoint that records a parent, two seeds, into a store of its own."""
    root = tmp_path_factory.mktemp("seeded")
    weights = root / "mocov2_r18.pth"
    save_canonical(weights, {k: v for k, v in resnet18.state_dict().items() if not k.startswith("fc.")},
                   {"method": "mocov2", "parent": PARENT})
    db, output = root / "results.db", root / "knn"
    result = transfer("--task", "knn", "--weights", str(weights), "--data-root", str(image_folder), "--output",
                      str(output), "--db", str(db), "--seeds", "2", *FAST, cache=root / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"db": db, "output": output, "weights": weights}


def test_a_finished_run_fills_every_field(seeded_run, image_folder):  # noqa: F811
    rows = ResultsStore(seeded_run["db"]).query(status=None)
    assert [(row.seed, row.status) for row in rows] == [(0, "finished"), (1, "finished")]  # one row per seed
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    for row in rows:
        run_dir = seeded_run["output"] / f"seed_{row.seed}"
        saved = (run_dir / "config.yaml").read_text()
        assert row.task == "knn" and row.weights == str(seeded_run["weights"])
        assert row.weights_sha256 == sha256(seeded_run["weights"])
        assert row.method == "mocov2" and row.lineage == [{k: v for k, v in PARENT.items() if k != "parent"}]
        assert row.dataset_name == image_folder.name and row.dataset_root == str(image_folder)
        assert len(row.dataset_sha256) == 64 and row.labels is None
        assert row.config == saved and row.config_hash == config_hash(yaml.safe_load(saved))
        assert row.code_version in (head, f"{head}-dirty")
        assert row.metrics == json.loads((run_dir / "metrics.json").read_text())
        assert row.host == socket.gethostname() and row.output_dir == str(run_dir.resolve())
        assert row.started_at < row.ended_at and row.wall_time == pytest.approx(row.ended_at - row.started_at)
        assert row.error is None
    assert rows[0].config_hash == rows[1].config_hash and rows[0].dataset_sha256 == rows[1].dataset_sha256
    table = runs_table(rows)
    assert rows[0].run_id[:8] in table and "knn/k3/top1" in table and "seed_1" in table


def test_import_adds_run_directories_once(seeded_run, tmp_path):
    db = tmp_path / "imported.db"
    first = results_tool("import", seeded_run["output"], "--db", db)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("added as run") == 2 and "2 run(s) added, 0 skipped" in first.stdout
    second = results_tool("--db", db, "import", seeded_run["output"])
    assert second.returncode == 0 and "0 run(s) added, 2 skipped" in second.stdout, second.stderr
    rows = ResultsStore(db).query(status=None)
    transferred = {row.output_dir: row for row in ResultsStore(seeded_run["db"]).query()}
    assert len(rows) == 2
    for row in rows:
        run_dir = seeded_run["output"] / f"seed_{row.seed}"
        assert row.status == "finished" and row.started_at == (run_dir / "config.yaml").stat().st_mtime
        assert row.ended_at == (run_dir / "metrics.json").stat().st_mtime
        same = transferred[row.output_dir]
        for field in ("weights_sha256", "method", "lineage", "dataset_sha256", "config_hash", "config", "metrics"):
            assert getattr(row, field) == getattr(same, field), field
    # the runs tools/transfer.py recorded are the same runs
    again = results_tool("import", seeded_run["output"], "--db", seeded_run["db"])
    assert "0 run(s) added, 2 skipped" in again.stdout, again.stderr
    listed = results_tool("list", "--db", db, "--where", "seed=1")
    assert listed.returncode == 0 and listed.stdout.count("\n") == 2 and "seed_1" in listed.stdout


def test_an_unwritable_store_fails_the_run_after_its_files(image_folder, tmp_path):  # noqa: F811
    db = tmp_path / "a_directory.db"
    db.mkdir()
    output = tmp_path / "run"
    result = transfer("--task", "knn", "--weights", "none", "--data-root", str(image_folder), "--output", str(output),
                      "--db", str(db), *FAST, cache=tmp_path / "cache")
    assert result.returncode == 2 and f"results store {db}" in result.stderr, result.stderr[-2000:]
    assert "tools/results.py --db DB import" in result.stderr and "cannot write this run's row" in result.stdout
    assert json.loads((output / "metrics.json").read_text())["knn"]


def test_a_store_down_at_the_start_gets_the_whole_row_at_the_end(tmp_path):
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's directory should be")
    db = blocker / "results.db"
    run = RecordedRun(db, RunRecord(task="knn", weights="none"))
    run.start()
    blocker.unlink()
    run.finish({"knn": {"k20": {"top1": 50.0}}})
    [row] = ResultsStore(db).query()
    assert row.metrics == {"knn": {"k20": {"top1": 50.0}}} and row.started_at < row.ended_at


def test_store_and_filter_errors_name_the_problem(tmp_path):
    with pytest.raises(ResultsStoreError, match=f"results store {tmp_path}"):
        ResultsStore(tmp_path)
    assert where_filters(["task=knn", "seed=2", "weights_sha256="]) == {"task": "knn", "seed": 2,
                                                                        "weights_sha256": None}
    with pytest.raises(ValueError, match="seed is a number"):
        where_filters(["seed=two"])
    with pytest.raises(ValueError, match="COLUMN=VALUE"):
        where_filters(["task"])


def test_the_image_folder_digest_follows_the_labels_not_the_location(image_folder, tmp_path):  # noqa: F811
    def digest(root):
        cfg, _, _ = run_config("knn", tmp_path / "out", "none", data_root=root)
        return dataset_fields(cfg)
    copy = tmp_path / "copy"
    shutil.copytree(image_folder, copy)
    root, original = digest(image_folder)
    assert root == str(image_folder) and digest(copy)[1] == original
    image = next((copy / "train").glob("*/*.*"))
    other = next(folder for folder in (copy / "train").iterdir() if folder != image.parent)
    image.rename(other / image.name)  # the same pixels under another label
    assert digest(copy)[1] != original


def test_the_lineage_walk_is_the_one_convert_inspect_prints():
    chain = {"path": "/b/hpt.pth", "sha256": "cd" * 32, "method": "hpt", "parent": PARENT}
    assert ancestors(chain) == [{"path": "/b/hpt.pth", "sha256": "cd" * 32, "method": "hpt"},
                                {k: v for k, v in PARENT.items() if k != "parent"}]
    summary = SourceSummary(path="x.pth", source_format="canonical", arch="resnet18", method="hpt", read=[],
                            filled={}, ignored={}, parent=chain)
    assert summary.lineage() == [f"  parent   /b/hpt.pth, method hpt, sha256 {'cd' * 6}",
                                 f"  then     /pretrain/base.pth, method sl, sha256 {'ab' * 6}"]
    assert ancestors(None) == [] and ancestors("/a/path.pth") == []


def test_eval_only_appends_a_row_of_its_own(tiny_detection_config, tiny_coco_root, tmp_path):
    db, output = tmp_path / "results.db", tmp_path / "det"
    common = ["--task", "coco_maskrcnn", "--output", str(output), "--db", str(db)]
    trained = transfer(*common, "--config", str(tiny_detection_config), "--data-root", str(tiny_coco_root),
                       "--weights", "none", cache=tmp_path / "cache")
    assert trained.returncode == 0, trained.stderr[-3000:]
    evaluated = transfer(*common, "--eval-only", cache=tmp_path / "cache")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    rows = ResultsStore(db).query()
    assert len(rows) == 2 and rows[0].config_hash == rows[1].config_hash and rows[0].run_id != rows[1].run_id
    assert rows[1].metrics == json.loads((output / "metrics.json").read_text()) and "bbox" in rows[1].metrics
    assert rows[1].dataset_name == "builtin_coco_train -> builtin_coco_val"
    assert rows[1].dataset_sha256 == hashlib.sha256(
        "".join(sha256(tiny_coco_root / "annotations" / f"instances_{split}.json") + "\n"
                for split in ("train", "val")).encode()).hexdigest()
