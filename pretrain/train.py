"""Pretraining on the detection engine (``benchmarks/engine``): a method supplies the model, its loss and its
data; the engine's IterationTrainer, Checkpointer and EventWriter do the loop, the periodic atomic checkpoints,
the exact resume, events.jsonl and the progress bar, as for every transfer run.

Runs unchanged in one process and under ``torchrun`` (one process per GPU, or gloo on CPUs). A resumed run
continues the same data order and augmentations (``InfiniteSampler`` + ``SeededSamples``) from the stored
iteration, with the model, queue, optimizer, scheduler, every process's RNG and the grad-scaler state. Every
checkpoint is a canonical one: the backbone for transfer, and the training state beside it.
"""
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from fvcore.common.config import CfgNode
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from benchmarks.classification.features import build_backbone
from benchmarks.data.builtin import builtin_data_root
from benchmarks.engine.checkpoint import Checkpointer, clean_stale_temporaries
from benchmarks.engine.config import ConfigError
from benchmarks.engine.distributed import get_world_size, is_distributed, is_main_process, synchronize
from benchmarks.engine.events import EventWriter
from benchmarks.engine.lock import lock_output_dir
from benchmarks.engine.logging import setup_logger
from benchmarks.engine.sampler import InfiniteSampler, SeededSamples
from benchmarks.engine.seed import seed_everything
from benchmarks.engine.trainer import IterationTrainer, TrainingSchedule, amp_dtype
from benchmarks.engine.validation import check_rules, fail
from converters import CheckpointError, expected_backbone_keys, save_canonical
from converters.canonical import canonical_checkpoint
from converters.io import atomic_write_text

from .augmentations import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TwoCrops,
    check_policy,
    mocov1_augmentation,
    mocov2_augmentation,
    supervised_augmentation,
)
from .bn_recalibrate import recalibrate_bn_statistics
from .config import PRETRAIN_RULES
from .data import ImageDirectory, LabelledImageFolder, held_out_images
from .exemplar import build_exemplar_v1, build_exemplar_v2
from .hpt import build_hpt, parent_record
from .moco import bn_splits, build_mocov1, build_mocov2
from .sl import build_sl, convert_sync_bn
from .slmlp import build_slmlp

# The end-of-run checkpoint: DIR/last.pth (periodic ones are Detectron2's model_{iter:07d}.pth).
FINAL_NAME = "last"


class Method(NamedTuple):
    """What the engine needs of a pretraining method."""

    # (cfg, dataset) -> module whose forward(*views[, labels]) returns {"loss": ..., "acc1": ...} and whose
    # backbone_state_dict() is what transfers
    build_model: Callable
    augmentation: Callable  # (crop_size, min_scale) -> the transform of one view
    labelled: bool = False  # reads class subfolders and passes each batch's labels to the model
    two_views: bool = True  # a query and a key view per image (the contrastive methods) or one
    starts_from_init: bool = False  # continues MODEL.INIT (--init) instead of a random initialization
    moco_family: bool = True  # a queue and shuffle-BN groups (MODEL.MOCO.*)


METHODS = {
    "mocov1": Method(lambda cfg, data: build_mocov1(cfg), mocov1_augmentation),
    "mocov2": Method(lambda cfg, data: build_mocov2(cfg), mocov2_augmentation),
    "exemplar_v1": Method(lambda cfg, data: build_exemplar_v1(cfg), mocov1_augmentation, labelled=True),
    "exemplar_v2": Method(lambda cfg, data: build_exemplar_v2(cfg), mocov2_augmentation, labelled=True),
    "hpt": Method(lambda cfg, data: build_hpt(cfg), mocov2_augmentation, starts_from_init=True),
    "sl": Method(lambda cfg, data: build_sl(cfg, len(data.classes)), supervised_augmentation, labelled=True,
                 two_views=False, moco_family=False),
    "slmlp": Method(lambda cfg, data: build_slmlp(cfg, len(data.classes)), supervised_augmentation, labelled=True,
                    two_views=False, moco_family=False),
}


# Re-estimates the BN statistics of MODEL.INIT: no model to train, so not a Method.
BN_RECALIBRATE = "bn_recalibrate"


