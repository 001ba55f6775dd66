"""The papers' representation measures as pure functions of feature matrices, labels and predictions.

SL-MLP (Wang et al. 2022) explains transferability with three measures of a backbone's features: the
discriminative ratio phi (eq. 4), the feature mixture Pi between two label sets (eq. 2) and the channel
redundancy R (eq. 3). HPT (Reed et al. 2022, appendix C.7) compares two models by the RV2 similarity of their
activations on the same images and by the IoU of the images they misclassify. Features are ``(N, d)`` tensors
(pooled activations, one row per image); everything is computed in float64 so that the hand-computed cases of
the tests hold to many digits.
"""
import math

import torch


def _matrix(features, name: str) -> torch.Tensor:
    features = torch.as_tensor(features).detach().to(torch.float64)
    if features.dim() != 2 or features.shape[0] == 0:
        raise ValueError(f"{name} must be an (N, d) matrix with N > 0, got shape {tuple(features.shape)}")
    return features


def _labels(labels, count: int) -> torch.Tensor:
    labels = torch.as_tensor(labels).detach().long()
    if labels.shape != (count,):
        raise ValueError(f"labels must be a vector of {count} class indices (one per feature row), "
                         f"got shape {tuple(labels.shape)}")
    return labels


def class_means(features, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """``(classes present, their feature centres mu(I_j))`` in class-index order."""
    features = _matrix(features, "features")
    labels = _labels(labels, features.shape[0])
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(classes), features.shape[1], dtype=features.dtype).index_add_(0, inverse, features)
    return classes, sums / counts.unsqueeze(1).to(features.dtype)


def discriminative_ratio(features, labels) -> float:
    """SL-MLP eq. 4, the LDA ratio of inter- to intra-class distance:

        phi(I) = D_inter(I) / D_intra(I),
        D_inter(I) = 1/(C(C-1)) sum_j sum_{k != j} ||mu(I_j) - mu(I_k)||^2,
        D_intra(I) = 1/C sum_j ( 1/|I_j| sum_{(x_i, y_i) in I_j} ||f_i - mu(I_j)||^2 ),

    with C the classes present in ``labels``. Higher phi: tighter classes (SL-MLP: too high on the pretraining
    data hurts transfer).
    """
    features = _matrix(features, "features")
    labels = _labels(labels, features.shape[0])
    classes, means = class_means(features, labels)
    num_classes = len(classes)
    if num_classes < 2:
        raise ValueError(f"the discriminative ratio needs at least 2 classes, the labels hold {num_classes}")
    inter = torch.cdist(means, means).pow(2).sum() / (num_classes * (num_classes - 1))  # the diagonal is 0
    inverse = torch.searchsorted(classes, labels)
    spread = (features - means[inverse]).pow(2).sum(dim=1)
    per_class = torch.zeros(num_classes, dtype=spread.dtype).index_add_(0, inverse, spread)
    intra = (per_class / torch.bincount(inverse, minlength=num_classes)).mean()
    if intra == 0:
        raise ValueError("every class's features are identical (zero intra-class distance): phi is infinite")
    return float(inter / intra)


def feature_mixture(features, labels, eval_classes, k: int) -> float:
    """SL-MLP eq. 2, how well the classes of two label sets (pre-D and eval-D) mix in feature space:

        Pi = 1 - 1/C sum_{i=1}^{C} | top_k^eval(i) / k - C^eval / C |,

    C the classes of both sets, C^eval those of eval-D (``eval_classes``), top_k^eval(i) the number of eval-D
    classes among the k nearest neighbours of class i. The paper states neither the distance nor what a
    neighbour is; here it is the k nearest other class centres mu(I_j) (eq. 4's) in Euclidean distance, ties
    broken by class index. Pi is 1 when every class sees eval-D classes in the proportion C^eval/C.
    """
    classes, means = class_means(features, labels)
    eval_set = {int(c) for c in eval_classes}
    is_eval = torch.tensor([int(c) in eval_set for c in classes])
    num_classes, num_eval = len(classes), int(is_eval.sum())
    missing = sorted(eval_set - {int(c) for c in classes})
    if missing:
        raise ValueError(f"eval classes {missing} have no features")
    if num_eval in (0, num_classes):
        raise ValueError(f"the feature mixture needs classes of both sets; {num_eval} of the {num_classes} "
                         "classes are eval classes")
    if not 1 <= k < num_classes:
        raise ValueError(f"k must be between 1 and the number of other classes ({num_classes - 1}), got {k}")
    distances = torch.cdist(means, means)
    distances.fill_diagonal_(math.inf)  # a class is not its own neighbour
    order = torch.sort(distances, dim=1, stable=True).indices[:, :k]
    found = is_eval[order].sum(dim=1).to(torch.float64)
    return float(1 - (found / k - num_eval / num_classes).abs().mean())


