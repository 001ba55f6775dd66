"""Newell & Deng's utility n_scratch / N - 1 against a hand-computed case, its bounds, and tools/report.py --utility."""
import math

import pytest
from PIL import Image

from benchmarks.results.report import load_runs, utility
from benchmarks.results.utility import budget_task, labels_needed, utility_points
from tests.report_store import make_store
from tools.report import main as report_main

# scratch: 40 at 100 labels, 60 at 1000, 80 at 10000: linear in log10 N, 20 points per decade
SCRATCH = [(100, 40.0), (1000, 60.0), (10000, 80.0)]


def test_labels_needed_interpolates_on_a_log_scale():
    # 50 lies halfway between 40 and 60: log10 n = 2.5, n = 10^2.5 = 316.23
    assert labels_needed(SCRATCH, 50.0) == (pytest.approx(316.227766), "exact")
    assert labels_needed(SCRATCH, 75.0) == (pytest.approx(10 ** 3.75), "exact")
    assert labels_needed(SCRATCH, 60.0) == (pytest.approx(1000.0), "exact")
    assert labels_needed(SCRATCH, 40.0) == (100.0, "exact")
    assert labels_needed(SCRATCH, 85.0) == (None, "lower")  # above the scratch curve: needs more than 10000
    assert labels_needed(SCRATCH, 30.0) == (None, "upper")  # below it: fewer than 100 suffice
    # not monotonic: the smallest budget at which the curve reaches the score
    assert labels_needed([(10, 50.0), (100, 70.0), (1000, 60.0), (10000, 90.0)], 65.0) == \
        (pytest.approx(10 ** 1.75), "exact")
    with pytest.raises(ValueError, match="no label-budget runs"):
        labels_needed([], 1.0)


def test_utility_values_and_bounds():
    curves = {"scratch": dict(SCRATCH), "moco": {100: 50.0, 1000: 70.0, 10000: 85.0, 300: 30.0}}
    points = {p.labels: p for p in utility_points(curves)}
    assert points[100].utility == pytest.approx(10 ** 0.5 - 1) and points[100].text == "2.16"
    assert points[1000].n_scratch == pytest.approx(10 ** 3.5)
    assert points[10000].bound == "lower" and points[10000].utility == 0.0 and points[10000].text == "> 0.00"
    # 30 at 300 labels: scratch beats it already at 100, so utility <= 100/300 - 1 (pretraining hurts)
    assert points[300].bound == "upper" and points[300].utility == pytest.approx(-2 / 3)
    assert points[300].text == "< -0.67" and points[300].n_scratch is None
    with pytest.raises(ValueError, match="no label-budget runs of the scratch model"):
        utility_points({"moco": {100: 1.0}})


def test_utility_from_the_store_and_the_cli(tmp_path, capsys):
    db = make_store(tmp_path / "results.db")
    _, records = load_runs(db)
    analysis = utility(records)
    assert analysis.task == "finetune" and analysis.metric == "finetune/top1"
    assert analysis.curves["scratch"] == {100: 40.0, 1000: 60.0, 10000: 80.0}
    assert [round(p.utility, 4) for p in analysis.points] == [round(math.sqrt(10) - 1, 4)] * 2 + [0.0]
    plot = tmp_path / "curves.png"
    assert report_main(["--db", str(db), "--utility", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "| mocov2/last | 100 | 50.0 | 316 | 2.16 |" in out
    assert "| mocov2/last | 10000 | 85.0 | more than its largest budget | > 0.00 |" in out
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.size == (1000, 400)
    with pytest.raises(ValueError, match="--utility-task linear: no finished linear runs with --labels N"):
        budget_task(records, "linear")
