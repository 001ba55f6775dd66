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


def exemplar_nce(query: torch.Tensor, positive_key: torch.Tensor, queue: torch.Tensor, query_labels: torch.Tensor,
                 queue_labels: torch.Tensor, temperature: float):
    """The Exemplar paper's eq. 2 (Zhao et al. 2021, §3): InfoNCE whose denominator keeps only true negatives,

        L_q = -log exp(q·k+/T) / (exp(q·k+/T) + sum_{j: y_j != y_q} exp(q·k_j/T)),

    i.e. queue keys of the query's own class are removed (their logit set to -inf), the positive key stays.
    ``queue_labels`` (K) holds each queued key's class, -1 for keys of no class (the random initial queue).
    Returns ``(loss, logits)``, the logits of removed keys at -inf, so the contrastive accuracy counts true
    negatives only.
    """
    logits = info_nce_logits(query, positive_key, queue, temperature)
    same_class = query_labels[:, None] == queue_labels[None, :]
    logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(same_class, float("-inf"))], dim=1)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target), logits
