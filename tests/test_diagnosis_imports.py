"""The diagnosis entry point runs without torch, and its fast json reader reads what ``json`` reads."""
import json
import subprocess
import sys

import pytest

import benchmarks.data
import converters
from benchmarks.data.coco_json import load_coco_annotations, read_json

from .conftest import REPO
from .test_diagnosis_hoiem import DETS, GT

HEAVY = ("torch", "torchvision", "cv2", "matplotlib")


def test_diagnose_runs_without_importing_torch(tmp_path):
    """tools/diagnose.py end to end in a fresh process: torch's ~2 s of imports are not needed for a diagnosis."""
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    (tmp_path / "dets.json").write_text(json.dumps(DETS))
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("diagnose_tool", {str(REPO / "tools" / "diagnose.py")!r})
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)
tool.main(["--gt", {str(tmp_path / "gt.json")!r}, "--dets", {str(tmp_path / "dets.json")!r},
           "--out", {str(tmp_path / "out")!r}])
print("loaded:", sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "loaded: []"
    assert (tmp_path / "out" / "hoiem_pies_bbox.png").is_file()


def test_package_names_still_import_on_first_use():
    """``converters`` and ``benchmarks.data`` import their modules when a name is first read."""
    assert converters.load_backbone.__module__ == "converters.readers.pipeline"
    assert benchmarks.data.write_coco.__module__ == "benchmarks.data.writers"
    assert benchmarks.data.load_coco_annotations is load_coco_annotations
    assert set(converters.__all__) <= set(dir(converters))
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        converters.nothing  # noqa: B018


@pytest.mark.parametrize("text", [
    '[{"image_id": 1, "score": 0.30000000000000004, "bbox": [1e-7, 2.5, 1E3, -0.0]}]',
    '{"a": "caf\\u00e9 \\ud83d\\ude00", "b": [true, false, null], "c": 12345678901234567}',
    '[NaN, Infinity, -Infinity]',  # not JSON, but Python's json reads it: so must we
])
def test_read_json_reads_what_json_reads(tmp_path, text):
    path = tmp_path / "file.json"
    path.write_text(text)
    assert json.dumps(read_json(path)) == json.dumps(json.loads(text))


def test_an_id_beyond_64_bits_is_an_error_not_a_silent_float(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({**GT, "images": [{**GT["images"][0], "id": 2 ** 70}, *GT["images"][1:]]}))
    with pytest.raises(ValueError, match="image entry #0 .* needs an integer 'id'"):
        load_coco_annotations(path)


def test_read_json_errors_are_jsons(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(json.JSONDecodeError):
        read_json(path)
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        load_coco_annotations(path)
