"""Contrastive losses over a queue of negative keys."""
import torch
import torch.nn.functional as F


def info_nce_logits(query: torch.Tensor, positive_key: torch.Tensor, queue: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """``[q·k+, q·queue^T] / T`` for L2-normalised ``query``, ``positive_key`` (N x D) and ``queue`` (K x D).

    The positive is column 0 of each row, so the target class is 0 for every query.
    """
    positive = (query * positive_key).sum(dim=1, keepdim=True)
    negatives = query @ queue.T
    return torch.cat([positive, negatives], dim=1) / temperature


def info_nce(query: torch.Tensor, positive_key: torch.Tensor, queue: torch.Tensor, temperature: float):
    """MoCo's InfoNCE: cross-entropy of the positive against the queue. Returns ``(loss, logits)``.

    The logits come back so the caller can report how often the positive wins (contrastive accuracy).
    """
    logits = info_nce_logits(query, positive_key, queue, temperature)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target), logits
