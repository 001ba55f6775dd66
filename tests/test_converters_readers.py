"""converters readers: every third-party input layout reloads into torchvision with identical outputs.

Each layout is built from a seeded model in the exact shape real files have (wrapper dicts,
Lightning keys, VISSL nesting, Detectron2's numpy .pkl, ...), read back with load_backbone both
auto-detected and with its format named, loaded into a fresh torchvision ResNet and compared stage
by stage with the source model. Detectron2 layouts start from a Detectron2-style module written
here (stem.conv1 + norm, res2..res5, shortcut + norm), so the comparison is against a model that
really has Detectron2's names and structure, not a renaming of the same dict.
"""

from __future__ import annotations

import argparse
import functools
import os
import pickle
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import converters.readers
from benchmarks.engine.seed import get_rng_state
from converters import READERS, CheckpointError, expected_backbone_keys, load_backbone
from converters.readers import PartialBackboneWarning
from tests.test_converters_core import backbone_of, sgd_state, stage_outputs, write_layout

IMAGES = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))

# ---------------------------------------------------------------------------------------------
# source models


def randomized(model: nn.Module) -> nn.Module:
    """BN affine parameters and statistics far from their defaults, so that swapping any two tensors
    (weight and bias, bn1 and bn2, the trained encoder and its momentum copy) changes the outputs."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(1234)
    return model.eval()


# (bottleneck blocks?, blocks per stage), written out here: the Detectron2-style model owes nothing to the code tested
D2_DEPTHS = {"resnet18": (False, (2, 2, 2, 2)), "resnet50": (True, (3, 4, 6, 3))}


class D2Conv(nn.Conv2d):
    """Detectron2's Conv2d: its BatchNorm is a child named ``norm``, applied right after the convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class D2Block(nn.Module):
    """Detectron2's BasicBlock (conv1, conv2) or BottleneckBlock (conv1..conv3), with a ``shortcut`` conv where the
    width changes. STRIDE_IN_1X1 False, as in MoCo's overlay: a bottleneck's stride sits in its 3x3 conv2."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, bottleneck: bool):
        super().__init__()
        self.bottleneck = bottleneck
        self.shortcut = D2Conv(in_channels, out_channels, 1, stride) if in_channels != out_channels else None
        if bottleneck:
            width = out_channels // 4
            self.conv1 = D2Conv(in_channels, width, 1)
            self.conv2 = D2Conv(width, width, 3, stride)
            self.conv3 = D2Conv(width, out_channels, 1)
        else:
            self.conv1 = D2Conv(in_channels, out_channels, 3, stride)
            self.conv2 = D2Conv(out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = self.conv3(F.relu(self.conv2(out))) if self.bottleneck else self.conv2(out)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + shortcut)


class D2ResNet(nn.Module):
    """A ResNet with Detectron2's module names: ``stem.conv1`` (with ``.norm``) and the stages ``res2``..``res5``."""

    def __init__(self, arch: str):
        super().__init__()
        bottleneck, depths = D2_DEPTHS[arch]
        self.stem = nn.Module()
        self.stem.conv1 = D2Conv(3, 64, 7, stride=2)
        in_channels = 64
        for stage, depth in enumerate(depths):
            out_channels = 64 * 2**stage * (4 if bottleneck else 1)
            blocks = []
            for index in range(depth):
                blocks.append(D2Block(in_channels, out_channels, 2 if stage and not index else 1, bottleneck))
                in_channels = out_channels
            self.add_module(f"res{stage + 2}", nn.Sequential(*blocks))

    def stage_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = F.max_pool2d(F.relu(self.stem.conv1(images)), kernel_size=3, stride=2, padding=1)
        outputs = [x]
        for stage in (self.res2, self.res3, self.res4, self.res5):
            x = stage(x)
            outputs.append(x)
        return outputs


@functools.cache
def source_model(kind: str, arch: str) -> nn.Module:
    """A seeded torchvision ResNet or Detectron2-style ResNet, built once per session."""
    torch.manual_seed(0)
    return randomized(getattr(torchvision.models, arch)(weights=None) if kind == "torchvision" else D2ResNet(arch))


def outputs_of(model: nn.Module) -> list[torch.Tensor]:
    """Stage outputs on one thread: for inputs this small it is the fastest, and on a busy 2-core machine
    two OpenMP threads make each forward ~20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            return model.stage_outputs(IMAGES) if isinstance(model, D2ResNet) else stage_outputs(model, IMAGES)
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------
# layouts: each builder returns (checkpoint, the source keys the reader must report as ignored)


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{name}": tensor for name, tensor in tensors.items()}


def shifted(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A momentum copy that differs from the trained weights, so reading the wrong one would show."""
    return {name: tensor + 1 for name, tensor in tensors.items()}


