"""A small results store for the report tests: rows added through ResultsStore.add with the metrics.json shapes
each task writes (detection bbox/segm, segmentation sem_seg, the probes' linear/finetune/fewshot)."""
from __future__ import annotations

import itertools
from pathlib import Path

from benchmarks.results.store import ResultsStore, RunRecord

_clock = itertools.count(1_700_000_000, 60)

SUP = "/ckpt/sup/last.pth"
MOCO = "/ckpt/mocov2/last.pth"
SHA = {"none": None, SUP: "a" * 64, MOCO: "b" * 64}
METHOD = {"none": None, SUP: "sl", MOCO: "mocov2"}

# (weights, seed) -> VOC07 box AP50, AP, AP75; MoCo's seed 1 is run twice, the newer run (82.0) counts
VOC = {("none", 1): (60.0, 33.0, 30.0), ("none", 2): (61.0, 34.0, 31.0),
       (SUP, 1): (80.0, 53.0, 58.0), (SUP, 2): (81.0, 54.0, 59.0), (SUP, 3): (82.5, 55.0, 60.5),
       (MOCO, 1): (70.0, 40.0, 40.0), (MOCO, 2): (83.0, 57.0, 63.0), (MOCO, 3): (84.0, 58.0, 64.0)}
MOCO_RERUN = (82.0, 56.0, 62.0)
# label budget N -> finetune test top-1, the hand-computed utility case
SCRATCH_CURVE = {100: 40.0, 1000: 60.0, 10000: 80.0}
MOCO_CURVE = {100: 50.0, 1000: 70.0, 10000: 85.0}


def _add(store: ResultsStore, task: str, weights: str, seed, metrics: dict, *, status="finished",
         dataset="builtin", labels=None, config_hash=None, output_dir="", error=None) -> RunRecord:
    started = next(_clock)
    record = RunRecord(task=task, weights=weights, weights_sha256=SHA[weights], method=METHOD[weights],
                       dataset_name=dataset, dataset_root=f"/data/{dataset}", seed=seed, labels=labels,
                       config_hash=config_hash or f"{task}-{dataset}-{labels}", config=f"TASK: {task}\n",
                       code_version="test", metrics=metrics, host="test", output_dir=output_dir,
                       started_at=started, ended_at=started + 30 if status != "running" else None,
                       wall_time=30.0 if status != "running" else None, status=status, error=error)
    store.add(record)
    return record


def voc_metrics(ap50: float, ap: float, ap75: float) -> dict:
    return {"bbox": {"AP": ap, "AP50": ap50, "AP75": ap75, "AP50-car": ap50 - 1}}


def make_store(path: Path, run_root: Path | None = None) -> Path:
    """The store the report tests share; ``run_root`` gives the detection runs real output directories."""
    store = ResultsStore(path)
    for (weights, seed), values in VOC.items():
        output = ""
        if run_root is not None:
            output = str(run_root / f"voc_{Path(weights).parent.name or 'scratch'}_s{seed}")
            Path(output).mkdir(parents=True, exist_ok=True)
            (Path(output) / "config.yaml").write_text("TASK: voc_fasterrcnn\n")
        _add(store, "voc_fasterrcnn", weights, seed, voc_metrics(*values), dataset="voc_2007_test", output_dir=output)
    _add(store, "voc_fasterrcnn", MOCO, 1, voc_metrics(*MOCO_RERUN), dataset="voc_2007_test",
         output_dir=str(run_root / "voc_mocov2_s1") if run_root else "")
    _add(store, "voc_fasterrcnn", MOCO, 4, {}, status="failed", dataset="voc_2007_test", error="diverged")
    _add(store, "voc_fasterrcnn", SUP, 4, {}, status="running", dataset="voc_2007_test")
    for weights, seed in ((SUP, 1), (SUP, 2), (MOCO, 1)):
        box, mask = (38.9 + seed, 59.0, 42.0), (33.9 + seed, 55.9, 36.2)
        _add(store, "coco_maskrcnn", weights, seed, {
            "bbox": dict(zip(("AP", "AP50", "AP75"), box)) | {"APs": float("nan")},
            "segm": dict(zip(("AP", "AP50", "AP75"), mask))}, dataset="coco_2017_val")
    _add(store, "cityscapes_deeplabv3", SUP, 1, {"sem_seg": {"mIoU": 78.0, "mAcc": 85.2, "aAcc": 96.0,
                                                             "IoU-road": 97.0}}, dataset="cityscapes_fine_val")
    for weights, curve in (("none", SCRATCH_CURVE), (MOCO, MOCO_CURVE)):
        for labels, top1 in curve.items():
            _add(store, "finetune", weights, 1, {"finetune": {"top1": top1, "top5": min(top1 + 20, 100.0)}},
                 dataset="resisc", labels=labels)
    for dataset, scores in (("resisc", (70.0, 85.0)), ("chexpert", (60.0, 66.0))):
        key = "auroc" if dataset == "chexpert" else "top1"
        for weights, score in zip((SUP, MOCO), scores):
            _add(store, "linear", weights, 1, {"linear": {key: score}}, dataset=dataset)
    _add(store, "fewshot", MOCO, 1, {"fewshot": {"5way5shot": {"top1": 71.7, "top1_ci95": 0.8}}}, dataset="resisc")
    return path
