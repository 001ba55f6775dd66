"""Classification probe algorithms: linear (against sklearn), metrics, kNN, few-shot, feature cache, BN, stages."""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score, top_k_accuracy_score
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.classification.features import (
    FeatureCache,
    build_backbone,
    checkpoint_id,
    eval_transform,
    extract_features,
    recalibrate_bn,
    stage_features,
    train_transform,
)
from benchmarks.classification.fewshot import FewShotResult, few_shot_accuracy, sample_episodes, span_coordinates
from benchmarks.classification.knn import knn_probe, knn_scores
from benchmarks.classification.linear import (
    KORNBLITH_L2,
    augmented_linear_probe,
    batched_lbfgs,
    cached_linear_probe,
    fit_lbfgs,
)
from benchmarks.classification.metrics import (
    average_precision,
    classification_metrics,
    macro_auroc,
    macro_average_precision,
    roc_auc,
    topk_accuracy,
)
from converters import save_canonical


def blobs(num: int, num_classes: int = 5, dim: int = 24, spread: float = 1.6, seed: int = 0):
    """Overlapping Gaussian classes with an offset, so that accuracy is well below 100% and features unscaled."""
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123))
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(num_classes, (num,), generator=generator)
    return centres[targets] + spread * torch.randn(num, dim, generator=generator) + 3.0, targets


def sklearn_accuracy(train, test, l2: float, mean, std) -> float:
    model = LogisticRegression(C=1 / l2, max_iter=5000, tol=1e-8)
    model.fit(((train[0] - mean) / std).numpy(), train[1].numpy())
    return 100.0 * (model.predict(((test[0] - mean) / std).numpy()) == test[1].numpy()).mean()


def test_cached_linear_probe_agrees_with_sklearn_logistic_regression():
    train, val, test = blobs(400, seed=1), blobs(200, seed=2), blobs(400, seed=3)
    l2s = KORNBLITH_L2[::4]  # 12 of the 45 strengths, 1e-6 .. 1e5
    result = cached_linear_probe(train, val, test, 5, protocol="lbfgs", l2s=l2s)
    mean, std = train[0].mean(0), train[0].std(0)
    for i in (3, 6, 8, 10):  # weak to strong regularisation, the unregularised end aside (it never converges)
        assert result.test[i]["top1"] == pytest.approx(sklearn_accuracy(train, test, l2s[i], mean, std), abs=1.0)
    val_sklearn = [sklearn_accuracy(train, val, l2, mean, std) for l2 in l2s]
    chosen = int(np.argmax(val_sklearn))
    assert result.chosen["test"]["top1"] == pytest.approx(
        sklearn_accuracy(train, test, l2s[chosen], mean, std), abs=1.0)
    assert result.chosen["params"]["l2"] in l2s and 40 < result.chosen["test"]["top1"] < 99


def test_multilabel_lbfgs_probe_is_sklearn_one_vs_rest():
    features, classes = blobs(300, num_classes=4, seed=4)
    targets = nn.functional.one_hot(classes, 4).float()
    targets[:, 3] = (features[:, 0] > 3).float()  # a label that overlaps the others
    heads, _ = fit_lbfgs(features, targets, 4, [1.0], multilabel=True)
    standardised = ((features - features.mean(0)) / features.std(0)).numpy()
    for c in range(4):
        model = LogisticRegression(C=1.0, max_iter=5000, tol=1e-8).fit(standardised, targets[:, c].numpy())
        assert heads.weight[0, :, c].numpy() == pytest.approx(model.coef_[0], abs=2e-3)
        assert heads.bias[0, c].item() == pytest.approx(model.intercept_[0], abs=2e-3)