def head(*names: str) -> dict[str, torch.Tensor]:
    """Random tensors standing in for a projector, predictor or detector head (their shapes do not matter)."""
    return {name: torch.randn(8, 4) for name in names}


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def not_under(prefix: str, keys) -> set[str]:
    return {key for key in keys if not key.startswith(prefix)}


def mocov3(model):
    """moco-v3 main_moco.py under DDP: the projection MLP replaces fc in both encoders, plus a predictor."""
    base = {**backbone_of(model), **head("fc.0.weight", "fc.1.weight", "fc.1.bias", "fc.1.running_mean", "fc.3.weight")}
    state_dict = {**prefixed("module.base_encoder.", base), **prefixed("module.momentum_encoder.", shifted(base)),
                  **prefixed("module.predictor.", head("0.weight", "1.weight", "3.weight"))}
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000}
    checkpoint = {"epoch": 100, "arch": "resnet18", "state_dict": state_dict,
                  "optimizer": sgd_state([state_dict["module.predictor.0.weight"]]), "scaler": scaler}
    ignored = not_under("module.base_encoder.", state_dict) | {key for key in state_dict if ".fc." in key}
    return checkpoint, ignored | {"optimizer", "scaler"}


def mocov3_flat(model):
    """The same state dict saved flat, as a .safetensors file."""
    checkpoint, ignored = mocov3(model)
    return checkpoint["state_dict"], ignored - {"optimizer", "scaler"}


def openselfsup_moco(model):
    """OpenSelfSup's MOCO as HPT pretrains it (mmcv runner): encoder_q = Sequential(backbone, neck) and
    self.backbone = encoder_q[0], so the backbone is saved twice; a key encoder and a queue."""
    backbone, neck = backbone_of(model), head("mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias")
    state_dict = {**prefixed("encoder_q.0.", backbone), **prefixed("encoder_q.1.", neck),
                  **prefixed("encoder_k.0.", shifted(backbone)), **prefixed("encoder_k.1.", neck),
                  **prefixed("backbone.", backbone),
                  "queue": torch.randn(128, 64), "queue_ptr": torch.zeros(1, dtype=torch.long)}
    meta = {"mmcv_version": "0.4.3", "time": "Sat Aug  1 10:00:00 2020", "epoch": 200, "iter": 1000,
            "config": "model = dict(type='MOCO')\n"}
    checkpoint = {"meta": meta, "state_dict": state_dict, "optimizer": sgd_state(list(neck.values()))}
    return checkpoint, not_under("backbone.", state_dict) | {"optimizer"}


def mmselfsup_mocov2(model):
    """mmselfsup 1.x / mmpretrain (mmengine runner): backbone, neck, an EMA key encoder wrapping both, a queue."""
    backbone, neck = backbone_of(model), head("mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias")
    state_dict = {**prefixed("backbone.", backbone), **prefixed("neck.", neck),
                  **prefixed("encoder_k.module.0.", shifted(backbone)), **prefixed("encoder_k.module.1.", neck),
                  "encoder_k.steps": torch.tensor(1000), "queue": torch.randn(128, 64),
                  "queue_ptr": torch.zeros(1, dtype=torch.long)}
    meta = {"epoch": 200, "iter": 1000, "cfg": "model = dict(type='MoCo')\n", "seed": 0,
            "experiment_name": "mocov2_resnet18", "mmengine_version": "0.7.4", "dataset_meta": {"classes": ["a"]}}
    checkpoint = {"meta": meta, "state_dict": state_dict, "optimizer": sgd_state(list(neck.values())),
                  "param_schedulers": [{"last_step": 1000, "base_values": [0.03]}]}
    return checkpoint, not_under("backbone.", state_dict) | {"optimizer", "param_schedulers", "meta.dataset_meta"}


def vissl(model):
    """VISSL's CheckpointHook (a .torch file): trunk and heads under classy_state_dict.base_model.model; MoCo's
    key encoder and queue in the loss state."""
    heads = head("0.clf.0.weight", "0.clf.0.bias", "0.clf.2.weight")
    classy = {"train": True,
              "base_model": {"model": {"trunk": prefixed("_feature_blocks.", backbone_of(model)), "heads": heads},
                             "meta": {"trunk": {}, "heads": []}},
              "meters": [], "optimizer": {"name": "sgd", "state": sgd_state(list(heads.values()))},
              "phase_idx": 199, "train_phase_idx": 199, "num_updates": 250200, "losses": [6.2, 6.1],
              "hooks": {}, "loss": {}}
    checkpoint = {"phase_idx": 199, "iteration": 250200, "iteration_num": 250200, "train_phase_idx": 199,
                  "loss": {"queue": torch.randn(128, 64), "moco_encoder": shifted(backbone_of(model))},
                  "classy_state_dict": classy}
    nested = [f"classy_state_dict.{key}" for key in ("meters", "optimizer", "losses", "hooks", "loss")]
    model_level = ["classy_state_dict.base_model.meta", "classy_state_dict.base_model.model.heads"]
    return checkpoint, {"loss", *nested, *model_level}


