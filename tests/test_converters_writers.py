"""converters writers and ``convert``: exact round trips, Detectron2/OpenMMLab layouts, configs, the coverage report.

Conversion is renaming, so reading an output back must give bit-identical tensors. Detectron2's
names are checked against an independent list of its R50-C4 and R50-FPN parameters
(tests/fixtures/detectron2_r50_names.txt), including how its suffix matching places them.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import safetensors
import torch
import torchvision
import yaml

from converters import WRITERS, CheckpointError, convert, expected_backbone_keys, load_backbone, save_canonical
from converters.canonical import expected_backbone_shapes
from converters.detectron2 import detectron2_overlay
from converters.io import load_pickle_file
from converters.openmmlab import mmdet_config, mmseg_config
from converters.readers import PartialBackboneWarning
from converters.report import CoverageReport, SourceSummary
from tests.test_converters_core import backbone_of, moco_checkpoint

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SUFFIX = {"canonical": ".pth", "torchvision": ".pth", "safetensors": ".safetensors", "detectron2": ".pkl",
          "mmseg": ".pth", "mmdet": ".pth"}
COMPANION = {"detectron2": ".yaml", "mmseg": ".py", "mmdet": ".py"}
META = {"method": "mocov2", "pretrain_data": "imagenet", "pixel_mean": [123.675, 116.28, 103.53],
        "pixel_std": [58.395, 57.12, 57.375], "config": "METHOD: mocov2\n", "step": 5000}


@pytest.fixture(scope="module")
def canonical18(resnet18, tmp_path_factory) -> Path:
    """One canonical input for the whole module: conversions only read it."""
    path = tmp_path_factory.mktemp("src") / "canonical.pth"
    save_canonical(path, backbone_of(resnet18), META)
    return path


def files_in(directory: Path) -> set[str]:
    return {entry.name for entry in directory.iterdir()}


# ---------------------------------------------------------------------------------------------
# round trips: canonical -> format -> canonical is exact


@pytest.mark.parametrize("to", list(WRITERS))
def test_round_trip_through_each_format_is_exact(to, resnet18, canonical18, tmp_path):
    original = backbone_of(resnet18)
    out = tmp_path / f"r18{SUFFIX[to]}"
    report = convert(canonical18, out, to)

    expected_files = [out, *([out.with_suffix(COMPANION[to])] if to in COMPANION else [])]
    assert list(report.files) == [str(file) for file in expected_files]
    assert files_in(tmp_path) == {file.name for file in expected_files}  # no temporary files left
    assert report.source.source_format == "canonical" and report.source.arch == "resnet18"
    assert sorted(report.source.read) == sorted(original)

    back = tmp_path / "back.pth"
    back_report = convert(out, back, "canonical")
    restored, meta = load_backbone(back)
    assert meta["arch"] == "resnet18" and restored.keys() == original.keys()
    dropped = set(report.dropped)
    assert set(back_report.source.filled) == dropped  # what a format cannot hold comes back as the BN default
    assert all(torch.equal(restored[name], tensor) for name, tensor in original.items() if name not in dropped)
    assert all(restored[name].item() == 0 for name in dropped)


def test_torchvision_safetensors_and_mmseg_layouts(canonical18, tmp_path):
    convert(canonical18, tmp_path / "tv.pth", "torchvision")
    plain = torch.load(tmp_path / "tv.pth", weights_only=True)
    assert list(plain) == expected_backbone_keys("resnet18")
    missing, unexpected = torchvision.models.resnet18(weights=None).load_state_dict(plain, strict=False)
    assert missing == ["fc.weight", "fc.bias"] and unexpected == []

    convert(canonical18, tmp_path / "r18.safetensors", "safetensors")
    with safetensors.safe_open(tmp_path / "r18.safetensors", framework="pt") as file:
        metadata = file.metadata()
    assert metadata["format"] == "pt" and metadata["arch"] == "resnet18" and metadata["method"] == "mocov2"
    assert metadata["pixel_mean"] == "[123.675, 116.28, 103.53]" and metadata["source_format"] == "canonical"

    report = convert(canonical18, tmp_path / "seg.pth", "mmseg")
    checkpoint = torch.load(tmp_path / "seg.pth", weights_only=True)
    assert set(checkpoint) == {"state_dict", "meta"}
    assert list(checkpoint["state_dict"]) == [f"backbone.{name}" for name in expected_backbone_keys("resnet18")]
    assert report.written["layer1.0.bn1.weight"] == "backbone.layer1.0.bn1.weight"
    assert checkpoint["meta"]["arch"] == "resnet18" and checkpoint["meta"]["method"] == "mocov2"
    assert checkpoint["meta"]["converted_from"] == str(canonical18)
    # the config next to it: the basic-stem ResNet of the right depth, initialised from this file
    backbone, model = backbone_call((tmp_path / "seg.py").read_text())
    assert literal(backbone["type"]) == "ResNet" and literal(backbone["style"]) == "pytorch"
    assert literal(backbone["depth"]) == 18
    assert literal(backbone["init_cfg"]) == {"type": "Pretrained", "checkpoint": str(tmp_path / "seg.pth"),
                                             "prefix": "backbone."}
    assert literal(model["pretrained"]) is None
    assert literal(model["decode_head"]) == {"in_channels": 512, "channels": 128}  # mmseg's R-18-D8 widths


# ---------------------------------------------------------------------------------------------
# the coverage report


def test_report_accounts_for_every_source_tensor(resnet18, tmp_path):
    checkpoint, ignored = moco_checkpoint(resnet18, version=2)
    torch.save(checkpoint, tmp_path / "moco.pth")
    report = convert(tmp_path / "moco.pth", tmp_path / "moco.pkl", "detectron2")

    assert set(report.source.ignored) == ignored
    assert report.source.ignored["module.queue"] == "queue of negative keys"
    assert report.source.method == "mocov2" and report.source.source_format == "moco"
    counters = {name for name in expected_backbone_keys("resnet18") if name.endswith("num_batches_tracked")}
    assert set(report.dropped) == counters
    assert set(report.written) == set(expected_backbone_keys("resnet18")) - counters
    assert report.written["layer1.0.bn1.running_var"] == "res2.0.conv1.norm.running_var"
    assert report.written["layer2.0.downsample.1.weight"] == "res3.0.shortcut.norm.weight"
    assert set(report.written.values()) == set(load_pickle_file(tmp_path / "moco.pkl")["model"])

    text = report.format()
    for expected in ("moco.pth: moco checkpoint, resnet18, method mocov2", f"read     {len(report.source.read)}",
                     "key encoder (momentum copy of the query encoder):", "queue of negative keys: module.queue",
                     "MLP projection head (MoCo v2):", "moco.pkl: detectron2", f"wrote    {len(report.written)}",
                     f"dropped  {len(counters)}", "also wrote", "moco.yaml"):
        assert expected in text
    assert "WARNING" not in text
    verbose = report.format(verbose=True)
    assert "layer4.1.bn2.weight -> res5.1.conv2.norm.weight" in verbose
    assert all(key in verbose for key in ignored)


def test_report_refuses_an_incomplete_account():
    source = SourceSummary("in.pth", "torchvision", "resnet18", None, read=["conv1.weight", "bn1.weight"],
                           filled={"bn1.num_batches_tracked": "set to 0"}, ignored={})
    with pytest.raises(CheckpointError, match=r"neither written nor dropped: bn1\.num_batches_tracked, bn1\.weight"):
        CoverageReport(source, "x", {"out": "x"}, written={"conv1.weight": "a"}, dropped={})
    with pytest.raises(CheckpointError, match=r"written twice under the key: a"):
        CoverageReport(source, "x", {"out": "x"}, written={"conv1.weight": "a", "bn1.weight": "a"},
                       dropped={"bn1.num_batches_tracked": "r"})
    with pytest.raises(CheckpointError, match=r"never read: fc\.weight"):
        CoverageReport(source, "x", {"out": "x"}, written={"conv1.weight": "a", "bn1.weight": "b", "fc.weight": "c"},
                       dropped={"bn1.num_batches_tracked": "r"})


# ---------------------------------------------------------------------------------------------
# inputs are never overwritten, outputs are named so they read back


def test_refuses_to_overwrite_the_input_by_path_link_or_companion(canonical18, tmp_path):
    source = tmp_path / "r18.pth"
    source.write_bytes(b"the only copy")  # refused before it is read
    os.link(source, tmp_path / "hardlink.pth")
    os.symlink(source, tmp_path / "symlink.pth")
    (tmp_path / "sub").mkdir()
    for out in (source, tmp_path / "sub" / ".." / "r18.pth", tmp_path / "hardlink.pth", tmp_path / "symlink.pth"):
        with pytest.raises(CheckpointError, match="refusing to overwrite the input checkpoint"):
            convert(source, out, "torchvision")
    assert source.read_bytes() == b"the only copy"
    # the config written next to an mmseg checkpoint would be the input: refused before anything is written
    config_named_input = tmp_path / "weights.py"
    os.link(canonical18, config_named_input)
    with pytest.raises(CheckpointError, match=r"weights\.py: refusing to overwrite the input"):
        convert(config_named_input, tmp_path / "weights.pth", "mmseg")
    assert files_in(tmp_path) == {"r18.pth", "hardlink.pth", "symlink.pth", "sub", "weights.py"}


@pytest.mark.parametrize(("to", "config"), [("detectron2", "r18.yaml"), ("mmseg", "r18.py"), ("mmdet", "r18.py")])
def test_an_existing_config_next_to_the_output_is_replaced_only_with_force(to, config, canonical18, tmp_path):
    out = tmp_path / ("r18.pkl" if to == "detectron2" else "r18.pth")
    (tmp_path / config).write_text("# my edits")
    out.write_bytes(b"an older conversion")  # the checkpoint itself is an output like any other
    with pytest.raises(FileExistsError, match=rf"^{tmp_path / config} exists \(.*config.*, possibly edited .*--force"):
        convert(canonical18, out, to)
    assert (tmp_path / config).read_text() == "# my edits" and out.read_bytes() == b"an older conversion"
    convert(canonical18, out, to, force=True)
    assert (tmp_path / config).read_text() != "# my edits" and load_backbone(out)[1]["arch"] == "resnet18"


def test_an_output_in_a_missing_directory_names_that_directory(canonical18, tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"^cannot write {tmp_path / 'nowhere' / 'r18.pkl'}: its directory "
                                                rf"{tmp_path / 'nowhere'} does not exist$"):
        convert(canonical18, tmp_path / "nowhere" / "r18.pkl", "detectron2")
    assert files_in(tmp_path) == set()


@pytest.mark.parametrize(("to", "name"), [("safetensors", "r18.pth"), ("detectron2", "r18.pth"),
                                          ("mmseg", "r18.py"), ("torchvision", "r18.pkl"), ("canonical", "r18")])
def test_output_names_that_would_not_read_back_are_refused(to, name, canonical18, tmp_path):
    with pytest.raises(CheckpointError, match=rf"{name}: the output must be named \*"):
        convert(canonical18, tmp_path / name, to)
    assert files_in(tmp_path) == set()


def test_unknown_output_format_lists_the_formats(canonical18, tmp_path):
    with pytest.raises(CheckpointError, match="output formats: canonical, torchvision, safetensors, detectron2, mmseg"):
        convert(canonical18, tmp_path / "x.pth", "onnx")


# ---------------------------------------------------------------------------------------------
# --allow-partial


def test_partial_checkpoint_is_an_error_unless_allowed_and_then_loud(resnet18, tmp_path):
    backbone = backbone_of(resnet18)
    del backbone["layer4.1.conv2.weight"], backbone["layer3.0.bn1.running_var"]
    backbone["predictor.weight"] = torch.zeros(3)
    torch.save(backbone, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"partial\.pth: .*2 missing: layer3\.0\.bn1\.running_var"):
        convert(tmp_path / "partial.pth", tmp_path / "out.pkl", "detectron2")
    assert files_in(tmp_path) == {"partial.pth"}

    with pytest.warns(PartialBackboneWarning, match=r"2 backbone tensors missing: layer3\.0\.bn1\.running_var"):
        report = convert(tmp_path / "partial.pth", tmp_path / "out.pkl", "detectron2", allow_partial=True)
    assert set(report.source.missing) == {"layer4.1.conv2.weight", "layer3.0.bn1.running_var"}
    assert set(report.source.discarded) == {"predictor.weight"}
    text = report.format()
    # said after the source summary and again at the very end, with every name
    assert text.count("WARNING: --allow-partial: 2 backbone tensors are MISSING") == 2
    assert text.count("WARNING: --allow-partial: 1 tensors of") == 2 and "were DROPPED" in text
    last_warnings = text[text.index("WARNING", text.index("also wrote")):]
    assert all(name in last_warnings for name in ("layer4.1.conv2.weight", "layer3.0.bn1.running_var",
                                                  "predictor.weight"))
    model = load_pickle_file(tmp_path / "out.pkl")["model"]
    assert "res5.1.conv2.weight" not in model and "res4.0.conv1.norm.running_var" not in model
    assert len(model) == len(report.written)

    with pytest.raises(CheckpointError, match="a canonical checkpoint holds the whole backbone"), \
            pytest.warns(PartialBackboneWarning):
        convert(tmp_path / "partial.pth", tmp_path / "out.pth", "canonical", allow_partial=True)


# ---------------------------------------------------------------------------------------------
# Detectron2: names, suffix matching, overlays


def fixture_names() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    for line in (FIXTURES / "detectron2_r50_names.txt").read_text().splitlines():
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        elif line and not line.startswith("#"):
            current.append(line)
    return sections


def detectron2_suffix_match(model_keys: list[str], checkpoint_keys: list[str]) -> dict[str, str]:
    """Detectron2's matching_heuristics (align_and_update_state_dicts): each model key takes the longest
    checkpoint key it ends with at a '.' boundary; a checkpoint key claimed twice is ambiguous."""
    matches = {}
    for model_key in model_keys:
        candidates = [key for key in checkpoint_keys if model_key == key or model_key.endswith("." + key)]
        if candidates:
            longest = max(map(len, candidates))
            best = [key for key in candidates if len(key) == longest]
            assert len(best) == 1, f"{model_key} matches {best}"
            matches[model_key] = best[0]
    claimed = list(matches.values())
    assert len(claimed) == len(set(claimed)), "a checkpoint key matches several model keys"
    return matches


# Head parameters of the MoCo C4 and SyncBN FPN models: none may take a backbone tensor.
C4_HEADS = ["roi_heads.res5.norm.weight", "roi_heads.res5.norm.bias", "roi_heads.res5.norm.running_mean",
            "roi_heads.res5.norm.running_var", "roi_heads.box_predictor.cls_score.weight",
            "roi_heads.mask_head.deconv.weight", "proposal_generator.rpn_head.conv.weight"]
FPN_HEADS = ["backbone.fpn_lateral2.weight", "backbone.fpn_lateral2.norm.weight", "backbone.fpn_output5.norm.bias",
             "roi_heads.box_head.conv1.weight", "roi_heads.box_head.conv1.norm.weight",
             "roi_heads.mask_head.mask_fcn1.norm.running_mean", "roi_heads.box_predictor.bbox_pred.weight"]


def test_detectron2_pkl_initialises_r50_c4_and_fpn(tmp_path):
    """The one ResNet-50 test: the same .pkl fills both models' backbones 1:1, heads untouched."""
    r50 = {name: torch.zeros(shape) if shape else torch.tensor(7) for name, shape in
           expected_backbone_shapes("resnet50").items()}
    torch.save(r50, tmp_path / "r50.pth")
    report = convert(tmp_path / "r50.pth", tmp_path / "r50.pkl", "detectron2", arch="resnet50")
    payload = load_pickle_file(tmp_path / "r50.pkl")
    assert payload["__author__"] == "transferlab" and payload["matching_heuristics"] is True
    keys = list(payload["model"])
    assert len(keys) == len(report.written) == 265

    names = fixture_names()
    c4 = [("roi_heads." if key.startswith("res5.") else "backbone.") + key for key in keys]
    fpn = ["backbone.bottom_up." + key for key in keys]
    assert sorted(c4) == sorted(names["R50-C4"]) and sorted(fpn) == sorted(names["R50-FPN"])
    for model_keys, heads, placed in ((names["R50-C4"], C4_HEADS, c4), (names["R50-FPN"], FPN_HEADS, fpn)):
        matches = detectron2_suffix_match(model_keys + heads, keys)
        assert matches == dict(zip(placed, keys))  # every backbone key, and nothing else, gets its tensor

    overlay = yaml.safe_load((tmp_path / "r50.yaml").read_text())
    assert overlay["MODEL"]["WEIGHTS"] == str(tmp_path / "r50.pkl")
    assert overlay["MODEL"]["RESNETS"] == {"DEPTH": 50, "STRIDE_IN_1X1": False, "NORM": "SyncBN"}
    assert overlay["MODEL"]["ROI_HEADS"]["NAME"] == "Res5ROIHeadsExtraNorm"
    assert overlay["MODEL"]["BACKBONE"]["FREEZE_AT"] == 0 and overlay["INPUT"]["FORMAT"] == "RGB"
    assert overlay["MODEL"]["PIXEL_MEAN"] == [123.675, 116.28, 103.53]
    assert overlay["MODEL"]["PIXEL_STD"] == [58.395, 57.12, 57.375]
    text = (tmp_path / "r50.yaml").read_text()
    assert "facebookresearch/moco detection/train_net.py" in text and "No object named 'Res5ROIHeadsExtraNorm'" in text
    assert "torchvision's ImageNet statistics" in text  # a plain state dict records no pixel statistics


