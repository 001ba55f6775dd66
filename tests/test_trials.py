"""Seeds as an axis: the summary of several trials, by hand and through tools/transfer.py --seeds."""
import json
import math

import pytest

from benchmarks.engine.trials import summarize_trials, trials_table

from .test_classification_tasks import FAST, image_folder, transfer  # noqa: F401 (image_folder is a fixture)


def test_summary_by_hand():
    summary = summarize_trials({2: {"bbox": {"AP": 30.0, "APs": float("nan")}}, 0: {"bbox": {"AP": 34.0,
                                "APs": float("nan")}}, 1: {"bbox": {"AP": 31.0, "APs": float("nan")}}})
    ap = summary["bbox"]["AP"]
    # seed order 0, 1, 2; sample std of (34, 31, 30): mean 31.667, squares 5.444 + 0.444 + 2.778 = 8.667, / 2 = 4.333
    assert ap["values"] == [34.0, 31.0, 30.0] and ap["median"] == 31.0
    assert ap["mean"] == pytest.approx(95 / 3) and ap["std"] == pytest.approx(math.sqrt(13 / 3))
    assert all(math.isnan(summary["bbox"]["APs"][k]) for k in ("median", "mean", "std"))
    table = trials_table(summary, [0, 1, 2])
    assert "| bbox/AP | 31.00 | 31.67 ± 2.08 | 34.00 | 31.00 | 30.00 |" in table


def test_summary_rejects_mismatched_trials():
    with pytest.raises(ValueError, match="at least 2 trials"):
        summarize_trials({0: {"AP": 1.0}})
    with pytest.raises(ValueError, match="different metrics under bbox"):
        summarize_trials({0: {"bbox": {"AP": 1.0}}, 1: {"bbox": {"AP50": 1.0}}})


def test_transfer_seeds_runs_each_trial_and_writes_the_summary(image_folder, tmp_path):  # noqa: F811
    output = tmp_path / "linear"
    result = transfer("--task", "linear", "--weights", "none", "--data-root", str(image_folder), "--output",
                      str(output), "--seeds", "2", *FAST, cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = [json.loads((output / f"seed_{k}" / "metrics.json").read_text()) for k in (0, 1)]
    assert [f"SEED: {k}" in (output / f"seed_{k}" / "config.yaml").read_text() for k in (0, 1)] == [True, True]
    summary = json.loads((output / "summary.json").read_text())
    top1 = summary["linear"]["top1"]
    assert top1["values"] == [trial["linear"]["top1"] for trial in trials]
    assert top1["mean"] == pytest.approx(sum(top1["values"]) / 2)
    assert "| linear/top1 |" in (output / "summary.md").read_text() and "2 seeds (0, 1)" in result.stdout


def test_seed_options_are_checked(tmp_path):
    for options, message in ((["--seeds", "1"], "at least 2 trials"), (["--seeds", "2", "--seed", "1"], "not both"),
                             (["--seed", "1", "--seed", "1"], "--seed values repeat")):
        result = transfer("--task", "linear", "--weights", "none", "--output", str(tmp_path / "x"), *options,
                          cache=tmp_path / "cache")
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
