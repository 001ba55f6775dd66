"""Pixel-level semantic segmentation metrics (mIoU, mAcc, aAcc in percent) from a confusion matrix.

The numbers are mmseg's ``IoUMetric`` (``mmseg/evaluation/metrics/iou_metric.py``, ``intersect_and_union`` and
``total_area_to_metrics``; mmsegmentation 01c9623): pixels whose label is the ignore index (255) are dropped; per
class ``IoU = intersect / union`` and ``Acc = intersect / area_label``; ``aAcc = sum(intersect) / sum(area_label)``;
``mIoU`` and ``mAcc`` are ``np.nanmean`` over classes. So a class absent from both ground truth and prediction has
IoU and Acc NaN (0 / 0) and is left out of the means, and a class present only in the prediction has IoU 0 (counted
in mIoU) and Acc NaN (left out of mAcc). cityscapesscripts' ``evaluation/evalPixelLevelSemanticLabeling.py``
(2.3.0) agrees on IoU: ``getIouScoreForLabel`` returns NaN when ``tp + fp + fn == 0`` and 0 when only false
positives exist, its false positives exclude pixels whose ground truth is ignored (as dropping label-255 pixels
does), and ``getScoreAverage`` averages the non-NaN scores; it reports no per-class accuracy. mmseg rounds to two
decimals; we do not.

The confusion matrix (rows ground truth, columns prediction, int64) is one ``bincount`` per image and sums over
images and over DDP ranks, so a distributed evaluation is exact.
"""

from __future__ import annotations

import contextlib
import glob
import io
import math
import os
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist

from ..engine.distributed import current_device, is_distributed
from .cityscapes import CITYSCAPES_CLASSES, IGNORE_INDEX, LABEL_IDS_SUFFIX, NUM_CLASSES

__all__ = ["SEMSEG_METRICS", "SemSegConfusion", "class_table", "confusion_matrix", "evaluate_cityscapes_official",
           "frequency_baseline", "results_table", "semseg_metrics"]

SEMSEG_METRICS = ("mIoU", "mAcc", "aAcc")


def _as_tensor(array) -> torch.Tensor:
    return array if isinstance(array, torch.Tensor) else torch.from_numpy(np.asarray(array))


def confusion_matrix(prediction, label, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX):
    """``[num_classes, num_classes]`` int64 counts (row = ground truth, column = prediction) of one or a batch of
    label maps; pixels labelled ``ignore_index`` are dropped. Labels or predictions outside the classes on the
    other pixels are an error (mmseg's ``torch.histc`` would silently count such a prediction as a miss)."""
    prediction, label = _as_tensor(prediction), _as_tensor(label)
    if prediction.shape != label.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and label {tuple(label.shape)} differ in shape")
    label = label.reshape(-1).long()
    prediction = prediction.reshape(-1).to(label.device).long()
    valid = label != ignore_index
    label, prediction = label[valid], prediction[valid]
    for name, values in (("label", label), ("prediction", prediction)):
        bad = (values < 0) | (values >= num_classes)
        if bad.any():
            raise ValueError(f"{name} holds values outside 0..{num_classes - 1} (and {ignore_index} for labels): "
                             f"{sorted(set(values[bad].unique().tolist()))[:10]}")
    counts = torch.bincount(label * num_classes + prediction, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


class SemSegConfusion:
    """The confusion matrix of an evaluation, accumulated image by image (``update``), summed across ranks
    (``all_reduce``) or across evaluators (``merge``), turned into metrics by ``metrics()``."""

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX,
                 class_names=CITYSCAPES_CLASSES):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes, self.ignore_index, self.class_names = num_classes, ignore_index, class_names
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, prediction, label):
        """Add one image's (or a batch's) prediction and label maps, of equal shape."""
        self.matrix += confusion_matrix(prediction, label, self.num_classes, self.ignore_index)

    def merge(self, other: SemSegConfusion) -> SemSegConfusion:
        """Add another evaluator's counts (e.g. one gathered from another process)."""
        if other.matrix.shape != self.matrix.shape or other.ignore_index != self.ignore_index:
            raise ValueError("merge: evaluators of different classes or ignore index")
        self.matrix += other.matrix
        return self

    def all_reduce(self) -> SemSegConfusion:
        """Sum the matrices of every rank in place (a no-op in one process); every rank gets the total."""
        if is_distributed():
            device = current_device() if dist.get_backend() == "nccl" else torch.device("cpu")
            total = self.matrix.to(device)
            dist.all_reduce(total)
            self.matrix = total.cpu()
        return self

    def metrics(self) -> dict:
        return semseg_metrics(self.matrix, self.class_names)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def semseg_metrics(matrix, class_names=CITYSCAPES_CLASSES) -> dict:
    """``{"sem_seg": {mIoU, mAcc, aAcc, IoU-<class>, Acc-<class>}}`` in percent from a confusion matrix, with mmseg's
    NaN rules (module docstring). ``aAcc`` is NaN when no pixel was valid."""
    matrix = _as_tensor(matrix).double().numpy()
    num_classes = matrix.shape[0]
    names = class_names if class_names is not None else [str(k) for k in range(num_classes)]
    intersect = np.diag(matrix)
    area_label, area_prediction = matrix.sum(axis=1), matrix.sum(axis=0)
    iou = _ratio(intersect, area_label + area_prediction - intersect)
    acc = _ratio(intersect, area_label)
    a_acc = float(_ratio(intersect.sum(), area_label.sum()))

    def mean(values):
        return float(np.mean(values[~np.isnan(values)])) * 100 if (~np.isnan(values)).any() else math.nan

    stats = {"mIoU": mean(iou), "mAcc": mean(acc), "aAcc": a_acc * 100}
    stats.update({f"IoU-{name}": float(value) * 100 for name, value in zip(names, iou)})
    stats.update({f"Acc-{name}": float(value) * 100 for name, value in zip(names, acc)})
    return {"sem_seg": stats}


