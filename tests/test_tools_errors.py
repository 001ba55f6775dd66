"""Every tool ends a user's mistake with one line ``tool.py: error: …`` on stderr and exit status 2, no traceback on
the console (transfer.py keeps it in log.txt); all of these fail before any training or data generation."""
import os
import subprocess
import sys

import pytest

from benchmarks.engine import cli
from benchmarks.engine.config import ConfigError

from .conftest import REPO


def run_tool(tool, *args, cwd=REPO):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=120)


def assert_user_error(result, tool, *fragments):
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a directory")
    return path


def transfer_cases(tmp_path, a_file):
    out = tmp_path / "out"
    return {
        "unknown task": (["--task", "imagenet_magic", "--weights", "none"],
                         ["unknown task 'imagenet_magic'; known tasks: ", "coco_maskrcnn, "]),
        "unknown key": (["--task", "coco_maskrcnn", "--weights", "none", "--output", out, "SOLVER.NOPE", "1"],
                        ["unknown config key 'SOLVER.NOPE'"]),
        "missing data root": (["--task", "coco_maskrcnn", "--weights", "none", "--data-root", tmp_path / "nowhere"],
                              [f"--data-root {tmp_path / 'nowhere'}: no such directory"]),
        "output is a file": (["--task", "coco_maskrcnn", "--weights", "none", "--output", a_file],
                             [f"--output {a_file}: exists and is not a directory"]),
        "option after overrides": (["--task", "coco_maskrcnn", "--weights", "none", "SOLVER.MAX_ITER", "5",
                                    "--output", out], ["--output comes after the KEY VALUE overrides"]),
    }


@pytest.mark.parametrize("case", ["unknown task", "unknown key", "missing data root", "output is a file",
                                  "option after overrides"])
def test_transfer_user_errors(case, tmp_path, a_file):
    args, fragments = transfer_cases(tmp_path, a_file)[case]
    assert_user_error(run_tool("transfer.py", *args), "transfer.py", *fragments)
    assert not (tmp_path / "out").exists()  # refused before the output directory was made


@pytest.mark.parametrize("case", ["missing weights", "bad value"])
def test_transfer_keeps_the_traceback_in_log_txt(case, tmp_path):
    out = tmp_path / "out"
    args, fragment, error = {
        "missing weights": (["--weights", tmp_path / "missing.pth"],
                            f"--weights {tmp_path / 'missing.pth'}: no such file", "FileNotFoundError"),
        # checked before the data is read (or, without --data-root, generated)
        "bad value": (["--weights", "none", "MODEL.RESNETS.NORM", "GN"],
                      "MODEL.RESNETS.NORM 'GN': must be one of 'SyncBN', 'naiveSyncBN', 'BN', 'FrozenBN'",
                      "ConfigError"),
    }[case]
    result = run_tool("transfer.py", "--task", "coco_maskrcnn", "--output", out, *args)
    line = assert_user_error(result, "transfer.py", fragment)
    log = (out / "log.txt").read_text()
    assert "Traceback (most recent call last)" in log and error in log and line in log
    assert "Traceback" not in result.stdout  # the console handler skipped it


@pytest.mark.parametrize("case", ["unknown key", "missing data root", "negative count"])
def test_benchmark_user_errors(case, tmp_path):
    args, fragments = {
        "unknown key": (["--task", "coco_maskrcnn", "MODEL.NOPE", "1"], ["unknown config key 'MODEL.NOPE'"]),
        "missing data root": (["--task", "coco_maskrcnn", "--data-root", tmp_path / "nowhere"],
                              [f"--data-root {tmp_path / 'nowhere'}: no such directory"]),
        "negative count": (["--task", "coco_maskrcnn", "--iters", "-1"], ["--iters -1: must be >= 0"]),
    }[case]
    assert_user_error(run_tool("benchmark.py", *args), "benchmark.py", *fragments)


@pytest.mark.parametrize("case", ["unknown key", "bad value", "unknown method", "hpt without init", "existing run",
                                  "output is a file", "missing data root"])
def test_pretrain_user_errors(case, tmp_path, a_file):
    out = tmp_path / "out"
    config = ["--config", REPO / "configs" / "pretrain" / "demo.yaml", "--output", out]
    if case == "existing run":
        out.mkdir()
        (out / "last.pth").write_bytes(b"an earlier run's checkpoint")
    args, fragments = {
        "unknown key": ([*config, "SOLVER.NOPE", "1"], ["unknown config key 'SOLVER.NOPE'"]),
        "bad value": ([*config, "SOLVER.BASE_LR", "-0.5"], ["SOLVER.BASE_LR -0.5: must be a number > 0"]),
        "unknown method": ([*config, "METHOD", "simclr"], ["METHOD 'simclr' is not one of", "'slmlp'"]),
        "hpt without init": ([*config, "--method", "hpt"], ["METHOD hpt continues pretraining from a base checkpoint: "
                                                            "give it with --init PATH"]),
        "existing run": (config, [f"{out / 'last.pth'} already exists: pass --resume"]),
        "output is a file": ([*config[:-1], a_file], [f"--output {a_file}: exists and is not a directory"]),
        "missing data root": ([*config, "--data-root", tmp_path / "nowhere"],
                              [f"--data-root {tmp_path / 'nowhere'}: no such directory"]),
    }[case]
    assert_user_error(run_tool("pretrain.py", *args), "pretrain.py", *fragments)
    if case == "existing run":
        assert (out / "last.pth").read_bytes() == b"an earlier run's checkpoint"
        assert not (out / "log.txt").exists()  # refused before the log opened
    else:
        assert not out.exists()


def test_diagnose_and_make_data_user_errors(tmp_path, a_file):
    result = run_tool("diagnose.py", "--gt", tmp_path / "gt.json", "--dets", tmp_path / "d.json", "--out", tmp_path)
    assert_user_error(result, "diagnose.py", f"COCO annotation file not found: {tmp_path / 'gt.json'}")
    result = run_tool("make_data.py", "--out", a_file)
    assert_user_error(result, "make_data.py", f"--out {a_file}: exists and is not a directory")


def test_a_bug_keeps_its_traceback_and_status_1(capsys):
    def broken():
        return [][1]  # IndexError: not a user error

    with pytest.raises(IndexError):
        cli.run_tool("tool.py", broken)
    assert capsys.readouterr().err == ""  # nothing printed here: Python prints the traceback, status 1


def test_user_errors_become_one_line(capsys):
    def bad_yaml():
        raise ConfigError("config.yaml: not valid YAML: while parsing\n  in line 3\n\n  column 1")

    assert cli.run_tool("tool.py", bad_yaml) == 2
    assert capsys.readouterr().err == "tool.py: error: config.yaml: not valid YAML: while parsing in line 3 column 1\n"
    assert cli.one_line(KeyError("unknown task 'x'")) == "unknown task 'x'"  # without str(KeyError)'s quotes