def timm_train(model):
    """timm's train.py CheckpointSaver: EMA weights next to the trained ones, the argparse args, the amp scaler."""
    full = full_state(model)
    args = argparse.Namespace(model="resnet18.a1_in1k", lr=0.005, epochs=300, mean=None, input_size=[3, 224, 224])
    checkpoint = {"epoch": 299, "arch": "resnet18.a1_in1k", "state_dict": full,
                  "optimizer": sgd_state([full["fc.weight"]]),
                  "version": 2, "args": args, "amp_scaler": {"scale": 65536.0}, "state_dict_ema": shifted(full),
                  "metric": 71.5}
    return checkpoint, {"fc.weight", "fc.bias", "optimizer", "args", "amp_scaler", "state_dict_ema"}


def timm_hub(model):
    """timm's hub weights (model.safetensors): a bare state dict with torchvision's names, fc included."""
    return full_state(model), {"fc.weight", "fc.bias"}


LIGHTNING_ENTRIES = {"loops", "callbacks", "optimizer_states", "lr_schedulers", "hyper_parameters"}


def lightning(state_dict: dict, hyper_parameters: dict) -> dict:
    """What Lightning 2.x's trainer.save_checkpoint writes around a module's state dict."""
    return {"epoch": 399, "global_step": 2000, "pytorch-lightning_version": "2.1.2", "state_dict": state_dict,
            "loops": {"fit_loop": {"epoch_progress": {"total": {"ready": 400, "completed": 399}}}},
            "callbacks": {"ModelCheckpoint{'monitor': 'val_acc1', 'mode': 'max'}": {
                "best_model_score": torch.tensor(0.61), "best_model_path": "/ckpt/best.ckpt"}},
            "optimizer_states": [sgd_state([torch.randn(8, 4)])],
            "lr_schedulers": [{"last_epoch": 399, "base_lrs": [0.3]}],
            "hparams_name": "kwargs", "hyper_parameters": hyper_parameters}


def solo_learn(model):
    """solo-learn MoCo V2+: backbone (fc = Identity), projector, momentum copies, online classifier, queue."""
    backbone, projector = backbone_of(model), head("0.weight", "0.bias", "2.weight", "2.bias")
    state_dict = {**prefixed("backbone.", backbone), **prefixed("projector.", projector),
                  **prefixed("momentum_backbone.", shifted(backbone)), **prefixed("momentum_projector.", projector),
                  **head("classifier.weight", "classifier.bias"),
                  "queue": torch.randn(2, 128, 64), "queue_ptr": torch.zeros(1, dtype=torch.long)}
    return lightning(state_dict, {"method": "mocov2plus"}), not_under("backbone.", state_dict) | LIGHTNING_ENTRIES


def lightly_moco(model):
    """lightly's MoCo example: backbone = nn.Sequential(*list(resnet.children())[:-1]), keyed by child position
    (0.weight, 4.0.conv1.weight, ...); a momentum copy, projection heads, the loss's memory bank, a probe."""
    children = full_state(nn.Sequential(*list(model.children())[:-1]))
    projection = head("layers.0.weight", "layers.2.weight")
    state_dict = {**prefixed("backbone.", children), **prefixed("backbone_momentum.", shifted(children)),
                  **prefixed("projection_head.", projection), **prefixed("projection_head_momentum.", projection),
                  "criterion.memory_bank.bank": torch.randn(128, 64),
                  "criterion.memory_bank.bank_ptr": torch.zeros(1, dtype=torch.long),
                  **head("online_classifier.classification_head.weight", "online_classifier.classification_head.bias")}
    return lightning(state_dict, {"batch_size_per_device": 128}), not_under("backbone.", state_dict) | LIGHTNING_ENTRIES


def lightly_dino(model):
    """lightly's DINO: student and teacher backbones and heads; the loss keeps a center buffer."""
    backbone, dino_head = backbone_of(model), head("layers.0.weight", "last_layer.weight_g")
    state_dict = {**prefixed("student_backbone.", backbone), **prefixed("student_head.", dino_head),
                  **prefixed("teacher_backbone.", shifted(backbone)), **prefixed("teacher_head.", dino_head),
                  "criterion.center": torch.randn(1, 64)}
    return lightning(state_dict, {"lr": 0.1}), not_under("student_backbone.", state_dict) | LIGHTNING_ENTRIES


def lightning_supervised(model):
    """A LightningModule training a whole torchvision ResNet held as self.model: its fc is the classifier."""
    checkpoint = lightning(prefixed("model.", full_state(model)), {"lr": 0.1})
    return checkpoint, {"model.fc.weight", "model.fc.bias"} | LIGHTNING_ENTRIES


