"""Classification metrics of the probes: top-1/top-5 for single-label sets, macro AUROC and mAP for multi-label.

Scores often tie (a saturated or random classifier, a kNN vote), so ties get defined, deterministic credit
rather than whatever order a sort happens to leave them in.
"""
from __future__ import annotations

import torch

__all__ = ["average_precision", "classification_metrics", "macro_auroc", "macro_average_precision", "roc_auc",
           "topk_accuracy"]


def topk_accuracy(scores: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Top-k accuracy in percent, {"top1": …, "top5": …}, with ties broken uniformly at random in expectation.

    A sample whose true class has ``g`` strictly higher scores and ``e`` other classes tied with it is correct
    at k with probability clamp((k - g) / (e + 1), 0, 1): a constant classifier scores k/C, never 100%.
    """
    scores = scores.double()
    true = scores.gather(1, targets.long().view(-1, 1))
    greater = (scores > true).sum(1).double()
    tied = (scores == true).sum(1).double()  # includes the true class itself; 0 when its score is NaN: wrong
    credit = {k: torch.where(tied > 0, ((k - greater) / tied.clamp(min=1)).clamp(0, 1), 0.0) for k in ks}
    return {f"top{k}": 100.0 * value.mean().item() for k, value in credit.items()}


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks with tied values sharing their mean rank (scipy's rankdata 'average')."""
    order = values.argsort()
    _, inverse, counts = torch.unique_consecutive(values[order], return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = (ends - (counts.double() - 1) / 2)[inverse]
    return ranks


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """AUROC of one binary problem (Mann-Whitney: a tied positive/negative pair counts one half); NaN if undefined."""
    labels = labels.bool()
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum = _average_ranks(scores.double())[labels].sum().item()
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """AP as sklearn's ``average_precision_score``: sum over score thresholds of (R_n - R_n-1) P_n; NaN if no positive.

    Tied scores form one threshold, so their order does not matter.
    """
    labels = labels.bool()
    positives = int(labels.sum())
    if positives == 0:
        return float("nan")
    order = scores.double().argsort(descending=True)
    sorted_scores, sorted_labels = scores.double()[order], labels[order].double()
    _, counts = torch.unique_consecutive(sorted_scores, return_counts=True)
    last = counts.cumsum(0) - 1  # the last sample of each threshold
    true_positives = sorted_labels.cumsum(0)[last]
    precision = true_positives / (last + 1).double()
    recall = true_positives / positives
    return torch.sum(torch.diff(recall, prepend=recall.new_zeros(1)) * precision).item()


def _macro(per_class, scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over the classes where the metric is defined (a class absent from the split has no AUROC or AP)."""
    values = torch.tensor([per_class(scores[:, c], targets[:, c]) for c in range(scores.shape[1])])
    return values.nanmean().item()


def macro_auroc(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Macro-average AUROC in percent over [N, C] scores and multi-hot targets (HPT's multi-label metric)."""
    return 100.0 * _macro(roc_auc, scores, targets)


def macro_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Macro-average AP (mAP) in percent over [N, C] scores and multi-hot targets."""
    return 100.0 * _macro(average_precision, scores, targets)


def classification_metrics(scores: torch.Tensor, targets: torch.Tensor, multilabel: bool = False) -> dict[str, float]:
    """What the task reports: {"top1", "top5" (more than 5 classes only)} or, multi-label, {"auroc", "mAP"}."""
    if multilabel:
        return {"auroc": macro_auroc(scores, targets), "mAP": macro_average_precision(scores, targets)}
    return topk_accuracy(scores, targets, (1, 5) if scores.shape[1] > 5 else (1,))
