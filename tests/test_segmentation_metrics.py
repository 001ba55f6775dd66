"""Pixel-level metrics: hand-computed cases, an independent numpy reference, cityscapesscripts' own evaluation on
written predictions, DDP merging, the frequency baseline and the prediction files."""

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from cityscapesscripts.helpers.csHelpers import getCoreImageFileName
from PIL import Image

from benchmarks.data import StreetSpec, write_cityscapes
from benchmarks.segmentation.cityscapes import CITYSCAPES_CLASSES, CityscapesSemSeg
from benchmarks.segmentation.evaluation import (
    SemSegConfusion,
    class_table,
    confusion_matrix,
    evaluate_cityscapes_official,
    frequency_baseline,
    results_table,
    semseg_metrics,
)
from benchmarks.segmentation.predictions import (
    overlay,
    prediction_path,
    read_prediction,
    write_overlay,
    write_prediction,
)

NAMES = ("a", "b", "c", "d")


def test_hand_computed_case():
    # class 0 and 1 in both, class 2 only predicted, class 3 nowhere; the 255 pixel is dropped whatever is predicted
    label = torch.tensor([[0, 0, 0], [1, 1, 255]])
    prediction = torch.tensor([[0, 0, 1], [1, 2, 3]])
    matrix = confusion_matrix(prediction, label, num_classes=4)
    assert matrix.tolist() == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    stats = semseg_metrics(matrix, NAMES)["sem_seg"]
    # IoU = tp / (tp + fp + fn): a 2/(2+0+1), b 1/(1+1+1), c 0/(0+1+0) = 0, d 0/0 = NaN (left out of the mean)
    assert stats["IoU-a"] == pytest.approx(200 / 3) and stats["IoU-b"] == pytest.approx(100 / 3)
    assert stats["IoU-c"] == 0 and math.isnan(stats["IoU-d"])
    assert stats["mIoU"] == pytest.approx((200 / 3 + 100 / 3 + 0) / 3)
    # Acc = tp / ground-truth pixels: a 2/3, b 1/2; c and d have no ground truth, NaN, left out of mAcc
    assert stats["Acc-a"] == pytest.approx(200 / 3) and stats["Acc-b"] == pytest.approx(50)
    assert math.isnan(stats["Acc-c"]) and math.isnan(stats["Acc-d"])
    assert stats["mAcc"] == pytest.approx((200 / 3 + 50) / 2)
    assert stats["aAcc"] == pytest.approx(60)  # 3 of the 5 valid pixels


