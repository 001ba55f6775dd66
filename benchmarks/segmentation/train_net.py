"""Fine-tune and evaluate DeepLab-v3 from a pretrained backbone on Cityscapes: mmseg's recipe, top to bottom."""
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from converters.io import atomic_write_text

from ..data.builtin import builtin_data_root
from ..engine.checkpoint import Checkpointer, start_iteration
from ..engine.distributed import current_device, get_world_size, is_main_process
from ..engine.events import EventWriter
from ..engine.sampler import InfiniteSampler, SeededSamples, ShardSampler, collate_as_lists
from ..engine.seed import seed_everything
from ..engine.solver import build_poly_scheduler, build_sgd
from ..engine.trainer import IterationTrainer, TrainingSchedule, amp_dtype
from ..engine.weights import describe_source, read_pretrained_backbone
from ..modeling.deeplab import build_deeplabv3, load_backbone_weights
from ..modeling.norm import resolve_norm
from .cityscapes import CITYSCAPES_CLASSES, CityscapesSemSeg
from .config import validate_segmentation_config
from .evaluation import SemSegConfusion, results_table
from .inference import Segmenter
from .mmseg import load_whole_segmenter, read_segmenter
from .predictions import write_overlay, write_prediction
from .transforms import photometric_distortion, random_crop, random_resize

logger = logging.getLogger("transferlab")


class TrainingSamples(Dataset):
    """mmseg's training pipeline on one sample: random resize, crop (cat_max_ratio), flip, photometric distortion."""

    def __init__(self, dataset, cfg):
        self.dataset, self.input, self.ignore = dataset, cfg.INPUT, cfg.MODEL.IGNORE_LABEL

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, label, _ = self.dataset[index]
        image, label = image.permute(1, 2, 0).numpy(), label.numpy().astype(np.uint8)
        image, label = random_resize(image, label, self.input.SCALE, self.input.RATIO_RANGE)
        image, label = random_crop(image, label, self.input.CROP_SIZE, self.input.CAT_MAX_RATIO, self.ignore)
        if torch.rand(()).item() < self.input.FLIP_PROB:
            image, label = image[:, ::-1], label[:, ::-1]
        if self.input.PHOTOMETRIC_DISTORTION:
            image = photometric_distortion(np.ascontiguousarray(image))
        return (torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous(),
                torch.from_numpy(label.astype(np.int64)))


def build_train_loader(cfg, dataset, start_iter: int) -> DataLoader:
    """An endless loader that, started at ``start_iter``, yields what an uninterrupted run would."""
    batch_size = cfg.SOLVER.IMS_PER_BATCH // get_world_size()
    return DataLoader(
        SeededSamples(TrainingSamples(dataset, cfg)), batch_size=batch_size,
        sampler=InfiniteSampler(len(dataset), seed=cfg.SEED, start=start_iter * batch_size),
        num_workers=cfg.DATALOADER.NUM_WORKERS, collate_fn=collate_as_lists,
        # its own generator: a loader seeds itself from the global RNG otherwise, which resume restores
        generator=torch.Generator().manual_seed(cfg.SEED), persistent_workers=cfg.DATALOADER.NUM_WORKERS > 0)


def data_root(cfg) -> Path:
    return Path(cfg.DATASETS.ROOT) if cfg.DATASETS.ROOT else builtin_data_root()


def load_datasets(cfg):
    root = data_root(cfg)
    train_set = CityscapesSemSeg.from_name(cfg.DATASETS.TRAIN, root)
    test_set = CityscapesSemSeg.from_name(cfg.DATASETS.TEST, root)
    if cfg.MODEL.NUM_CLASSES != len(CITYSCAPES_CLASSES):
        raise ValueError(f"MODEL.NUM_CLASSES is {cfg.MODEL.NUM_CLASSES} but Cityscapes has "
                         f"{len(CITYSCAPES_CLASSES)} train classes")
    logger.info("Train: %s (%d images), test: %s (%d images), %d classes", train_set.image_dir, len(train_set),
                test_set.image_dir, len(test_set), len(CITYSCAPES_CLASSES))
    return train_set, test_set


def initialize_backbone(model, cfg) -> None:
    pretrained = read_pretrained_backbone(cfg.MODEL, "DeepLab-v3")
    if pretrained is None:
        return
    state_dict, meta = pretrained
    loaded = load_backbone_weights(model, state_dict)
    logger.info("Loaded all %d backbone tensors from %s: every tensor of the backbone, the 7x7 stem included",
                loaded, describe_source(cfg.MODEL.WEIGHTS, meta))


