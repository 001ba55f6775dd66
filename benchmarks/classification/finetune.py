"""Finetuning the whole network on a (label-budget) training set: HPT's semi-supervised protocol (appendix A).

HPT (Reed et al. 2022) Table 4, "Finetune Value": batch 256, SGD with momentum 0.9, weight decay 0.0, lr
{0.001, 0.01}, duration {2500 steps, 90 epochs}, schedule "10x decay at 1/3 and 2/3" of the training steps;
RandomResizedCrop(224) + horizontal flip for training, resize + centre crop for evaluation (the datasets given
here carry those transforms). "We used only the train split for training the evaluation task and then use the
val split evaluation performance to select the top hyperparameter, training schedule, and evaluation point
during the training. We then reported the performance on the test split evaluated with the best settings found
with the val split." So every run of the sweep is evaluated on val and test at several points, and the single
best val point of the whole sweep gives the reported test numbers.

Each (lr, schedule) run lives in its own directory of ``output_dir`` with the engine's checkpoints (atomic,
every ``checkpoint_period`` steps) and resumes exactly. The batch is global: under DDP each of the W processes
takes ``batch_size / W`` images and BN statistics are synchronized, so the run computes the same thing at any
process count and the lr needs no scaling.
"""
import copy
import json
import logging
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from converters.io import atomic_write_text

from ..engine.checkpoint import Checkpointer
from ..engine.distributed import all_gather_object, gather_object, get_rank, get_world_size, is_main_process
from ..engine.events import EventWriter
from ..engine.sampler import InfiniteSampler, SeededSamples
from ..engine.seed import seed_everything
from ..engine.solver import build_sgd, warmup_multistep_factor
from ..engine.trainer import IterationTrainer, TrainingSchedule, amp_dtype
from ..modeling.norm import norm_layer, resolve_norm
from .linear import HPT_MILESTONES
from .metrics import classification_metrics

logger = logging.getLogger("transferlab")

PAPER_LRS = (0.01, 0.001)
PAPER_SCHEDULES = ("2500steps", "90epochs")
PAPER_BATCH_SIZE = 256
# Not in the paper's table: HPT's finetune configs (OpenSelfSup paramwise_options {'\Ahead.': lr_mult 100}).
HPT_HEAD_LR_MULTIPLIER = 100.0
MOMENTUM = 0.9
WEIGHT_DECAY = 0.0
DECAY_GAMMA = 0.1
NORMS = ("SyncBN", "naiveSyncBN", "BN")  # BN that trains; SyncBN is plain BN in a single process
HISTORY_FILE = "evaluations.json"
RESULT_FILE = "finetune.json"


def schedule_steps(schedule: str, train_size: int, batch_size: int) -> int:
    """Training steps of ``"<N>steps"`` or ``"<N>epochs"`` (an epoch: ``train_size / batch_size`` steps, rounded up)."""
    match = re.fullmatch(r"\s*(\d+)\s*(steps|epochs)\s*", schedule)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"finetune schedule {schedule!r}: write a positive number of steps or epochs, "
                         "e.g. '2500steps' or '90epochs'")
    count, unit = int(match.group(1)), match.group(2)
    return count if unit == "steps" else math.ceil(count * train_size / batch_size)


def decay_steps(max_iter: int) -> tuple[int, ...]:
    return tuple(round(fraction * max_iter) for fraction in HPT_MILESTONES)


