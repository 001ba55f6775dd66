"""Fine-tune and evaluate a detector from a pretrained backbone: the detection transfer benchmark, top to bottom."""
import json
import logging
import time
from pathlib import Path

import torch

from converters.io import CheckpointError, atomic_write_text, load_torch_file

from ..data.coco import COCODetection
from ..diagnosis.report import diagnose
from ..engine.checkpoint import Checkpointer, start_iteration
from ..engine.distributed import current_device, get_world_size, is_main_process
from ..engine.events import EventWriter
from ..engine.precise_bn import update_bn_stats
from ..engine.seed import seed_everything
from ..engine.solver import build_lr_scheduler, build_sgd
from ..engine.trainer import IterationTrainer, TrainingSchedule, amp_dtype
from ..engine.weights import describe_source, read_pretrained_backbone
from ..modeling.norm import resolve_norm
from ..modeling.rcnn import build_detector, describe_detector, load_backbone_weights
from .config import validate_detection_config
from .data import build_test_loader, build_train_loader
from .datasets import dataset_root, resolve_detection_split, to_voc_results
from .evaluation import COCO_METRICS, evaluate_coco, results_table, run_inference
from .voc_evaluation import VOC_METRICS, evaluate_voc

logger = logging.getLogger("transferlab")


def scale_to_world_size(cfg):
    """Detectron2's auto-scaling: keep the per-process batch of ``REFERENCE_WORLD_SIZE`` and scale lr and schedule."""
    reference, world_size = cfg.SOLVER.REFERENCE_WORLD_SIZE, get_world_size()
    if reference == 0 or reference == world_size:
        return cfg
    scale = world_size / reference
    cfg = cfg.clone()
    cfg.defrost()
    solver = cfg.SOLVER
    solver.IMS_PER_BATCH = int(round(solver.IMS_PER_BATCH * scale))
    solver.BASE_LR *= scale
    solver.MAX_ITER = int(round(solver.MAX_ITER / scale))
    solver.WARMUP_ITERS = int(round(solver.WARMUP_ITERS / scale))
    solver.STEPS = tuple(int(round(step / scale)) for step in solver.STEPS)
    solver.CHECKPOINT_PERIOD = int(round(solver.CHECKPOINT_PERIOD / scale))
    cfg.TEST.EVAL_PERIOD = int(round(cfg.TEST.EVAL_PERIOD / scale))
    solver.REFERENCE_WORLD_SIZE = world_size
    cfg.freeze()
    logger.info("Linear scaling from %d to %d processes: IMS_PER_BATCH %d, BASE_LR %g, MAX_ITER %d, STEPS %s",
                reference, world_size, solver.IMS_PER_BATCH, solver.BASE_LR, solver.MAX_ITER, solver.STEPS)
    return cfg


def load_datasets(cfg):
    """``(train_set, test_set, test_split)``: the datasets to train and evaluate on, and how the test set is scored."""
    root = dataset_root(cfg)
    class_names = tuple(cfg.DATASETS.CLASS_NAMES)
    train_split = resolve_detection_split(cfg.DATASETS.TRAIN, root, class_names)
    test_split = resolve_detection_split(cfg.DATASETS.TEST, root, class_names)
    if cfg.MODEL.MASK_ON and "voc" in (train_split.metric, test_split.metric):
        raise ValueError(f"MODEL.MASK_ON True needs instance masks, which VOC detection data ({train_split.source}) "
                         "does not have: Faster R-CNN only (MODEL.MASK_ON False)")
    train_set = COCODetection(train_split.image_dir, train_split.annotations, with_masks=cfg.MODEL.MASK_ON,
                              mask_format=cfg.INPUT.MASK_FORMAT, source=train_split.source)
    test_set = COCODetection(test_split.image_dir, test_split.annotations, with_masks=False, filter_empty=False,
                             source=test_split.source)
    for dataset in (train_set, test_set):
        dataset.check_images()
        if len(dataset.class_names) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            raise ValueError(f"{dataset.ann_file} has {len(dataset.class_names)} categories but "
                             f"MODEL.ROI_HEADS.NUM_CLASSES is {cfg.MODEL.ROI_HEADS.NUM_CLASSES}")
    if train_set.class_names != test_set.class_names:
        raise ValueError(f"{train_set.ann_file} and {test_set.ann_file} have different categories "
                         f"({train_set.class_names} vs {test_set.class_names})")
    logger.info("Train: %s (%d images), test: %s (%d images, %s), %d classes", train_set.ann_file, len(train_set),
                test_set.ann_file, len(test_set), describe_metric(test_split), len(train_set.class_names))
    return train_set, test_set, test_split


