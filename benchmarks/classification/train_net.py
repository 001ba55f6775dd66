"""The classification tasks of ``tools/transfer.py``: read the data, build the frozen (or finetuned) backbone, run
the probe, write ``metrics.json`` and ``results.md``. One function per task, top to bottom."""
import json
import logging
from pathlib import Path

from torch.utils.data import DataLoader

from converters.io import atomic_write_text

from ..data.builtin import cache_root
from ..engine.distributed import current_device, is_main_process, synchronize
from .config import validate_classification_config
from .data import ImageSampleDataset, data_directory, label_budget, per_class_shots, read_classification_data
from .features import FeatureCache, build_backbone, checkpoint_id, eval_transform, recalibrate_bn, train_transform
from .fewshot import few_shot_accuracy
from .finetune import finetune
from .knn import knn_probe
from .linear import augmented_linear_probe, cached_linear_probe

logger = logging.getLogger("transferlab")


def load_data(cfg):
    """The checked dataset with its label budget applied to train; every note goes to the log."""
    directory = data_directory(cfg.DATASETS.ROOT, cfg.DATASETS.BUILTIN)
    data = read_classification_data(directory, seed=cfg.SEED, val_fraction=cfg.DATASETS.VAL_FRACTION,
                                    test_fraction=cfg.DATASETS.TEST_FRACTION)
    for note in data.notes:
        logger.info("%s", note)
    train = data.splits["train"]
    if cfg.DATASETS.LABELS:
        data.splits["train"] = label_budget(train, cfg.DATASETS.LABELS, cfg.SEED)
        logger.info("Label budget: %d of %d train images, every class at least once (seed %d)",
                    len(data.splits["train"]), len(train), cfg.SEED)
    elif cfg.DATASETS.SHOTS:
        data.splits["train"] = per_class_shots(train, cfg.DATASETS.SHOTS, cfg.SEED, classes=data.classes)
        logger.info("%d-shot: %d train images (seed %d)", cfg.DATASETS.SHOTS, len(data.splits["train"]), cfg.SEED)
    logger.info("Data: %s, %d classes%s; %s", directory, len(data.classes), " (multi-label)" if data.multilabel else "",
                ", ".join(f"{name} {len(samples)}" for name, samples in data.splits.items()))
    return data


def _dataset(data, split: str, transform) -> ImageSampleDataset:
    return ImageSampleDataset(data.splits[split], transform, len(data.classes))


def _loader(cfg, dataset) -> DataLoader:
    return DataLoader(dataset, batch_size=cfg.DATALOADER.BATCH_SIZE, num_workers=cfg.DATALOADER.NUM_WORKERS)


def _backbone(cfg, data, device):
    """The frozen backbone, its cache identity and its eval transform (BN re-estimated on train if asked)."""
    backbone, meta = build_backbone(cfg.MODEL.WEIGHTS, cfg.MODEL.ARCH, cfg.SEED)
    backbone.to(device)
    transform = eval_transform(meta, cfg.INPUT.CROP_SIZE, cfg.INPUT.RESIZE)
    identity = checkpoint_id(cfg.MODEL.WEIGHTS, cfg.SEED)
    if cfg.PROBE.RECALIBRATE_BN:
        # HPT's "Base" baseline: the statistics of the target's train images (centre crops), weights unchanged.
        seen = recalibrate_bn(backbone, _loader(cfg, _dataset(data, "train", transform)), device,
                              cfg.PROBE.RECALIBRATE_BN_BATCHES)
        logger.info("BN statistics re-estimated on %d train batches", seen)
        identity += f"-bn-recalibrated-{data.fingerprint()}-{cfg.PROBE.RECALIBRATE_BN_BATCHES}"
    return backbone, identity, transform, meta


