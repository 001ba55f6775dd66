"""The representation measures on cases small enough to work out by hand, plus the invariances each must have."""
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.classification.analysis import (
    channel_redundancy,
    discriminative_ratio,
    error_iou,
    feature_mixture,
    rv2,
)

REPO = Path(__file__).resolve().parents[1]


def random_orthogonal(size: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))
    return q


def random_features(rows: int, columns: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, columns, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- discriminative ratio (SL-MLP eq. 4) -----------------------------------------------------------------------

def test_discriminative_ratio_by_hand():
    # 1-D features. class 0: {0, 2}, mean 1, mean squared spread (1 + 1)/2 = 1
    #               class 1: {4, 6}, mean 5, spread 1
    #               class 2: {10, 10, 13}, mean 11, spread (1 + 1 + 4)/3 = 2
    # D_inter = 1/(3*2) * 2 * ((1-5)^2 + (1-11)^2 + (5-11)^2) = (16 + 100 + 36)/3 = 152/3
    # D_intra = (1 + 1 + 2)/3 = 4/3, so phi = 38
    features = torch.tensor([[0.0], [2.0], [4.0], [6.0], [10.0], [10.0], [13.0]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    assert discriminative_ratio(features, labels) == pytest.approx(38.0)
    # two classes alone: D_inter = 16, D_intra = 1
    assert discriminative_ratio(features[:4], labels[:4]) == pytest.approx(16.0)


def test_discriminative_ratio_invariances():
    features, labels = random_features(60, 5, seed=1), torch.arange(60) % 4
    features = features + labels.unsqueeze(1)  # some class structure
    phi = discriminative_ratio(features, labels)
    moved = 3.5 * features @ random_orthogonal(5, seed=2) + 7.0
    assert discriminative_ratio(moved, labels) == pytest.approx(phi)
    permutation = torch.randperm(60, generator=torch.Generator().manual_seed(3))
    assert discriminative_ratio(features[permutation], labels[permutation]) == pytest.approx(phi)
    relabelled = torch.tensor([7, 3, 9, 5])[labels]  # class indices need not be contiguous
    assert discriminative_ratio(features, relabelled) == pytest.approx(phi)


def test_discriminative_ratio_rejects_one_class():
    with pytest.raises(ValueError, match="at least 2 classes"):
        discriminative_ratio(torch.ones(3, 2), torch.zeros(3))


# --- feature mixture (SL-MLP eq. 2) ----------------------------------------------------------------------------

def mixture_case():
    # class centres on a line: c0 at 0, c1 at 1, c2 at 3, c3 at 7; two samples per class at +-0.5 in a second
    # dimension, so the centres are exact. eval-D = {c1, c3}: C = 4, C_eval = 2, C_eval/C = 1/2.
    centres = torch.tensor([0.0, 1.0, 3.0, 7.0], dtype=torch.float64)
    offsets = torch.tensor([0.5, -0.5], dtype=torch.float64).repeat(4)
    features = torch.stack([centres.repeat_interleave(2), offsets], dim=1)
    return features, torch.arange(4).repeat_interleave(2), [1, 3]


def test_feature_mixture_by_hand():
    features, labels, eval_classes = mixture_case()
    # k = 1: nearest class of c0 is c1 (eval, 1/1), of c1 is c0 (d 1 < 2: 0), of c2 is c1 (d 2 < 4: 1), of c3 is
    # c2 (0). |1 - 1/2| = |0 - 1/2| = 1/2 for every class: Pi = 1 - 1/2 = 0.5
    assert feature_mixture(features, labels, eval_classes, k=1) == pytest.approx(0.5)
    # k = 2: c0 -> {c1, c2}: 1/2; c1 -> {c0, c2}: 0; c2 -> {c1 (2), c0 (3)}: 1/2; c3 -> {c2 (4), c1 (6)}: 1/2.
    # deviations 0, 1/2, 0, 0: Pi = 1 - (1/2)/4 = 0.875
    assert feature_mixture(features, labels, eval_classes, k=2) == pytest.approx(0.875)


def test_feature_mixture_perfect_and_separated():
    # unit square: pre c0 (0,0), c1 (1,0); eval c2 (0,1), c3 (1,1). With k = 2 each class's neighbours are its two
    # adjacent corners (1 < sqrt(2)), one of each set: top_k^eval/k = 1/2 = C_eval/C everywhere, Pi = 1
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.arange(4)
    assert feature_mixture(square, labels, [2, 3], k=2) == pytest.approx(1.0)
    # fully separated sets: pre near 0, eval near 100; k = 1 sees only its own set: deviations 1/2, Pi = 0.5
    separated = torch.tensor([[0.0], [1.0], [100.0], [101.0]])
    assert feature_mixture(separated, labels, [2, 3], k=1) == pytest.approx(0.5)


def test_feature_mixture_invariances_and_errors():
    features, labels, eval_classes = mixture_case()
    moved = 2.0 * features @ random_orthogonal(2, seed=4) - 5.0
    assert feature_mixture(moved, labels, eval_classes, k=2) == pytest.approx(0.875)
    with pytest.raises(ValueError, match="k must be between 1 and"):
        feature_mixture(features, labels, eval_classes, k=4)
    with pytest.raises(ValueError, match="both sets"):
        feature_mixture(features, labels, [0, 1, 2, 3], k=1)
    with pytest.raises(ValueError, match=r"eval classes \[9\]"):
        feature_mixture(features, labels, [1, 9], k=1)


# --- channel redundancy (SL-MLP eq. 3) -------------------------------------------------------------------------

def test_channel_redundancy_by_hand():
    # f = [[1, 0], [1, 1]]: channels (1, 1) and (0, 1); rho(1,2) = (1*0 + 1*1) / (sqrt(2) * 1) = 1/sqrt(2);
    # R = (1 + 1 + 2/sqrt(2)) / 4 = (2 + sqrt(2)) / 4
    assert channel_redundancy(torch.tensor([[1.0, 0.0], [1.0, 1.0]])) == pytest.approx((2 + math.sqrt(2)) / 4)
    # centred: channels (1, 2, 3) -> (-1, 0, 1) and (2, 1, 6) -> (-1, -2, 3); rho = (1 + 0 + 3)/(sqrt(2) sqrt(14))
    # = 4/sqrt(28); R = (2 + 2 * 4/sqrt(28)) / 4
    features = torch.tensor([[1.0, 2.0], [2.0, 1.0], [3.0, 6.0]])
    assert channel_redundancy(features, center=True) == pytest.approx((2 + 8 / math.sqrt(28)) / 4)


def test_channel_redundancy_invariances_and_bounds():
    features = random_features(40, 6, seed=5)
    r = channel_redundancy(features)
    scales = torch.tensor([0.5, 2.0, 3.0, 1.0, 7.0, 0.1], dtype=torch.float64)  # per-channel positive scaling
    assert channel_redundancy(features * scales) == pytest.approx(r)
    assert channel_redundancy(features[:, torch.tensor([5, 2, 0, 1, 4, 3])]) == pytest.approx(r)
    assert 1 / 6 <= r <= 1  # the d diagonal terms give 1/d; identical channels give 1
    assert channel_redundancy(features[:, :1].repeat(1, 6)) == pytest.approx(1.0)
    orthogonal = torch.eye(4, dtype=torch.float64)
    assert channel_redundancy(orthogonal) == pytest.approx(1 / 4)
    # a dead (all-zero) channel correlates with nothing, itself included
    dead = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    assert channel_redundancy(dead) == pytest.approx(1 / 4)


# --- RV2 (HPT appendix C.7) ------------------------------------------------------------------------------------

def test_rv2_by_hand_uncentred():
    # HPT's Algorithm 2 literally. A rows (1,0), (0,1), (1,1): AA^T off-diagonal (1,2)=0, (1,3)=1, (2,3)=1.
    # B rows (1), (1), (2): BB^T off-diagonal (1,2)=1, (1,3)=2, (2,3)=2.
    # tr(A''B'') = 2 (0*1 + 1*2 + 1*2) = 8; tr(A''^2) = 2 (0 + 1 + 1) = 4; tr(B''^2) = 2 (1 + 4 + 4) = 18
    # RV2 = 8 / sqrt(4 * 18) = 8 / sqrt(72)
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = torch.tensor([[1.0], [1.0], [2.0]])
    assert rv2(a, b, center=False) == pytest.approx(8 / math.sqrt(72))


def test_rv2_by_hand_centred():
    # A rows (0), (1), (2) centre to (-1), (0), (1); B rows (0), (0), (3) centre to (-1), (-1), (2).
    # A'' off-diagonal (1,2)=0, (1,3)=-1, (2,3)=0; B'' off-diagonal (1,2)=1, (1,3)=-2, (2,3)=-2.
    # tr(A''B'') = 2 (0 + 2 + 0) = 4; tr(A''^2) = 2 * 1 = 2; tr(B''^2) = 2 (1 + 4 + 4) = 18
    # RV2 = 4 / sqrt(36) = 2/3
    a = torch.tensor([[0.0], [1.0], [2.0]])
    b = torch.tensor([[0.0], [0.0], [3.0]])
    assert rv2(a, b, center=True) == pytest.approx(2 / 3)


def explicit_rv2(a, b):
    """Algorithm 2 with the N x N matrices, to check the p x q shortcut."""
    a2, b2 = a @ a.T, b @ b.T
    a2, b2 = a2 - torch.diag(torch.diag(a2)), b2 - torch.diag(torch.diag(b2))
    return float(torch.trace(a2 @ b2.T) / torch.sqrt(torch.trace(a2 @ a2.T) * torch.trace(b2 @ b2.T)))


@pytest.mark.parametrize("center", [False, True])
def test_rv2_invariances(center):
    a, noise = random_features(30, 8, seed=6), random_features(30, 5, seed=7)
    b = a[:, :5] + 0.5 * noise  # related activations of another width
    value = rv2(a, b, center=center)
    assert value == pytest.approx(explicit_rv2(a - a.mean(0), b - b.mean(0)) if center else explicit_rv2(a, b))
    assert 0 < value < 1
    assert rv2(a, a, center=center) == pytest.approx(1.0)
    assert rv2(a, 4.0 * a @ random_orthogonal(8, seed=8), center=center) == pytest.approx(1.0)
    assert rv2(a, b, center=center) == pytest.approx(rv2(b, a, center=center))
    assert rv2(a @ random_orthogonal(8, seed=9), 0.01 * b, center=center) == pytest.approx(value)
    shifted = rv2(a + 3.0, b - 2.0, center=center)
    assert shifted == pytest.approx(value) if center else shifted != pytest.approx(value)  # centring removes shifts
    independent = rv2(random_features(400, 8, seed=10), random_features(400, 8, seed=11), center=center)
    assert abs(independent) < 0.05  # unlike RV, RV2 is near 0 for unrelated high-dimensional data


def test_rv2_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="same images"):
        rv2(torch.ones(3, 2), torch.ones(4, 2))


# --- error IoU (HPT appendix C.7) ------------------------------------------------------------------------------

def test_error_iou_by_hand():
    labels = [0, 1, 2, 0, 1, 2]
    a = [0, 2, 2, 1, 1, 0]  # wrong on images 1, 3, 5
    b = [1, 2, 2, 1, 1, 2]  # wrong on images 0, 1, 3
    # both wrong: {1, 3} (2 images); either wrong: {0, 1, 3, 5} (4): IoU = 1/2
    assert error_iou(labels, a, b) == pytest.approx(0.5)
    assert error_iou(labels, a, a) == 1.0
    assert error_iou(labels, a, labels) == 0.0
    assert math.isnan(error_iou(labels, labels, labels))
    with pytest.raises(ValueError, match="one class index per image"):
        error_iou(labels, a[:5], b)


# --- tools/analyze.py ------------------------------------------------------------------------------------------

def load_tool():
    spec = importlib.util.spec_from_file_location("analyze_tool", REPO / "tools" / "analyze.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """train/val/test image folders of 3 colour classes, 16x16 PNGs."""
    root = tmp_path_factory.mktemp("tiny_folder")
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 3), ("test", 4)):
        for index, name in enumerate(("blue", "green", "red")):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 80, size=(16, 16, 3), dtype=np.uint8)
                pixels[..., 2 - index] += 170
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


def feature_cache(root):
    return root.parent / f"{root.name}-cache"


def run_analyze(tool, root, output, *options):
    arguments = tool.parse_args(["--data-root", str(root), "--output", str(output), "--arch", "resnet18",
                                 "--image-size", "16", "--num-workers", "0", "--cache-dir", str(feature_cache(root)),
                                 *options])
    return tool.run_tool("analyze.py", tool.main, arguments)


def test_analyze_tool(tiny_folder, tmp_path, capsys):
    tool = load_tool()
    assert run_analyze(tool, tiny_folder, tmp_path / "phi", "--weights", "none", "--measure", "phi") == 0
    report = json.loads((tmp_path / "phi" / "analysis.json").read_text())
    assert report["measure"] == "phi" and report["split"] == "test" and report["rows"][0]["model"] == "scratch"
    assert report["rows"][0]["phi"] > 0
    assert "| model | phi |" in capsys.readouterr().out

    # two random inits from the same seed are the same network: RV2 1, the same errors
    twice = ("--weights", "none", "--weights", "none")
    assert run_analyze(tool, tiny_folder, tmp_path / "rv2", *twice, "--measure", "rv2") == 0
    assert json.loads((tmp_path / "rv2" / "analysis.json").read_text())["rows"][0]["rv2"] == pytest.approx(1.0)
    assert len(list(feature_cache(tiny_folder).glob("test-pool-*.pt"))) == 1  # phi's test features, read again
    assert run_analyze(tool, tiny_folder, tmp_path / "iou", *twice, "--measure", "error_iou") == 0
    row = json.loads((tmp_path / "iou" / "analysis.json").read_text())["rows"][0]
    assert row["model_a"] == "scratch#1" and row["images"] == 12
    assert row["errors_a"] == row["errors_b"] and (row["error_iou"] == 1.0 or row["errors_a"] == 0)
    capsys.readouterr()

    assert run_analyze(tool, tiny_folder, tmp_path / "bad", "--weights", "none", "--measure", "phi", "--center") == 2
    assert capsys.readouterr().err.strip() == ("analyze.py: error: --center applies to --measure redundancy and "
                                               "rv2, not phi")
    assert run_analyze(tool, tiny_folder, tmp_path / "bad", "--weights", "none", "--measure", "rv2") == 2
    assert capsys.readouterr().err.strip() == ("analyze.py: error: --measure rv2 compares two backbones: give "
                                               "--weights exactly twice (got 1)")
