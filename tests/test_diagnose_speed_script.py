"""benchmarks/perf/diagnose_speed.py's tidecv process writes tidecv's numbers, whose dAPs agree with our TIDE's (the
check the script makes; its AP is tidecv's, see benchmarks.diagnosis.tide)."""
import json
import os
import subprocess
import sys

import pytest

from benchmarks.diagnosis.tide import evaluate_tide
from benchmarks.perf.tide_speed import synthetic_result_set

from .conftest import REPO


def test_tidecv_process_numbers_match_ours(tmp_path):
    pytest.importorskip("tidecv")
    gt, dets = synthetic_result_set(12, num_classes=5, dets_per_image=20, seed=3)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    env = {**os.environ, "TIDE_PATH": str(tmp_path / "tide_data"), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    result = subprocess.run([sys.executable, "benchmarks/perf/diagnose_speed.py", "--tidecv-child",
                             str(tmp_path / "gt.json"), str(tmp_path / "dets.json"), str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Main Errors" in result.stdout and list((tmp_path / "out").glob("*.png"))  # summarize() and plot()
    theirs = json.loads((tmp_path / "out" / "tidecv.json").read_text())
    ours = evaluate_tide(gt, dets)
    assert 0 < theirs["AP50"] <= 100 and 0 < theirs["AP"] <= theirs["AP50"]
    for group in ("main", "special"):
        for error, value in ours[group].items():
            assert theirs[group][error] == pytest.approx(value, abs=0.01), (group, error)