def wrapped_flat(model):
    """The flat state dict of a module wrapping a lightly-style model (self.model.backbone, ...), as .safetensors."""
    projection = head("layers.0.weight", "layers.2.weight")
    state_dict = {**prefixed("model.backbone.", backbone_of(model)), **prefixed("model.projection_head.", projection)}
    return state_dict, set(prefixed("model.projection_head.", projection))


def detectron2_pkl(model):
    """MoCo's convert-pretrain-to-detectron2.py output, which Detectron2 loads: numpy arrays, no BN counters."""
    weights = {name: tensor.numpy() for name, tensor in full_state(model).items()
               if not name.endswith("num_batches_tracked")}
    return {"model": weights, "__author__": "MOCO", "matching_heuristics": True}, set()


def trainer_state() -> dict:
    """Detectron2 DefaultTrainer.state_dict(): iteration, hook states, the optimizer."""
    return {"iteration": 89999, "hooks": {"detectron2.engine.hooks.LRScheduler": {"last_epoch": 89999}},
            "optimizer": sgd_state([torch.randn(8, 4)])}


def detectron2_fpn(model):
    """A trained Mask R-CNN FPN (model_final.pth): the ResNet under backbone.bottom_up, FPN convs, RPN, box and
    mask heads, the input normalization buffers, and the trainer's state."""
    heads = head("backbone.fpn_lateral2.weight", "backbone.fpn_lateral2.bias", "backbone.fpn_output2.weight",
                 "proposal_generator.rpn_head.conv.weight", "proposal_generator.rpn_head.objectness_logits.weight",
                 "roi_heads.box_head.fc1.weight", "roi_heads.box_predictor.cls_score.weight",
                 "roi_heads.box_predictor.bbox_pred.weight", "roi_heads.mask_head.mask_fcn1.weight",
                 "roi_heads.mask_head.predictor.weight", "pixel_mean", "pixel_std")
    checkpoint = {"model": {**prefixed("backbone.bottom_up.", full_state(model)), **heads},
                  "trainer": trainer_state(), "iteration": 89999}
    return checkpoint, set(heads) | {"trainer"}


def detectron2_c4(model):
    """A trained MoCo R50-C4 style detector: stem..res4 under backbone., res5 in the RoI head with its extra norm."""
    state = full_state(model)
    res5 = {name: tensor for name, tensor in state.items() if name.startswith("res5.")}
    extra_norm = {**head("res5.norm.weight", "res5.norm.bias", "res5.norm.running_mean", "res5.norm.running_var"),
                  "res5.norm.num_batches_tracked": torch.tensor(5)}
    heads = head("proposal_generator.rpn_head.conv.weight", "roi_heads.box_predictor.cls_score.weight",
                 "roi_heads.box_predictor.bbox_pred.weight", "roi_heads.mask_head.deconv.weight",
                 "roi_heads.mask_head.predictor.weight")
    weights = {**prefixed("backbone.", {name: t for name, t in state.items() if name not in res5}),
               **prefixed("roi_heads.", {**res5, **extra_norm}), **heads}
    checkpoint = {"model": weights, "trainer": trainer_state(), "iteration": 89999}
    return checkpoint, set(heads) | set(prefixed("roi_heads.", extra_norm)) | {"trainer"}


