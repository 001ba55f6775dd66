"""Linear probes on a frozen backbone: the cached-feature protocol and HPT's augmented protocol.

A sweep's classifiers are independent convex problems on the same features, so they are fitted together as one
batched model (weights [S, D, C]): a sweep of S values costs about one fit, and the cached protocol never goes
back to the images or a DataLoader after the single extraction pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from ..engine.sampler import InfiniteSampler, SeededSamples
from .features import extract_features, stage_features
from .metrics import classification_metrics

__all__ = [
    "HPT_LRS",
    "HPT_WEIGHT_DECAYS",
    "KORNBLITH_L2",
    "LinearHeads",
    "SweepResult",
    "augmented_linear_probe",
    "batched_lbfgs",
    "cached_linear_probe",
    "evaluate_sweep",
    "fit_lbfgs",
    "fit_logistic_lbfgs",
    "fit_sgd",
]

# HPT appendix A, Table 4 (linear): SGD, momentum 0.9, no weight decay, batch 512, 5000 steps, lr {0.3, 3, 30},
# "10x decay at 1/3 and 2/3 [...] of training steps" (the table's caption; its finetuning column decays the same).
HPT_LRS = (0.3, 3.0, 30.0)
HPT_WEIGHT_DECAYS = (0.0,)
HPT_STEPS, HPT_BATCH_SIZE, HPT_MOMENTUM, HPT_MILESTONES = 5000, 512, 0.9, (1 / 3, 2 / 3)
# Kornblith, Shlens & Le 2019: L-BFGS on standardised features, L2 strength from 45 values log-spaced 1e-6..1e5.
KORNBLITH_L2 = tuple(float(v) for v in np.logspace(-6, 5, 45))
LBFGS_MEMORY = 1 << 30  # bytes one batch of L-BFGS problems may take; a larger sweep goes in several batches


@dataclass
class LinearHeads:
    """S linear classifiers on D-dim features: weight [S, D, C], bias [S, C], applied after (x - mean) / std."""

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor | float = 0.0
    std: torch.Tensor | float = 1.0

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Logits [S, N, C] of [N, D] features (the same for every head) or [S, N, D] (one set per head)."""
        x = (features.to(self.weight) - self.mean) / self.std
        return torch.matmul(x, self.weight) + self.bias[:, None, :]


