"""N-way K-shot episodes on frozen features (SL-MLP Table 4, the Exemplar paper's Table 4).

Each episode draws N classes, K support and Q query images per class, fits a logistic regression on the support
features (L2-normalised, as Tian et al. 2020 do) and scores the queries; the mean over episodes comes with the
95% interval the papers print. Episodes are independent small problems, so they are fitted in batches with one
L-BFGS run each, in the span of their support features: an L2-regularised linear model's optimal weights lie in
that span (a component orthogonal to it changes no support logit and only adds to the penalty), so an episode of
N support images in D dimensions is the same problem in N dimensions, solved exactly and D / N times faster.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .linear import LinearHeads, fit_logistic_lbfgs

__all__ = ["FEWSHOT_EPISODES", "FEWSHOT_QUERIES", "FEWSHOT_SHOTS", "FEWSHOT_WAYS", "FewShotResult",
           "few_shot_accuracy", "sample_episodes", "span_coordinates"]

FEWSHOT_WAYS, FEWSHOT_SHOTS, FEWSHOT_QUERIES, FEWSHOT_EPISODES = 5, (1, 5), 15, 600


@dataclass
class FewShotResult:
    """Per-episode query accuracies (percent) and their summary."""

    ways: int
    shots: int
    accuracies: torch.Tensor

    @property
    def mean(self) -> float:
        return self.accuracies.double().mean().item()

    @property
    def ci95(self) -> float:
        """1.96 std / sqrt(episodes), with the population std (ddof 0) as Chen et al. 2019's code computes it."""
        return 1.96 * self.accuracies.double().std(correction=0).item() / math.sqrt(len(self.accuracies))

    def metrics(self) -> dict[str, float]:
        return {"top1": self.mean, "top1_ci95": self.ci95}


def sample_episodes(targets: torch.Tensor, ways: int, shots: int, queries: int, episodes: int, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample indices, support [E, ways * shots] and query [E, ways * queries], class-major within an episode.

    An episode's i-th class (label i) is drawn among the classes with at least shots + queries samples; the same
    seed gives the same episodes.
    """
    if targets.dim() != 1:
        raise ValueError("few-shot episodes need single-label targets")
    by_class = [np.flatnonzero(targets.numpy() == c) for c in range(int(targets.max()) + 1)]
    eligible = [c for c, members in enumerate(by_class) if len(members) >= shots + queries]
    if len(eligible) < ways:
        raise ValueError(f"{ways}-way {shots}-shot episodes with {queries} queries need {ways} classes of at least "
                         f"{shots + queries} samples; only {len(eligible)} have that many")
    rng = np.random.default_rng(seed)
    support, query = [], []
    for _ in range(episodes):
        classes = rng.choice(eligible, ways, replace=False)
        drawn = [rng.choice(by_class[c], shots + queries, replace=False) for c in classes]
        support.append(np.concatenate([members[:shots] for members in drawn]))
        query.append(np.concatenate([members[shots:] for members in drawn]))
    return torch.from_numpy(np.stack(support)), torch.from_numpy(np.stack(query))


def span_coordinates(support: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Support [E, N, D] and query [E, M, D] features in an orthonormal basis of each episode's support span.

    Inner products with any vector of the span are kept, and so are the norms of weights in it, so the logistic
    regression there has the same optimum and the same query scores as in D dimensions.
    """
    basis, triangular = torch.linalg.qr(support.transpose(1, 2).double())  # support^T = basis @ triangular
    return triangular.transpose(1, 2).to(support.dtype), torch.matmul(query.double(), basis).to(query.dtype)


def few_shot_accuracy(features: torch.Tensor, targets: torch.Tensor, *, ways: int = FEWSHOT_WAYS, shots: int = 5,
                      queries: int = FEWSHOT_QUERIES, episodes: int = FEWSHOT_EPISODES, seed: int = 0,
                      l2: float = 1.0, normalize: bool = True, chunk_size: int = 100, max_iter: int = 300
                      ) -> FewShotResult:
    """Mean query accuracy over seeded episodes of logistic regression (sklearn's default C = 1 / l2 = 1)."""
    support, query = sample_episodes(targets.cpu(), ways, shots, queries, episodes, seed)
    features = F.normalize(features.float(), dim=1) if normalize else features.float()
    support_labels = torch.arange(ways, device=features.device).repeat_interleave(shots)
    query_labels = torch.arange(ways, device=features.device).repeat_interleave(queries)
    accuracies = []
    for support_chunk, query_chunk in zip(support.split(chunk_size), query.split(chunk_size)):
        support_features, query_features = span_coordinates(features[support_chunk.to(features.device)],
                                                            features[query_chunk.to(features.device)])
        weight, bias = fit_logistic_lbfgs(support_features, support_labels.expand(len(support_features), -1), ways,
                                          [l2] * len(support_features), max_iter=max_iter)
        predictions = LinearHeads(weight, bias).scores(query_features).argmax(-1)
        accuracies.append(100.0 * (predictions == query_labels).float().mean(1).cpu())
    return FewShotResult(ways, shots, torch.cat(accuracies))