def transferlab_detector(model, rpn: str = "proposal_generator."):
    """transferlab's model_final.pth (benchmarks/engine/checkpoint.py): the trunk under backbone. with torchvision
    names, layer4 as roi_heads.res5.0..N, the extra norm, heads, and the trainer's state with real RNG states."""
    state = full_state(model)
    extra_norm = {**head("roi_heads.res5.norm.weight", "roi_heads.res5.norm.bias", "roi_heads.res5.norm.running_mean",
                         "roi_heads.res5.norm.running_var"), "roi_heads.res5.norm.num_batches_tracked": torch.tensor(7)}
    heads = head(f"{rpn}rpn_head.conv.weight", f"{rpn}rpn_head.objectness_logits.weight",
                 "roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.bbox_pred.weight",
                 "roi_heads.mask_head.deconv.weight", "roi_heads.mask_head.predictor.weight")
    trunk = {name: t for name, t in state.items() if not name.startswith(("layer4.", "fc."))}
    res5 = {name.removeprefix("layer4."): t for name, t in state.items() if name.startswith("layer4.")}
    weights = {**prefixed("backbone.", trunk), **prefixed("roi_heads.res5.", res5), **extra_norm, **heads}
    optimizer = sgd_state([torch.randn(8, 4)])
    parameter = torch.nn.Parameter(torch.zeros(1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([parameter], lr=0.1), lambda it: 0.5 ** it)
    checkpoint = {"model": weights, "iteration": 720, "rng_states": [get_rng_state(), get_rng_state()],
                  "optimizer": optimizer, "scheduler": scheduler.state_dict()}
    return checkpoint, set(heads) | set(extra_norm) | {"rng_states", "optimizer", "scheduler"}


def transferlab_fpn_detector(model):
    """transferlab's R50-FPN model_final.pth: the ResNet under backbone.bottom_up. with torchvision names, the pyramid
    under backbone.fpn. (torchvision's FeaturePyramidNetwork), the heads, the trainer's state."""
    heads = head("backbone.fpn.inner_blocks.0.0.weight", "backbone.fpn.layer_blocks.3.0.bias",
                 "proposal_generator.rpn_head.conv.weight", "roi_heads.box_head.fc1.weight",
                 "roi_heads.box_predictor.cls_score.weight", "roi_heads.mask_head.mask_fcn1.weight")
    checkpoint = {"model": {**prefixed("backbone.bottom_up.", backbone_of(model)), **heads}, "iteration": 90000,
                  "rng_states": [get_rng_state()]}
    return checkpoint, set(heads) | {"rng_states"}


def transferlab_segmenter(model):
    """transferlab's DeepLab-v3 model_final.pth: mmseg's names (backbone.*, decode_head.*, auxiliary_head.*) and the
    trainer's state."""
    heads = head("decode_head.image_pool.1.conv.weight", "decode_head.aspp_modules.1.bn.running_mean",
                 "decode_head.conv_seg.weight", "auxiliary_head.convs.0.conv.weight", "auxiliary_head.conv_seg.bias")
    weights = {**prefixed("backbone.", backbone_of(model)), **heads}
    checkpoint = {"model": weights, "iteration": 40000, "rng_states": [get_rng_state()],
                  "optimizer": sgd_state([torch.randn(8, 4)])}
    return checkpoint, set(heads) | {"rng_states", "optimizer"}


def mmseg_deeplabv3(model):
    """An mmsegmentation 1.x EncoderDecoder checkpoint with the basic-stem ResNet (what --to mmseg's config trains)."""
    heads = head("decode_head.bottleneck.conv.weight", "decode_head.conv_seg.weight", "auxiliary_head.conv_seg.weight")
    checkpoint = {"meta": {"mmengine_version": "0.10.4", "iter": 40000,
                           "dataset_meta": {"classes": ("road", "sidewalk")}},
                  "state_dict": {**prefixed("backbone.", backbone_of(model)), **heads}}
    return checkpoint, set(heads) | {"meta.dataset_meta"}


def detectron2_flat(model):
    """Detectron2's plain names (stem.conv1, res2.0.conv1.norm, shortcut.norm) with BN counters, as .safetensors."""
    return full_state(model), set()


@dataclass(frozen=True)
class Layout:
    name: str
    build: Callable
    format: str  # the reader's name
    suffix: str = ".pth"
    source: str = "torchvision"  # or "detectron2": the Detectron2-style model
    arch: str = "resnet18"
    detected: str | None = None  # what auto-detection reports, when not ``format``
    counters_filled: bool = False  # the layout has no BN counters, so all of them are filled in
    meta: dict = field(default_factory=dict)  # entries the meta must hold


LAYOUTS = [
    Layout("mocov3", mocov3, "mocov3", meta={"method": "mocov3", "epoch": 100, "pixel_std": [58.395, 57.12, 57.375]}),
    Layout("mocov3_flat", mocov3_flat, "mocov3", suffix=".safetensors"),
    Layout("hpt_openselfsup", openselfsup_moco, "mmselfsup",
           meta={"epoch": 200, "iter": 1000, "config": "model = dict(type='MOCO')\n", "mmcv_version": "0.4.3"}),
    Layout("mmselfsup", mmselfsup_mocov2, "mmselfsup", meta={"config": "model = dict(type='MoCo')\n", "seed": 0}),
    Layout("vissl", vissl, "vissl", suffix=".torch", meta={"iteration": 250200, "phase_idx": 199, "train": True}),
    Layout("timm_train", timm_train, "timm", detected="torchvision", meta={"epoch": 299, "version": 2, "metric": 71.5}),
    Layout("timm_hub", timm_hub, "timm", suffix=".safetensors", detected="torchvision"),
    Layout("solo_learn", solo_learn, "lightning", suffix=".ckpt",
           meta={"backbone_prefix": "backbone.", "global_step": 2000, "pytorch-lightning_version": "2.1.2"}),
    Layout("lightly_moco", lightly_moco, "lightning", suffix=".ckpt", meta={"backbone_prefix": "backbone."}),
    Layout("lightly_dino", lightly_dino, "lightning", suffix=".ckpt", meta={"backbone_prefix": "student_backbone."}),
    Layout("lightning_supervised", lightning_supervised, "lightning", suffix=".ckpt",
           meta={"backbone_prefix": "model."}),
    Layout("wrapped_flat", wrapped_flat, "lightning", suffix=".safetensors",
           meta={"backbone_prefix": "model.backbone."}),
    Layout("detectron2_pkl_r50", detectron2_pkl, "detectron2", suffix=".pkl", source="detectron2", arch="resnet50",
           counters_filled=True, meta={"__author__": "MOCO", "matching_heuristics": True}),
    Layout("detectron2_fpn", detectron2_fpn, "detectron2", source="detectron2", meta={"iteration": 89999}),
    Layout("detectron2_c4", detectron2_c4, "detectron2", source="detectron2", meta={"iteration": 89999}),
    Layout("detectron2_flat", detectron2_flat, "detectron2", suffix=".safetensors", source="detectron2"),
    Layout("transferlab_detector", transferlab_detector, "transferlab_detector", meta={"iteration": 720}),
    Layout("transferlab_detector_rpn", functools.partial(transferlab_detector, rpn="rpn."), "transferlab_detector"),
    Layout("transferlab_fpn_detector", transferlab_fpn_detector, "transferlab_detector", meta={"iteration": 90000}),
    Layout("transferlab_segmenter", transferlab_segmenter, "transferlab_segmenter", meta={"iteration": 40000}),
    Layout("mmseg_deeplabv3", mmseg_deeplabv3, "mmselfsup", meta={"iter": 40000}),
]
LAYOUT_BY_NAME = {layout.name: layout for layout in LAYOUTS}


def save(checkpoint: object, path: Path) -> None:
    """As the producing tool saves it: pickle for Detectron2 .pkl, safetensors, else torch.save."""
    if path.suffix == ".pkl":
        with open(path, "wb") as file:
            pickle.dump(checkpoint, file, protocol=4)
    elif path.suffix == ".safetensors":
        safetensors.torch.save_file(checkpoint, path)
    else:
        torch.save(checkpoint, path)


def written(name: str, tmp_path: Path, mutate: Callable[[dict], None] | None = None) -> tuple[Path, set[str]]:
    """Write the named layout (optionally changed by ``mutate``); (its path, the keys to be reported ignored)."""
    layout = LAYOUT_BY_NAME[name]
    checkpoint, ignored = layout.build(source_model(layout.source, layout.arch))
    if mutate is not None:
        mutate(checkpoint)
    path = tmp_path / f"{name}{layout.suffix}"
    save(checkpoint, path)
    return path, ignored


def loaded_into_torchvision(state_dict: dict[str, torch.Tensor], arch: str, strict: bool = True):
    """A torchvision ResNet (fc removed) holding ``state_dict``: built on the meta device, since every tensor it
    uses comes from the state dict; (the model, load_state_dict's missing and unexpected keys)."""
    with torch.device("meta"):
        model = getattr(torchvision.models, arch)(weights=None)
    model.fc = nn.Identity()
    result = model.load_state_dict(state_dict, strict=strict, assign=True)
    return model.eval(), result


# ---------------------------------------------------------------------------------------------
# every layout reloads with identical outputs


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: layout.name)
def test_layout_reloads_into_torchvision_with_identical_stage_outputs(layout, tmp_path):
    model = source_model(layout.source, layout.arch)
    path, ignored = written(layout.name, tmp_path)
    counters = {name for name in expected_backbone_keys(layout.arch) if name.endswith("num_batches_tracked")}
    expected = outputs_of(model)

    for format, source_format in ((None, layout.detected or layout.format), (layout.format, layout.format)):
        state_dict, meta = load_backbone(path, format=format)

        assert meta["source_format"] == source_format
        assert set(meta["ignored"]) == ignored
        assert meta["arch"] == layout.arch and meta["num_tensors"] == len(expected_backbone_keys(layout.arch))
        assert meta["dropped"] == {} and meta["missing"] == {}
        assert set(meta["filled"]) == (counters if layout.counters_filled else set())
        assert layout.meta.items() <= meta.items()
        loaded, _ = loaded_into_torchvision(state_dict, layout.arch)
        # Tolerance 0 (torch.equal): reading only renames and copies tensors, and the Detectron2-style source
        # runs the same conv/BN/ReLU/max-pool ops in the same order on the same CPU kernels as torchvision.
        actual = outputs_of(loaded)
        assert all(torch.equal(a, b) for a, b in zip(expected, actual, strict=True))