def describe_metric(split) -> str:
    if split.metric == "voc":
        return "VOC AP, " + ("VOC07 11-point" if split.use_07_metric else "area under the precision envelope")
    return "COCO AP"


def initialize_backbone(model, cfg) -> None:
    pretrained = read_pretrained_backbone(cfg.MODEL, "detector")
    if pretrained is None:
        return
    state_dict, meta = pretrained
    loaded = load_backbone_weights(model, state_dict)
    coverage = (f"all {loaded}" if loaded == len(state_dict) else
                f"{loaded} of {len(state_dict)} (the rest are BN batch counters, which FrozenBN does not keep)")
    logger.info("Loaded %s backbone tensors from %s", coverage, describe_source(cfg.MODEL.WEIGHTS, meta))


def whole_detector_state(weights: str) -> dict | None:
    """The ``model`` state dict of a detector this engine saved (``model_final.pth``, ``model_<iter>.pth``); None
    for anything else (a backbone checkpoint, ``none``)."""
    if weights in ("", "none") or not Path(weights).is_file():
        return None
    state = load_torch_file(weights)
    model = state.get("model") if isinstance(state, dict) else None
    return model if isinstance(model, dict) and any(key.startswith("roi_heads.") for key in model) else None


def load_whole_detector(model, state: dict, weights: str) -> None:
    """Every tensor of the detector, as Detectron2's ``--eval-only MODEL.WEIGHTS`` loads it."""
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # torch's mismatch report: many lines and no file name
        raise CheckpointError(f"{weights} is a detector that does not fit the one this config builds (classes, "
                              f"mask head, depth?): {' '.join(str(error).split())[:500]}") from error
    logger.info("--eval-only: loaded the whole detector (%d tensors) from %s", len(state), weights)


def detection_losses(device):
    def compute(model, batch):
        images, targets = batch
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{k: v.to(device) if hasattr(v, "to") else v for k, v in t.items()} for t in targets]
        return model(images, targets)
    return compute


def write_results(output_dir: Path, metrics: dict, results: list, test_set, test_split) -> None:
    """metrics.json, results.md and the detections: COCO result records, or for a VOC test set the records in
    Detectron2's VOC conventions (``tools/evaluate.py --metric voc`` reads them back)."""
    if test_split.metric == "voc":
        atomic_write_text(output_dir / "voc_instances_results.json",
                          json.dumps(to_voc_results(results, test_set.coco.imgs)))
    else:
        atomic_write_text(output_dir / "coco_instances_results.json", json.dumps(results))
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(output_dir / "results.md", results_table(metrics, metric_names(test_split)) + "\n")


def metric_names(test_split) -> tuple:
    return VOC_METRICS if test_split.metric == "voc" else COCO_METRICS


def evaluate_results(test_set, test_split, results: list, iou_types, coco_backend: str) -> dict:
    if test_split.metric == "voc":
        return evaluate_voc(test_split.voc_ground_truth, to_voc_results(results, test_set.coco.imgs),
                            test_set.class_names, test_split.use_07_metric)
    return evaluate_coco(test_set.coco, results, iou_types, coco_backend)


def write_diagnosis(cfg, output_dir: Path, coco_gt, results: list, iou_types) -> None:
    """TIDE and Hoiem error diagnosis of an evaluation, next to metrics.json; its failure never costs a run."""
    if not cfg.TEST.DIAGNOSIS.ENABLED:
        return
    start = time.perf_counter()
    try:
        summary = diagnose(coco_gt, {output_dir.name: results}, output_dir, iou_types,
                           similar=cfg.TEST.DIAGNOSIS.SIMILAR or None, max_dets=cfg.TEST.DETECTIONS_PER_IMAGE)
    except Exception:
        logger.exception("Error diagnosis failed (metrics.json is written); TEST.DIAGNOSIS.ENABLED False skips it")
        return
    logger.info("Error diagnosis in %.1f s (charts, tide.json, hoiem.json, diagnosis.md in %s):\n%s",
                time.perf_counter() - start, output_dir, summary)


