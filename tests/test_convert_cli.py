"""tools/convert.py as a user runs it: formats, inspection, a conversion with its report, and clear errors (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from converters import READERS, WRITERS, load_backbone
from converters.readers import PartialBackboneWarning
from tests.test_converters_core import backbone_of, moco_checkpoint

REPO = Path(__file__).resolve().parents[1]


def run_convert(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "tools/convert.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def moco_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    checkpoint, _ = moco_checkpoint(torchvision.models.resnet18(weights=None), version=2)
    path = tmp_path_factory.mktemp("inputs") / "moco_v2.pth.tar"
    torch.save(checkpoint, path)
    return path


def test_list_formats_names_every_reader_and_writer():
    result = run_convert("--list-formats")
    assert result.returncode == 0, result.stderr
    inputs, outputs = result.stdout.split("output formats")
    assert all(f"  {name} " in inputs for name in READERS)
    assert all(f"  {name} " in outputs for name in WRITERS)
    assert "Detectron2 .pkl" in outputs and "facebookresearch/moco" in inputs


def test_inspect_prints_format_arch_and_counts_and_writes_nothing(moco_file):
    before = set(moco_file.parent.iterdir())
    result = run_convert("--inspect", moco_file)
    assert result.returncode == 0, result.stderr
    assert f"{moco_file}: moco checkpoint, resnet18, method mocov2" in result.stdout
    assert "read     120 backbone tensors" in result.stdout
    assert "key encoder (momentum copy of the query encoder)" in result.stdout
    assert set(moco_file.parent.iterdir()) == before


def test_conversion_prints_the_report_and_writes_the_files(moco_file, tmp_path):
    result = run_convert(moco_file, tmp_path / "moco.pkl", "--to", "detectron2")
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path / 'moco.pkl'}: detectron2" in result.stdout
    assert "wrote    100 tensors" in result.stdout and "dropped  20 backbone tensors" in result.stdout
    assert f"also wrote {tmp_path / 'moco.yaml'}: Detectron2 config overlay" in result.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["moco.pkl", "moco.yaml"]


def test_refuses_to_overwrite_the_input(moco_file):
    before = moco_file.read_bytes()
    result = run_convert(moco_file, moco_file, "--to", "torchvision")
    assert result.returncode == 2
    assert f"{moco_file}: refusing to overwrite the input checkpoint" in result.stderr
    assert moco_file.read_bytes() == before


def test_allow_partial_names_what_it_drops(tmp_path):
    torch.manual_seed(0)
    backbone = backbone_of(torchvision.models.resnet18(weights=None))
    del backbone["layer2.1.conv1.weight"]
    torch.save(backbone, tmp_path / "partial.pth")

    result = run_convert(tmp_path / "partial.pth", tmp_path / "out.safetensors", "--to", "safetensors",
                         "--allow-partial")
    assert result.returncode == 0, result.stderr
    warning = "WARNING: --allow-partial: 1 backbone tensors are MISSING"
    assert warning in result.stdout and warning in result.stderr  # in the report, and alone on stderr
    assert "layer2.1.conv1.weight" in result.stdout.rsplit("WARNING", 1)[1] and "layer2.1.conv1.weight" in result.stderr
    with pytest.warns(PartialBackboneWarning):
        state_dict, _ = load_backbone(tmp_path / "out.safetensors", allow_partial=True)
    assert "layer2.1.conv1.weight" not in state_dict and len(state_dict) == len(backbone)


def test_unknown_format_and_unreadable_input_are_clear_errors(tmp_path):
    result = run_convert(tmp_path / "a.pth", tmp_path / "b.onnx", "--to", "onnx")
    assert result.returncode == 2 and "argument --to: invalid choice" in result.stderr
    assert "onnx" in result.stderr and "detectron2" in result.stderr

    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint at all")
    result = run_convert(tmp_path / "garbage.pth", tmp_path / "out.pkl", "--to", "detectron2")
    assert result.returncode == 2
    assert f"convert.py: error: {tmp_path / 'garbage.pth'}: cannot read checkpoint" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["garbage.pth"]


def test_output_in_a_missing_directory_and_an_existing_config_are_one_line_errors(moco_file, tmp_path):
    result = run_convert(moco_file, tmp_path / "nowhere" / "moco.pkl", "--to", "detectron2")
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"convert.py: error: cannot write {tmp_path / 'nowhere' / 'moco.pkl'}: its directory {tmp_path / 'nowhere'} "
        "does not exist"]
    (tmp_path / "moco.py").write_text("# my edits")
    result = run_convert(moco_file, tmp_path / "moco.pth", "--to", "mmseg")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"convert.py: error: {tmp_path / 'moco.py'} exists") and "--force" in result.stderr
    assert run_convert(moco_file, tmp_path / "moco.pth", "--to", "mmseg", "--force").returncode == 0
    assert (tmp_path / "moco.py").read_text().startswith("# ")
    assert "my edits" not in (tmp_path / "moco.py").read_text()