def test_errors_and_empty():
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"prediction holds values outside 0\.\.18"):
        confusion_matrix(torch.tensor([19]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"label holds values outside"):
        confusion_matrix(torch.tensor([0]), torch.tensor([254]))
    confusion_matrix(torch.tensor([200]), torch.tensor([255]))  # predictions on ignored pixels do not matter
    stats = SemSegConfusion().metrics()["sem_seg"]
    assert math.isnan(stats["mIoU"]) and math.isnan(stats["aAcc"])


def _numpy_reference(predictions, labels, num_classes):
    """Per-pixel loop counts and textbook formulas, sharing no code with the module under test."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for prediction, label in zip(predictions, labels):
        for p, g in zip(prediction.ravel(), label.ravel()):
            if g != 255:
                matrix[g, p] += 1
    iou, acc = [], []
    for k in range(num_classes):
        tp, fp, fn = matrix[k, k], matrix[:, k].sum() - matrix[k, k], matrix[k, :].sum() - matrix[k, k]
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else float("nan"))
        acc.append(tp / (tp + fn) if tp + fn else float("nan"))
    return matrix, np.array(iou) * 100, np.array(acc) * 100, np.trace(matrix) / matrix.sum() * 100


def test_random_against_numpy_reference_and_merging():
    rng = np.random.default_rng(0)
    labels = [rng.choice([*range(6), 255], size=(9, 13), p=[0.3, 0.2, 0.2, 0.1, 0.05, 0.0, 0.15]) for _ in range(5)]
    # class 5 nowhere, class 6 only predicted
    predictions = [rng.choice([0, 1, 2, 3, 4, 6], size=(9, 13)) for _ in range(5)]
    matrix, iou, acc, a_acc = _numpy_reference(predictions, labels, 7)
    one, halves = SemSegConfusion(7, class_names=None), [SemSegConfusion(7, class_names=None) for _ in range(2)]
    for index, (prediction, label) in enumerate(zip(predictions, labels)):
        one.update(torch.from_numpy(prediction), torch.from_numpy(label))
        halves[index % 2].update(prediction, label)  # numpy works too
    batched = SemSegConfusion(7, class_names=None)
    batched.update(np.stack(predictions), np.stack(labels))
    merged = halves[0].merge(halves[1])
    for evaluator in (one, batched, merged):
        assert evaluator.matrix.numpy().tolist() == matrix.tolist()  # integer counts: exact
    stats = one.metrics()["sem_seg"]
    np.testing.assert_allclose([stats[f"IoU-{k}"] for k in range(7)], iou, rtol=1e-12)  # float64 rounding only
    np.testing.assert_allclose([stats[f"Acc-{k}"] for k in range(7)], acc, rtol=1e-12)
    assert math.isnan(stats["IoU-5"]) and stats["IoU-6"] == 0 and math.isnan(stats["Acc-6"])
    assert stats["mIoU"] == pytest.approx(np.nanmean(iou), rel=1e-12)
    assert stats["mAcc"] == pytest.approx(np.nanmean(acc), rel=1e-12)
    assert stats["aAcc"] == pytest.approx(a_acc, rel=1e-12)


def _all_reduce_worker(rank, port, matrices):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        evaluator = SemSegConfusion(3, class_names=None)
        evaluator.matrix = torch.tensor(matrices[rank])
        evaluator.all_reduce()
        assert evaluator.matrix.tolist() == (torch.tensor(matrices[0]) + torch.tensor(matrices[1])).tolist()
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_two_ranks():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    matrices = [[[1, 2, 0], [0, 5, 1], [0, 0, 3]], [[4, 0, 0], [1, 1, 1], [7, 0, 2]]]
    # fork: the children inherit the imported modules (spawning two fresh interpreters took ~17 s here)
    mp.start_processes(_all_reduce_worker, args=(port, matrices), nprocs=2, join=True, start_method="fork")


def test_tables():
    stats = {"mIoU": 41.234, "mAcc": 50.0, "aAcc": 90.5}
    stats.update({f"IoU-{n}": 1.0 for n in CITYSCAPES_CLASSES} | {f"Acc-{n}": 2.0 for n in CITYSCAPES_CLASSES})
    stats["IoU-train"] = float("nan")
    metrics = {"sem_seg": stats}
    assert results_table(metrics).splitlines() == ["| task | mIoU | mAcc | aAcc |", "|---|---|---|---|",
                                                   "| sem_seg | 41.23 | 50.00 | 90.50 |"]
    table = class_table(metrics).splitlines()
    assert table[0] == "| class | IoU | Acc |" and table[2] == "| road | 1.00 | 2.00 |"
    assert "| train | nan | 2.00 |" in table and len(table) == 2 + 19


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated") / "cityscapes"
    return write_cityscapes(root, {"train": 12, "val": 5}, StreetSpec(height=64, width=128), seed=11)


def _noisy(label, rng):
    """The ground truth with 30% of the pixels replaced by random trainIds 0..15, and ignored pixels predicted as
    road. The scenes hold no rider, so rider (12) is only predicted; train (16) and motorcycle (17) are nowhere."""
    prediction = label.clone()
    prediction[prediction == 255] = 0
    flip = torch.from_numpy(rng.random(tuple(label.shape)) < 0.3)
    prediction[flip] = torch.from_numpy(rng.integers(0, 16, int(flip.sum())))
    return prediction


def test_against_cityscapesscripts_on_written_predictions(generated, tmp_path):
    val = CityscapesSemSeg.from_name("cityscapes_fine_sem_seg_val", generated)
    rng = np.random.default_rng(4)
    evaluator = SemSegConfusion()
    for image, label, info in val:
        prediction = _noisy(label, rng)
        evaluator.update(prediction, label)
        write_prediction(prediction, info, tmp_path)
    ours = evaluator.metrics()["sem_seg"]
    theirs = evaluate_cityscapes_official(tmp_path / "predictions", generated / "gtFine" / "val")
    for name in CITYSCAPES_CLASSES:  # their scores are fractions; ours percent; both NaN for classes absent in both
        if math.isnan(ours[f"IoU-{name}"]):
            assert math.isnan(theirs["classScores"][name]), name
        else:
            assert ours[f"IoU-{name}"] == pytest.approx(theirs["classScores"][name] * 100, abs=0.01), name
    assert ours["mIoU"] == pytest.approx(theirs["averageScoreClasses"] * 100, abs=0.01)
    # both NaN rules were exercised: a class only predicted scores 0, a class absent from both is NaN and left out
    assert ours["IoU-rider"] == 0 == theirs["classScores"]["rider"]
    assert math.isnan(ours["IoU-train"]) and math.isnan(theirs["classScores"]["train"])


def test_prediction_naming_round_trip(tmp_path):
    info = {"stem": "frankfurt_000001_012345", "city": "frankfurt"}
    prediction = torch.arange(19).repeat(2, 1)  # every trainId once per row
    path = write_prediction(prediction, info, tmp_path)
    assert path == tmp_path / "predictions/frankfurt/frankfurt_000001_012345_leftImg8bit.png"
    assert path == prediction_path("frankfurt_000001_012345_gtFine_labelIds.png", tmp_path)  # from a gt file name
    assert getCoreImageFileName(str(path)) == "frankfurt_000001_012345"  # what cityscapesscripts pairs by
    with Image.open(path) as png:
        assert png.mode == "L"
        assert np.array(png)[0].tolist() == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    assert read_prediction(path).tolist() == prediction.tolist()
    with pytest.raises(ValueError, match=r"trainIds must be in 0\.\.18"):
        write_prediction(torch.full((2, 2), 255), info, tmp_path)


def test_overlay(tmp_path):
    image = np.full((2, 3, 3), 100, np.uint8)
    ids = np.array([[0, 13, 255], [10, 10, 255]], np.uint8)
    blended = overlay(torch.from_numpy(image).permute(2, 0, 1), ids, alpha=0.5)  # a dataset's 3xHxW image
    assert blended[0, 0].tolist() == [114, 82, 114]  # (100 + road (128, 64, 128)) / 2
    assert blended[0, 1].tolist() == [50, 50, 121]  # car (0, 0, 142)
    assert blended[0, 2].tolist() == [100, 100, 100]  # ignored: the image
    path = write_overlay(image, ids.clip(0, 18), {"stem": "lindau_000000_000019", "city": "lindau"}, tmp_path,
                         label=ids)
    assert path == tmp_path / "overlays/lindau/lindau_000000_000019_overlay.png"
    with Image.open(path) as png:
        assert png.mode == "RGB" and png.size == (3, 4)  # prediction above, ground truth below


def test_frequency_baseline_hand_case():
    top, bottom = 10, 0  # sky above road, one pixel of car
    train = [(None, torch.tensor([[top, top, top, top], [bottom, bottom, bottom, 13]]), {})] * 3
    val = [(None, torch.tensor([[top, top, top, top], [bottom, bottom, bottom, bottom]]), {})]
    position = frequency_baseline(train, val, grid=(2, 4))["sem_seg"]
    assert position["IoU-sky"] == 100 and position["IoU-road"] == 75 and position["IoU-car"] == 0
    assert position["mIoU"] == pytest.approx((100 + 75 + 0) / 3)  # car predicted, absent from val: IoU 0, counted
    majority = frequency_baseline(train, val, mode="majority", grid=(2, 4))["sem_seg"]
    # 4 sky vs 3 road pixels per training label: sky everywhere
    assert majority["IoU-sky"] == 50 and majority["IoU-road"] == 0 and majority["aAcc"] == 50
    with pytest.raises(ValueError, match="mode must be"):
        frequency_baseline(train, mode="prior")


def test_frequency_baseline_on_generated_set(generated):
    train = CityscapesSemSeg.from_name("cityscapes_fine_sem_seg_train", generated)
    val = CityscapesSemSeg.from_name("cityscapes_fine_sem_seg_val", generated)
    position = frequency_baseline(train, val)["sem_seg"]
    majority = frequency_baseline(train, val, mode="majority")["sem_seg"]
    # the streets' layout (sky on top, road below) is worth something, but far from a segmentation
    assert majority["mIoU"] < position["mIoU"] < 35
    assert position["IoU-sky"] > 50 and position["IoU-road"] > 50
