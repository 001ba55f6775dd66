"""tools/compare_runs.py: one metric of several runs, each against the first."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from compare_runs import comparison_line, main  # noqa: E402


def write_run(directory: Path, top1, weights="none") -> Path:
    directory.mkdir()
    (directory / "metrics.json").write_text(json.dumps({"knn": {"k20": {"top1": top1, "top5": 90.0}}}))
    (directory / "config.yaml").write_text(f"MODEL:\n  WEIGHTS: {weights}\n")
    return directory


def test_each_run_is_compared_with_the_first(tmp_path):
    scratch = write_run(tmp_path / "knn_scratch", 29.0)
    pretrained = write_run(tmp_path / "knn_pretrained", 41.333333, weights="work/demo/pretrain/last.pth")
    assert comparison_line([scratch, pretrained], "knn.k20.top1") == (
        "knn.k20.top1: knn_scratch 29.00 (none) | knn_pretrained 41.33 (work/demo/pretrain/last.pth, +12.33 over "
        "knn_scratch)")


def test_bad_metric_paths_and_runs_name_the_file_and_what_is_there(tmp_path):
    run = write_run(tmp_path / "a", 10.0)
    with pytest.raises(KeyError, match=r"a/metrics.json has no knn.k50; keys at that level: k20"):
        comparison_line([run, run], "knn.k50.top1")
    with pytest.raises(ValueError, match="knn.k20 is not a number but dict"):
        comparison_line([run, run], "knn.k20")
    with pytest.raises(FileNotFoundError, match="missing/metrics.json: no such file"):
        comparison_line([run, tmp_path / "missing"], "knn.k20.top1")


def test_cli_errors_exit_2_with_one_line(tmp_path):
    run = write_run(tmp_path / "a", 10.0)
    result = subprocess.run([sys.executable, str(REPO / "tools" / "compare_runs.py"), str(run), str(tmp_path / "b"),
                             "--metric", "knn.k20.top1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "b/metrics.json: no such file" in result.stderr
    with pytest.raises(SystemExit):
        main([str(run), "--metric", "knn.k20.top1"])