def check_config(cfg: CfgNode, world_size: int) -> None:
    """Reject settings the loop cannot honour before any work starts."""
    implemented = sorted([*METHODS, BN_RECALIBRATE])
    if cfg.METHOD not in implemented:
        raise ConfigError(f"METHOD {cfg.METHOD!r} is not one of {implemented}")
    from_init = sorted([BN_RECALIBRATE, *(name for name, method in METHODS.items() if method.starts_from_init)])
    if cfg.METHOD in from_init and not cfg.MODEL.INIT:
        does = "re-estimates the BN statistics of" if cfg.METHOD == BN_RECALIBRATE else "continues pretraining from"
        raise ConfigError(f"METHOD {cfg.METHOD} {does} a base checkpoint: give it with --init PATH (MODEL.INIT)")
    if cfg.METHOD not in from_init and cfg.MODEL.INIT:
        raise ConfigError(f"METHOD {cfg.METHOD} starts from random initialization; MODEL.INIT (--init) is taken "
                          f"by {', '.join(from_init)} only")
    try:
        expected_backbone_keys(cfg.MODEL.ARCH)  # the archs a canonical checkpoint can hold
    except ValueError as err:
        raise ConfigError(f"MODEL.ARCH: {err}") from None
    check_rules(cfg, PRETRAIN_RULES)
    if cfg.DATA.ROOT and cfg.DATA.BUILTIN:
        fail("DATA.BUILTIN", cfg.DATA.BUILTIN, f"names a built-in set, but DATA.ROOT (--data-root) {cfg.DATA.ROOT} is "
             "given too; keep one")
    if is_labelled(cfg) and cfg.DATA.BUILTIN == "pool":
        fail("DATA.BUILTIN", "pool", f"is unlabelled, and METHOD {cfg.METHOD} reads class folders: use "
             "classification, domain_a or domain_b")
    batch = cfg.SOLVER.IMS_PER_BATCH
    if batch % world_size:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH {batch} is the global batch and must divide evenly over "
                          f"{world_size} processes")
    check_policy(cfg, METHODS[cfg.METHOD].augmentation if cfg.METHOD in METHODS else mocov2_augmentation)
    moco_family = cfg.METHOD in METHODS and METHODS[cfg.METHOD].moco_family
    if moco_family and cfg.MODEL.SYNC_BN:
        fail("MODEL.SYNC_BN", True, f"does not apply to {cfg.METHOD}: the MoCo family normalises keys in shuffled BN "
             "groups (MODEL.MOCO.BN_SPLITS, or one group per process under torchrun), which SyncBN would merge")
    if moco_family:  # BN groups and a queue
        splits, per_process = bn_splits(cfg), batch // world_size
        if per_process % splits or per_process // splits < 2:
            raise ConfigError(f"SOLVER.IMS_PER_BATCH {batch} is {per_process} images per process, which do not "
                              f"split into MODEL.MOCO.BN_SPLITS {cfg.MODEL.MOCO.BN_SPLITS} ({splits}) equal BN "
                              "groups of at least 2 images")
        if cfg.MODEL.MOCO.QUEUE_SIZE % batch:
            raise ConfigError(f"MODEL.MOCO.QUEUE_SIZE {cfg.MODEL.MOCO.QUEUE_SIZE} must be a multiple of "
                              f"SOLVER.IMS_PER_BATCH {batch}")
    if cfg.SOLVER.MAX_ITER == 0 and cfg.SOLVER.EPOCHS == 0:
        fail("SOLVER.EPOCHS", 0, "must be >= 1 when SOLVER.MAX_ITER is 0 (else nothing would be trained)")


def is_labelled(cfg: CfgNode) -> bool:
    """Whether cfg's method reads class folders."""
    return cfg.METHOD in METHODS and METHODS[cfg.METHOD].labelled


# DATA.BUILTIN: the directory of each part of the built-in set that pretraining reads.
BUILTIN_PARTS = {"pool": "pool", "classification": "classification/train", "domain_a": "domain_a/train",
                 "domain_b": "domain_b/train"}


def data_directory(cfg: CfgNode) -> Path:
    """DATA.ROOT, else DATA.BUILTIN's part of the built-in set: by default the pool, or for a labelled method the
    classification train split."""
    if cfg.DATA.ROOT:
        return Path(cfg.DATA.ROOT)
    return builtin_data_root() / BUILTIN_PARTS[cfg.DATA.BUILTIN or ("classification" if is_labelled(cfg) else "pool")]


