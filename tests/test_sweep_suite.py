"""tools/sweep.py and tools/suite.py on a local Ray with tiny kNN runs: trials in their own directories, the best
trial chosen by the named metric, suite cells skipped when the store holds their finished row and run again when
their only row is a killed run's "running" one; and the grid, preset and planning logic without Ray.

Rows are written by tools/transfer.py itself (its --db). Where this tree's transfer.py has no --db yet, the
assertions on rows the trials wrote are replaced by the check that the sweep and suite say they wrote none.
"""
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from benchmarks.data import SceneSpec
from benchmarks.data.writers import write_image_folder
from benchmarks.results.store import ResultsStore, RunRecord
from benchmarks.results.suite import mark_done_and_resumable, plan_cells, report_columns, weights_names
from benchmarks.results.sweeps import PRESETS, grid_trials, parse_grid, split_values, sweep_grid
from benchmarks.results.transfer_runs import parse_resources, resolve_metric
from benchmarks.tasks import run_config
from converters import save_canonical

from .conftest import REPO

# ResNet-18 on 32 px images, two k: a kNN run takes seconds.
FAST = ["MODEL.ARCH", "resnet18", "INPUT.CROP_SIZE", "32", "INPUT.RESIZE", "32", "DATALOADER.NUM_WORKERS", "0",
        "DATALOADER.BATCH_SIZE", "64", "KNN.KS", "(3, 10)"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_image_folder(root, "train", 90, SceneSpec(height=32, width=32), seed=1)
    write_image_folder(root, "test", 40, SceneSpec(height=32, width=32), seed=2)
    return root


def tool(name, *args, cache):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFERLAB_CACHE": str(cache)}
    return subprocess.run([sys.executable, f"tools/{name}", *args], cwd=REPO, capture_output=True, text=True,
                          env=env, timeout=600)


def test_grid_values_split_outside_brackets_and_bad_grids_are_refused():
    assert split_values("0.01,0.02") == ["0.01", "0.02"]
    assert split_values("(0.3,),(3.0, 30.0)") == ["(0.3,)", "(3.0, 30.0)"]
    assert split_values("('a,b',),x") == ["('a,b',)", "x"]
    grid = parse_grid(["SOLVER.BASE_LR=0.01,0.02", "SEED=1,2,3"])
    assert grid == {"SOLVER.BASE_LR": ["0.01", "0.02"], "SEED": ["1", "2", "3"]}
    trials = grid_trials(grid)
    assert len(trials) == 6 and trials[0] == {"SOLVER.BASE_LR": "0.01", "SEED": "1"}
    assert trials[1] == {"SOLVER.BASE_LR": "0.01", "SEED": "2"}
    for items, message in ((["SOLVER.BASE_LR"], "give KEY=v1,v2"), (["A=1", "A=2"], "given twice"),
                           (["A=1,1"], "distinct"), (["SEED=a"], "seeds are integers")):
        with pytest.raises(ValueError, match=message):
            parse_grid(items)


def test_presets_follow_the_papers_and_refuse_other_tasks():
    finetune, _, _ = run_config("finetune", "unused", "none")
    grid = sweep_grid("finetune", "hpt_finetune", ["SEED=0,1"], finetune)
    assert grid == {"FINETUNE.LRS": ["(0.01,)", "(0.001,)"], "FINETUNE.SCHEDULES": ["('2500steps',)", "('90epochs',)"],
                    "SEED": ["0", "1"]}
    linear, _, _ = run_config("linear", "unused", "none")
    assert sweep_grid("linear", "linear_lr", [], linear) == {"PROBE.LRS": ["(0.3,)", "(3.0,)", "(30.0,)"]}
    voc, _, _ = run_config("voc_fasterrcnn", "unused", "none")
    grid = sweep_grid("voc_fasterrcnn", "newell_deng", [], voc)
    assert [float(v) for v in grid["SOLVER.BASE_LR"]] == pytest.approx([voc.SOLVER.BASE_LR * f for f in (0.5, 1, 2)])
    assert "supplement" in PRESETS["newell_deng"].source and "Table 4" in PRESETS["hpt_finetune"].source
    with pytest.raises(ValueError, match="--preset hpt_finetune is for task"):
        sweep_grid("knn", "hpt_finetune", [], linear)
    with pytest.raises(ValueError, match="nothing to sweep"):
        sweep_grid("knn", None, [], linear)


def test_resources_and_metric_names():
    assert parse_resources("cpu=2,gpu=1") == {"cpu": 2.0, "gpu": 1.0}
    assert parse_resources(None) == {"cpu": 1.0, "gpu": 0.0}
    with pytest.raises(ValueError, match="cpu=N"):
        parse_resources("tpu=1")
    with pytest.raises(ValueError, match="cpu >= 1"):
        parse_resources("cpu=0")
    available = ["knn/k3/top1", "knn/k3/top5", "knn/k10/top1"]
    assert resolve_metric("k3/top1", available) == "knn/k3/top1"
    with pytest.raises(KeyError, match="matches knn/k3/top1, knn/k10/top1"):
        resolve_metric("top1", available)
    with pytest.raises(KeyError, match="is not among them"):
        resolve_metric("AP", available)


def test_suite_plan_names_cells_and_refuses_a_directory_of_another_config(tmp_path, image_folder):
    assert weights_names(["a/last.pth", "b/last.pth", "c/moco.pth"]) == {
        "a/last.pth": "a-last", "b/last.pth": "b-last", "c/moco.pth": "moco"}
    cells, metrics = plan_cells(["none"], ["knn"], 2, tmp_path, {"knn": str(image_folder)}, FAST)
    assert [c.output_dir for c in cells] == [tmp_path / "knn" / "none" / f"seed_{k}" for k in (0, 1)]
    assert metrics == {"knn": ["knn/k3/top1"]} and report_columns(metrics) == "knn:knn/k3/top1"
    assert cells[0].config_hash == cells[1].config_hash  # the seed is not part of the config hash
    other, _, _ = run_config("knn", cells[0].output_dir, "none", None, str(image_folder), [*FAST, "KNN.KS", "(5,)"], 0)
    cells[0].output_dir.mkdir(parents=True)
    (cells[0].output_dir / "config.yaml").write_text(other.dump())
    with pytest.raises(FileExistsError, match="hold a run of another config"):
        mark_done_and_resumable(cells, ResultsStore(tmp_path / "results.db"))


def test_sweep_runs_each_trial_in_its_directory_and_reports_the_best(tmp_path, image_folder):
    db = tmp_path / "results.db"
    output = tmp_path / "sweep"
    result = tool("sweep.py", "--task", "knn", "--weights", "none", "--data-root", str(image_folder), "--output",
                  str(output), "--db", str(db), "--grid", "SEED=1,2", "--metric", "k3/top1", *FAST,
                  cache=tmp_path / "cache")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((output / "sweep.json").read_text())
    assert record["metric"] == "knn/k3/top1" and record["mode"] == "max"
    assert record["selected_on"].startswith("test (task knn reports one evaluation split only")
    values = []
    for trial, seed in zip(record["trials"], (1, 2)):
        trial_dir = output / f"trial_{trial['trial']:03d}"
        assert trial["output_dir"] == str(trial_dir) and trial["params"] == {"SEED": str(seed)}
        assert yaml.safe_load((trial_dir / "config.yaml").read_text())["SEED"] == seed
        values.append(json.loads((trial_dir / "metrics.json").read_text())["knn"]["k3"]["top1"])
        assert trial["value"] == values[-1] and trial["status"] == "finished"
    assert record["best"] == values.index(max(values))
    assert f"| {record['best']} (best) |" in (output / "sweep.md").read_text()
    rows = ResultsStore(db).query()
    assert sorted(row.output_dir for row in rows) == [str(output / "trial_000"), str(output / "trial_001")]
    assert {row.run_id for row in rows} == {trial["run_id"] for trial in record["trials"]}


def test_suite_skips_finished_cells_and_reruns_a_killed_one(tmp_path, image_folder, resnet18):
    weights = tmp_path / "r18.pth"
    save_canonical(weights, {k: v for k, v in resnet18.state_dict().items() if not k.startswith("fc.")},
                   {"method": "test"})
    db, output = tmp_path / "results.db", tmp_path / "suite"
    cells, _ = plan_cells(["none", str(weights)], ["knn"], 1, output.resolve(), {"knn": str(image_folder)}, FAST)
    store = ResultsStore(db)
    done, killed = cells
    store.add(RunRecord(task="knn", weights="none", seed=0, config_hash=done.config_hash, status="finished",
                        metrics={"knn": {"k3": {"top1": 50.0}}}, run_id="earlier"))
    store.start(RunRecord(task="knn", weights=str(weights), weights_sha256=killed.weights_sha256, seed=0,
                          config_hash=killed.config_hash, run_id="killed"))
    args = ["--weights", "none", str(weights), "--tasks", "knn", "--seeds", "1", "--data-root", str(image_folder),
            "--output", str(output), "--db", str(db), *FAST]
    result = tool("suite.py", *args, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    leaderboard = (output / "leaderboard.md").read_text()
    assert "| scratch |" in leaderboard and "| r18 |" in leaderboard and "knn" in leaderboard
    assert re.search(r"\| r18 \|[^\n]*\([+\-−]\d", leaderboard), leaderboard  # its difference to random init
    assert (output / "report.html").read_text().startswith("<!DOCTYPE html>")
    record = json.loads((output / "suite.json").read_text())
    assert (record["skipped"], record["finished"], record["failed"]) == (1, 1, 0)
    skipped, ran = record["cells"]
    assert skipped["status"] == "skipped" and skipped["run_id"] == "earlier"
    assert not (output / "knn" / "none").exists()  # no run was launched for it
    assert ran["status"] == "finished" and ran["weights_sha256"] == killed.weights_sha256
    assert (output / "knn" / "r18" / "seed_0" / "metrics.json").is_file()
    assert ran["metrics"] == {f"knn/{k}/{m}": v for k, values in json.loads(
        (output / "knn" / "r18" / "seed_0" / "metrics.json").read_text())["knn"].items() for m, v in values.items()}
    rows = store.query(status=None, task="knn", weights_sha256=killed.weights_sha256)
    assert [row.status for row in rows] == ["running", "finished"] and ran["run_id"] == rows[1].run_id
    again = tool("suite.py", *args, cache=tmp_path / "cache")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    record = json.loads((output / "suite.json").read_text())
    assert (record["skipped"], record["finished"], record["failed"]) == (2, 0, 0)
    assert len(store.query(status=None)) == 3  # nothing ran, nothing was added