def test_sgd_sweep_selects_on_val_and_learns():
    train, val, test = blobs(300, seed=5), blobs(100, seed=6), blobs(100, seed=7)
    result = cached_linear_probe(train, val, test, 5, lrs=(0.0, 0.1), weight_decays=(0.0, 1e-3), steps=150,
                                 batch_size=64, standardize=True)
    assert [p["lr"] for p in result.params] == [0.0, 0.0, 0.1, 0.1]
    assert result.val[0]["top1"] == pytest.approx(20.0)  # lr 0 leaves the zero head: all 5 classes tie
    assert result.best in (2, 3) and result.chosen["test"]["top1"] > 60


def test_augmented_probe_runs_all_lrs_on_one_forward_per_step():
    backbone, _ = build_backbone("none", arch="resnet18")
    data = TensorDataset(torch.randn(8, 3, 32, 32), torch.arange(8) % 2)
    result = augmented_linear_probe(backbone, data, data, data, 2, "cpu", lrs=(0.3, 3.0, 30.0), steps=2, batch_size=4,
                                    weight_decays=(0.0, 1e-3))
    assert [(p["lr"], p["weight_decay"]) for p in result.params] == [
        (0.3, 0.0), (0.3, 1e-3), (3.0, 0.0), (3.0, 1e-3), (30.0, 0.0), (30.0, 1e-3)] and len(result.test) == 6
    assert not backbone.training


def test_topk_accuracy_matches_sklearn_and_shares_ties():
    scores, targets = torch.randn(50, 8, generator=torch.Generator().manual_seed(0)), torch.arange(50) % 8
    ours = topk_accuracy(scores, targets)
    for k in (1, 5):
        assert ours[f"top{k}"] == pytest.approx(100 * top_k_accuracy_score(targets, scores, k=k, labels=range(8)))
    assert topk_accuracy(torch.zeros(4, 10), torch.arange(4)) == {"top1": pytest.approx(10.0),
                                                                 "top5": pytest.approx(50.0)}
    tied = torch.tensor([[1.0, 1.0, 0.0], [2.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    # tied for first with one other: top-1 1/2, top-2 1; tied for second with one: top-1 0, top-2 1/2; third: 0
    assert topk_accuracy(tied, torch.tensor([0, 2, 0]), ks=(1, 2)) == {"top1": pytest.approx(50 / 3),
                                                                      "top2": pytest.approx(50.0)}
    assert topk_accuracy(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]), ks=(1,))["top1"] == 0.0
    assert set(classification_metrics(scores[:, :5], targets % 5)) == {"top1"}


def test_auroc_and_average_precision_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (60, 5)).astype(float)  # few distinct values: many ties
    targets = (rng.random((60, 5)) < 0.3).astype(float)
    s, t = torch.from_numpy(scores), torch.from_numpy(targets)
    for c in range(5):
        assert roc_auc(s[:, c], t[:, c]) == pytest.approx(roc_auc_score(targets[:, c], scores[:, c]))
        assert average_precision(s[:, c], t[:, c]) == pytest.approx(
            average_precision_score(targets[:, c], scores[:, c]))
    assert macro_auroc(s, t) == pytest.approx(100 * roc_auc_score(targets, scores, average="macro"))
    assert macro_average_precision(s, t) == pytest.approx(100 * average_precision_score(targets, scores))
    # by hand: positives at 0.9 and 0.5, negatives at 0.5 and 0.1; the 0.5 pair ties
    hand_scores, hand_labels = torch.tensor([0.9, 0.5, 0.5, 0.1]), torch.tensor([1, 1, 0, 0])
    assert roc_auc(hand_scores, hand_labels) == pytest.approx(3.5 / 4)
    assert average_precision(hand_scores, hand_labels) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # a class with no positive in the split is left out of the macro average
    t[:, 0] = 0
    assert macro_auroc(s, t) == pytest.approx(100 * roc_auc_score(targets[:, 1:], scores[:, 1:], average="macro"))
    assert set(classification_metrics(s, t, multilabel=True)) == {"auroc", "mAP"}