def test_detectron2_overlay_follows_the_meta():
    meta = {"arch": "resnet18", "pixel_mean": [120.0, 110.0, 100.0], "pixel_std": [60.0, 50.0, 40.0],
            "method": "sl", "source_format": "canonical", "converted_from": "/ckpt/sl.pth"}
    text = detectron2_overlay("/out/sl.pkl", meta)
    overlay = yaml.safe_load(text)
    assert overlay["MODEL"]["PIXEL_MEAN"] == [120.0, 110.0, 100.0]
    assert overlay["MODEL"]["PIXEL_STD"] == [60.0, 50.0, 40.0]
    assert overlay["MODEL"]["RESNETS"]["DEPTH"] == 18 and overlay["MODEL"]["RESNETS"]["RES2_OUT_CHANNELS"] == 64
    assert "ROI_HEADS" not in overlay["MODEL"]  # Detectron2's C4 head is bottleneck-only: FPN for ResNet-18
    assert "from /ckpt/sl.pth" in text and "torchvision's ImageNet statistics" not in text


def resolve_detectron2_config(path: Path) -> dict:
    """Detectron2's _BASE_ chain: the base file first, each child merged over it, relative to the child's directory."""
    config = yaml.safe_load(path.read_text())
    base = config.pop("_BASE_", None)
    if base is None:
        return config

    def merge(into: dict, other: dict) -> dict:
        for key, value in other.items():
            into[key] = merge(into.get(key, {}), value) if isinstance(value, dict) else value
        return into

    return merge(resolve_detectron2_config(path.parent / base), config)


