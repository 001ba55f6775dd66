"""HPT: a MoCo v2 stage from a base checkpoint of any format; fresh key encoder, queue and projector; BN-only mode;
parent records that nest. A few training steps on random 32x32 images, in the test's own loop."""
import hashlib
import logging
import re
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from benchmarks.engine.config import ConfigError, load_config
from converters import load_backbone, save_canonical
from converters.report import SourceSummary
from pretrain.config import get_defaults
from pretrain.hpt import HPT, build_hpt, parent_record
from pretrain.moco import build_mocov2
from pretrain.train import train

REPO = Path(__file__).resolve().parents[1]
HPT_CONFIG = REPO / "configs" / "pretrain" / "hpt_r50.yaml"
# One BN group (2 images of 32x32 leave layer4 at 1x1: a group of one image would have a single value per channel).
TINY = ["MODEL.MOCO.QUEUE_SIZE", 8, "MODEL.MOCO.MLP_DIM", 32, "MODEL.MOCO.BN_SPLITS", 1]


def hpt_config(init="", **overrides):
    pairs = [*TINY, "MODEL.INIT", str(init)]
    for key, value in overrides.items():
        pairs += [key.replace("__", "."), value]
    return load_config(get_defaults(), HPT_CONFIG, pairs)


def train_steps(model: nn.Module, steps: int = 2, images: int = 2, size: int = 32) -> None:
    """What the pretraining loop does: SGD (momentum 0.9, weight decay 1e-4) over the parameters that train."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.03, momentum=0.9,
                                weight_decay=1e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        im_q, im_k = (torch.randn(images, 3, size, size, generator=generator) for _ in range(2))
        loss = model(im_q, im_k)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def torchvision_init(path: Path, arch: str = "resnet18", seed: int = 0) -> dict:
    """A seeded torchvision ImageNet-layout state dict (with its 1000-class fc) saved to ``path``."""
    torch.manual_seed(seed)
    state_dict = getattr(torchvision.models, arch)(weights=None).state_dict()
    torch.save(state_dict, path)
    return state_dict


def cloned(module: nn.Module) -> dict:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def test_bn_only_from_a_torchvision_resnet50_keeps_all_53_convolutions_bit_identical(tmp_path):
    init = tmp_path / "resnet50.pth"
    torchvision_init(init, "resnet50")
    torch.manual_seed(1)
    model = build_hpt(hpt_config(init, HPT__TRAIN_BN_ONLY=True))
    before = cloned(model.encoder_q)
    convs = {name: module for name, module in model.encoder_q.named_modules() if isinstance(module, nn.Conv2d)}
    bns = {name: module for name, module in model.encoder_q.named_modules() if isinstance(module, nn.BatchNorm2d)}
    assert len(convs) == 53 and len(bns) == 53
    trainable = {name for name, param in model.encoder_q.named_parameters() if param.requires_grad}
    assert trainable == ({f"{name}.{p}" for name in bns for p in ("weight", "bias")}
                         | {name for name in before if name.startswith("fc.")})  # BN and the projector

    train_steps(model)

    for name, conv in convs.items():
        assert not conv.weight.requires_grad, name
        assert torch.equal(conv.weight, before[f"{name}.weight"]), name
        assert torch.equal(model.encoder_k.get_submodule(name).weight, conv.weight), name  # no rounding drift
    for name in bns:
        for tensor in ("weight", "bias", "running_mean", "running_var"):
            key = f"{name}.{tensor}"
            assert not torch.equal(model.encoder_q.state_dict()[key], before[key]), key
    for name in (name for name in before if name.startswith("fc.")):
        assert not torch.equal(model.encoder_q.state_dict()[name], before[name]), name  # the projector trains


def test_without_bn_only_the_convolutions_train(tmp_path):
    init = tmp_path / "resnet18.pth"
    torchvision_init(init)
    model = build_hpt(hpt_config(init, MODEL__ARCH="resnet18"))
    assert all(param.requires_grad for param in model.encoder_q.parameters())
    before = cloned(model.encoder_q)
    train_steps(model, steps=1)
    convs = [name for name, module in model.encoder_q.named_modules() if isinstance(module, nn.Conv2d)]
    assert len(convs) == 20
    for name in convs:
        assert not torch.equal(model.encoder_q.get_submodule(name).weight, before[f"{name}.weight"]), name


def moco_source(tmp_path: Path, layout: str):
    """A MoCo v2 resnet18 (the projector of ``hpt_config``'s shape) saved as ``layout``; its projector is all 0.5,
    its key encoder differs from its query encoder and its queue is all 1, so none can pass for a fresh one."""
    torch.manual_seed(2)
    source = build_mocov2(hpt_config(MODEL__ARCH="resnet18"))
    with torch.no_grad():
        for param in source.encoder_q.fc.parameters():
            param.fill_(0.5)
        for param in source.encoder_k.parameters():
            param.add_(1.0)
        source.queue.fill_(1.0)
    path = tmp_path / f"{layout}.pth"
    if layout == "moco":  # facebookresearch/moco main_moco.py
        torch.save({"epoch": 800, "arch": "resnet18",
                    "state_dict": {f"module.{name}": tensor for name, tensor in source.state_dict().items()}}, path)
    else:  # ours, with the training state a resumable run writes
        save_canonical(path, source.backbone_state_dict(), {"method": "mocov2"},
                       {"model": source.state_dict(), "iteration": 10})
    return path, source


@pytest.mark.parametrize("layout", ["torchvision", "moco", "canonical"])
def test_the_backbone_comes_from_the_init_and_key_encoder_queue_and_projector_restart(tmp_path, layout):
    if layout == "torchvision":
        path = tmp_path / "torchvision.pth"
        init_backbone = {name: t for name, t in torchvision_init(path).items() if not name.startswith("fc.")}
        init_model = None
    else:
        path, init_model = moco_source(tmp_path, layout)
        init_backbone = init_model.backbone_state_dict()
    model = build_hpt(hpt_config(path, MODEL__ARCH="resnet18"))
    assert isinstance(model, HPT)

    query = model.encoder_q.state_dict()
    assert {name for name in query if not name.startswith("fc.")} == init_backbone.keys()
    for name, tensor in init_backbone.items():
        assert torch.equal(query[name], tensor), name
    key = model.encoder_k.state_dict()
    assert key.keys() == query.keys()
    for name, tensor in query.items():
        assert torch.equal(key[name], tensor), name  # copied from the loaded query encoder, projector included
    assert all(not param.requires_grad for param in model.encoder_k.parameters())
    torch.testing.assert_close(model.queue.norm(dim=0), torch.ones(model.queue.shape[1]))
    assert int(model.queue_ptr) == 0
    if init_model is not None:  # the file holds a projector, a key encoder and a queue: none of them is taken
        for name, tensor in init_model.encoder_q.fc.state_dict().items():
            assert not torch.equal(model.encoder_q.fc.state_dict()[name], tensor), name
        assert not torch.equal(model.encoder_k.conv1.weight, init_model.encoder_k.conv1.weight)
        assert not torch.equal(model.queue, init_model.queue)


def test_an_init_of_another_arch_names_the_file_both_archs_and_the_key(tmp_path):
    init = tmp_path / "resnet18.pth"
    torchvision_init(init)
    message = re.escape(f"MODEL.INIT {init} holds a resnet18 backbone but MODEL.ARCH is resnet50; set MODEL.ARCH "
                        "resnet18")
    with pytest.raises(ConfigError, match=message):
        build_hpt(hpt_config(init))
    with pytest.raises(ConfigError, match=re.escape("--init PATH (MODEL.INIT)")):
        build_hpt(hpt_config())


def test_parent_records_nest_the_whole_lineage(tmp_path):
    base = tmp_path / "base.pth"
    torchvision_init(base)
    base_record = parent_record(base, load_backbone(base)[1])
    assert base_record == {"path": str(base), "sha256": hashlib.sha256(base.read_bytes()).hexdigest(),
                           "method": None, "parent": None}
    backbone = load_backbone(base)[0]
    source = tmp_path / "source.pth"
    save_canonical(source, backbone, {"method": "hpt", "parent": base_record})
    source_record = parent_record(source, load_backbone(source)[1])
    assert source_record == {"path": str(source), "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
                             "method": "hpt", "parent": base_record}
    target = tmp_path / "target.pth"
    save_canonical(target, backbone, {"method": "hpt", "parent": source_record})
    model = build_hpt(hpt_config(target, MODEL__ARCH="resnet18"))
    assert model.parent == parent_record(target, load_backbone(target)[1])  # what the stage's checkpoints record
    assert model.parent["parent"] == source_record and model.parent["parent"]["parent"] == base_record


def test_build_logs_what_it_loaded_and_what_it_rebuilt(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("transferlab"), "propagate", True)  # setup_logger may have turned it off
    path, _ = moco_source(tmp_path, "canonical")
    with caplog.at_level(logging.INFO, logger="transferlab"):
        build_hpt(hpt_config(path, MODEL__ARCH="resnet18", HPT__TRAIN_BN_ONLY=True))
    lines = [record.getMessage() for record in caplog.records if record.name == "transferlab"]
    assert lines == [f"hpt: loaded 120 backbone tensors from {path} (canonical format, method mocov2); key encoder "
                     "copied from it, queue and projector re-initialised; BN-only: 20 convolution weights frozen, "
                     "40 BN parameters (and running statistics) and the projector train"]
    assert all(record.levelno == logging.INFO for record in caplog.records if record.name == "transferlab")


def test_a_three_stage_chain_on_the_engine_records_its_lineage_and_bn_only_keeps_the_convolutions(tmp_path):
    """base (MoCo v2) -> source (HPT) -> target (HPT-BN), one iteration each through tools/pretrain.py's train()."""
    images = tmp_path / "images"
    images.mkdir()
    generator = torch.Generator().manual_seed(0)
    for index in range(8):
        pixels = torch.randint(0, 256, (40, 40, 3), dtype=torch.uint8, generator=generator).numpy()
        Image.fromarray(pixels).save(images / f"{index}.png")
    tiny = ["MODEL.ARCH", "resnet18", "INPUT.CROP_SIZE", 32, "SOLVER.IMS_PER_BATCH", 4, "MODEL.MOCO.QUEUE_SIZE", 8,
            "MODEL.MOCO.MLP_DIM", 16, "MODEL.MOCO.BN_SPLITS", 2, "DATALOADER.NUM_WORKERS", 0, "SOLVER.MAX_ITER", 1,
            "DATA.ROOT", str(images)]

    def stage(name, *overrides):
        cfg = load_config(get_defaults(), REPO / "configs" / "pretrain" / "demo.yaml",
                          [*tiny, "OUTPUT_DIR", str(tmp_path / name), *overrides])
        return train(cfg, torch.device("cpu"))

    base = stage("base")
    source = stage("source", "METHOD", "hpt", "MODEL.INIT", str(base))
    target = stage("target", "METHOD", "hpt", "MODEL.INIT", str(source), "HPT.TRAIN_BN_ONLY", True)

    target_state, meta = load_backbone(target)
    assert meta["method"] == "hpt" and meta["parent"]["path"] == str(source)
    assert meta["parent"]["method"] == "hpt" and meta["parent"]["parent"]["path"] == str(base)
    assert meta["parent"]["parent"]["method"] == "mocov2" and meta["parent"]["parent"]["parent"] is None
    assert meta["parent"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    source_state, _ = load_backbone(source)
    convolutions = [name for name in source_state if name.endswith("weight") and source_state[name].dim() == 4]
    assert len(convolutions) == 20  # resnet18
    assert all(torch.equal(target_state[name], source_state[name]) for name in convolutions)
    assert not torch.equal(target_state["bn1.weight"], source_state["bn1.weight"])
    lineage = SourceSummary.from_meta(target.name, target_state, meta).lineage()
    assert len(lineage) == 2 and str(source) in lineage[0] and str(base) in lineage[1]