@pytest.mark.parametrize(("layout", "format"), [("canonical", "canonical"), ("moco_v2", "moco"),
                                                ("torchvision_released", "torchvision")])
def test_core_layouts_read_with_their_format_named(layout, format, tmp_path):
    write_layout(layout, source_model("torchvision", "resnet18"), tmp_path / "checkpoint.pth")
    assert load_backbone(tmp_path / "checkpoint.pth", format=format)[1]["source_format"] == format


def test_aliases_and_wrong_formats(tmp_path):
    solo, _ = written("solo_learn", tmp_path)
    hpt, _ = written("hpt_openselfsup", tmp_path)
    assert load_backbone(solo, format="solo-learn")[1]["source_format"] == "lightning"
    assert load_backbone(hpt, format="hpt")[1]["source_format"] == "mmselfsup"
    with pytest.raises(CheckpointError, match=r"solo_learn\.ckpt: not a 'vissl' checkpoint .*accepted formats: "):
        load_backbone(solo, format="vissl")
    with pytest.raises(CheckpointError, match=r"unknown checkpoint format 'caffe'.*hpt = mmselfsup"):
        load_backbone(solo, format="caffe")


def test_each_reader_module_is_registered_and_each_format_has_a_layout():
    """Adding a format is one module in converters/readers/ with its reader, its READERS entry and a layout."""
    modules = {path.stem for path in Path(converters.readers.__file__).parent.glob("*.py")}
    registered = {read.__module__.removeprefix("converters.readers.") for read in READERS.values()}
    assert registered == modules - {"__init__", "base", "pipeline"}
    core = {"canonical", "moco", "torchvision"}  # tests/test_converters_core.py builds these layouts
    assert {layout.format for layout in LAYOUTS} | core == set(READERS)