def test_knn_votes_by_hand():
    train = torch.tensor([[1.0, 0.0], [2.0, 0.2], [0.0, 1.0], [0.0, -1.0]])  # norms do not matter, angles do
    labels = torch.tensor([0, 0, 1, 2])
    query = torch.tensor([[1.0, 1.0]])
    votes = knn_scores(train, labels, query, 3, ks=(1, 3), temperature=0.5)
    cos = [1 / math.sqrt(2), 2.2 / math.sqrt(4.04) / math.sqrt(2), 1 / math.sqrt(2)]
    assert votes[1][0].tolist() == pytest.approx([math.exp(cos[1] / 0.5), 0.0, 0.0])  # the nearest: cos 0.774
    assert votes[3][0].tolist() == pytest.approx([math.exp(cos[0] / 0.5) + math.exp(cos[1] / 0.5),
                                                  math.exp(cos[2] / 0.5), 0.0])
    metrics = knn_probe((train, labels), (query, torch.tensor([0])), 3, ks=(1, 200))
    assert metrics[1]["top1"] == 100.0 and metrics[200]["top1"] == 100.0  # k beyond the bank uses all of it
    multi = knn_scores(train, nn.functional.one_hot(labels, 3).float(), query, 3, ks=(3,), temperature=0.5)
    assert torch.allclose(multi[3], votes[3])


def test_few_shot_interval_arithmetic_and_seeded_episodes():
    result = FewShotResult(5, 1, torch.tensor([100.0, 0.0, 50.0, 50.0]))
    assert result.mean == 50.0 and result.ci95 == pytest.approx(1.96 * math.sqrt(1250) / 2)
    assert result.metrics() == {"top1": 50.0, "top1_ci95": pytest.approx(34.648232)}
    targets = torch.arange(120) % 8
    support, query = sample_episodes(targets, ways=5, shots=2, queries=3, episodes=7, seed=11)
    assert support.shape == (7, 10) and query.shape == (7, 15)
    again, _ = sample_episodes(targets, ways=5, shots=2, queries=3, episodes=7, seed=11)
    other, _ = sample_episodes(targets, ways=5, shots=2, queries=3, episodes=7, seed=12)
    assert torch.equal(support, again) and not torch.equal(support, other)
    for s, q in zip(support, query):
        classes = targets[s].view(5, 2)
        assert (classes == classes[:, :1]).all() and len(set(classes[:, 0].tolist())) == 5  # class-major, distinct
        assert torch.equal(targets[q].view(5, 3)[:, 0], classes[:, 0]) and not set(s.tolist()) & set(q.tolist())
    with pytest.raises(ValueError, match="need 5 classes"):
        sample_episodes(torch.arange(20) % 4, ways=5, shots=1, queries=3, episodes=1)


@pytest.mark.parametrize("shots", [1, 5])
def test_few_shot_episodes_agree_with_sklearn_per_episode(shots):
    # 256 dimensions against 5 or 25 support images: the fit runs in the support span, sklearn in all 256
    features, targets = blobs(400, num_classes=8, dim=256, spread=7.0, seed=8)
    result = few_shot_accuracy(features, targets, shots=shots, episodes=10, chunk_size=4)  # three L-BFGS batches
    support, query = sample_episodes(targets, 5, shots, 15, 10, seed=0)
    normalised = nn.functional.normalize(features, dim=1).numpy()
    for accuracy, s, q in zip(result.accuracies, support, query):
        model = LogisticRegression(C=1.0, max_iter=1000, tol=1e-8).fit(normalised[s], np.repeat(np.arange(5), shots))
        scores = np.sort(model.decision_function(normalised[q]), axis=1)
        # both fits stop at a gradient of about 1e-5, so they may break a query's near-tie differently
        near_ties = (scores[:, -1] - scores[:, -2] < 1e-3).sum()
        expected = 100 * (model.predict(normalised[q]) == np.repeat(np.arange(5), 15)).mean()
        assert abs(accuracy.item() - expected) <= 100 * near_ties / 75 + 1e-4
    assert 25 < result.mean < 95