def _standardisation(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Train-set mean and std per feature; constant features keep std 1 (they carry no signal to scale)."""
    std = features.std(0)
    return features.mean(0), torch.where(std > 0, std, torch.ones_like(std))


def _loss_gradient(logits: torch.Tensor, targets: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """d(mean over samples of the softmax CE, or of the per-class BCE summed over classes) / d logits."""
    if multilabel:
        return (torch.sigmoid(logits) - targets) / logits.shape[-2]
    one_hot = F.one_hot(targets.long(), logits.shape[-1]).to(logits)
    return (torch.softmax(logits, -1) - one_hot) / logits.shape[-2]


class _SGDHeads:
    """S heads trained side by side with SGD + momentum (PyTorch's update), each with its own lr and L2.

    The gradients are written out (a linear model's are one matmul) instead of going through autograd, and all
    heads see the same batch, which the augmented protocol needs: one backbone forward serves every lr.
    """

    def __init__(self, dim: int, num_classes: int, params: list[dict], momentum: float, multilabel: bool, device):
        """One head per ``params`` entry (``sgd_sweep``'s ``{"lr", "weight_decay"}``)."""
        self.lrs = torch.tensor([p["lr"] for p in params], dtype=torch.float32, device=device)
        self.weight_decays = torch.tensor([p["weight_decay"] for p in params], dtype=torch.float32, device=device)
        # zeros: the problem is convex, so no symmetry needs breaking, and the fit is the same on every run
        self.weight = torch.zeros(len(params), dim, num_classes, device=device)
        self.bias = torch.zeros(len(params), num_classes, device=device)
        self.velocity = [torch.zeros_like(self.weight), torch.zeros_like(self.bias)]
        self.momentum, self.multilabel = momentum, multilabel

    def step(self, features: torch.Tensor, targets: torch.Tensor, lr_factor: float) -> None:
        logits = torch.matmul(features, self.weight) + self.bias[:, None, :]
        grad_logits = _loss_gradient(logits, targets, self.multilabel)
        grads = [torch.matmul(features.T, grad_logits) + self.weight_decays[:, None, None] * self.weight,
                 grad_logits.sum(1)]
        for param, velocity, grad in zip((self.weight, self.bias), self.velocity, grads):
            velocity.mul_(self.momentum).add_(grad)
            param.sub_(lr_factor * self.lrs.view(-1, *[1] * (param.dim() - 1)) * velocity)


def _step_decay(step: int, steps: int, milestones) -> float:
    """The lr factor of a 10x step decay at the given fractions of the schedule."""
    return 0.1 ** sum(step >= round(fraction * steps) for fraction in milestones)


def _minibatches(size: int, batch_size: int, steps: int, generator: torch.Generator):
    """``steps`` full batches of indices, reshuffled at every epoch boundary (a batch may straddle two)."""
    batch_size = min(batch_size, size)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(size, generator=generator)])
        yield order[:batch_size]
        order = order[batch_size:]


def sgd_sweep(lrs, weight_decays) -> list[dict]:
    """Every lr x weight decay, lr-major: the sweep values of both SGD protocols."""
    return [{"lr": lr, "weight_decay": wd} for lr in lrs for wd in weight_decays]


def fit_sgd(features: torch.Tensor, targets: torch.Tensor, num_classes: int, lrs=HPT_LRS,
            weight_decays=HPT_WEIGHT_DECAYS, *, multilabel: bool = False, steps: int = HPT_STEPS,
            batch_size: int = HPT_BATCH_SIZE, momentum: float = HPT_MOMENTUM, milestones=HPT_MILESTONES,
            standardize: bool = False, seed: int = 0) -> tuple[LinearHeads, list[dict]]:
    """Minibatch SGD on cached features for every lr x weight decay at once; the heads and their sweep values.

    The defaults are HPT's linear recipe on raw features, as its probes see them; ``standardize`` z-scores them
    with the train statistics first.
    """
    params = sgd_sweep(lrs, weight_decays)
    mean, std = _standardisation(features) if standardize else (0.0, 1.0)
    x = (features - mean) / std
    heads = _SGDHeads(x.shape[1], num_classes, params, momentum, multilabel, x.device)
    generator = torch.Generator().manual_seed(seed)
    for step, index in enumerate(_minibatches(len(x), batch_size, steps, generator)):
        index = index.to(x.device)
        heads.step(x[index], targets[index], _step_decay(step, steps, milestones))
    return LinearHeads(heads.weight, heads.bias, mean, std), params


def _lbfgs_direction(grad: torch.Tensor, pairs: list, gamma: torch.Tensor) -> torch.Tensor:
    """The L-BFGS two-loop recursion, row by row: -H grad for each problem from its own curvature pairs."""
    q, alphas = grad.clone(), []
    for s, y, rho in reversed(pairs):
        alphas.append(rho * (s * q).sum(1, keepdim=True))
        q -= alphas[-1] * y
    r = gamma * q
    for (s, y, rho), alpha in zip(pairs, reversed(alphas)):
        r += s * (alpha - rho * (y * r).sum(1, keepdim=True))
    return -r


def batched_lbfgs(objective, theta: torch.Tensor, *, max_iter: int = 1000, tolerance: float = 1e-5,
                  history: int = 10, max_backtracks: int = 20) -> torch.Tensor:
    """Minimise S independent smooth convex functions at once; ``objective(theta [S, P])`` returns their values [S].

    Each problem keeps its own curvature pairs, step length (Armijo backtracking) and stopping test (max |grad|
    <= ``tolerance``, or no decrease left in floating point), so the batch takes as many iterations as its
    slowest problem. One joint L-BFGS run over the summed objective takes many more: its shared history and
    step mix curvatures that differ by orders of magnitude.
    """
    def evaluate(point):
        point = point.detach().requires_grad_()
        values = objective(point)
        return values.detach(), torch.autograd.grad(values.sum(), point)[0]

    values, grad = evaluate(theta)
    pairs, gamma = [], torch.ones_like(values)[:, None]
    active = grad.abs().amax(1) > tolerance
    for _ in range(max_iter):
        if not active.any():
            break
        direction = _lbfgs_direction(grad, pairs, gamma) * active[:, None]
        slope = (grad * direction).sum(1)
        # first step: unit length in the l1 norm, as torch's LBFGS; later the curvature scaling makes 1 fit
        step = torch.ones_like(gamma) if pairs else (1 / grad.abs().sum(1, keepdim=True)).clamp(max=1)
        accepted = ~active
        new_theta, new_values, new_grad = theta.clone(), values.clone(), grad.clone()
        for _ in range(max_backtracks):
            trial = theta + step * direction
            trial_values, trial_grad = evaluate(trial)
            ok = ~accepted & (trial_values <= values + 1e-4 * step[:, 0] * slope)  # NaN fails
            new_theta[ok], new_values[ok], new_grad[ok] = trial[ok], trial_values[ok], trial_grad[ok]
            accepted |= ok
            if accepted.all():
                break
            step = torch.where(accepted[:, None], step, step / 2)
        s, y = new_theta - theta, new_grad - grad
        sy = (s * y).sum(1, keepdim=True)
        curved = sy > 1e-10  # else the pair carries no usable curvature: it gets weight 0
        pairs = [*pairs, (s, y, torch.where(curved, 1 / sy.clamp(min=1e-10), 0.0))][-history:]
        gamma = torch.where(curved, sy / (y * y).sum(1, keepdim=True).clamp(min=1e-30), gamma)
        decreased = new_values < values  # an accepted step that changed nothing: no decrease left in floating point
        theta, values, grad = new_theta, new_values, new_grad
        active &= accepted & decreased & (grad.abs().amax(1) > tolerance)
    return theta


def _logistic_objective(weight, bias, x, targets, l2, multilabel: bool) -> torch.Tensor:
    """Per problem [S]: summed CE (or per-class BCE) + l2/2 ||W||^2, the objective of sklearn's LogisticRegression
    with C = 1/l2, divided by N + l2 (the same minimum; the tolerance then means the same at every strength)."""
    logits = torch.matmul(x, weight) + bias[:, None, :]
    if multilabel:
        data = F.binary_cross_entropy_with_logits(logits, targets.expand_as(logits), reduction="none").sum((1, 2))
    else:
        labels = targets.long().expand(logits.shape[:2])
        data = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").sum(1)
    return (data + l2 / 2 * weight.square().sum((1, 2))) / (logits.shape[1] + l2)


def fit_logistic_lbfgs(x: torch.Tensor, targets: torch.Tensor, num_classes: int, l2s, *, multilabel: bool = False,
                       max_iter: int = 1000, tolerance: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regressions fitted side by side by ``batched_lbfgs``: weight [S, D, C], bias [S, C].

    ``x`` is [N, D] (one data set, S regularisation strengths) or [S, N, D] with ``targets`` [S, N] (S data
    sets, e.g. few-shot episodes). The bias is not regularised, as in sklearn.
    """
    l2 = torch.as_tensor(l2s, dtype=x.dtype, device=x.device)
    dim, size = x.shape[-1], x.shape[-2]
    # A strongly regularised problem is flat along its unregularised bias (curvature N / (N + l2) against about 1
    # for the weights); optimising bias / sqrt((N + l2) / N) instead evens that out.
    bias_scale = ((size + l2) / size).sqrt()[:, None]
    targets = targets.to(x.dtype) if multilabel else targets

    def unpack(theta):
        return theta[:, :dim * num_classes].view(-1, dim, num_classes), theta[:, dim * num_classes:] * bias_scale

    theta = batched_lbfgs(lambda theta: _logistic_objective(*unpack(theta), x, targets, l2, multilabel),
                          x.new_zeros(len(l2), (dim + 1) * num_classes), max_iter=max_iter, tolerance=tolerance)
    return unpack(theta)


def fit_lbfgs(features: torch.Tensor, targets: torch.Tensor, num_classes: int, l2s=KORNBLITH_L2, *,
              multilabel: bool = False, max_iter: int = 1000, standardize: bool = True,
              memory: int = LBFGS_MEMORY) -> tuple[LinearHeads, list[dict]]:
    """Kornblith et al.'s probe: logistic regression on standardised features for every L2 strength at once.

    Strengths go in as few batches as fit in about ``memory`` bytes (L-BFGS keeps 20 copies of the weights
    per problem, and each problem has its own logits).
    """
    mean, std = _standardisation(features) if standardize else (0.0, 1.0)
    x = (features - mean) / std
    per_problem = x.element_size() * ((x.shape[1] + 1) * num_classes * 28 + 4 * len(x) * num_classes)
    chunk = max(1, memory // per_problem)
    fits = [fit_logistic_lbfgs(x, targets, num_classes, l2s[i:i + chunk], multilabel=multilabel, max_iter=max_iter)
            for i in range(0, len(l2s), chunk)]
    heads = LinearHeads(torch.cat([w for w, _ in fits]), torch.cat([b for _, b in fits]), mean, std)
    return heads, [{"l2": float(value)} for value in l2s]


@dataclass
class SweepResult:
    """Every sweep value's hyper-parameters and val/test metrics; ``best`` is chosen on val by ``metric``."""

    params: list[dict]
    val: list[dict[str, float]]
    test: list[dict[str, float]]
    metric: str

    @property
    def best(self) -> int:
        """The first value with the highest val score; a diverged fit (NaN) never wins."""
        scores = [-math.inf if math.isnan(v[self.metric]) else v[self.metric] for v in self.val]
        return scores.index(max(scores))

    @property
    def chosen(self) -> dict:
        return {"params": self.params[self.best], "val": self.val[self.best], "test": self.test[self.best]}


@torch.no_grad()
def evaluate_sweep(heads: LinearHeads, params: list[dict], val, test, multilabel: bool = False) -> SweepResult:
    """Score every head on val and test (``(features, targets)`` pairs): top-1 selects, or AUROC if multi-label."""
    results = []
    for features, targets in (val, test):
        scores = heads.scores(features).cpu()
        results.append([classification_metrics(s, targets.cpu(), multilabel) for s in scores])
    return SweepResult(params, results[0], results[1], "auroc" if multilabel else "top1")


def cached_linear_probe(train, val, test, num_classes: int, *, multilabel: bool = False, protocol: str = "sgd",
                        device="cpu", **options) -> SweepResult:
    """Fit the sweep on cached train features, choose on val, report on test; splits are (features, targets).

    ``protocol`` "sgd" is ``fit_sgd`` (lr x weight decay, HPT's defaults), "lbfgs" is ``fit_lbfgs`` (Kornblith's
    grid); ``options`` go to that function. The tensors move to ``device`` once and stay there.
    """
    fits = {"sgd": fit_sgd, "lbfgs": fit_lbfgs}
    if protocol not in fits:
        raise ValueError(f"unknown linear protocol {protocol!r}; choose from {sorted(fits)}")
    features, targets = (t.to(device) for t in train)
    heads, params = fits[protocol](features, targets, num_classes, multilabel=multilabel, **options)
    return evaluate_sweep(heads, params, *([t.to(device) for t in split] for split in (val, test)),
                          multilabel=multilabel)


def augmented_linear_probe(backbone, train_set, val_set, test_set, num_classes: int, device, *,
                           multilabel: bool = False, lrs=HPT_LRS, weight_decays=HPT_WEIGHT_DECAYS,
                           steps: int = HPT_STEPS,
                           batch_size: int = HPT_BATCH_SIZE, momentum: float = HPT_MOMENTUM,
                           milestones=HPT_MILESTONES, num_workers: int = 0, seed: int = 0,
                           eval_batch_size: int = 256) -> SweepResult:
    """HPT appendix A's linear protocol: heads on the frozen backbone (eval mode), a fresh augmentation each step.

    ``train_set`` should carry ``features.train_transform`` (RandomResizedCrop + flip), val/test the centre crop.
    Each sample's augmentation is seeded by its stream position, so a run is reproducible. The heads of the whole
    lr x weight decay sweep share each batch's backbone forward.
    """
    params = sgd_sweep(lrs, weight_decays)
    loader = DataLoader(SeededSamples(train_set), batch_size=batch_size, num_workers=num_workers,
                        sampler=InfiniteSampler(len(train_set), seed, rank=0, world_size=1))
    backbone.eval()
    heads = None
    with torch.no_grad():
        for step, (images, targets) in zip(range(steps), loader):
            features = stage_features(backbone, images.to(device))["pool"]
            if heads is None:
                heads = _SGDHeads(features.shape[1], num_classes, params, momentum, multilabel, device)
            heads.step(features, targets.to(device), _step_decay(step, steps, milestones))
    splits = []
    for dataset in (val_set, test_set):
        features, targets = extract_features(backbone, DataLoader(dataset, eval_batch_size, num_workers=num_workers),
                                             device)
        splits.append((features["pool"].to(device), targets))
    return evaluate_sweep(LinearHeads(heads.weight, heads.bias), params, *splits, multilabel=multilabel)