class Classifier(nn.Module):
    """The probes' backbone (``features.build_backbone``: canonical names under ``backbone.``) and a linear head."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.layer4[-1].conv1.in_channels, num_classes)

    def forward(self, images):
        return self.head(self.backbone(images))


def with_norm(module: nn.Module, norm: str) -> nn.Module:
    """``module`` with its BatchNorms replaced by ``norm`` (``modeling.norm``'s names), statistics kept: the
    synchronized BN that keeps a DDP run equal to a single-process one."""
    norm_class = norm_layer(norm)
    if isinstance(module, nn.BatchNorm2d) and type(module) is not norm_class:
        converted = norm_class(module.num_features, eps=module.eps, momentum=module.momentum)
        converted.load_state_dict(module.state_dict())
        return converted
    for name, child in module.named_children():
        setattr(module, name, with_norm(child, norm))
    return module


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device, num_workers: int,
            amp: bool):
    """``(logits, targets)`` of the whole dataset on the main process (``None`` elsewhere); each rank runs a
    strided shard of it."""
    rank, world_size = get_rank(), get_world_size()
    indices = list(range(rank, len(dataset), world_size))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, num_workers=num_workers)
    model.eval()
    dtype = amp_dtype(device, amp)
    logits, targets = [], []
    for images, target in loader:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits.append(model(images.to(device, non_blocking=True)).float().cpu())
        targets.append(target)
    shard = (torch.tensor(indices, dtype=torch.long), torch.cat(logits), torch.cat(targets))
    shards = gather_object(shard)
    if not is_main_process():
        return None
    order = torch.cat([s[0] for s in shards]).argsort()
    return torch.cat([s[1] for s in shards])[order], torch.cat([s[2] for s in shards])[order]


def run_name(lr: float, schedule: str) -> str:
    return f"lr{lr:g}_{schedule.replace(' ', '')}"


def read_history(run_dir: Path, start_iter: int) -> list:
    """Evaluations a killed run recorded up to its resumed checkpoint (later ones are redone)."""
    path = run_dir / HISTORY_FILE
    if start_iter == 0 or not path.is_file():
        return []
    return [entry for entry in json.loads(path.read_text()) if entry["iteration"] <= start_iter]


def finetune_run(*, backbone: nn.Module, train_set, val_set, test_set, num_classes: int, multilabel: bool,
                 lr: float, schedule: str, batch_size: int, head_lr_multiplier: float, run_dir: Path,
                 device: torch.device, seed: int, resume: bool, checkpoint_period: int, evaluations: int,
                 norm: str, num_workers: int, amp: bool) -> list | None:
    """Train one point of the sweep from a copy of ``backbone``; returns its evaluations (val and test metrics
    per evaluated iteration) on the main process."""
    world_size = get_world_size()
    per_rank_batch = batch_size // world_size
    max_iter = schedule_steps(schedule, len(train_set), batch_size)
    run_dir.mkdir(parents=True, exist_ok=True)

    seed_everything(seed)  # the same head on every rank and in every run of the sweep
    model = Classifier(with_norm(copy.deepcopy(backbone), resolve_norm(norm, device)), num_classes).to(device)
    optimizer = build_sgd(model.backbone, lr, MOMENTUM, WEIGHT_DECAY, WEIGHT_DECAY)
    optimizer.add_param_group({"params": list(model.head.parameters()), "lr": lr * head_lr_multiplier,
                               "weight_decay": WEIGHT_DECAY})
    steps = decay_steps(max_iter)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: warmup_multistep_factor(it, steps, DECAY_GAMMA, 0, 1.0))
    scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None
    checkpointer = Checkpointer(run_dir, model, optimizer, scheduler, scaler)
    if not resume:
        checkpointer.check_fresh_start()
    start_iter = checkpointer.resume() if resume else 0
    history = read_history(run_dir, start_iter)
    # the main process decides: the other ranks need not see its file system
    if all_gather_object(bool(history) and history[-1]["iteration"] == max_iter)[0]:
        logger.info("Finetune %s: finished earlier (%d iterations)", run_dir.name, max_iter)
        return history if is_main_process() else None
    logger.info("Finetune %s: %d iterations (%s), batch %d (%d per process), lr %g (head x%g), decay x%g at %s",
                run_dir.name, max_iter, schedule, batch_size, per_rank_batch, lr, head_lr_multiplier, DECAY_GAMMA,
                steps)

    train_model = model
    if world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def make_train_iterator(start: int):
        sampler = InfiniteSampler(len(train_set), seed=seed, start=start * per_rank_batch)
        return DataLoader(SeededSamples(train_set), batch_size=per_rank_batch, sampler=sampler,
                          num_workers=num_workers, pin_memory=device.type == "cuda")

    def compute_losses(net, batch):
        images, targets = batch
        logits = net(images.to(device, non_blocking=True)).float()
        targets = targets.to(device, non_blocking=True)
        if multilabel:
            return {"loss_bce": F.binary_cross_entropy_with_logits(logits, targets.float())}
        return {"loss_ce": F.cross_entropy(logits, targets)}

    events = EventWriter(run_dir)

    def evaluate(iteration: int):
        results = {}
        for split, dataset in (("val", val_set), ("test", test_set)):
            predicted = predict(model, dataset, per_rank_batch, device, num_workers, amp)
            if predicted is not None:
                results[split] = classification_metrics(*predicted, multilabel=multilabel)
        if not is_main_process():
            return None
        history.append({"iteration": iteration, **results})
        atomic_write_text(run_dir / HISTORY_FILE, json.dumps(history, indent=1))
        events.write(iteration, {f"{split}/{name}": value for split, metrics in results.items()
                                 for name, value in metrics.items()})
        logger.info("Finetune %s, iteration %d: %s", run_dir.name, iteration, "  ".join(
            f"{split} {name} {value:.2f}" for split, metrics in results.items() for name, value in metrics.items()))
        return results

    eval_period = max(1, math.ceil(max_iter / evaluations))
    trainer = IterationTrainer(
        train_model, optimizer, scheduler, checkpointer,
        TrainingSchedule(max_iter=max_iter, checkpoint_period=checkpoint_period, eval_period=eval_period,
                         log_period=min(20, eval_period)),
        make_train_iterator=make_train_iterator, compute_losses=compute_losses, device=device, events=events,
        amp=amp, evaluate=evaluate)
    trainer.train(start_iter)
    events.close()
    return history if is_main_process() else None


def best_evaluation(history: list, metric: str) -> dict:
    """The first evaluation with the highest val ``metric`` (an earlier point wins a tie: fewer steps)."""
    return max(history, key=lambda entry: (entry["val"][metric], -entry["iteration"]))


def finetune(backbone: nn.Module, train_set: Dataset, val_set: Dataset, test_set: Dataset, *, num_classes: int,
             multilabel: bool, output_dir, device: torch.device, lrs=PAPER_LRS, schedules=PAPER_SCHEDULES,
             batch_size: int = PAPER_BATCH_SIZE, head_lr_multiplier: float = HPT_HEAD_LR_MULTIPLIER,
             checkpoint_period: int = 500, evaluations: int = 10, seed: int = 0, resume: bool = False,
             norm: str = "SyncBN", num_workers: int = 2, amp: bool = False) -> dict | None:
    """Finetune a copy of ``backbone`` (the probes' ``features.build_backbone``) with every (lr, schedule) of the
    sweep and choose on val, as HPT appendix A does.

    Datasets yield ``(image tensor, target)``: a class index, or a multi-hot float vector when ``multilabel``
    (then the head is trained with BCE). Each run is evaluated ``evaluations`` times, evenly spaced, the last at
    its end. Returns on the main process (``None`` elsewhere), and writes to ``output_dir/finetune.json``::

        {"runs": {"lr0.01_2500steps": {"lr", "schedule", "max_iter", "iteration", "val", "test"}, ...},
         "chosen": "<run name>", "metric": "top1" | "auroc", "iteration", "val": {...}, "test": {...}}

    where a run's ``iteration``/``val``/``test`` are its best val evaluation and the top level the sweep's.
    """
    world_size = get_world_size()
    if not lrs or not schedules:
        raise ValueError("the finetune sweep needs at least one lr and one schedule")
    if norm not in NORMS:
        raise ValueError(f"finetune norm {norm!r}: choose one of {', '.join(NORMS)}")
    if batch_size % world_size:
        raise ValueError(f"finetune batch {batch_size} does not split evenly over {world_size} processes")
    if head_lr_multiplier <= 0 or evaluations < 1 or checkpoint_period < 0:
        raise ValueError(f"head lr multiplier {head_lr_multiplier} must be positive, evaluations {evaluations} at "
                         f"least 1, checkpoint period {checkpoint_period} at least 0")
    for name, dataset in (("train", train_set), ("val", val_set), ("test", test_set)):
        if len(dataset) < world_size:
            raise ValueError(f"finetune: the {name} set has {len(dataset)} images, fewer than the {world_size} "
                             "processes")
    for schedule in schedules:
        schedule_steps(schedule, len(train_set), batch_size)  # a bad schedule fails before any training
    output_dir = Path(output_dir)
    logger.info("Finetune sweep: lr %s x schedule %s, batch %d", list(lrs), list(schedules), batch_size)

    metric = "auroc" if multilabel else "top1"  # HPT's metrics
    runs = {}
    for schedule in schedules:
        for lr in lrs:
            name = run_name(lr, schedule)
            history = finetune_run(
                backbone=backbone, train_set=train_set, val_set=val_set, test_set=test_set,
                num_classes=num_classes, multilabel=multilabel, lr=lr, schedule=schedule, batch_size=batch_size,
                head_lr_multiplier=head_lr_multiplier, run_dir=output_dir / name, device=device, seed=seed,
                resume=resume, checkpoint_period=checkpoint_period, evaluations=evaluations, norm=norm,
                num_workers=num_workers, amp=amp)
            if history is not None:
                runs[name] = {"lr": lr, "schedule": schedule, "max_iter": history[-1]["iteration"],
                              **best_evaluation(history, metric)}
    if not is_main_process():
        return None
    chosen = max(runs, key=lambda name: runs[name]["val"][metric])  # the first of equals, in sweep order
    result = {"runs": runs, "chosen": chosen, "metric": metric, "iteration": runs[chosen]["iteration"],
              "val": runs[chosen]["val"], "test": runs[chosen]["test"]}
    atomic_write_text(output_dir / RESULT_FILE, json.dumps(result, indent=2))
    logger.info("Finetune sweep: chose %s at iteration %d on val %s %.2f; test %s", chosen, result["iteration"],
                metric, result["val"][metric], result["test"])
    return result