def test_lbfgs_stops_when_float32_leaves_no_decrease():
    # 1-shot episodes in float32 reach the rounding floor of their objective before a gradient of 1e-5; the
    # loop used to accept the null steps there until max_iter (5851 evaluations here instead of 33)
    generator = torch.Generator().manual_seed(0)
    features = nn.functional.normalize(torch.randn(100, 5, 64, generator=generator).relu(), dim=2)
    support, _ = span_coordinates(features, features[:, :1])
    calls = []

    def objective(theta):
        calls.append(1)
        weight, bias = theta[:, :25].view(-1, 5, 5), theta[:, 25:]
        logits = torch.matmul(support, weight) + bias[:, None]
        return nn.functional.cross_entropy(logits.transpose(1, 2), torch.arange(5).expand(100, 5),
                                           reduction="none").sum(1) / 6 + weight.square().sum((1, 2)) / 12
    theta = batched_lbfgs(objective, support.new_zeros(100, 30), max_iter=300)
    assert len(calls) < 200
    grad = torch.autograd.functional.jacobian(lambda t: objective(t).sum(), theta)
    assert grad.abs().max() < 1e-3  # still at the optimum, to float32 precision


def test_span_coordinates_keep_inner_products_with_the_support_span():
    support, query = torch.randn(3, 7, 50, dtype=torch.float64), torch.randn(3, 4, 50, dtype=torch.float64)
    reduced_support, reduced_query = span_coordinates(support, query)
    assert reduced_support.shape == (3, 7, 7) and reduced_query.shape == (3, 4, 7)
    weights = torch.randn(3, 7, 5, dtype=torch.float64)  # coordinates of weights in the span ...
    in_span = support.transpose(1, 2) @ torch.linalg.solve(reduced_support.transpose(1, 2), weights)  # ... in R^50
    torch.testing.assert_close(in_span.norm(dim=1), weights.norm(dim=1))
    torch.testing.assert_close(support @ in_span, reduced_support @ weights)
    torch.testing.assert_close(query @ in_span, reduced_query @ weights)


@pytest.fixture(scope="module")
def resnet18():
    return build_backbone("none", arch="resnet18")[0]


def test_stage_shapes_and_extraction_order(resnet18):
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        out = stage_features(resnet18, images, ("stem", "layer1", "layer2", "layer3", "layer4", "pool"))
        assert {k: tuple(v.shape) for k, v in out.items()} == {
            "stem": (3, 64), "layer1": (3, 64), "layer2": (3, 128), "layer3": (3, 256), "layer4": (3, 512),
            "pool": (3, 512)}
        assert torch.equal(out["pool"], resnet18(images))
    features, targets = extract_features(resnet18, DataLoader(TensorDataset(images, torch.tensor([2, 0, 1])), 2),
                                         "cpu", ("stem", "pool"))
    assert torch.allclose(features["pool"], out["pool"], atol=1e-5) and targets.tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="unknown stages"):
        stage_features(resnet18, images, ("fc",))


def test_backbone_from_canonical_checkpoint_and_random_init(tmp_path, resnet18, caplog):
    caplog.set_level("INFO", logger="transferlab")
    assert all(torch.equal(a, b) for a, b in zip(resnet18.state_dict().values(),
                                                 build_backbone("none", arch="resnet18")[0].state_dict().values()))
    path = tmp_path / "r18.pth"
    save_canonical(path, resnet18.state_dict(), {"method": "test", "pixel_mean": [100.0, 110.0, 120.0],
                                                 "pixel_std": [50.0, 60.0, 70.0]})
    loaded, meta = build_backbone(path)
    assert meta["arch"] == "resnet18" and not loaded.training
    assert "Backbone resnet18: random initialization (seed 0)" in caplog.text
    assert f"Backbone resnet18: loaded all {len(resnet18.state_dict())} tensors from {path} (canonical format, " \
           "method test)" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(resnet18.state_dict().values(), loaded.state_dict().values()))
    normalize = eval_transform(meta, size=32).transforms[-1]
    assert normalize.mean == pytest.approx([100 / 255, 110 / 255, 120 / 255])
    assert eval_transform(size=32).transforms[0].size == 37  # 256/224 of the crop
    assert checkpoint_id(path) != checkpoint_id("none") == "none-seed0"
    (tmp_path / "renamed.pth").write_bytes(path.read_bytes())
    assert checkpoint_id(tmp_path / "renamed.pth") == checkpoint_id(path)