def cached_features(cfg, data, stages):
    """Features of every split for ``stages``: extracted once per backbone and data, then read from disk."""
    device = current_device()
    backbone, identity, transform, _ = _backbone(cfg, data, device)
    cache = FeatureCache(cfg.PROBE.CACHE_DIR or cache_root() / "features")
    fingerprint = data.fingerprint()
    splits = {}
    for split in data.splits:
        features, targets = cache.features(backbone, _loader(cfg, _dataset(data, split, transform)), device,
                                           backbone=identity, data=fingerprint, split=split,
                                           transform=repr(transform), stages=tuple(stages))
        splits[split] = (features, targets)
    logger.info("Features: %d cached, %d extracted (cache %s)", cache.hits, cache.misses, cache.root)
    return splits, device


def _split(splits, name, stage):
    features, targets = splits[name]
    return features[stage], targets


def _linear_sweep(cfg, data, splits, stage, device):
    options = ({"lrs": tuple(cfg.PROBE.LRS), "weight_decays": tuple(cfg.PROBE.WEIGHT_DECAYS), "steps": cfg.PROBE.STEPS,
                "batch_size": cfg.PROBE.BATCH_SIZE, "milestones": tuple(cfg.PROBE.MILESTONES), "seed": cfg.SEED}
               if cfg.PROBE.SOLVER == "sgd" else {})
    options["standardize"] = cfg.PROBE.STANDARDIZE
    return cached_linear_probe(*(_split(splits, name, stage) for name in ("train", "val", "test")),
                               len(data.classes), multilabel=data.multilabel, protocol=cfg.PROBE.SOLVER,
                               device=device, **options)


def _sweep_table(sweep) -> list[str]:
    rows = ["| params | " + " | ".join(f"val {k}" for k in sweep.val[0]) + " | "
            + " | ".join(f"test {k}" for k in sweep.test[0]) + " |",
            "|---|" + "---|" * (len(sweep.val[0]) + len(sweep.test[0]))]
    for index, (params, val, test) in enumerate(zip(sweep.params, sweep.val, sweep.test)):
        mark = " (chosen)" if index == sweep.best else ""
        rows.append(f"| {params}{mark} | " + " | ".join(f"{v:.2f}" for v in val.values()) + " | "
                    + " | ".join(f"{v:.2f}" for v in test.values()) + " |")
    return rows


def _write_sweep(cfg, sweep) -> None:
    """sweep.json beside metrics.json: every sweep value's params with its val and test metrics, the metric that
    chose and the chosen index, so a caller can read the val score a head was chosen by (tools/select_source.py)."""
    record = {"metric": sweep.metric, "chosen": sweep.best, "params": sweep.params, "val": sweep.val,
              "test": sweep.test}
    atomic_write_text(Path(cfg.OUTPUT_DIR) / "sweep.json", json.dumps(record, indent=2) + "\n")


def _metrics_table(title: str, entries: dict) -> list[str]:
    """One row per entry (a stage, a k, an episode setting) of its metrics, in percent."""
    keys = list(next(iter(entries.values())))
    return [f"| {title} | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)] + [
        f"| {name} | " + " | ".join(f"{values[k]:.2f}" for k in keys) + " |" for name, values in entries.items()]