@torch.no_grad()
def evaluate_model(segmenter: Segmenter, dataset, cfg, output_dir: Path, final: bool) -> dict | None:
    """Predictions of this rank's shard, the confusion matrix summed over ranks; on the final evaluation the
    Cityscapes labelIds PNGs and a few overlays too. Metrics on the main process, None on the others."""
    segmenter.eval()
    evaluator = SemSegConfusion(len(CITYSCAPES_CLASSES), cfg.MODEL.IGNORE_LABEL, CITYSCAPES_CLASSES)
    device = segmenter.pixel_mean.device
    dtype = amp_dtype(device, cfg.SOLVER.AMP.ENABLED)
    test = cfg.TEST
    shard = ShardSampler(len(dataset))
    for position, index in enumerate(tqdm(shard, desc="inference", disable=not is_main_process(), leave=False)):
        image, label, info = dataset[index]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = segmenter.predict(image.to(device), test.SCALE, test.MODE, test.SLIDE_CROP, test.SLIDE_STRIDE)
        prediction = logits.argmax(0).cpu().numpy().astype(np.uint8)
        evaluator.update(prediction, label.numpy())
        if final and test.WRITE_PREDICTIONS:
            write_prediction(prediction, info, output_dir)
        if final and is_main_process() and position < test.NUM_OVERLAYS:
            write_overlay(image.permute(1, 2, 0).numpy(), prediction, info, output_dir, label=label.numpy())
    evaluator.all_reduce()
    return evaluator.metrics() if is_main_process() else None


def run(cfg, resume: bool = False, eval_only: bool = False) -> dict:
    """Train (or resume) and evaluate; returns the final metrics on the main process."""
    validate_segmentation_config(cfg)
    output_dir = Path(cfg.OUTPUT_DIR)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = current_device()
    train_set, test_set = load_datasets(cfg)

    seed_everything(cfg.SEED)
    norm = resolve_norm(cfg.MODEL.RESNETS.NORM, device)
    model = build_deeplabv3(cfg.MODEL, norm)
    segmenter = Segmenter(model, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, cfg.INPUT.CROP_SIZE,
                          cfg.MODEL.IGNORE_LABEL, cfg.MODEL.AUXILIARY_HEAD.LOSS_WEIGHT).to(device)
    logger.info("Model: DeepLab-v3 R%d-D%d, norm %s, %.1fM parameters", cfg.MODEL.RESNETS.DEPTH,
                cfg.MODEL.RESNETS.OUTPUT_STRIDE, norm, sum(p.numel() for p in model.parameters()) / 1e6)
    solver = cfg.SOLVER
    # mmseg decays every parameter, norms included
    optimizer = build_sgd(segmenter, solver.BASE_LR, solver.MOMENTUM, solver.WEIGHT_DECAY, solver.WEIGHT_DECAY)
    scheduler = build_poly_scheduler(optimizer, solver.BASE_LR, solver.MAX_ITER, solver.POLY_POWER, solver.MIN_LR)
    scaler = torch.amp.GradScaler("cuda") if solver.AMP.ENABLED and device.type == "cuda" else None
    checkpointer = Checkpointer(output_dir, model, optimizer, scheduler, scaler)  # mmseg's names, no prefix

    def load_whole_model() -> bool:
        """A fine-tuned model (this engine's or mmseg's), as Detectron2's --eval-only MODEL.WEIGHTS."""
        whole = read_segmenter(cfg.MODEL.WEIGHTS) if Path(cfg.MODEL.WEIGHTS).is_file() else None
        if whole is not None:
            load_whole_segmenter(model, whole, cfg.MODEL.WEIGHTS)
            logger.info("--eval-only: loaded the whole DeepLab-v3 (%d tensors) from %s", len(whole),
                        cfg.MODEL.WEIGHTS)
        return whole is not None

    start_iter = start_iteration(checkpointer, cfg.SEED, resume=resume, eval_only=eval_only,
                                 load_whole_model=load_whole_model, initialize=lambda: initialize_backbone(model, cfg),
                                 whole_model=f"a whole DeepLab-v3 ({cfg.MODEL.WEIGHTS or 'empty'})")
    if is_main_process():
        atomic_write_text(output_dir / "config.yaml", cfg.dump())

    train_model = segmenter
    if get_world_size() > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            segmenter, device_ids=[device.index] if device.type == "cuda" else None)
    events = EventWriter(output_dir)

    def evaluate(iteration: int):
        final = eval_only or iteration >= solver.MAX_ITER
        metrics = evaluate_model(segmenter, test_set, cfg, output_dir, final)
        if metrics is None:
            return None
        events.write(iteration, {f"sem_seg/{name}": value for name, value in metrics["sem_seg"].items()})
        table = results_table(metrics)
        logger.info("Evaluation at iteration %d on %s:\n%s", iteration, cfg.DATASETS.TEST, table)
        if final:
            atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2))
            atomic_write_text(output_dir / "results.md", table + "\n")
        return metrics

    if eval_only:
        metrics = evaluate(start_iter)
        events.close()
        return metrics

    def compute_losses(model, batch):
        images, labels = batch
        return model([image.to(device, non_blocking=True) for image in images], labels)

    trainer = IterationTrainer(
        train_model, optimizer, scheduler, checkpointer,
        TrainingSchedule(max_iter=solver.MAX_ITER, checkpoint_period=solver.CHECKPOINT_PERIOD,
                         eval_period=cfg.TEST.EVAL_PERIOD),
        make_train_iterator=lambda start: build_train_loader(cfg, train_set, start),
        compute_losses=compute_losses, device=device, events=events, amp=solver.AMP.ENABLED, evaluate=evaluate)
    metrics = trainer.train(start_iter)
    events.close()
    return metrics
