"""HPT, hierarchical pretraining (Reed et al. 2022, "Self-Supervised Pretraining Improves Self-Supervised
Pretraining"): a MoCo v2 stage that starts from a base checkpoint (MODEL.INIT) instead of random weights.

A chain base -> source -> target is one such stage per dataset (§3), each starting from the previous stage's
checkpoint; every checkpoint records the one it started from (``parent_record``), so the last holds the lineage.

What a stage takes from MODEL.INIT is the backbone only, read by ``converters.load_backbone`` (torchvision,
canonical, facebookresearch/moco, Detectron2, ... files). The key encoder is then a copy of the loaded query
encoder, and the queue and the projector (``fc``) are new: public checkpoints lack them (moco#27), and HPT's code
rebuilds them at every stage (its base checkpoints keep ``encoder_q`` minus ``fc``; the MoCo model copies the key
encoder from the query encoder), so they are rebuilt even when MODEL.INIT is one of our own checkpoints whose
``train_state`` holds all of them.

BN-only (HPT.TRAIN_BN_ONLY, the paper's HPT-BN): every convolution of the backbone keeps its MODEL.INIT weights
(``requires_grad`` False); the BN layers' affine parameters and running statistics train, and so does the
projector. §3 ("Target pretraining") freezes "all parameters except the modulation parameters of the batch norm
layers"; the projector is not a backbone parameter, and HPT's BN-only configs (``5000bn-iters.py``:
``frozen_stages=4, norm_train=True`` on the backbone) leave the projection neck trainable. The optimizer gets the
parameters whose ``requires_grad`` is True.
"""
import logging
import os

import torch
from torch import nn

from benchmarks.classification.features import checkpoint_id
from benchmarks.engine.config import ConfigError
from converters import CheckpointError, load_backbone

from .moco import MoCo, build_moco

logger = logging.getLogger("transferlab")


def parent_record(init_path: str | os.PathLike, init_meta: dict) -> dict:
    """What a checkpoint records of the checkpoint it started from: its path, the sha256 of the file, its method and
    its own parent (None for a file that records none), so a chain of stages nests its whole lineage."""
    return {"path": os.fspath(init_path), "sha256": checkpoint_id(init_path), "method": init_meta.get("method"),
            "parent": init_meta.get("parent")}


class HPT(MoCo):
    """MoCo whose query encoder ``build_hpt`` loads from a base checkpoint; ``parent`` is that checkpoint's
    ``parent_record``, for the metadata of the checkpoints this stage writes."""

    parent: dict | None = None

    @torch.no_grad()
    def momentum_update_key_encoder(self) -> None:
        """MoCo's update for the parameters that train; a frozen one (BN-only) is left as copied: its query is
        constant, and m * key + (1 - m) * query would only add rounding to an exact copy."""
        m = self.momentum
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            if param_q.requires_grad:
                param_k.mul_(m).add_(param_q.detach() * (1.0 - m))


def load_init_backbone(encoder: nn.Module, path: str, arch: str) -> dict:
    """Every backbone tensor of the checkpoint at ``path`` into ``encoder`` (a torchvision ResNet whose ``fc`` is the
    projector, left as it is); returns the checkpoint's metadata."""
    state_dict, meta = load_backbone(path)
    if meta["arch"] != arch:
        raise ConfigError(f"MODEL.INIT {path} holds a {meta['arch']} backbone but MODEL.ARCH is {arch}; set "
                          f"MODEL.ARCH {meta['arch']} to start from it")
    loaded = encoder.load_state_dict(state_dict, strict=False)  # shapes are checked even so
    head = [name for name in encoder.state_dict() if name.startswith("fc.")]
    if loaded.unexpected_keys or sorted(loaded.missing_keys) != sorted(head):
        raise CheckpointError(f"{path}: the backbone does not fill the {arch} encoder: missing "
                              f"{sorted(set(loaded.missing_keys) - set(head))}, unexpected {loaded.unexpected_keys}")
    return meta


def freeze_all_but_batch_norm(backbone: nn.Module) -> int:
    """requires_grad False for every parameter of ``backbone`` outside its BN layers (a ResNet's convolutions);
    returns how many were frozen."""
    frozen = 0
    for module in backbone.modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            for param in module.parameters(recurse=False):
                param.requires_grad_(False)
                frozen += 1
    return frozen


def build_hpt(cfg) -> HPT:
    """A MoCo v2 whose query encoder holds MODEL.INIT's backbone and whose key encoder is a copy of it, with a
    fresh queue and projector; with HPT.TRAIN_BN_ONLY only the BN layers and the projector train."""
    path = cfg.MODEL.INIT
    if not path:
        raise ConfigError("METHOD hpt continues pretraining from a base checkpoint: give it with --init PATH "
                          "(MODEL.INIT)")
    model = build_moco(cfg, 2, HPT)
    encoder = model.encoder_q
    meta = load_init_backbone(encoder, path, cfg.MODEL.ARCH)
    model.encoder_k.load_state_dict(encoder.state_dict())  # the key encoder starts as the query encoder
    model.parent = parent_record(path, meta)
    trained = "the whole query encoder trains"
    if cfg.HPT.TRAIN_BN_ONLY:
        backbone = nn.ModuleList(module for name, module in encoder.named_children() if name != "fc")
        frozen = freeze_all_but_batch_norm(backbone)
        bn = sum(param.requires_grad for param in backbone.parameters())
        trained = (f"BN-only: {frozen} convolution weights frozen, {bn} BN parameters (and running statistics) and "
                   "the projector train")
    logger.info(f"hpt: loaded {meta['num_tensors']} backbone tensors from {path} ({meta['source_format']} format, "
                f"method {meta['method'] or 'unknown'}); key encoder copied from it, queue and projector "
                f"re-initialised; {trained}")
    return model
