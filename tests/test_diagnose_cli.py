"""Diagnosis outputs: charts for one and two models, tools/diagnose.py end to end, the detection benchmark's hook."""
import importlib.util
import io
import json
import os
import subprocess
import sys
from xml.etree import ElementTree

import pytest
from PIL import Image

from benchmarks.detection import train_net
from benchmarks.detection.config import get_detection_defaults
from benchmarks.diagnosis.charts import DPI, plot_hoiem_pies, plot_hoiem_trend, plot_tide
from benchmarks.diagnosis.hoiem import analyze_false_positives
from benchmarks.diagnosis.inputs import load_ground_truth
from benchmarks.engine import cli

from .conftest import REPO
from .test_diagnosis_hoiem import DETS, GT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG = "http://www.w3.org/2000/svg"


def tide_like(ap50: float, loc: float) -> dict:
    main = {"Cls": 1.5, "Loc": loc, "Both": 0.4, "Dupe": 0.2, "Bkg": 3.0, "Miss": 2.5}
    return {"AP50": ap50, "AP": ap50 / 2, "main": main, "special": {"FalsePos": 9.0, "FalseNeg": 6.5},
            "counts": {}, "per_class": {}}


def assert_charts(paths, stem):
    """A PNG of the drawing's size and a well-formed SVG with shapes and its text as text (the SVG writer is terse,
    so its byte count says little; its content does)."""
    assert [p.name for p in paths] == [f"{stem.name}.png", f"{stem.name}.svg"]
    png, svg = (p.read_bytes() for p in paths)
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    root = ElementTree.fromstring(svg)
    assert root.tag == f"{{{SVG}}}svg"
    shapes = root.findall(f".//{{{SVG}}}path") + root.findall(f".//{{{SVG}}}circle")
    assert len(shapes) > 6 and "".join(root.itertext()).strip()  # more than the colour key
    with Image.open(io.BytesIO(png)) as image:
        assert image.width == round(float(root.get("width").removesuffix("pt")) / 72 * DPI)


@pytest.mark.parametrize("models", [["sup"], ["sup", "moco"]])
def test_charts_for_one_and_two_models(tmp_path, models):
    hoiem = analyze_false_positives(GT, DETS)
    no_fp = analyze_false_positives(GT, DETS[:1])  # panels without false positives must still draw
    hoiem_results = dict(zip(models, [hoiem, no_fp]))
    tide_results = dict(zip(models, [tide_like(60.0, 8.0), tide_like(70.0, 0.0)]))
    assert_charts(plot_tide(tide_results, tmp_path / "tide"), tmp_path / "tide")
    assert_charts(plot_hoiem_trend(hoiem_results, tmp_path / "trend"), tmp_path / "trend")
    assert_charts(plot_hoiem_pies(hoiem_results, tmp_path / "pies"), tmp_path / "pies")
    for model in models:
        assert model in (tmp_path / "trend.svg").read_text()


def test_tide_chart_without_any_error(tmp_path):
    perfect = {"AP50": 100.0, "AP": 100.0, "main": dict.fromkeys(("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"), 0.0),
               "special": {"FalsePos": 0.0, "FalseNeg": float("nan")}, "counts": {}, "per_class": {}}
    assert_charts(plot_tide({"perfect": perfect}, tmp_path / "tide"), tmp_path / "tide")


def run_tool(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "tools/diagnose.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture()
def two_models(tiny_coco_root, tmp_path):
    """``moco`` returns the objects exactly; ``sup`` shifts every box by 60% of its width (IoU 0.25: Loc)."""
    gt_file = tiny_coco_root / "annotations" / "instances_val.json"
    objects = [a for a in json.loads(gt_file.read_text())["annotations"] if not a["iscrowd"]]
    files = {}
    for name, shift in (("sup", 0.6), ("moco", 0.0)):
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
                 "bbox": [a["bbox"][0] + shift * a["bbox"][2], *a["bbox"][1:]], "segmentation": a["segmentation"]}
                for a in objects]
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(dets))
    return gt_file, files, len(objects)