def channel_redundancy(features, center: bool = False) -> float:
    """SL-MLP eq. 3, the mean absolute correlation over all pairs of feature channels (i = j included):

        R = 1/d^2 sum_i sum_j |rho(i, j)|,
        rho(i, j) = sum_n f_{n,i} f_{n,j} / ( sqrt(sum_n f_{n,i}^2) sqrt(sum_n f_{n,j}^2) ).

    Eq. 3 as printed does not subtract the channel means, although the text calls rho the Pearson coefficient;
    ``center=True`` subtracts them first, which gives that coefficient. A channel that is all zero (after
    centring: constant) correlates with nothing, itself included: its rho is 0.
    """
    features = _matrix(features, "features")
    if center:
        features = features - features.mean(dim=0)
    norms = features.norm(dim=0)
    inverse = torch.where(norms > 0, 1 / norms, torch.zeros_like(norms))
    rho = (features.T @ features) * inverse.unsqueeze(0) * inverse.unsqueeze(1)
    return float(rho.abs().mean())


def rv2(activations_a, activations_b, center: bool = False) -> float:
    """The modified RV coefficient (Smilde et al. 2009), the RV2 of Thompson et al. that HPT appendix C.7 uses:

        A'' = A A^T - diag(A A^T),  B'' = B B^T - diag(B B^T),
        RV2 = tr(A'' B''^T) / sqrt( tr(A'' A''^T) tr(B'' B''^T) ),

    A (N x p) and B (N x q) the two models' activations on the same N images, uncentred as HPT's Algorithm 2
    computes it (``center=True``: each column centred first, as Smilde et al. define it). Removing the diagonals
    removes the bias that makes the plain RV coefficient approach 1 for any two high-dimensional matrices. 1 for a model
    with itself; invariant to rotations and isotropic scalings of either activation space (and, centred, to
    translations). The traces come
    from p x q products and row norms (tr(A A^T B B^T) = ||A^T B||_F^2), never an N x N matrix.
    """
    a = _matrix(activations_a, "activations_a")
    b = _matrix(activations_b, "activations_b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"the activations must be of the same images: {a.shape[0]} rows against {b.shape[0]}")
    if center:
        a, b = a - a.mean(dim=0), b - b.mean(dim=0)
    norms_a, norms_b = a.pow(2).sum(dim=1), b.pow(2).sum(dim=1)
    cross = (a.T @ b).pow(2).sum() - (norms_a * norms_b).sum()
    self_a = (a.T @ a).pow(2).sum() - norms_a.pow(2).sum()
    self_b = (b.T @ b).pow(2).sum() - norms_b.pow(2).sum()
    if self_a <= 0 or self_b <= 0:
        raise ValueError("RV2 is undefined: the activations of one model have no off-diagonal similarity "
                         "(fewer than 2 images, or all but one row zero)")
    return float(cross / (self_a * self_b).sqrt())


def error_iou(labels, predictions_a, predictions_b) -> float:
    """HPT appendix C.7: images misclassified by both models over images misclassified by at least one.

    (HPT's Algorithm 1 counts ``l == pA`` i.e. correct predictions, contradicting its text; this follows the
    text.) NaN when neither model makes an error, where the ratio is 0/0.
    """
    labels = torch.as_tensor(labels).long()
    predictions = [torch.as_tensor(p).long() for p in (predictions_a, predictions_b)]
    if any(p.shape != labels.shape or p.dim() != 1 for p in predictions):
        raise ValueError(f"labels and both predictions must be vectors of one class index per image, got shapes "
                         f"{tuple(labels.shape)}, {tuple(predictions[0].shape)}, {tuple(predictions[1].shape)}")
    wrong_a, wrong_b = (p != labels for p in predictions)
    union = int((wrong_a | wrong_b).sum())
    return int((wrong_a & wrong_b).sum()) / union if union else math.nan
