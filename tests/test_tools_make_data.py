"""tools/make_data.py runs from a checkout like the other tools: from any directory, without PYTHONPATH."""
import json
import os
import subprocess
import sys

from .conftest import REPO

# ``python tools/make_data.py`` in an environment where the project is not installed: this venv's editable install
# would otherwise make the packages importable from anywhere and hide a tool that cannot find them.
AS_A_CHECKOUT = f"""
import runpy, sys
sys.meta_path = [finder for finder in sys.meta_path if "__editable__" not in getattr(finder, "__module__", "")]
sys.path = [entry for entry in sys.path if entry not in ("", {str(REPO)!r})]
sys.argv = sys.argv[1:]  # [the tool, its arguments], as `python tools/make_data.py ...` has them
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_make_data_runs_from_another_directory_without_pythonpath(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    out = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-c", AS_A_CHECKOUT, str(REPO / "tools" / "make_data.py"), "--out", "data",
         "--train", "2", "--val", "1", "--pool", "2", "--classification-train", "6", "--classification-val", "6",
         "--classification-test", "2", "--multilabel-train", "2", "--multilabel-val", "1", "--multilabel-test", "1",
         "--domain-train", "2", "--domain-val", "1", "--domain-test", "1", "--image-size", "32",
         "--small-image-size", "32"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    train = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert [image["file_name"] for image in train["images"]] == ["000000000001.jpg", "000000000002.jpg"]
    assert all((out / "train" / image["file_name"]).is_file() for image in train["images"])
    assert len(json.loads((out / "annotations" / "instances_val.json").read_text())["images"]) == 1
    assert len(list((out / "pool").glob("*.jpg"))) == 2
    for split in ("train", "val"):
        assert len(list((out / "classification" / split).glob("*/*.jpg"))) == 6
    for domain in ("domain_a", "domain_b"):
        assert len(list((out / domain / "train").glob("*/*.jpg"))) == 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["detection_spec"]["height"] == 32 and manifest["small_image_spec"]["width"] == 32
    assert manifest["domain_a_spec"]["height"] == manifest["domain_b_spec"]["width"] == 32