def test_cli_end_to_end(two_models, tmp_path):
    gt_file, files, num_objects = two_models
    out = tmp_path / "diagnosis"
    result = run_tool("--gt", gt_file, "--dets", files["sup"], "--dets", files["moco"], "--names", "sup,moco",
                      "--mode", "bbox", "--mode", "segm", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| sup | bbox | all classes |" in result.stdout and "| moco | segm |" in result.stdout
    for mode in ("bbox", "segm"):
        for chart in ("tide", "hoiem_trend", "hoiem_pies"):
            assert (out / f"{chart}_{mode}.png").read_bytes().startswith(PNG_SIGNATURE)
            assert (out / f"{chart}_{mode}.svg").stat().st_size > 0
    tide = json.loads((out / "tide.json").read_text())
    assert set(tide) == {"sup", "moco"} and set(tide["sup"]) == {"bbox", "segm"}
    assert set(tide["sup"]["bbox"]) >= {"AP50", "AP", "main", "special", "per_class"}
    assert tide["moco"]["bbox"]["AP50"] == pytest.approx(100.0)
    hoiem = json.loads((out / "hoiem.json").read_text())
    moco, sup = hoiem["moco"]["bbox"]["overall"], hoiem["sup"]["bbox"]["overall"]
    assert moco["num_gt"] == num_objects and moco["top_n"]["Cor"] == num_objects and moco["num_fp"] == 0
    assert sup["top_n"]["Loc"] > sup["top_n"]["Cor"]
    assert hoiem["sup"]["segm"]["overall"]["top_n"]["Cor"] == num_objects  # the masks were not shifted
    assert set(hoiem["sup"]["bbox"]["per_group"]) == {"round", "polygon", "spiky"}  # the supercategories
    assert "| sup | bbox | circle |" in (out / "diagnosis.md").read_text()


def test_cli_warns_about_empty_detections_and_counts_objects_in_the_n_column(two_models, tmp_path):
    """A model without detections still gets every output; the tables' N is the number of objects, not 0."""
    gt_file, files, num_objects = two_models
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    out = tmp_path / "diagnosis"
    result = run_tool("--gt", gt_file, "--dets", empty, "--dets", files["moco"], "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.splitlines() == [f"diagnose.py: warning: {empty}: no detections at all: every object "
                                          "counts as missed (AP 0)"]
    assert (out / "hoiem_pies_bbox.png").read_bytes().startswith(PNG_SIGNATURE)
    assert json.loads((out / "tide.json").read_text())["empty"]["bbox"]["AP50"] == 0.0
    summary = (out / "diagnosis.md").read_text()
    assert f"| empty | bbox | all classes | {num_objects} | 0 |" in summary
    assert f"| moco | bbox | all classes | {num_objects} | 0 |" in summary
    per_class = json.loads((out / "hoiem.json").read_text())["empty"]["bbox"]["per_class"]
    name, entry = next(iter(per_class.items()))
    assert f"| empty | bbox | {name} | {entry['num_gt']} | 0 | 0 | 0 | 0 | 0 | – |" in summary


def load_tool():
    spec = importlib.util.spec_from_file_location("diagnose_tool", REPO / "tools" / "diagnose.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case, message", [
    ("missing dets", "detections file not found: {tmp}/missing.json"),
    ("dets not a list", "{tmp}/dict.json: expected a list of COCO result records"),
    ("missing gt", "COCO annotation file not found: {tmp}/nowhere.json"),
    ("names mismatch", "--names gives 2 names for 1 --dets files"),
])
def test_cli_bad_inputs_name_the_file(two_models, tmp_path, capsys, case, message):
    gt_file, files, _ = two_models
    (tmp_path / "dict.json").write_text('{"annotations": []}')
    args = {
        "missing dets": ["--gt", gt_file, "--dets", tmp_path / "missing.json"],
        "dets not a list": ["--gt", gt_file, "--dets", tmp_path / "dict.json"],
        "missing gt": ["--gt", tmp_path / "nowhere.json", "--dets", files["sup"]],
        "names mismatch": ["--gt", gt_file, "--dets", files["sup"], "--names", "a,b"],
    }[case]
    status = cli.run_tool("diagnose.py", load_tool().main, [*map(str, args), "--out", str(tmp_path / "out")])
    assert status == 2
    assert capsys.readouterr().err.startswith(f"diagnose.py: error: {message.format(tmp=tmp_path)}")
    assert not (tmp_path / "out" / "tide.json").exists()


def test_detection_benchmark_writes_the_diagnosis_next_to_metrics(tiny_coco_root, tmp_path):
    """What tools/transfer.py runs after every evaluation, including a model that detects nothing."""
    cfg = get_detection_defaults()
    coco = load_ground_truth(tiny_coco_root / "annotations" / "instances_val.json")
    output = tmp_path / "run"
    output.mkdir()
    train_net.write_diagnosis(cfg, output, coco, [], ("bbox", "segm"))
    hoiem = json.loads((output / "hoiem.json").read_text())
    assert hoiem["run"]["segm"]["overall"]["num_dets"] == 0
    assert set(json.loads((output / "tide.json").read_text())["run"]) == {"bbox", "segm"}
    assert (output / "hoiem_pies_segm.png").read_bytes().startswith(PNG_SIGNATURE)
    assert (output / "diagnosis.md").is_file()


def test_default_model_names_are_file_names_or_run_directories():
    tool = load_tool()
    names = tool.parse_args(["--gt", "gt.json", "--dets", "sup.json", "--dets", "moco.json", "--out", "o"])
    assert tool.model_names(names) == ["sup", "moco"]
    runs = tool.parse_args(["--gt", "gt.json", "--dets", "work/run_sup/coco_instances_results.json",
                            "--dets", "work/run_moco/coco_instances_results.json", "--out", "o"])
    assert tool.model_names(runs) == ["run_sup", "run_moco"]