# ---------------------------------------------------------------------------------------------
# nothing is dropped silently


def test_two_complete_backbones_are_ambiguous_and_named(tmp_path):
    backbone = backbone_of(source_model("torchvision", "resnet18"))
    state_dict = {**prefixed("backbone.", backbone), **prefixed("encoder.", shifted(backbone))}
    save(lightning(state_dict, {}), tmp_path / "two.ckpt")
    for format in (None, "lightning"):
        with pytest.raises(CheckpointError, match=r"two\.ckpt: ambiguous backbone: the prefixes 'backbone\.', "
                                                  r"'encoder\.' each hold a complete ResNet"):
            load_backbone(tmp_path / "two.ckpt", format=format)


def add(container: str, key: str, value: object) -> Callable[[dict], None]:
    """A mutation adding ``key`` to the dict at ``container`` (a dotted path; "" for the top level)."""

    def mutate(checkpoint: dict) -> None:
        target = checkpoint
        for level in filter(None, container.split(".")):
            target = target[level]
        target[key] = value

    return mutate


@pytest.mark.parametrize(("name", "mutate", "named"), [
    ("solo_learn", add("state_dict", "mystery.weight", torch.zeros(3)), r"1 unexpected: mystery\.weight"),
    ("solo_learn", add("", "ema_weights", {"w": torch.zeros(2)}), r"'ema_weights' \(1 tensors\)"),
    ("hpt_openselfsup", add("state_dict", "projector_v2.weight", torch.zeros(3)), r"unexpected: projector_v2\.weight"),
    ("vissl", add("classy_state_dict.base_model.model.trunk", "_feature_blocks.layer2.0.extra.weight", torch.zeros(3)),
     r"unexpected: layer2\.0\.extra\.weight"),
    ("vissl", add("classy_state_dict", "swa_model", {"w": torch.zeros(2)}), r"'classy_state_dict\.swa_model' \(1"),
    ("detectron2_fpn", add("model", "backbone.bottom_up.res3.0.conv9.weight", torch.zeros(3)),
     r"unexpected: backbone\.bottom_up\.res3\.0\.conv9\.weight"),
], ids=["lightning-key", "lightning-entry", "mmselfsup", "vissl-trunk", "vissl-entry", "detectron2"])
def test_tensor_no_rule_explains_is_an_error_naming_it(name, mutate, named, tmp_path):
    path, _ = written(name, tmp_path, mutate)
    with pytest.raises(CheckpointError, match=named):
        load_backbone(path)


def delete(container: str, key: str) -> Callable[[dict], None]:
    def mutate(checkpoint: dict) -> None:
        del checkpoint[container][key]

    return mutate


@pytest.mark.parametrize(("name", "mutate", "named"), [
    ("solo_learn", delete("state_dict", "backbone.layer3.1.bn2.running_var"), "1 missing: layer3.1.bn2.running_var"),
    ("lightly_moco", delete("state_dict", "backbone.6.0.conv1.weight"), "1 missing: layer3.0.conv1.weight"),
    ("detectron2_c4", delete("model", "roi_heads.res5.1.conv2.norm.running_var"),
     "1 missing: layer4.1.bn2.running_var"),
], ids=["lightning", "lightly-children", "detectron2-c4"])
def test_missing_backbone_tensor_is_an_error_naming_it(name, mutate, named, tmp_path):
    path, _ = written(name, tmp_path, mutate)
    with pytest.raises(CheckpointError, match=named.replace(".", r"\.")):
        load_backbone(path)


