"""Weighted kNN on frozen features, as InstDisc (Wu et al. 2018) and MoCo's kNN monitor score a representation.

Needs no training and no hyper-parameter sweep, so it is the cheapest probe of whether a backbone's feature space
already groups the classes.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .metrics import classification_metrics

__all__ = ["KNN_KS", "KNN_TEMPERATURE", "knn_probe", "knn_scores"]

KNN_KS = (20, 200)
KNN_TEMPERATURE = 0.07


@torch.no_grad()
def knn_scores(train_features: torch.Tensor, train_targets: torch.Tensor, query_features: torch.Tensor,
               num_classes: int, ks=KNN_KS, temperature: float = KNN_TEMPERATURE, batch_size: int = 256
               ) -> dict[int, torch.Tensor]:
    """Class votes [Q, C] for each k: the k most cosine-similar train samples vote exp(similarity / T).

    ``train_targets`` are class indices or multi-hot rows (a neighbour then votes for each of its labels); a k
    larger than the train set uses all of it. Queries go ``batch_size`` at a time, so memory stays at
    batch_size x (N similarities + k x C votes).
    """
    bank = F.normalize(train_features.float(), dim=1)
    labels = train_targets.float() if train_targets.dim() == 2 else F.one_hot(train_targets.long(), num_classes).float()
    largest = min(max(ks), len(bank))
    votes = {k: [] for k in ks}
    for queries in F.normalize(query_features.float(), dim=1).to(bank.device).split(batch_size):
        similarity, index = (queries @ bank.T).topk(largest, dim=1)  # sorted, most similar first
        weighted = (similarity / temperature).exp()[..., None] * labels[index]  # [B, largest, C]
        for k in ks:
            votes[k].append(weighted[:, :k].sum(1))
    return {k: torch.cat(v) for k, v in votes.items()}


def knn_probe(train, test, num_classes: int, *, multilabel: bool = False, ks=KNN_KS,
              temperature: float = KNN_TEMPERATURE) -> dict[int, dict[str, float]]:
    """The task's metrics of a kNN classifier for each k; ``train`` and ``test`` are (features, targets) pairs."""
    scores = knn_scores(*train, test[0], num_classes, ks, temperature)
    return {k: classification_metrics(votes.cpu(), test[1].cpu(), multilabel) for k, votes in scores.items()}