def total_iterations(cfg: CfgNode, dataset_size: int) -> int:
    """MAX_ITER if set, else EPOCHS full global batches per pass over the data (the last partial one dropped)."""
    if cfg.SOLVER.MAX_ITER > 0:
        return cfg.SOLVER.MAX_ITER
    return cfg.SOLVER.EPOCHS * max(1, dataset_size // cfg.SOLVER.IMS_PER_BATCH)


def scaled_lr(cfg: CfgNode) -> float:
    """Linear scaling rule: BASE_LR is the rate for REFERENCE_BATCH images."""
    return cfg.SOLVER.BASE_LR * cfg.SOLVER.IMS_PER_BATCH / cfg.SOLVER.REFERENCE_BATCH


def lr_factor(cfg: CfgNode, iteration: int, max_iter: int) -> float:
    """The schedule as a multiple of the scaled lr: a half cosine (v2) or x 0.1 at each of SOLVER.STEPS (v1)."""
    progress = iteration / max_iter
    if cfg.SOLVER.LR_SCHEDULE == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 0.1 ** sum(progress >= step for step in cfg.SOLVER.STEPS)


def build_data_loader(cfg: CfgNode, dataset, start_iter: int, device: torch.device) -> DataLoader:
    """An endless stream that a run resumed at ``start_iter`` continues exactly where it stopped."""
    per_process = cfg.SOLVER.IMS_PER_BATCH // get_world_size()
    sampler = InfiniteSampler(len(dataset), seed=cfg.SEED, start=start_iter * per_process)
    return DataLoader(
        SeededSamples(dataset), batch_size=per_process, sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS, pin_memory=device.type == "cuda",
        # Worker seeds come from this generator, not the global RNG (SeededSamples seeds each sample anyway).
        generator=torch.Generator().manual_seed(cfg.SEED),
    )


def checkpoint_meta(cfg: CfgNode, arch: str, data_dir: Path, step: int, parent=None) -> dict:
    """The canonical metadata of a checkpoint this pretraining writes; ``parent`` describes the checkpoint it
    started from (None: random initialization)."""
    return {
        "arch": arch,
        "method": cfg.METHOD,
        "pretrain_data": str(data_dir),
        "pixel_mean": [round(255 * value, 3) for value in IMAGENET_MEAN],
        "pixel_std": [round(255 * value, 3) for value in IMAGENET_STD],
        "config": cfg.dump(),
        "parent": parent,
        "step": step,
    }


def changed_keys(old_yaml: str, new_yaml: str) -> list:
    """Config keys whose values differ between two dumped configs."""
    def flatten(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from flatten(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value
    old = dict(flatten(CfgNode.load_cfg(old_yaml)))
    new = dict(flatten(CfgNode.load_cfg(new_yaml)))
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))


def canonical_packaging(cfg: CfgNode, model, data_dir: Path, parent, logger):
    """The engine's checkpoints as canonical checkpoints: the backbone (what transfers) with the training state
    (what resumes) beside it, so every periodic file is also a backbone ``tools/transfer.py`` reads."""
    def wrap(state: dict) -> dict:
        meta = checkpoint_meta(cfg, cfg.MODEL.ARCH, data_dir, state["iteration"], parent)
        return canonical_checkpoint(model.backbone_state_dict(), meta, train_state=state)

    def unwrap(path: Path, checkpoint) -> dict:
        state = checkpoint.get("train_state") if isinstance(checkpoint, Mapping) else None
        if not state:
            raise CheckpointError(f"{path} holds no training state (a backbone-only checkpoint?): --resume "
                                  "continues only a checkpoint this pretraining wrote; move it away to start afresh")
        changed = changed_keys(checkpoint["meta"]["config"], cfg.dump())
        if changed:
            logger.warning(f"config differs from the checkpoint's in {', '.join(changed)}")
        return state
    return wrap, unwrap


def check_data(cfg: CfgNode, dataset: ImageDirectory, world_size: int, logger) -> None:
    """An image directory that cannot fill a batch is an error; one holding held-out splits gets a warning."""
    per_process = cfg.SOLVER.IMS_PER_BATCH // world_size
    if len(dataset) < per_process:
        raise ValueError(f"{dataset.root}: {images_used(cfg, dataset)}, fewer than one batch: SOLVER.IMS_PER_BATCH "
                         f"{cfg.SOLVER.IMS_PER_BATCH} is {per_process} per process over {world_size} process(es); "
                         "add images or lower SOLVER.IMS_PER_BATCH")
    held_out = held_out_images(dataset.root, dataset.files)
    if held_out:
        logger.warning(f"{dataset.root} also holds images of held-out splits, which pretraining would learn from: "
                       + ", ".join(f"{directory} ({count} images)" for directory, count in held_out.items())
                       + "; point --data-root (DATA.ROOT) at the training images alone, e.g. the train/ directory")


def images_used(cfg: CfgNode, dataset: ImageDirectory) -> str:
    """'N images', with the fraction of those found when DATA.FRACTION keeps a subset."""
    if len(dataset) == dataset.num_found:
        return f"{len(dataset)} images"
    return f"{len(dataset)} images ({cfg.DATA.FRACTION:g} of {dataset.num_found}, DATA.FRACTION, seed {cfg.SEED})"


def method_losses(method: Method, device: torch.device):
    """How the engine turns a batch into the method's losses: views (and labels) to the device, into the model."""
    def compute(model, batch):
        images, labels = batch if method.labelled else (batch, None)
        inputs = [view.to(device, non_blocking=True) for view in (images if method.two_views else [images])]
        if labels is not None:
            inputs.append(labels.to(device, non_blocking=True))
        return model(*inputs)
    return compute


def train(cfg: CfgNode, device: torch.device, resume: bool = False) -> Path:
    """Pretrain as ``cfg`` says and return the path of ``last.pth``, holding the output directory's lock throughout."""
    check_config(cfg, get_world_size())
    with lock_output_dir(cfg.OUTPUT_DIR):
        return _train_locked(cfg, device, resume)


def _train_locked(cfg: CfgNode, device: torch.device, resume: bool) -> Path:
    world_size = get_world_size()
    output_dir = Path(cfg.OUTPUT_DIR)
    last_path = output_dir / f"{FINAL_NAME}.pth"
    if last_path.exists() and not resume:
        raise FileExistsError(f"{last_path} already exists: pass --resume to continue that run, or choose "
                              f"another --output; refusing to overwrite it")
    logger = setup_logger(output_dir)

    if cfg.METHOD == BN_RECALIBRATE:
        return _recalibrate(cfg, device, last_path, logger)
    method = METHODS[cfg.METHOD]
    data_dir = data_directory(cfg)
    dataset_class = LabelledImageFolder if method.labelled else ImageDirectory
    view = method.augmentation(cfg.INPUT.CROP_SIZE, cfg.INPUT.MIN_SCALE, cfg.AUG.DROP, cfg.AUG.ONLY)
    dataset = dataset_class(data_dir, TwoCrops(view) if method.two_views else view, fraction=cfg.DATA.FRACTION,
                            seed=cfg.SEED)
    check_data(cfg, dataset, world_size, logger)
    max_iter = total_iterations(cfg, len(dataset))
    if is_main_process():
        atomic_write_text(output_dir / "config.yaml", cfg.dump())

    seed_everything(cfg.SEED)
    model = method.build_model(cfg, dataset).to(device)
    if cfg.MODEL.SYNC_BN and is_distributed():
        if device.type != "cuda":
            raise ConfigError("MODEL.SYNC_BN True: torch's SyncBatchNorm needs CUDA devices, and this torchrun job "
                              f"runs on {device.type}; set MODEL.SYNC_BN False")
        model = convert_sync_bn(cfg, model)
        logger.info("SyncBN: BN statistics over the global batch of all processes (MODEL.SYNC_BN)")
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=scaled_lr(cfg),
                                momentum=cfg.SOLVER.MOMENTUM, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(cfg, it, max_iter))
    dtype = amp_dtype(device, cfg.SOLVER.AMP.ENABLED)
    scaler = torch.amp.GradScaler("cuda") if dtype is torch.float16 else None
    wrap, unwrap = canonical_packaging(cfg, model, data_dir, getattr(model, "parent", None), logger)
    checkpointer = Checkpointer(output_dir, model, optimizer, scheduler, scaler, final_name=FINAL_NAME,
                                wrap=wrap, unwrap=unwrap)
    if not resume:
        checkpointer.check_fresh_start()  # a killed run leaves model_<iter>.pth and last_checkpoint, no last.pth
    start_iter = checkpointer.resume() if resume else 0

    if is_distributed():
        train_model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                              find_unused_parameters=False)
    else:
        train_model = model
    if method.moco_family and not is_distributed():
        if bn_splits(cfg) == 1:
            logger.warning("single process with MODEL.MOCO.BN_SPLITS 1: one BN group holds every query and every "
                           "key, so BN statistics can leak which key is the positive (no shuffle-BN)")
        else:
            logger.info(f"single process: shuffle-BN emulated with {bn_splits(cfg)} BN groups of "
                        f"{cfg.SOLVER.IMS_PER_BATCH // bn_splits(cfg)} images (MODEL.MOCO.BN_SPLITS)")

    logger.info(f"{cfg.METHOD} {cfg.MODEL.ARCH} on {images_used(cfg, dataset)} from {data_dir}; "
                f"{world_size} process(es) "
                f"x {cfg.SOLVER.IMS_PER_BATCH // world_size} images = global batch {cfg.SOLVER.IMS_PER_BATCH}; "
                f"lr {scaled_lr(cfg):.6g} = {cfg.SOLVER.BASE_LR} x {cfg.SOLVER.IMS_PER_BATCH} / "
                f"{cfg.SOLVER.REFERENCE_BATCH}, {cfg.SOLVER.LR_SCHEDULE} schedule; {max_iter} iterations; "
                f"AMP {dtype or 'off'}; device {device}")
    events = EventWriter(output_dir)
    trainer = IterationTrainer(
        train_model, optimizer, scheduler, checkpointer,
        TrainingSchedule(max_iter=max_iter, checkpoint_period=cfg.SOLVER.CHECKPOINT_PERIOD, log_period=cfg.LOG_PERIOD),
        make_train_iterator=lambda start: build_data_loader(cfg, dataset, start, device),
        compute_losses=method_losses(method, device), device=device, events=events, amp=cfg.SOLVER.AMP.ENABLED,
        name="pretrain")
    trainer.train(start_iter)
    events.close()
    logger.info(f"pretraining done: {last_path}")
    return last_path


