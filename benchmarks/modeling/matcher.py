"""Detectron2's ``Matcher`` and ``subsample_labels``: which anchors/proposals are foreground, background or ignored."""
import torch


class Matcher:
    """Assign each prediction (column) its best ground truth (row) and a label by IoU band.

    ``thresholds`` [t1, ..., tn] and ``labels`` [l0, ..., ln]: an IoU in [t_i, t_{i+1}) gets l_i (with
    -inf and +inf at the ends). With ``allow_low_quality_matches``, every prediction whose IoU with some
    ground truth is that ground truth's highest (ties included) is labelled 1 — Faster R-CNN's RPN rule.
    """

    def __init__(self, thresholds, labels, allow_low_quality_matches: bool = False):
        thresholds = list(thresholds)
        if len(labels) != len(thresholds) + 1:
            raise ValueError(f"Matcher needs one label more than thresholds, got {thresholds} and {labels}")
        self.thresholds = [float("-inf"), *thresholds, float("inf")]
        self.labels = list(labels)
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: torch.Tensor):
        """``(matches, match_labels)`` for an M (ground truth) x N (predictions) IoU matrix."""
        if match_quality_matrix.numel() == 0:
            size = match_quality_matrix.shape[1]
            device = match_quality_matrix.device
            return (torch.zeros(size, dtype=torch.int64, device=device),
                    torch.full((size,), self.labels[0], dtype=torch.int8, device=device))
        matched_vals, matches = match_quality_matrix.max(dim=0)
        match_labels = torch.ones_like(matches, dtype=torch.int8)
        for label, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            match_labels[(matched_vals >= low) & (matched_vals < high)] = label
        if self.allow_low_quality_matches:
            highest_quality_foreach_gt = match_quality_matrix.max(dim=1).values
            _, predictions = torch.nonzero(match_quality_matrix == highest_quality_foreach_gt[:, None], as_tuple=True)
            match_labels[predictions] = 1
        return matches, match_labels


def subsample_labels(labels: torch.Tensor, num_samples: int, positive_fraction: float, bg_label: int):
    """Random positives (labels not -1 and not ``bg_label``), at most ``num_samples * positive_fraction``,
    and negatives to fill ``num_samples``; returns their indices."""
    positive = torch.nonzero((labels != -1) & (labels != bg_label), as_tuple=True)[0]
    negative = torch.nonzero(labels == bg_label, as_tuple=True)[0]
    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)
    pos_idx = positive[torch.randperm(positive.numel(), device=positive.device)[:num_pos]]
    neg_idx = negative[torch.randperm(negative.numel(), device=negative.device)[:num_neg]]
    return pos_idx, neg_idx
