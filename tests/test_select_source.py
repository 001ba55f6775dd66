"""tools/select_source.py: HPT's task-aware source selection on tiny folders written here (2 sources, a labelled
target, 2 classes, 40x40 images), ResNet-18 at 32 px and 2 HPT steps; the ranked table, selection.json, the
stages' lineage, reuse on a re-run, and the one-line errors."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
import torchvision
from PIL import Image

from benchmarks.results.store import ResultsStore
from converters import load_torch_file

from .conftest import REPO

SPEC = importlib.util.spec_from_file_location("select_source_tool", REPO / "tools" / "select_source.py")
select_source = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(select_source)

PRETRAIN = ["SOLVER.IMS_PER_BATCH", "4", "INPUT.CROP_SIZE", "32", "MODEL.MOCO.QUEUE_SIZE", "8",
            "MODEL.MOCO.MLP_DIM", "16", "MODEL.MOCO.BN_SPLITS", "2", "DATALOADER.NUM_WORKERS", "0",
            "SOLVER.AMP.ENABLED", "False", "LOG_PERIOD", "1"]
PROBE = ["--probe-opt", "INPUT.CROP_SIZE", "32", "--probe-opt", "INPUT.RESIZE", "32", "--probe-opt",
         "DATALOADER.NUM_WORKERS", "0", "--probe-opt", "PROBE.STEPS", "20", "--probe-opt", "PROBE.BATCH_SIZE", "8"]


def write_folder(root, splits=("train", "val", "test"), per_split=8, seed=0, shade=0):
    """2 classes (dark / bright squares on noise), ``per_split`` 40x40 images per split."""
    generator = torch.Generator().manual_seed(seed)
    for split in splits:
        for index in range(per_split):
            label = index % 2
            pixels = torch.randint(0, 80, (40, 40, 3), generator=generator, dtype=torch.uint8) + shade
            pixels[10:30, 10:30] = 60 + 150 * label
            directory = root / split / f"class{label}"
            directory.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.numpy()).save(directory / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("select")
    sources = [write_folder(root / "src_dark", ("train",), seed=1), write_folder(root / "src_light", ("train",),
                                                                                 seed=2, shade=100)]
    target = write_folder(root / "target", seed=3)
    torch.manual_seed(0)
    base = root / "base.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), base)
    return {"root": root, "sources": sources, "target": target, "base": base}


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.set_num_threads(1)


def run(*argv):
    return select_source.run_tool(select_source.TOOL, select_source.main, select_source.parse_args(list(argv)))


def arguments(data, output, *extra, sources=None):
    return ["--init", str(data["base"]), "--sources", sources or ",".join(map(str, data["sources"])),
            "--target", str(data["target"]), "--output", str(output), "--steps", "2", *PROBE, *extra, *PRETRAIN]


@pytest.fixture(scope="module")
def selection(data, tmp_path_factory):
    """One selection through the command line, as a user runs it."""
    output = tmp_path_factory.mktemp("run") / "sel"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFERLAB_CACHE": str(data["root"] / "cache")}
    result = subprocess.run([sys.executable, "tools/select_source.py", *arguments(data, output),
                             "--db", str(output.parent / "results.db")], cwd=REPO,
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return output, result.stdout


def test_table_is_ranked_and_the_winner_is_the_last_line(selection):
    output, stdout = selection
    record = json.loads((output / "selection.json").read_text())
    lines = stdout.rstrip("\n").splitlines()
    assert lines[-1] == record["winner"]["checkpoint"]
    header = next(index for index, line in enumerate(lines) if line.startswith("rank"))
    rows = [line.split() for line in lines[header + 1:header + 4]]
    assert sorted(row[1] for row in rows) == ["(base)", "src_dark", "src_light"]
    scores = [float(row[3]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert [row[0] for row in rows if row[1] != "(base)"] == ["1", "2"]
    first = next(row for row in rows if row[0] == "1")
    assert first[1] == record["winner"]["name"] and first[-1] == record["winner"]["checkpoint"]


def test_selection_json_holds_every_candidate_and_the_winner(selection, data):
    output, _ = selection
    record = json.loads((output / "selection.json").read_text())
    candidates = {row["name"]: row for row in record["candidates"]}
    assert sorted(candidates) == ["base", "src_dark", "src_light"]
    assert record["ranking"][0] == record["winner"]["name"]
    best = max((row for row in record["candidates"] if row["name"] != "base"), key=lambda row: row["score"])
    assert record["winner"]["score"] == best["score"]
    assert record["metric"] == "top1" and record["split"] == "val" and record["steps"] == 2
    assert record["base"]["sha256"] == select_source.checkpoint_id(data["base"])
    assert record["target"]["path"] == str(data["target"].resolve())
    for name in ("src_dark", "src_light"):
        row = candidates[name]
        assert row["steps"] == 2 and 0 <= row["score"] <= 100
        assert row["sha256"] == select_source.checkpoint_id(row["checkpoint"])
        assert "METHOD: hpt" in row["pretrain_config"] and "MAX_ITER: 2" in row["pretrain_config"]
        sweep = json.loads((output / name / "probe" / "sweep.json").read_text())
        assert row["score"] == sweep["val"][sweep["chosen"]]["top1"]  # the probe's own val score of its choice
    assert candidates["base"]["checkpoint"] == str(data["base"].resolve())


def test_each_probe_is_a_finished_linear_row_in_the_store(selection):
    output, _ = selection
    record = json.loads((output / "selection.json").read_text())
    rows = ResultsStore(output.parent / "results.db").query(task="linear")
    assert len(rows) == 3 and {row.status for row in rows} == {"finished"}
    assert sorted(row.weights_sha256 for row in rows) == sorted(row["sha256"] for row in record["candidates"])
    assert all(row.metrics["linear"] and row.config_hash for row in rows)


def test_each_stage_starts_from_the_base(selection, data):
    output, _ = selection
    for name in ("src_dark", "src_light"):
        meta = load_torch_file(output / name / "last.pth")["meta"]
        assert meta["method"] == "hpt" and meta["step"] == 2 and meta["arch"] == "resnet18"
        assert meta["parent"]["sha256"] == select_source.checkpoint_id(data["base"])
        assert meta["parent"]["path"] == str(data["base"].resolve())


def test_a_rerun_reuses_stages_and_probes(selection, data, capsys):
    output, _ = selection
    checkpoints = [output / name / "last.pth" for name in ("src_dark", "src_light")]
    before = [path.stat().st_mtime_ns for path in checkpoints]
    scores = [output / name / "probe" / "score.json" for name in ("src_dark", "src_light", "base")]
    scored = [path.stat().st_mtime_ns for path in scores]
    first = json.loads((output / "selection.json").read_text())
    assert run(*arguments(data, output)) == 0
    assert [path.stat().st_mtime_ns for path in checkpoints] == before
    assert [path.stat().st_mtime_ns for path in scores] == scored
    second = json.loads((output / "selection.json").read_text())
    assert all(row["reused"] for row in second["candidates"])
    assert second["winner"] == first["winner"]
    assert capsys.readouterr().out.rstrip("\n").splitlines()[-1] == first["winner"]["checkpoint"]
    # other settings on the same output are refused, not mixed with the finished stages
    assert run(*arguments(data, output, "SOLVER.BASE_LR", "0.01")) == 2
    assert "SOLVER.BASE_LR" in capsys.readouterr().err
    # killed after a stage's last.pth but before its stage.json and before selection.json: resumed at its last step
    (output / "src_dark" / "stage.json").unlink()
    (output / "selection.json").unlink()
    assert run(*arguments(data, output)) == 0
    assert [path.stat().st_mtime_ns for path in checkpoints] == before  # no step run, nothing rewritten
    assert "Resumed from" in (output / "src_dark" / "log.txt").read_text()
    assert json.loads((output / "selection.json").read_text())["winner"] == first["winner"]


@pytest.mark.parametrize("change, message", [
    ({"--init": "{root}/missing.pth"}, "--init {root}/missing.pth: no such file"),
    ({"--sources": "{src0}"}, "give at least 2 candidate sources"),
    ({"--sources": "{src0},{root}/nowhere"}, "--sources {root}/nowhere: no such directory"),
    ({"--target": "{root}/nowhere"}, "--target {root}/nowhere: no such directory"),
    ({"--target": "{src0}"}, "has no val split"),
    ({"--sources": "{src0},{src0}"}, "more than once"),
])
def test_errors_are_one_line_and_exit_2(change, message, data, tmp_path, capsys):
    names = {"root": data["root"], "src0": data["sources"][0]}
    argv = arguments(data, tmp_path / "out")
    for option, value in change.items():
        argv[argv.index(option) + 1] = value.format(**names)
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("select_source.py: error: ") and err.count("\n") == 1, err
    assert message.format(**names) in err, err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_target_without_train_split_is_refused(data, tmp_path, capsys):
    target = write_folder(tmp_path / "valonly", ("val", "test"), per_split=2)
    argv = arguments(data, tmp_path / "out")
    argv[argv.index("--target") + 1] = str(target)
    assert run(*argv) == 2
    assert "has no train split" in capsys.readouterr().err


def test_ranking_is_by_score_with_ties_in_the_given_order():
    rows = [{"name": name, "score": score, "steps": steps, "test": {"top1": score}, "checkpoint": f"{name}.pth"}
            for name, score, steps in (("a", 50.0, 2), ("b", 75.0, 2), ("c", 50.0, 2), ("base", 60.0, 0))]
    order = select_source.ranked(rows)
    assert [row["name"] for row in order] == ["b", "base", "a", "c"]
    lines = select_source.table(order, "top1", 2, "T")
    body = [line.split() for line in lines[3:]]
    assert [(row[0], row[1]) for row in body] == [("1", "b"), ("-", "(base)"), ("2", "a"), ("3", "c")]


@pytest.mark.parametrize("extra, message", [
    (["MODEL.ARCH", "resnet50"], "holds a resnet18"),
    (["MODEL.INIT", "x.pth"], "give it with --init"),
    (["METHOD", "mocov2"], "METHOD mocov2: source selection runs HPT stages"),
    (["--probe-opt", "PROBE.PROTOCOL", "fast"], "PROBE.PROTOCOL 'fast'"),
    (["MODEL.MOCO.QUEUE_SIZE", "6"], "must be a multiple of SOLVER.IMS_PER_BATCH"),
])
def test_bad_settings_are_refused_before_any_work(extra, message, data, tmp_path, capsys):
    argv = arguments(data, tmp_path / "out")
    argv = [*argv, *extra]
    assert run(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