def _recalibrate(cfg: CfgNode, device: torch.device, last_path: Path, logger) -> Path:
    """bn_recalibrate: MODEL.INIT's BN statistics averaged over target batches of one MoCo v2 view each."""
    clean_stale_temporaries(last_path.parent)  # the training methods' Checkpointer does this for them
    data_dir = data_directory(cfg)
    dataset = ImageDirectory(data_dir, mocov2_augmentation(cfg.INPUT.CROP_SIZE, cfg.INPUT.MIN_SCALE, cfg.AUG.DROP,
                                                           cfg.AUG.ONLY), fraction=cfg.DATA.FRACTION, seed=cfg.SEED)
    check_data(cfg, dataset, get_world_size(), logger)
    model, init_meta = build_backbone(cfg.MODEL.INIT)
    if init_meta["arch"] != cfg.MODEL.ARCH:
        raise ConfigError(f"MODEL.INIT {cfg.MODEL.INIT} holds a {init_meta['arch']} but MODEL.ARCH is "
                          f"{cfg.MODEL.ARCH}; set MODEL.ARCH {init_meta['arch']}")
    model.to(device)
    batches = cfg.BN_RECALIBRATE.BATCHES or max(1, len(dataset) // cfg.SOLVER.IMS_PER_BATCH)
    logger.info(f"{BN_RECALIBRATE}: {init_meta['arch']} from {cfg.MODEL.INIT} ({init_meta['source_format']} "
                f"format); BN statistics from {batches} batches of {cfg.SOLVER.IMS_PER_BATCH} images of {data_dir}, "
                "weights unchanged")
    seen = recalibrate_bn_statistics(model, build_data_loader(cfg, dataset, 0, device), device, batches)
    parent = parent_record(cfg.MODEL.INIT, init_meta)
    if is_main_process():
        atomic_write_text(Path(cfg.OUTPUT_DIR) / "config.yaml", cfg.dump())
        save_canonical(last_path, model.state_dict(), checkpoint_meta(cfg, init_meta["arch"], data_dir, seen, parent))
    synchronize()
    logger.info(f"{BN_RECALIBRATE} done ({seen} batches): {last_path}")
    return last_path