@pytest.mark.parametrize(("name", "c4", "mask", "max_iter", "steps"), [
    ("pascal_voc_R_50_C4_24k_moco.yaml", True, False, 24000, "(18000, 22000)"),
    ("coco_R_50_C4_1x_moco.yaml", True, True, 90000, "(60000, 80000)"),
    ("coco_R_50_C4_2x_moco.yaml", True, True, 180000, "(120000, 160000)"),
    ("coco_R_50_FPN_1x_moco.yaml", False, True, 90000, "(60000, 80000)"),
])
def test_shipped_detectron2_overlays(name, c4, mask, max_iter, steps):
    path = REPO / "configs" / "detectron2" / name
    config = resolve_detectron2_config(path)
    model = config["MODEL"]
    assert model["PIXEL_MEAN"] == [123.675, 116.28, 103.53] and model["PIXEL_STD"] == [58.395, 57.12, 57.375]
    assert config["INPUT"]["FORMAT"] == "RGB"
    assert model["RESNETS"]["STRIDE_IN_1X1"] is False and model["RESNETS"]["NORM"] == "SyncBN"
    assert model["BACKBONE"]["FREEZE_AT"] == 0 and config["TEST"]["PRECISE_BN"]["ENABLED"] is True
    assert model["MASK_ON"] is mask and "tools/convert.py" in model["WEIGHTS"]
    assert config["SOLVER"]["MAX_ITER"] == max_iter and config["SOLVER"]["STEPS"] == steps
    assert config["SOLVER"]["IMS_PER_BATCH"] == 16 and config["SOLVER"]["BASE_LR"] == 0.02
    if c4:
        assert model["ROI_HEADS"]["NAME"] == "Res5ROIHeadsExtraNorm"
        assert "Res5ROIHeadsExtraNorm" in path.read_text() and "detection/train_net.py" in path.read_text()
    else:
        assert model["ROI_HEADS"]["NAME"] == "StandardROIHeads" and model["FPN"]["NORM"] == "SyncBN"
    chain = [path]
    while "_BASE_" in yaml.safe_load(chain[-1].read_text()):
        chain.append(chain[-1].parent / yaml.safe_load(chain[-1].read_text())["_BASE_"])
    assert all("facebookresearch/" in file.read_text() for file in chain)  # every file cites its source