def _write_results(cfg, metrics: dict, lines: list[str]) -> dict:
    output = Path(cfg.OUTPUT_DIR)
    atomic_write_text(output / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(output / "results.md", "\n".join(lines) + "\n")
    return metrics


def _start(cfg, resume: bool, eval_only: bool):
    """Checks shared by every task; the resolved config is written before any work."""
    validate_classification_config(cfg)
    if eval_only:
        raise ValueError(f"--eval-only: task {cfg.TASK} evaluates as part of every run; run it again (features are "
                         "cached)" + (" or --resume it" if cfg.TASK == "finetune" else ""))
    output = Path(cfg.OUTPUT_DIR)
    output.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        atomic_write_text(output / "config.yaml", cfg.dump())
    data = load_data(cfg)
    if data.multilabel and cfg.TASK == "fewshot":
        raise ValueError(f"task fewshot needs single-label data; "
                         f"{data_directory(cfg.DATASETS.ROOT, cfg.DATASETS.BUILTIN)} is multi-label")
    return data


def _run_probe(cfg, resume: bool, eval_only: bool, probe):
    """A frozen-backbone probe is one process's work: the main process runs ``probe(cfg, data)`` (metrics and
    the lines of results.md), the others wait for it."""
    data = _start(cfg, resume, eval_only)
    result = probe(cfg, data) if is_main_process() else None
    synchronize()
    return None if result is None else _write_results(cfg, *result)


def _linear(cfg, data):
    if cfg.PROBE.PROTOCOL == "cached":
        splits, device = cached_features(cfg, data, ["pool"])
        sweep = _linear_sweep(cfg, data, splits, "pool", device)
    else:
        device = current_device()
        backbone, _, transform, meta = _backbone(cfg, data, device)
        sweep = augmented_linear_probe(
            backbone, _dataset(data, "train", train_transform(meta, cfg.INPUT.CROP_SIZE)),
            _dataset(data, "val", transform), _dataset(data, "test", transform), len(data.classes), device,
            multilabel=data.multilabel, lrs=tuple(cfg.PROBE.LRS), weight_decays=tuple(cfg.PROBE.WEIGHT_DECAYS),
            steps=cfg.PROBE.STEPS, batch_size=cfg.PROBE.BATCH_SIZE, milestones=tuple(cfg.PROBE.MILESTONES),
            num_workers=cfg.DATALOADER.NUM_WORKERS, seed=cfg.SEED, eval_batch_size=cfg.DATALOADER.BATCH_SIZE)
    chosen = sweep.chosen
    logger.info("Linear probe (%s): chose %s on val; test %s", cfg.PROBE.PROTOCOL, chosen["params"], chosen["test"])
    _write_sweep(cfg, sweep)
    metrics = {"linear": chosen["test"]}
    solver = cfg.PROBE.SOLVER if cfg.PROBE.PROTOCOL == "cached" else "sgd"
    lines = [f"Linear probe, {cfg.PROBE.PROTOCOL} protocol ({solver}), chosen on val {sweep.metric}, reported on test:",
             ""] + _metrics_table("task", metrics) + ["", "Sweep:", ""] + _sweep_table(sweep)
    return metrics, lines


def _stagewise(cfg, data):
    stages = list(cfg.PROBE.STAGES)
    splits, device = cached_features(cfg, data, stages)
    results = {stage: _linear_sweep(cfg, data, splits, stage, device).chosen for stage in stages}
    for stage, chosen in results.items():
        logger.info("Stage %s: chose %s on val; test %s", stage, chosen["params"], chosen["test"])
    metrics = {"stagewise": {stage: chosen["test"] for stage, chosen in results.items()}}
    return metrics, ["Linear probes on each stage's pooled features (cached protocol), chosen on val, reported on "
                     "test:", ""] + _metrics_table("stage", metrics["stagewise"])


def _knn(cfg, data):
    splits, _ = cached_features(cfg, data, ["pool"])
    results = knn_probe(_split(splits, "train", "pool"), _split(splits, cfg.KNN.SPLIT, "pool"), len(data.classes),
                        multilabel=data.multilabel, ks=tuple(cfg.KNN.KS), temperature=cfg.KNN.TEMPERATURE)
    metrics = {"knn": {f"k{k}": values for k, values in results.items()}}
    logger.info("kNN (T %g): %s", cfg.KNN.TEMPERATURE, metrics["knn"])
    return metrics, [f"Cosine kNN on L2-normalised features, votes weighted by exp(similarity / "
                     f"{cfg.KNN.TEMPERATURE}), train images as the memory, {cfg.KNN.SPLIT} images as queries:",
                     ""] + _metrics_table("k", metrics["knn"])


def _fewshot(cfg, data):
    splits, device = cached_features(cfg, data, ["pool"])
    features, targets = _split(splits, cfg.FEWSHOT.SPLIT, "pool")
    results = {}
    for shots in cfg.FEWSHOT.SHOTS:
        result = few_shot_accuracy(features.to(device), targets, ways=cfg.FEWSHOT.WAYS, shots=shots,
                                   queries=cfg.FEWSHOT.QUERIES, episodes=cfg.FEWSHOT.EPISODES, seed=cfg.SEED)
        results[f"{cfg.FEWSHOT.WAYS}way{shots}shot"] = result.metrics()
        logger.info("%d-way %d-shot: %.2f ± %.2f (%d episodes)", cfg.FEWSHOT.WAYS, shots, result.mean, result.ci95,
                    cfg.FEWSHOT.EPISODES)
    return {"fewshot": results}, [
        f"{cfg.FEWSHOT.EPISODES} seeded episodes on the {cfg.FEWSHOT.SPLIT} split, {cfg.FEWSHOT.QUERIES} queries per "
        "class, logistic regression on the support features; mean accuracy and its 95% confidence interval:",
        ""] + _metrics_table("episodes", results)


def run_linear(cfg, resume: bool = False, eval_only: bool = False):
    """Linear probe on the frozen backbone, chosen on val and reported on test (HPT Table 1, SL-MLP Table 2)."""
    return _run_probe(cfg, resume, eval_only, _linear)


def run_stagewise(cfg, resume: bool = False, eval_only: bool = False):
    """A cached linear probe on the pooled output of the stem and each stage (SL-MLP Fig. 1)."""
    return _run_probe(cfg, resume, eval_only, _stagewise)


def run_knn(cfg, resume: bool = False, eval_only: bool = False):
    """Cosine kNN with temperature-weighted votes (InstDisc; MoCo's monitor): train as memory, KNN.SPLIT as
    queries."""
    return _run_probe(cfg, resume, eval_only, _knn)


def run_fewshot(cfg, resume: bool = False, eval_only: bool = False):
    """N-way K-shot episodes with logistic regression on the support features (the Exemplar paper's few-shot)."""
    return _run_probe(cfg, resume, eval_only, _fewshot)


def run_finetune(cfg, resume: bool = False, eval_only: bool = False):
    """The whole network on the (label-budget) train set, HPT appendix A's sweep, chosen on val."""
    data = _start(cfg, resume, eval_only)
    device = current_device()
    backbone, meta = build_backbone(cfg.MODEL.WEIGHTS, cfg.MODEL.ARCH, cfg.SEED)
    transform = eval_transform(meta, cfg.INPUT.CROP_SIZE, cfg.INPUT.RESIZE)
    result = finetune(
        backbone, _dataset(data, "train", train_transform(meta, cfg.INPUT.CROP_SIZE)),
        _dataset(data, "val", transform), _dataset(data, "test", transform), num_classes=len(data.classes),
        multilabel=data.multilabel, output_dir=cfg.OUTPUT_DIR, device=device, lrs=tuple(cfg.FINETUNE.LRS),
        schedules=tuple(cfg.FINETUNE.SCHEDULES), batch_size=cfg.FINETUNE.BATCH_SIZE,
        head_lr_multiplier=cfg.FINETUNE.HEAD_LR_MULTIPLIER, checkpoint_period=cfg.FINETUNE.CHECKPOINT_PERIOD,
        evaluations=cfg.FINETUNE.EVALUATIONS, seed=cfg.SEED, resume=resume, norm=cfg.FINETUNE.NORM,
        num_workers=cfg.DATALOADER.NUM_WORKERS, amp=cfg.FINETUNE.AMP)
    if result is None:
        return None
    metrics = {"finetune": result["test"]}
    runs = {name: {"val " + k: v for k, v in run["val"].items()} | {"test " + k: v for k, v in run["test"].items()}
            for name, run in result["runs"].items()}
    lines = [f"Finetuned, chosen on val {result['metric']}: {result['chosen']} at iteration {result['iteration']}; "
             "reported on test:", ""] + _metrics_table("task", metrics) + ["", "Sweep (best val point of each run):",
                                                                          ""] + _metrics_table("run", runs)
    return _write_results(cfg, metrics, lines)

