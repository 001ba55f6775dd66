"""converters core: safe loading, the canonical checkpoint, the readers, and Detectron2 names.

Synthetic checkpoints are built in the exact layouts real files have (wrapper dicts included) from
a seeded torchvision ResNet; since conversion is pure renaming, reloaded backbones must give
bit-identical stage outputs.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torchvision

from converters import (
    CheckpointError,
    atomic_torch_save,
    check_backbone,
    expected_backbone_keys,
    infer_arch,
    load_backbone,
    load_torch_file,
    save_canonical,
    to_detectron2_names,
    write_detectron2_pkl,
)
from converters.canonical import CANONICAL_META_KEYS
from converters.detectron2 import from_detectron2_names
from converters.io import atomic_link, atomic_write, load_pickle_file

# ---------------------------------------------------------------------------------------------
# helpers


def backbone_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items() if not name.startswith("fc.")}


def stage_outputs(model: torchvision.models.ResNet, images: torch.Tensor) -> list[torch.Tensor]:
    x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
    outputs = [x]
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = stage(x)
        outputs.append(x)
    return outputs


def sgd_state(tensors: list[torch.Tensor]) -> dict:
    """A real SGD state dict with momentum buffers, as training checkpoints carry (over a few tensors, for speed)."""
    params = [tensor.detach().clone().requires_grad_() for tensor in tensors]
    optimizer = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4)
    for param in params:
        param.grad = torch.ones_like(param)
    optimizer.step()
    return optimizer.state_dict()


def moco_checkpoint(model: torch.nn.Module, version: int, arch: str = "resnet18") -> tuple[dict, set[str]]:
    """facebookresearch/moco main_moco.py save_checkpoint layout; returns (checkpoint, keys to be ignored)."""
    width = model.fc.in_features
    if version == 2:
        head = {"fc.0.weight": torch.randn(width, width), "fc.0.bias": torch.randn(width),
                "fc.2.weight": torch.randn(128, width), "fc.2.bias": torch.randn(128)}
    else:
        head = {"fc.weight": torch.randn(128, width), "fc.bias": torch.randn(128)}
    query = {**backbone_of(model), **head}
    state_dict = {f"module.encoder_q.{name}": tensor for name, tensor in query.items()}
    # the key encoder differs from the query encoder, so reading the wrong one would show
    state_dict.update({f"module.encoder_k.{name}": tensor + 1 for name, tensor in query.items()})
    state_dict["module.queue"] = torch.randn(128, 64)
    state_dict["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    checkpoint = {"epoch": 200, "arch": arch, "state_dict": state_dict, "optimizer": sgd_state(list(head.values()))}
    ignored = {key for key in state_dict if not key.startswith("module.encoder_q.") or ".fc." in key}
    return checkpoint, ignored | {"optimizer"}


def layout_checkpoint(layout: str, model: torchvision.models.ResNet) -> tuple[dict, str, set[str]]:
    """``model`` in a third-party ``layout``: (checkpoint, expected source_format, expected ignored keys)."""
    full = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    classifier = [full["fc.weight"], full["fc.bias"]]
    if layout in ("moco_v1", "moco_v2"):
        checkpoint, ignored = moco_checkpoint(model, version=int(layout[-1]))
        return checkpoint, "moco", ignored
    if layout == "torchvision_released":  # torchvision's own .pth: a bare state dict with fc
        return full, "torchvision", {"fc.weight", "fc.bias"}
    if layout == "torchvision_backbone":
        return backbone_of(model), "torchvision", set()
    if layout == "pytorch_examples":  # pytorch/examples imagenet main.py under DataParallel
        checkpoint = {"epoch": 90, "arch": "resnet18",
                      "state_dict": {f"module.{name}": tensor for name, tensor in full.items()},
                      "best_acc1": torch.tensor(69.7), "optimizer": sgd_state(classifier),
                      "scheduler": {"step_size": 30, "gamma": 0.1, "last_epoch": 90}}
        return checkpoint, "torchvision", {"fc.weight", "fc.bias", "best_acc1", "optimizer", "scheduler"}
    if layout == "torchvision_references":  # vision/references/classification/train.py
        checkpoint = {"model": full, "optimizer": sgd_state(classifier), "lr_scheduler": {"last_epoch": 5}, "epoch": 5}
        return checkpoint, "torchvision", {"fc.weight", "fc.bias", "optimizer", "lr_scheduler"}
    raise AssertionError(layout)


def write_layout(layout: str, model: torchvision.models.ResNet, path: Path) -> tuple[str, set[str]]:
    """Write ``model`` in ``layout`` to ``path``; return (expected source_format, expected ignored keys)."""
    if layout == "canonical":
        train_state = {"optimizer": sgd_state([model.fc.weight, model.fc.bias]), "queue": torch.randn(128, 64),
                       "queue_ptr": torch.zeros(1, dtype=torch.long)}
        meta = {"method": "mocov2", "pretrain_data": "imagenet", "pixel_mean": [123.675, 116.28, 103.53],
                "pixel_std": [58.395, 57.12, 57.375], "config": "METHOD: mocov2\n", "parent": None, "step": 5000}
        save_canonical(path, backbone_of(model), meta, train_state=train_state)
        return "canonical", {"train_state"}
    checkpoint, source_format, ignored = layout_checkpoint(layout, model)
    torch.save(checkpoint, path)
    return source_format, ignored


LAYOUTS = ["canonical", "moco_v1", "moco_v2", "torchvision_released", "torchvision_backbone",
           "pytorch_examples", "torchvision_references"]


# ---------------------------------------------------------------------------------------------
# readers: every layout reloads into torchvision with identical outputs


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_loads_into_torchvision_with_identical_stage_outputs(layout, resnet18, tmp_path):
    path = tmp_path / f"{layout}.pth"
    source_format, ignored = write_layout(layout, resnet18, path)

    state_dict, meta = load_backbone(path)

    assert meta["source_format"] == source_format
    assert set(meta["ignored"]) == ignored
    assert meta["arch"] == "resnet18" and meta["num_tensors"] == len(expected_backbone_keys("resnet18"))
    assert meta["filled"] == {}
    assert all(t.device.type == "cpu" and (t.dtype == torch.float32 or name.endswith("num_batches_tracked"))
               for name, t in state_dict.items())
    loaded = torchvision.models.resnet18(weights=None)
    loaded.fc = torch.nn.Identity()
    loaded.load_state_dict(state_dict, strict=True)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = stage_outputs(resnet18, images), stage_outputs(loaded.eval(), images)
    assert all(torch.equal(a, b) for a, b in zip(expected, actual))


def test_moco_meta_and_canonical_meta(resnet18, tmp_path):
    write_layout("moco_v2", resnet18, tmp_path / "moco.pth")
    _, meta = load_backbone(tmp_path / "moco.pth", format="moco", arch="resnet18")
    assert meta["method"] == "mocov2" and meta["epoch"] == 200
    assert meta["pixel_mean"] == [123.675, 116.28, 103.53]
    assert meta["ignored"]["module.queue"] == "queue of negative keys"
    assert meta["ignored"]["module.encoder_k.conv1.weight"].startswith("key encoder")
    assert meta["ignored"]["module.encoder_q.fc.0.weight"].startswith("MLP projection head")

    write_layout("canonical", resnet18, tmp_path / "canonical.pth")
    _, meta = load_backbone(tmp_path / "canonical.pth")
    assert meta["step"] == 5000 and meta["config"] == "METHOD: mocov2\n" and meta["parent"] is None


def test_canonical_file_layout(resnet18, tmp_path):
    path = tmp_path / "canonical.pth"
    meta = {"method": "sl", "parent": tmp_path / "base.pth", "pixel_std": np.array([58.395, 57.12, 57.375])}
    save_canonical(path, backbone_of(resnet18), meta, train_state={"step": 3})
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format", "version", "arch", "state_dict", "meta", "train_state"}
    assert (raw["format"], raw["version"], raw["arch"]) == ("transferlab.canonical", 1, "resnet18")
    assert list(raw["state_dict"]) == expected_backbone_keys("resnet18")
    assert set(CANONICAL_META_KEYS) <= set(raw["meta"])
    assert raw["meta"]["parent"] == str(tmp_path / "base.pth") and raw["meta"]["pixel_mean"] is None
    assert raw["meta"]["pixel_std"] == [58.395, 57.12, 57.375]


def test_save_canonical_rejects_bad_input(resnet18, tmp_path):
    with pytest.raises(ValueError, match="0-255"):
        save_canonical(tmp_path / "a.pth", backbone_of(resnet18), {"pixel_mean": [0.485, 0.456, 0.406]})
    with pytest.raises(CheckpointError, match="fc.weight"):
        save_canonical(tmp_path / "b.pth", resnet18.state_dict(), {})
    with pytest.raises(CheckpointError, match="resnet50"):
        save_canonical(tmp_path / "c.pth", backbone_of(resnet18), {"arch": "resnet50"})
    assert os.listdir(tmp_path) == []


def test_safetensors_and_numpy_pickle_inputs(resnet18, tmp_path):
    backbone = backbone_of(resnet18)
    safetensors.torch.save_file(backbone, tmp_path / "r18.safetensors", metadata={"producer": "test"})
    state_dict, meta = load_backbone(tmp_path / "r18.safetensors")
    assert meta["file_metadata"] == {"producer": "test"}
    assert all(torch.equal(state_dict[name], tensor) for name, tensor in backbone.items())

    with open(tmp_path / "r18.pkl", "wb") as file:  # protocol 2, as Python-2-era .pkl files are
        pickle.dump({"state_dict": {name: t.numpy() for name, t in backbone.items()}}, file, protocol=2)
    state_dict, meta = load_backbone(tmp_path / "r18.pkl")
    assert all(torch.equal(state_dict[name], tensor) for name, tensor in backbone.items())


def test_missing_num_batches_tracked_is_filled_and_reported(resnet18, tmp_path):
    backbone = {name: t for name, t in backbone_of(resnet18).items() if not name.endswith("num_batches_tracked")}
    torch.save(backbone, tmp_path / "old.pth")
    state_dict, meta = load_backbone(tmp_path / "old.pth")
    assert set(meta["filled"]) == {name for name in expected_backbone_keys("resnet18") if name not in backbone}
    assert state_dict["bn1.num_batches_tracked"].item() == 0


# ---------------------------------------------------------------------------------------------
# unmatched tensors and arch mismatches are errors that name the offender


@pytest.mark.parametrize("layout", ["moco_v2", "torchvision_released"])
def test_unexpected_backbone_tensor_is_named(layout, resnet18, tmp_path):
    checkpoint, _, _ = layout_checkpoint(layout, resnet18)
    weights = checkpoint["state_dict"] if layout == "moco_v2" else checkpoint
    prefix = "module.encoder_q." if layout == "moco_v2" else ""
    weights[f"{prefix}layer2.0.extra.weight"] = torch.zeros(3)
    torch.save(checkpoint, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"extra\.pth: .*1 unexpected: layer2\.0\.extra\.weight"):
        load_backbone(tmp_path / "extra.pth")


def test_tensor_no_rule_explains_is_named(resnet18, tmp_path):
    checkpoint, _ = moco_checkpoint(resnet18, version=2)
    checkpoint["state_dict"]["module.predictor.weight"] = torch.zeros(3)
    torch.save(checkpoint, tmp_path / "predictor.pth")
    with pytest.raises(CheckpointError, match=r"module\.predictor\.weight"):
        load_backbone(tmp_path / "predictor.pth")

    torch.save({"state_dict": backbone_of(resnet18), "ema": {"w": torch.zeros(2)}}, tmp_path / "ema.pth")
    with pytest.raises(CheckpointError, match="'ema' \\(1 tensors\\)"):
        load_backbone(tmp_path / "ema.pth")


def test_missing_and_misshapen_backbone_tensors_are_named(resnet18, tmp_path):
    backbone = backbone_of(resnet18)
    del backbone["layer3.1.bn2.running_var"]
    backbone["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(backbone, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError) as error:
        load_backbone(tmp_path / "broken.pth")
    message = str(error.value)
    assert "1 missing: layer3.1.bn2.running_var" in message
    assert "conv1.weight (64, 3, 3, 3) (expected (64, 3, 7, 7))" in message


def test_arch_mismatch_names_both(resnet18, tmp_path):
    torch.save(backbone_of(resnet18), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match="requested arch 'resnet50' but the tensors are a resnet18"):
        load_backbone(tmp_path / "r18.pth", arch="resnet50")
    checkpoint, _ = moco_checkpoint(resnet18, version=2, arch="resnet50")
    torch.save(checkpoint, tmp_path / "moco.pth")
    with pytest.raises(CheckpointError, match="declares arch 'resnet50' but the tensors are a resnet18"):
        load_backbone(tmp_path / "moco.pth")


def test_unrecognised_layout_lists_accepted_formats(tmp_path):
    torch.save({"weights": {"encoder.conv.weight": torch.zeros(1)}}, tmp_path / "odd.pth")
    accepted = "accepted formats: canonical, transferlab_detector, transferlab_segmenter, moco, torchvision"
    with pytest.raises(CheckpointError, match=accepted):
        load_backbone(tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=accepted):
        load_backbone(tmp_path / "odd.pth", format="vissl")


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_infer_arch(arch):
    with torch.device("meta"):
        state_dict = getattr(torchvision.models, arch)(weights=None).state_dict()
    assert infer_arch(state_dict) == arch
    check_backbone({k: v for k, v in state_dict.items() if not k.startswith("fc.")}, arch)


# ---------------------------------------------------------------------------------------------
# safe loading: pickled code never runs


class _CreateFile:
    """Unpickles to ``open(marker, "w")``: creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _MakeDirectory:
    """Unpickles to ``os.mkdir(marker)``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("payload", [_CreateFile, _MakeDirectory])
@pytest.mark.parametrize("suffix", [".pth", ".pkl"])
def test_malicious_pickle_is_refused_and_never_runs(payload, suffix, tmp_path):
    control = tmp_path / "control_marker"
    # the payload is live: what any unpickler that honours __reduce__ would call (no plain pickle.load in this repo)
    function, arguments = payload(control).__reduce__()
    result = function(*arguments)
    if hasattr(result, "close"):
        result.close()
    assert control.exists()

    marker, path = tmp_path / "marker", tmp_path / f"evil{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": {"conv1.weight": torch.zeros(64, 3, 7, 7), "x": payload(marker)}}, path)
    else:
        with open(path, "wb") as file:
            weights = {"stem.conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "x": payload(marker)}
            pickle.dump({"model": weights, "__author__": "transferlab"}, file)
    with pytest.raises(CheckpointError, match=rf"evil\{suffix}: refused to load: .*(open|mkdir).*execute code"):
        load_backbone(path)
    assert not marker.exists()


def test_unreadable_files_name_the_path(resnet18, tmp_path):
    torch.save(backbone_of(resnet18), tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pth: cannot read checkpoint, the file is corrupted"):
        load_torch_file(tmp_path / "truncated.pth")
    data = pickle.dumps({"a": np.zeros(100)}, protocol=4)
    (tmp_path / "truncated.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pkl: cannot read checkpoint"):
        load_pickle_file(tmp_path / "truncated.pkl")
    for name in ("missing.pth", "missing.pkl", "missing.safetensors"):
        with pytest.raises(FileNotFoundError, match=name):
            load_backbone(tmp_path / name)


# ---------------------------------------------------------------------------------------------
# Detectron2


def detectron2_r50_names() -> list[str]:
    """Detectron2's documented R50 backbone: BasicStem (stem.conv1 + its norm) and res2..res5 of
    BottleneckBlocks (3, 4, 6, 3 blocks), conv1..conv3 each with a norm, a shortcut in each first block."""
    norm = ("weight", "bias", "running_mean", "running_var")
    names = ["stem.conv1.weight", *(f"stem.conv1.norm.{p}" for p in norm)]
    for stage, blocks in zip(range(2, 6), (3, 4, 6, 3)):
        for block in range(blocks):
            convs = ["shortcut", "conv1", "conv2", "conv3"] if block == 0 else ["conv1", "conv2", "conv3"]
            for conv in convs:
                names += [f"res{stage}.{block}.{conv}.weight", *(f"res{stage}.{block}.{conv}.norm.{p}" for p in norm)]
    return names


def test_detectron2_names_match_documented_r50_layout():
    names = list(to_detectron2_names(dict.fromkeys(expected_backbone_keys("resnet50"))))
    assert len(names) == len(set(names)) == 265
    assert sorted(names) == sorted(detectron2_r50_names())


def test_names_outside_the_backbone_have_no_detectron2_name():
    with pytest.raises(CheckpointError, match="fc.weight"):
        to_detectron2_names({"conv1.weight": None, "fc.weight": None})
    with pytest.raises(CheckpointError, match=r"roi_heads\.res5\.norm\.weight"):
        from_detectron2_names({"roi_heads.res5.norm.weight": None})


def test_detectron2_pkl_round_trip_is_exact(resnet18, tmp_path):
    backbone = backbone_of(resnet18)
    path = tmp_path / "r18.pkl"
    dropped = write_detectron2_pkl(path, backbone)

    assert set(dropped) == {name for name in backbone if name.endswith("num_batches_tracked")}
    payload = load_pickle_file(path)
    assert set(payload) == {"model", "__author__", "matching_heuristics"}
    assert payload["__author__"] == "transferlab" and payload["matching_heuristics"] is True
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in payload["model"].values())
    restored = from_detectron2_names({name: torch.from_numpy(a) for name, a in payload["model"].items()})
    kept = {name: t for name, t in backbone.items() if name not in dropped}
    assert restored.keys() == kept.keys()
    assert all(torch.equal(restored[name], tensor) for name, tensor in kept.items())
    assert os.listdir(tmp_path) == ["r18.pkl"]


def test_detectron2_writer_refuses_its_input_and_other_suffixes(resnet18, tmp_path):
    path = tmp_path / "weights.pkl"
    path.write_bytes(b"input")
    with pytest.raises(ValueError, match="refusing to overwrite the input"):
        write_detectron2_pkl(path, backbone_of(resnet18), source_path=path)
    assert path.read_bytes() == b"input"
    with pytest.raises(ValueError, match=r"\.pkl"):
        write_detectron2_pkl(tmp_path / "weights.pth", backbone_of(resnet18))


# ---------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_save_leaves_only_the_target(tmp_path):
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "ckpt.pth")
    assert os.listdir(tmp_path) == ["ckpt.pth"]
    assert torch.equal(load_torch_file(tmp_path / "ckpt.pth")["w"], torch.arange(3))


@pytest.mark.parametrize("hard_links", [True, False])
def test_atomic_link_is_a_second_name_that_later_writes_leave_alone(tmp_path, monkeypatch, hard_links):
    if not hard_links:  # a filesystem without hard links: the fallback copies
        def no_link(*args):
            raise OSError("hard links not supported")
        monkeypatch.setattr(os, "link", no_link)
    atomic_write(tmp_path / "last.pth", lambda file: file.write(b"iteration 2"))
    atomic_link(tmp_path / "last.pth", tmp_path / "model_2.pth")
    atomic_write(tmp_path / "last.pth", lambda file: file.write(b"iteration 4"))
    assert (tmp_path / "model_2.pth").read_bytes() == b"iteration 2"
    assert (tmp_path / "last.pth").read_bytes() == b"iteration 4"
    assert sorted(os.listdir(tmp_path)) == ["last.pth", "model_2.pth"]


def test_failed_save_keeps_the_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "ckpt.pth"
    target.write_bytes(b"previous checkpoint")
    with pytest.raises((pickle.PicklingError, AttributeError)):
        atomic_torch_save({"w": torch.zeros(1000), "unpicklable": lambda: None}, target)
    assert target.read_bytes() == b"previous checkpoint"
    assert os.listdir(tmp_path) == ["ckpt.pth"]


def test_write_failing_midway_leaves_nothing(tmp_path):
    def write_half(file):
        file.write(b"partial bytes")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(tmp_path / "ckpt.pth", write_half)
    assert os.listdir(tmp_path) == []