# ---------------------------------------------------------------------------------------------
# OpenMMLab configs


def backbone_call(config: str) -> tuple[dict[str, ast.expr], dict[str, ast.expr]]:
    """The keyword arguments of ``backbone=dict(...)`` and of ``model = dict(...)`` in a config file."""
    for node in ast.parse(config).body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "model":
            parts = {kw.arg: kw.value for kw in node.value.keywords}
            return {kw.arg: kw.value for kw in parts["backbone"].keywords}, parts
    raise AssertionError("no model = dict(...)")


def literal(node: ast.expr) -> object:
    """ast.literal_eval, plus dict(...) calls and names (a variable such as norm_cfg stays its name)."""
    if isinstance(node, ast.Call) and node.func.id == "dict":
        return {kw.arg: literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.Name):
        return node.id
    return ast.literal_eval(node)


def test_mmseg_config_for_resnet50():
    r50 = mmseg_config("/w/r50.pth", {"arch": "resnet50", "source_format": "moco"})
    backbone, model = backbone_call(r50)
    assert literal(backbone["depth"]) == 50 and literal(backbone["type"]) == "ResNet"
    assert literal(backbone["style"]) == "pytorch" and literal(backbone["init_cfg"])["checkpoint"] == "/w/r50.pth"
    assert "decode_head" not in model and "deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py" in r50
    assert literal(model["data_preprocessor"])["mean"] == [123.675, 116.28, 103.53]


def test_mmdet_config_trains_everything_with_syncbn():
    config = mmdet_config("/w/r50.pth", {"arch": "resnet50", "pixel_mean": [1.5, 2.5, 3.5], "pixel_std": [4, 5, 6]})
    backbone, model = backbone_call(config)
    assert literal(backbone["type"]) == "ResNet" and literal(backbone["depth"]) == 50
    assert literal(backbone["frozen_stages"]) == -1 and literal(backbone["norm_eval"]) is False
    assert literal(backbone["init_cfg"])["checkpoint"] == "/w/r50.pth"
    assert literal(model["data_preprocessor"]) == {"mean": [1.5, 2.5, 3.5], "std": [4.0, 5.0, 6.0], "bgr_to_rgb": True}
    assert "ResLayerExtraNorm" in config
    _, model = backbone_call(mmdet_config("/w/r18.pth", {"arch": "resnet18"}))
    assert literal(model["neck"])["in_channels"] == [64, 128, 256, 512]  # the FPN over ResNet-18 widths