@pytest.mark.parametrize("width, height", [(1067, 800), (333, 501), (97, 61)])
def test_eval_and_train_crops_of_real_shapes(width, height):
    """Landscape, portrait and odd sizes: the short side goes to RESIZE and the centre crop lies inside it."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, width // 2:] = 255  # right half white: a centred crop is half white at any aspect
    image = Image.fromarray(pixels)
    evaluated = eval_transform(size=56, resize=64)
    resized = evaluated.transforms[0](image)
    # torchvision truncates the long side: int(64 * long / short)
    assert min(resized.size) == 64 and max(resized.size) == int(64 * max(width, height) / min(width, height))
    crop = evaluated(image)
    assert crop.shape == (3, 56, 56)
    white = (crop[0] > crop[0].min()).float().mean().item()  # normalised: white is the larger value
    assert white == pytest.approx(0.5, abs=1.5 / 56)  # the crop is centred: as much of each half (1.5 px: rounding)
    assert train_transform(size=56)(image).shape == (3, 56, 56)


def test_feature_cache_hits_misses_and_keys(tmp_path, resnet18):
    loader = DataLoader(TensorDataset(torch.randn(4, 3, 32, 32), torch.arange(4)), 2)
    cache = FeatureCache(tmp_path / "cache")
    key = {"backbone": "none-seed0", "data": "fp1", "split": "train", "transform": "centre 32"}
    first, targets = cache.features(resnet18, loader, "cpu", stages=("layer1", "pool"), **key)
    assert (cache.hits, cache.misses) == (0, 2)
    second, again = cache.features(resnet18, loader, "cpu", stages=("pool", "layer1"), **key)
    assert (cache.hits, cache.misses) == (2, 2)
    assert torch.equal(first["pool"], second["pool"]) and torch.equal(targets, again)
    cache.features(resnet18, loader, "cpu", stages=("pool", "stem"), **key)
    assert (cache.hits, cache.misses) == (3, 3)  # only the new stage is extracted
    paths = {cache.path(**key, stage="pool")}
    for field, value in (("backbone", "abc"), ("data", "fp2"), ("split", "val"), ("transform", "centre 64")):
        paths.add(cache.path(**{**key, field: value}, stage="pool"))
    assert len(paths) == 5
    assert sorted(p.name.split("-")[1] for p in (tmp_path / "cache").iterdir()) == ["layer1", "pool", "stem"]
    assert not list((tmp_path / "cache").glob(".*"))  # no temporaries left behind


def test_bn_recalibration_is_the_average_over_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.BatchNorm2d(2)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[[[1.0]]], [[[-2.0]]]]))
    batches = [torch.full((2, 1, 3, 3), float(v)) + torch.randn(2, 1, 3, 3) for v in (4.0, 6.0, 100.0)]
    weights = [p.clone() for p in model.parameters()]
    assert recalibrate_bn(model, DataLoader(TensorDataset(torch.cat(batches), torch.zeros(6)), 2), "cpu", 2) == 2
    expected_mean = torch.stack([model[0](b).mean((0, 2, 3)) for b in batches[:2]]).mean(0)
    expected_var = torch.stack([model[0](b).var((0, 2, 3)) for b in batches[:2]]).mean(0)  # unbiased, as BN's
    assert torch.allclose(model[1].running_mean, expected_mean.detach(), atol=1e-5)
    assert torch.allclose(model[1].running_var, expected_var.detach(), atol=1e-4)
    assert not model.training and all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    assert model[1].momentum == 0.1