def results_table(metrics: dict, names=SEMSEG_METRICS) -> str:
    """The summary metrics as a markdown table, one row per task, as ``detection.evaluation.results_table``."""
    lines = ["| task | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for task, stats in metrics.items():
        lines.append(f"| {task} | " + " | ".join(f"{stats[name]:.2f}" for name in names) + " |")
    return "\n".join(lines)


def class_table(metrics: dict, class_names=CITYSCAPES_CLASSES, task: str = "sem_seg") -> str:
    """Per-class IoU and Acc as a markdown table (mmseg logs the same table); NaN classes print as ``nan``."""
    stats = metrics[task]
    lines = ["| class | IoU | Acc |", "|---|---|---|"]
    lines += [f"| {name} | {stats[f'IoU-{name}']:.2f} | {stats[f'Acc-{name}']:.2f} |" for name in class_names]
    return "\n".join(lines)


def _labels(dataset):
    """Each item's label as a uint8/int numpy array, without decoding images when the dataset can."""
    for index in range(len(dataset)):
        if hasattr(dataset, "read_label"):
            yield np.asarray(dataset.read_label(index))
        else:
            yield _as_tensor(dataset[index][1]).numpy()


def frequency_baseline(train, val=None, mode: str = "position", grid=(64, 128), num_classes: int = NUM_CLASSES,
                       ignore_index: int = IGNORE_INDEX, class_names=CITYSCAPES_CLASSES) -> dict:
    """The metrics of a predictor that never looks at the image, fitted on ``train``'s labels, evaluated on
    ``val`` (``train`` itself if None): what a model's mIoU must beat to have learnt anything from pixels.

    ``mode="majority"`` predicts the most frequent class everywhere; ``mode="position"`` predicts at each pixel the
    most frequent class at that position (labels resampled to ``grid`` with nearest neighbours, so images of other
    sizes compare; positions never labelled fall back to the majority class). Ties go to the lower trainId.
    """
    if mode not in ("majority", "position"):
        raise ValueError(f"frequency_baseline: mode must be 'majority' or 'position', got {mode!r}")
    grid_h, grid_w = grid
    counts = np.zeros(grid_h * grid_w * num_classes, np.int64)  # [position, class], flattened for bincount
    positions = np.arange(grid_h * grid_w)
    for label in _labels(train):
        small = cv2.resize(label.astype(np.uint8), (grid_w, grid_h), interpolation=cv2.INTER_NEAREST).reshape(-1)
        valid = small != ignore_index
        if ((small >= num_classes) & valid).any():
            raise ValueError(f"frequency_baseline: training labels hold values outside 0..{num_classes - 1}")
        counts += np.bincount(positions[valid] * num_classes + small[valid], minlength=counts.size)
    counts = counts.reshape(grid_h * grid_w, num_classes)
    totals = counts.sum(axis=0)
    if totals.sum() == 0:
        raise ValueError("frequency_baseline: the training labels hold no valid pixel")
    majority = int(np.argmax(totals))
    if mode == "majority":
        prior = np.full(grid_h * grid_w, majority, np.uint8)
    else:
        prior = np.where(counts.sum(axis=1) > 0, np.argmax(counts, axis=1), majority).astype(np.uint8)
    prior = prior.reshape(grid_h, grid_w)
    evaluator = SemSegConfusion(num_classes, ignore_index, class_names)
    for label in _labels(train if val is None else val):
        height, width = label.shape
        evaluator.update(cv2.resize(prior, (width, height), interpolation=cv2.INTER_NEAREST), label)
    return evaluator.metrics()


def evaluate_cityscapes_official(prediction_dir, gt_dir) -> dict:
    """cityscapesscripts' own pixel-level evaluation of labelId predictions (``write_prediction``'s files) against
    ``gt_dir`` (``gtFine/val``): its result dict (``classScores`` by label name as fractions,
    ``averageScoreClasses``, ``confMatrix`` over labelIds ...).

    As mmseg's ``CityscapesMetric.compute_metrics`` it sets the module's ``args`` and calls
    ``evaluateImgLists``; each ground truth ``*_gtFine_labelIds.png`` finds its prediction with the script's own
    ``getPrediction`` (``<city>_<seq>_<frame>*.png`` anywhere under ``prediction_dir``). The instance-level
    (nIoU) and pixel-accuracy parts are off: they call ``np.in1d``, which numpy 2.4 removed. The script ends
    with ``sys.exit`` on any error; that becomes a RuntimeError carrying its message.
    """
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval

    gt_files = sorted(glob.glob(os.path.join(str(gt_dir), "*", f"*{LABEL_IDS_SUFFIX}")))
    if not gt_files:
        raise FileNotFoundError(f"No ground truth */*{LABEL_IDS_SUFFIX} under {gt_dir}")
    args = cs_eval.args
    settings = {"predictionPath": str(Path(prediction_dir).absolute()), "predictionWalk": None,
                "evalInstLevelScore": False, "evalPixelAccuracy": False, "JSONOutput": False, "quiet": True}
    saved = {key: getattr(args, key) for key in settings}
    printed = io.StringIO()
    try:
        for key, value in settings.items():
            setattr(args, key, value)
        with contextlib.redirect_stdout(printed):
            predictions = [cs_eval.getPrediction(args, gt_file) for gt_file in gt_files]
            return cs_eval.evaluateImgLists(predictions, gt_files, args)
    except SystemExit:
        raise RuntimeError(f"cityscapesscripts evaluation failed: {printed.getvalue().strip()}") from None
    finally:
        for key, value in saved.items():
            setattr(args, key, value)