def run(cfg, resume: bool = False, eval_only: bool = False) -> dict:
    """Train (or resume) and evaluate; returns the final metrics on the main process."""
    validate_detection_config(cfg)
    cfg = scale_to_world_size(cfg)
    output_dir = Path(cfg.OUTPUT_DIR)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = current_device()

    train_set, test_set, test_split = load_datasets(cfg)

    seed_everything(cfg.SEED)  # identical initialization on every rank
    norm = resolve_norm(cfg.MODEL.RESNETS.NORM, device)
    model = build_detector(cfg, norm).to(device)
    logger.info("Model: %s, norm %s, %.1fM parameters", describe_detector(cfg), norm,
                sum(p.numel() for p in model.parameters()) / 1e6)
    optimizer = build_sgd(model, cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY,
                          cfg.SOLVER.WEIGHT_DECAY_NORM)
    scheduler = build_lr_scheduler(optimizer, cfg.SOLVER)
    scaler = torch.amp.GradScaler("cuda") if cfg.SOLVER.AMP.ENABLED and device.type == "cuda" else None
    checkpointer = Checkpointer(output_dir, model, optimizer, scheduler, scaler)

    def load_whole_model() -> bool:
        detector = whole_detector_state(cfg.MODEL.WEIGHTS)
        if detector is not None:
            load_whole_detector(model, detector, cfg.MODEL.WEIGHTS)
        return detector is not None

    start_iter = start_iteration(checkpointer, cfg.SEED, resume=resume, eval_only=eval_only,
                                 load_whole_model=load_whole_model, initialize=lambda: initialize_backbone(model, cfg),
                                 whole_model=f"a detector this engine saved ({cfg.MODEL.WEIGHTS or 'empty'})")
    if is_main_process():
        atomic_write_text(output_dir / "config.yaml", cfg.dump())

    train_model = model
    if get_world_size() > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    test_loader = build_test_loader(cfg, test_set)
    iou_types = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    compute_losses = detection_losses(device)

    events = EventWriter(output_dir)

    def evaluate(iteration: int):
        """Every evaluation goes to the log and events.jsonl; the final one (end of training, or --eval-only)
        also writes metrics.json, the detections and the diagnosis."""
        results = run_inference(model, test_loader, device, test_set.contiguous_to_coco_id,
                                amp_dtype(device, cfg.SOLVER.AMP.ENABLED))
        if not is_main_process():
            return None
        metrics = evaluate_results(test_set, test_split, results, iou_types, cfg.TEST.COCO_BACKEND)
        events.write(iteration, {f"{iou_type}/{name}": value for iou_type, stats in metrics.items()
                                 for name, value in stats.items()})
        logger.info("Evaluation at iteration %d on %s:\n%s", iteration, cfg.DATASETS.TEST[0],
                    results_table(metrics, metric_names(test_split)))
        if eval_only or iteration >= cfg.SOLVER.MAX_ITER:
            write_results(output_dir, metrics, results, test_set, test_split)
            write_diagnosis(cfg, output_dir, test_set.coco, results, iou_types)
        return metrics

    def precise_bn(iteration: int):
        if cfg.TEST.PRECISE_BN.ENABLED:
            batches = build_train_loader(cfg, train_set, start_iter=iteration)
            update_bn_stats(train_model, iter(batches), compute_losses, cfg.TEST.PRECISE_BN.NUM_ITER)

    if eval_only:
        metrics = evaluate(start_iter)
        events.close()
        return metrics

    clip = cfg.SOLVER.CLIP_GRADIENTS
    schedule = TrainingSchedule(
        max_iter=cfg.SOLVER.MAX_ITER,
        checkpoint_period=cfg.SOLVER.CHECKPOINT_PERIOD,
        eval_period=cfg.TEST.EVAL_PERIOD,
        clip_type=clip.CLIP_TYPE if clip.ENABLED else None,
        clip_value=clip.CLIP_VALUE,
        clip_norm_type=clip.NORM_TYPE,
    )
    trainer = IterationTrainer(
        train_model, optimizer, scheduler, checkpointer, schedule,
        make_train_iterator=lambda start: build_train_loader(cfg, train_set, start),
        compute_losses=compute_losses, device=device, events=events, amp=cfg.SOLVER.AMP.ENABLED,
        evaluate=evaluate, before_evaluate=precise_bn,
    )
    metrics = trainer.train(start_iter)
    events.close()
    return metrics