def test_allow_partial_drops_and_accepts_with_a_warning_naming_each(tmp_path):
    def damage(checkpoint):
        weights = checkpoint["state_dict"]
        weights["mystery.weight"] = torch.zeros(3)
        weights["backbone.layer2.0.conv2.weight"] = torch.zeros(128, 128, 1, 1)
        del weights["backbone.layer3.1.bn2.running_var"]
        checkpoint["ema_weights"] = {"w": torch.zeros(2)}

    path, _ = written("solo_learn", tmp_path, damage)
    with pytest.raises(CheckpointError, match=r"'ema_weights' \(1 tensors\)"):
        load_backbone(path)

    with pytest.warns(PartialBackboneWarning) as record:
        state_dict, meta = load_backbone(path, allow_partial=True)

    dropped = {"ema_weights", "mystery.weight", "layer2.0.conv2.weight"}
    missing = {"layer2.0.conv2.weight", "layer3.1.bn2.running_var"}
    assert len(record) == 1 and all(name in str(record[0].message) for name in dropped | missing)
    assert set(meta["dropped"]) == dropped and set(meta["missing"]) == missing
    _, result = loaded_into_torchvision(state_dict, "resnet18", strict=False)
    assert set(result.missing_keys) == missing and result.unexpected_keys == []
    source = backbone_of(source_model("torchvision", "resnet18"))
    assert all(torch.equal(state_dict[name], tensor) for name, tensor in source.items() if name not in missing)


def test_allow_partial_without_a_whole_stage_needs_the_arch(tmp_path):
    backbone = {name: t for name, t in backbone_of(source_model("torchvision", "resnet18")).items()
                if not name.startswith("layer4.")}
    save(lightning(prefixed("backbone.", backbone), {}), tmp_path / "trunk.ckpt")
    with pytest.raises(CheckpointError, match=r"basic blocks \(2, 2, 2, 0\) per stage match none"):
        load_backbone(tmp_path / "trunk.ckpt", allow_partial=True)

    with pytest.warns(PartialBackboneWarning, match=r"layer4\.1\.bn2\.running_var"):
        state_dict, meta = load_backbone(tmp_path / "trunk.ckpt", arch="resnet18", allow_partial=True)
    assert set(meta["missing"]) == {name for name in expected_backbone_keys("resnet18") if name.startswith("layer4.")}
    assert state_dict.keys() == backbone.keys()


def test_arch_mismatch_names_both(tmp_path):
    path, _ = written("mocov3", tmp_path)
    with pytest.raises(CheckpointError, match="requested arch 'resnet50' but the tensors are a resnet18"):
        load_backbone(path, arch="resnet50")
    path, _ = written("mocov3", tmp_path, add("", "arch", "resnet50"))
    with pytest.raises(CheckpointError, match="the file declares arch 'resnet50' but the tensors are a resnet18"):
        load_backbone(path)


def test_caffe2_detectron_weights_are_refused_with_the_reason(tmp_path):
    with open(tmp_path / "R-50.pkl", "wb") as file:  # MSRA's ImageNet R-50.pkl: Caffe2 blob names
        pickle.dump({"conv1_w": np.zeros((64, 3, 7, 7), np.float32), "res_conv1_bn_s": np.ones(64, np.float32)}, file)
    with pytest.raises(CheckpointError, match=r"R-50\.pkl: Caffe2/Detectron weights .*stride in the 1x1 conv"):
        load_backbone(tmp_path / "R-50.pkl")


# ---------------------------------------------------------------------------------------------
# pickled code never runs


class _Shell:
    """Unpickles to ``os.system("touch marker")``."""

    def __init__(self, marker: Path):
        self.command = f"touch {shlex.quote(str(marker))}"

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("name", ["solo_learn", "detectron2_pkl_r50"])
def test_code_in_a_pickle_is_refused_and_never_runs(name, tmp_path):
    control = tmp_path / "control"
    function, arguments = _Shell(control).__reduce__()  # what an unpickler honouring __reduce__ would call
    function(*arguments)
    assert control.exists()  # the payload is live

    marker = tmp_path / "marker"
    if name == "solo_learn":  # hidden where Lightning keeps arbitrary objects
        path, _ = written(name, tmp_path, add("", "hyper_parameters", {"cfg": _Shell(marker)}))
    else:
        path, _ = written(name, tmp_path, add("model", "res2.0.conv1.weight", _Shell(marker)))
    with pytest.raises(CheckpointError, match=rf"{path.name}: refused to load: unpickling it needs \S*system"):
        load_backbone(path)
    assert not marker.exists()
