"""MoCo pretraining: loss, queue, momentum encoder, heads, data, and short end-to-end runs (resnet18, tiny crops)."""
import hashlib
import itertools
import json
import logging
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from PIL import Image

from benchmarks.engine.checkpoint import ExistingRunError
from benchmarks.engine.config import ConfigError, load_config
from benchmarks.engine.distributed import get_rank, init_distributed
from benchmarks.engine.launch import launch
from benchmarks.engine.sampler import InfiniteSampler
from converters import CheckpointError, expected_backbone_keys, load_backbone, load_torch_file, save_canonical
from converters.report import SourceSummary
from pretrain.augmentations import TwoCrops, mocov1_augmentation, mocov2_augmentation
from pretrain.config import get_defaults
from pretrain.data import ImageDirectory, LabelledImageFolder, held_out_images
from pretrain.losses import exemplar_nce, info_nce
from pretrain.moco import MoCo, SplitBatchNorm, build_mocov1, build_mocov2, build_resnet_encoder
from pretrain.train import check_config, check_data, data_directory, lr_factor, scaled_lr, train

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "pretrain" / "demo.yaml"
# Small enough for seconds per run on a CPU, big enough for BN statistics at 1x1 resolution.
TINY_RUN = ["MODEL.ARCH", "resnet18", "INPUT.CROP_SIZE", 32, "SOLVER.IMS_PER_BATCH", 8,
            "MODEL.MOCO.QUEUE_SIZE", 32, "MODEL.MOCO.MLP_DIM", 64, "MODEL.MOCO.BN_SPLITS", 2,
            "DATALOADER.NUM_WORKERS", 0, "LOG_PERIOD", 1]


def tiny_config(**overrides):
    pairs = list(TINY_RUN)
    for key, value in overrides.items():
        pairs += [key.replace("__", "."), value]
    return load_config(get_defaults(), DEMO_CONFIG, pairs)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """ImageNet-style class subfolders with a mix of formats and sizes."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index in range(16):
        folder = root / f"class{index % 2}"
        folder.mkdir(exist_ok=True)
        size = (40 + index, 48)
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        suffix = [".jpg", ".png", ".JPEG"][index % 3]
        Image.fromarray(pixels).save(folder / f"img{index:02d}{suffix}",
                                     format="PNG" if suffix == ".png" else "JPEG")
    (root / "notes.txt").write_text("not an image")
    return root


def test_info_nce_matches_hand_computation():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive_key = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    queue = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # two negatives, one per row
    loss, logits = info_nce(query, positive_key, queue, temperature=0.5)
    # query 1: [q.k+, q.n1, q.n2] / T = [0.6, 1, 0] / 0.5;  query 2: [1, 0, 1] / 0.5
    expected_logits = torch.tensor([[1.2, 2.0, 0.0], [2.0, 0.0, 2.0]])
    torch.testing.assert_close(logits, expected_logits)
    loss_1 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(2.0) + math.exp(0.0)))
    loss_2 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0) + math.exp(2.0)))
    assert loss.item() == pytest.approx((loss_1 + loss_2) / 2, rel=1e-6)


def test_exemplar_loss_drops_same_class_keys_from_the_denominator():
    # queue: 4 keys with labels 0, 1, 0, -1 (a key of no class); queries of class 0 and 1, T 0.5
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive_key = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    queue = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    loss, logits = exemplar_nce(query, positive_key, queue, torch.tensor([0, 1]), torch.tensor([0, 1, 0, -1]), 0.5)
    # query 0 (class 0) keeps keys 1 and 3: logits [0.6, -, 0, -, -1] / 0.5
    # query 1 (class 1) keeps keys 0, 2, 3: logits [0.6, 0, -, 0.8, 0] / 0.5
    inf = float("inf")
    torch.testing.assert_close(logits, torch.tensor([[1.2, -inf, 0.0, -inf, -2.0], [1.2, 0.0, -inf, 1.6, 0.0]]))
    loss_0 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(0.0) + math.exp(-2.0)))
    loss_1 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(0.0) + math.exp(1.6) + math.exp(0.0)))
    assert loss.item() == pytest.approx((loss_0 + loss_1) / 2, rel=1e-6)
    # with no label in common it is MoCo's loss
    unrelated, _ = exemplar_nce(query, positive_key, queue, torch.tensor([5, 6]), torch.tensor([0, 1, 0, -1]), 0.5)
    assert unrelated.item() == pytest.approx(info_nce(query, positive_key, queue, 0.5)[0].item(), rel=1e-6)


def linear_moco(queue_size=6, momentum=0.9):
    return MoCo(nn.Linear(4, 3), dim=3, queue_size=queue_size, momentum=momentum, temperature=0.2)


def test_queue_starts_normalised_and_wraps_around():
    moco = linear_moco(queue_size=6)
    torch.testing.assert_close(moco.queue.norm(dim=0), torch.ones(6))
    batches = [torch.full((2, 3), float(step)) for step in range(1, 5)]
    for step, keys in enumerate(batches[:3]):
        moco.dequeue_and_enqueue(keys)
        assert int(moco.queue_ptr) == (2 * (step + 1)) % 6
    assert torch.equal(moco.queue, torch.tensor([[1.0, 1, 2, 2, 3, 3]] * 3))
    moco.dequeue_and_enqueue(batches[3])  # wraps: overwrites the oldest block
    assert torch.equal(moco.queue, torch.tensor([[4.0, 4, 2, 2, 3, 3]] * 3))
    assert int(moco.queue_ptr) == 2


def test_queue_size_must_be_a_multiple_of_the_batch():
    with pytest.raises(AssertionError, match="multiple of the global batch"):
        linear_moco(queue_size=6).dequeue_and_enqueue(torch.zeros(4, 3))
    with pytest.raises(ConfigError, match="QUEUE_SIZE"):
        check_config(tiny_config(MODEL__MOCO__QUEUE_SIZE=36, OUTPUT_DIR="work/x"), world_size=1)


@pytest.mark.parametrize("splits", [3, 8])
def test_bn_groups_must_split_the_batch_into_pairs_at_least(splits):
    with pytest.raises(ConfigError, match=f"8 images per process, which do not split into MODEL.MOCO.BN_SPLITS "
                                          f"{splits}"):
        check_config(tiny_config(MODEL__MOCO__BN_SPLITS=splits, OUTPUT_DIR="work/x"), world_size=1)
    # auto in one process is 8 groups: a batch of 8 cannot have them, a batch of 16 can
    with pytest.raises(ConfigError, match=r"BN_SPLITS 0 \(8\)"):
        check_config(tiny_config(MODEL__MOCO__BN_SPLITS=0, OUTPUT_DIR="work/x"), world_size=1)
    check_config(tiny_config(MODEL__MOCO__BN_SPLITS=0, SOLVER__IMS_PER_BATCH=16, OUTPUT_DIR="work/x"), world_size=1)


def test_momentum_update_is_exact():
    moco = linear_moco(momentum=0.9)
    with torch.no_grad():
        for param in moco.encoder_q.parameters():
            param.add_(torch.randn_like(param))
    query = [p.detach().clone() for p in moco.encoder_q.parameters()]
    key = [p.detach().clone() for p in moco.encoder_k.parameters()]
    moco.momentum_update_key_encoder()
    for q, k, updated in zip(query, key, moco.encoder_k.parameters()):
        assert torch.equal(updated, k * 0.9 + q * (1 - 0.9))


def test_key_encoder_gets_no_gradient():
    torch.manual_seed(0)
    moco = build_mocov2(tiny_config())
    outputs = moco(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    outputs["loss"].backward()
    assert outputs["loss"].dtype == torch.float32 and not outputs["acc1"].requires_grad
    assert outputs["acc1"].item() in {0.0, 25.0, 50.0, 75.0, 100.0}  # percent of 4 queries
    assert all(p.grad is None and not p.requires_grad for p in moco.encoder_k.parameters())
    assert all(p.grad is not None for p in moco.encoder_q.parameters())
    assert int(moco.queue_ptr) == 4


@pytest.mark.parametrize("arch, width", [("resnet18", 512), ("resnet50", 2048)])
def test_v1_linear_head_and_v2_mlp_head(arch, width):
    cfg = load_config(get_defaults(), None, ["MODEL.ARCH", arch])  # defaults: 2048-wide MLP, 128-d output
    v1, v2 = build_mocov1(cfg).encoder_q.fc, build_mocov2(cfg).encoder_q.fc
    assert isinstance(v1, nn.Linear) and v1.weight.shape == (128, width)
    assert [tuple(layer.weight.shape) for layer in (v2[0], v2[2])] == [(2048, width), (128, 2048)]
    assert isinstance(v2[1], nn.ReLU)
    moco = build_mocov2(cfg)
    assert list(moco.backbone_state_dict()) == expected_backbone_keys(arch)


def test_augmentations_make_two_seeded_views():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8))
    for augmentation in (mocov1_augmentation, mocov2_augmentation):
        two_crops = TwoCrops(augmentation(crop_size=24, min_scale=0.2))
        torch.manual_seed(3)
        first = two_crops(image)
        torch.manual_seed(3)
        again = two_crops(image)
        assert [view.shape for view in first] == [(3, 24, 24)] * 2
        assert not torch.equal(first[0], first[1])
        assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert "GaussianBlur" in repr(mocov2_augmentation()) and "GaussianBlur" not in repr(mocov1_augmentation())


def test_image_directory(image_dir, tmp_path):
    dataset = ImageDirectory(image_dir)
    assert len(dataset) == 16
    assert dataset.files == sorted(dataset.files) and dataset.files[0].parent.name == "class0"
    assert dataset[0].mode == "RGB"
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        ImageDirectory(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=rf"no images \(\*.jpg, \*.jpeg, \*.png\) found under "
                                                rf"{tmp_path / 'empty'}: it is empty"):
        ImageDirectory(tmp_path / "empty")
    (tmp_path / "empty" / "sub").mkdir()
    (tmp_path / "empty" / "sub" / "a.webp").write_bytes(b"")
    (tmp_path / "empty" / "README").write_text("")
    with pytest.raises(FileNotFoundError, match=r"empty: it holds 2 other files \(.webp, no suffix\)"):
        ImageDirectory(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(OSError, match="bad.jpg"):
        ImageDirectory(broken)[0]


def write_images(directory: Path, count: int) -> None:
    directory.mkdir(parents=True)
    for index in range(count):
        Image.fromarray(np.full((40, 40, 3), index * 10, dtype=np.uint8)).save(directory / f"{index}.jpg")


def test_pool_smaller_than_a_batch_is_an_error_before_any_work(tmp_path):
    write_images(tmp_path / "few", 3)
    cfg = tiny_config(OUTPUT_DIR=str(tmp_path / "run"), DATA__ROOT=str(tmp_path / "few"), SOLVER__MAX_ITER=1)
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'few'}: 3 images, fewer than one batch: "
                                         r"SOLVER.IMS_PER_BATCH 8 is 8 per process over 1 process\(es\)"):
        train(cfg, torch.device("cpu"))
    assert not (tmp_path / "run" / "config.yaml").exists()
    write_images(tmp_path / "twelve", 12)
    with pytest.raises(ValueError,
                       match=r"twelve: 6 images \(0.5 of 12, DATA.FRACTION, seed 0\), fewer than one batch"):
        train(tiny_config(OUTPUT_DIR=str(tmp_path / "half"), DATA__ROOT=str(tmp_path / "twelve"),
                          DATA__FRACTION=0.5), torch.device("cpu"))


def test_data_builtin_names_a_part_of_the_built_in_set(monkeypatch, tmp_path):
    monkeypatch.setattr("pretrain.train.builtin_data_root", lambda: tmp_path)
    assert data_directory(tiny_config()) == tmp_path / "pool"
    assert data_directory(tiny_config(METHOD="sl")) == tmp_path / "classification" / "train"
    assert data_directory(tiny_config(DATA__BUILTIN="domain_b", METHOD="hpt")) == tmp_path / "domain_b" / "train"
    assert data_directory(tiny_config(DATA__ROOT="/data/x")) == Path("/data/x")
    with pytest.raises(ConfigError, match="DATA.BUILTIN 'domain_a': names a built-in set, but DATA.ROOT .* keep one"):
        check_config(tiny_config(DATA__BUILTIN="domain_a", DATA__ROOT="/data/x", OUTPUT_DIR="work/x"), world_size=1)
    with pytest.raises(ConfigError, match="DATA.BUILTIN 'pool': is unlabelled, and METHOD sl reads class folders"):
        check_config(tiny_config(DATA__BUILTIN="pool", METHOD="sl", OUTPUT_DIR="work/x"), world_size=1)
    with pytest.raises(ConfigError, match="DATA.BUILTIN"):
        check_config(tiny_config(DATA__BUILTIN="imagenet", OUTPUT_DIR="work/x"), world_size=1)


def test_augmentation_steps_and_data_fraction_reach_the_run(image_dir, tmp_path):
    cfg = tiny_config(OUTPUT_DIR=str(tmp_path / "run"), DATA__ROOT=str(image_dir), SOLVER__MAX_ITER=1,
                      AUG__DROP=("blur", "grayscale"), DATA__FRACTION=0.5)
    train(cfg, torch.device("cpu"))
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "on 8 images (0.5 of 16, DATA.FRACTION, seed 0) from" in log
    with pytest.raises(ConfigError, match="AUG.DROP.*'blurr' is not a step of the mocov2 policy"):
        check_config(tiny_config(AUG__DROP=("blurr",), OUTPUT_DIR="work/x"), world_size=1)
    with pytest.raises(ConfigError, match="AUG.ONLY.*'blur' is not a step of the mocov1 policy"):
        check_config(tiny_config(METHOD="mocov1", AUG__ONLY=("blur",), OUTPUT_DIR="work/x"), world_size=1)


def test_held_out_splits_in_the_data_root_are_named_in_a_warning(tmp_path, caplog):
    """``--data-root /data/imagenet`` instead of ``/data/imagenet/train``, or the built-in root instead of its pool/."""
    for split, count in (("train/class0", 8), ("val/class0", 2), ("val/class1", 1), ("coco/val2017", 2),
                         ("Test", 1), ("validation_notes", 1)):
        write_images(tmp_path / "root" / split, count)
    dataset = ImageDirectory(tmp_path / "root")
    assert held_out_images(dataset.root, dataset.files) == {tmp_path / "root" / "Test": 1,
                                                           tmp_path / "root" / "coco" / "val2017": 2,
                                                           tmp_path / "root" / "val": 3}
    logger = logging.getLogger("test_held_out")
    with caplog.at_level(logging.WARNING, logger="test_held_out"):
        check_data(tiny_config(), dataset, 1, logger)
    assert (f"{tmp_path / 'root'} also holds images of held-out splits, which pretraining would learn from: "
            f"{tmp_path / 'root' / 'Test'} (1 images), {tmp_path / 'root' / 'coco' / 'val2017'} (2 images), "
            f"{tmp_path / 'root' / 'val'} (3 images); point --data-root") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="test_held_out"):
        check_data(tiny_config(), ImageDirectory(tmp_path / "root" / "train"), 1, logger)
    assert caplog.text == ""


def test_learning_rate_schedules():
    cosine = tiny_config()  # batch 8: 0.03 * 8 / 256
    assert scaled_lr(cosine) == pytest.approx(0.03 * 8 / 256)
    assert [lr_factor(cosine, it, 100) for it in (0, 50)] == pytest.approx([1.0, 0.5])
    step = tiny_config(SOLVER__LR_SCHEDULE="step")
    assert [lr_factor(step, it, 100) for it in (0, 59, 60, 80)] == pytest.approx([1.0, 1.0, 0.1, 0.01])


def test_three_iterations_write_a_loadable_canonical_checkpoint(image_dir, tmp_path):
    cfg = tiny_config(OUTPUT_DIR=str(tmp_path / "run"), DATA__ROOT=str(image_dir), SOLVER__MAX_ITER=3)
    last = train(cfg, torch.device("cpu"))
    assert last == tmp_path / "run" / "last.pth"
    state_dict, meta = load_backbone(last)
    assert sorted(state_dict) == sorted(expected_backbone_keys("resnet18"))
    assert meta["method"] == "mocov2" and meta["arch"] == "resnet18" and meta["step"] == 3
    assert meta["pixel_mean"] == [123.675, 116.28, 103.53]
    assert load_config(get_defaults(), tmp_path / "run" / "config.yaml").SOLVER.MAX_ITER == 3
    train_state = load_torch_file(last)["train_state"]
    assert train_state["iteration"] == 3 and int(train_state["model"]["queue_ptr"]) == 24 % 32

    with pytest.raises(FileExistsError, match="--resume"):  # a fresh run must not overwrite it
        train(cfg, torch.device("cpu"))
    assert load_torch_file(last)["train_state"]["iteration"] == 3

    killed_write = tmp_path / "run" / ".last.pth.0123456789abcdef0123456789abcdef.tmp"
    killed_write.write_bytes(b"half a checkpoint")
    train(cfg, torch.device("cpu"), resume=True)  # nothing left to train: it only opens the run
    assert not killed_write.exists()
    log = (tmp_path / "run" / "log.txt").read_text()
    assert f"Removed {killed_write} (0.0 MB), left by a write that was killed" in log
    assert "single process: shuffle-BN emulated with 2 BN groups of 4 images (MODEL.MOCO.BN_SPLITS)" in log

    torch.save(state_dict, last)  # a backbone-only file where the run's last.pth was
    with pytest.raises(CheckpointError, match=rf"^{last} holds no training state \(a backbone-only checkpoint\?\)"):
        train(cfg, torch.device("cpu"), resume=True)


def test_exemplar_runs_on_class_folders_and_queues_the_labels(image_dir, tmp_path):
    # image_dir holds class0/ and class1/, 8 images each; 3 steps of 8 fill 24 of the 32 queue slots
    cfg = tiny_config(OUTPUT_DIR=str(tmp_path / "run"), DATA__ROOT=str(image_dir), SOLVER__MAX_ITER=3,
                      METHOD="exemplar_v2", MODEL__MOCO__TEMPERATURE=0.1)
    state_dict, meta = load_backbone(train(cfg, torch.device("cpu")))
    assert meta["method"] == "exemplar_v2" and sorted(state_dict) == sorted(expected_backbone_keys("resnet18"))
    model = load_torch_file(tmp_path / "run" / "last.pth")["train_state"]["model"]
    stream = itertools.islice(InfiniteSampler(16, seed=cfg.SEED, rank=0, world_size=1).stream(), 24)
    folder_labels = LabelledImageFolder(image_dir).labels
    assert model["queue_labels"].tolist() == [folder_labels[index] for _, index in stream] + [-1] * 8

    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(next(image_dir.rglob("*.png")), flat / "loose.png")
    with pytest.raises(ValueError, match="class subfolders .* 1 images lie directly in it, e.g. loose.png"):
        train(tiny_config(OUTPUT_DIR=str(tmp_path / "flat_run"), DATA__ROOT=str(flat), METHOD="exemplar_v1"),
              torch.device("cpu"))


def test_bn_recalibrate_changes_only_the_bn_statistics(image_dir, tmp_path):
    torch.manual_seed(0)
    base = torchvision.models.resnet18()
    base.fc = nn.Identity()
    init = tmp_path / "base.pth"
    save_canonical(init, base.state_dict(), {"method": "mocov2", "parent": None})
    cfg = tiny_config(OUTPUT_DIR=str(tmp_path / "run"), DATA__ROOT=str(image_dir), METHOD="bn_recalibrate",
                      MODEL__INIT=str(init), BN_RECALIBRATE__BATCHES=2)
    recalibrated, meta = load_backbone(train(cfg, torch.device("cpu")))
    assert meta["method"] == "bn_recalibrate" and meta["step"] == 2 and meta["arch"] == "resnet18"
    assert meta["parent"] == {"path": str(init), "sha256": hashlib.sha256(init.read_bytes()).hexdigest(),
                              "method": "mocov2", "parent": None}
    original = base.state_dict()
    assert recalibrated.keys() == original.keys()
    for name, tensor in original.items():
        if "running_" in name:
            assert not torch.equal(recalibrated[name], tensor), name  # re-estimated on the images
        elif not name.endswith("num_batches_tracked"):
            assert torch.equal(recalibrated[name], tensor), name  # weights bit-identical

    summary = SourceSummary.from_meta("last.pth", recalibrated, meta)
    assert summary.format().endswith(f"  parent   {init}, method mocov2, sha256 {meta['parent']['sha256'][:12]}")
    summary.parent = {"path": "target.pth", "method": "hpt", "parent": meta["parent"]}  # a longer chain
    assert summary.lineage() == ["  parent   target.pth, method hpt",
                                 f"  then     {init}, method mocov2, sha256 {meta['parent']['sha256'][:12]}"]

    with pytest.raises(ConfigError, match="holds a resnet18 but MODEL.ARCH is resnet34"):
        train(tiny_config(OUTPUT_DIR=str(tmp_path / "arch"), DATA__ROOT=str(image_dir), METHOD="bn_recalibrate",
                          MODEL__INIT=str(init), MODEL__ARCH="resnet34"), torch.device("cpu"))
    with pytest.raises(ConfigError, match="--init PATH"):
        check_config(tiny_config(METHOD="bn_recalibrate", OUTPUT_DIR="work/x"), world_size=1)
    # no queue and no BN groups: the MoCo batch rules do not apply
    check_config(tiny_config(METHOD="bn_recalibrate", MODEL__INIT=str(init), MODEL__MOCO__QUEUE_SIZE=36,
                             MODEL__MOCO__BN_SPLITS=8, OUTPUT_DIR="work/x"), world_size=1)
    with pytest.raises(ConfigError, match="starts from random initialization"):
        check_config(tiny_config(MODEL__INIT=str(init), OUTPUT_DIR="work/x"), world_size=1)


@pytest.mark.parametrize("method", ["sl", "slmlp"])
def test_supervised_methods_write_a_backbone_and_log_their_accuracy(image_dir, tmp_path, method):
    cfg = tiny_config(METHOD=method, OUTPUT_DIR=str(tmp_path / "run"), DATA__ROOT=str(image_dir), SOLVER__MAX_ITER=2,
                      MODEL__SLMLP__HIDDEN_DIM=32, MODEL__SLMLP__OUT_DIM=16)
    state_dict, meta = load_backbone(train(cfg, torch.device("cpu")))
    assert meta["method"] == method and sorted(state_dict) == sorted(expected_backbone_keys("resnet18"))
    classifier = load_torch_file(tmp_path / "run" / "last.pth")["train_state"]["model"]
    head = {"sl": "encoder.fc.weight", "slmlp": "encoder.fc.classifier.weight"}[method]
    assert classifier[head].shape[0] == 2  # image_dir's two class folders
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "iter 2/2" in log and "acc1" in log and "shuffle-BN" not in log
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [event["iteration"] for event in events] == [1, 2] and all("acc1" in event for event in events)


def test_mocov1_runs_with_the_step_schedule(image_dir, tmp_path):
    cfg = tiny_config(METHOD="mocov1", MODEL__MOCO__TEMPERATURE=0.07, SOLVER__LR_SCHEDULE="step",
                      OUTPUT_DIR=str(tmp_path / "v1"), DATA__ROOT=str(image_dir), SOLVER__MAX_ITER=1)
    _, meta = load_backbone(train(cfg, torch.device("cpu")))
    assert meta["method"] == "mocov1"
    assert isinstance(load_torch_file(tmp_path / "v1" / "last.pth")["train_state"]["model"]["encoder_q.fc.weight"],
                      torch.Tensor)


@pytest.mark.parametrize("method", ["mocov2", "sl"])  # a contrastive method (queue, key encoder) and a supervised one
def test_resume_continues_exactly(image_dir, tmp_path, method):
    """A run resumed from its iteration-2 checkpoint ends bit-identical to the uninterrupted 4-iteration run."""
    common = dict(DATA__ROOT=str(image_dir), SOLVER__MAX_ITER=4, SOLVER__CHECKPOINT_PERIOD=2,
                  DATALOADER__NUM_WORKERS=1, METHOD=method)
    straight = train(tiny_config(OUTPUT_DIR=str(tmp_path / "straight"), **common), torch.device("cpu"))
    # Detectron2's name for the checkpoint after 2 iterations: the index of the last one done, 1
    assert load_torch_file(tmp_path / "straight" / "model_0000001.pth")["train_state"]["iteration"] == 2
    killed_after_checkpoint(tmp_path / "straight", tmp_path / "resumed", "model_0000001.pth")
    with pytest.raises(ExistingRunError, match="already holds a run .*model_0000001.pth.*--resume"):
        train(tiny_config(OUTPUT_DIR=str(tmp_path / "resumed"), **common), torch.device("cpu"))
    resumed = train(tiny_config(OUTPUT_DIR=str(tmp_path / "resumed"), **common), torch.device("cpu"), resume=True)
    assert "model_0000001.pth at iteration 2" in (tmp_path / "resumed" / "log.txt").read_text()

    expected, actual = load_torch_file(straight)["train_state"], load_torch_file(resumed)["train_state"]
    assert actual["iteration"] == 4
    assert expected["model"].keys() == actual["model"].keys()
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, actual["model"][name]), name


def killed_after_checkpoint(run: Path, copy: Path, checkpoint: str) -> None:
    """``copy`` as ``run``'s directory was right after it wrote ``checkpoint``: that file and the pointer to it."""
    copy.mkdir()
    shutil.copy(run / checkpoint, copy / checkpoint)
    (copy / "last_checkpoint").write_text(checkpoint)


def torchrun_pretrain(image_dir, output, *extra):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "tools" / "pretrain.py"), "--config", str(DEMO_CONFIG), "--output", str(output),
               "--data-root", str(image_dir), *map(str, TINY_RUN), *map(str, extra)]
    result = subprocess.run(command, cwd=output.parent, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_split_batch_norm_normalises_each_group_as_its_own_batch():
    torch.manual_seed(0)
    split, plain = SplitBatchNorm(3, num_splits=4), nn.BatchNorm2d(3)
    with torch.no_grad():
        for bn in (split, plain):
            bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
            bn.bias.copy_(torch.tensor([0.0, -1.0, 3.0]))
    assert split.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(8, 3, 5, 5) * torch.arange(1.0, 9.0).view(8, 1, 1, 1)  # groups with different statistics
    output = split(x)
    groups = [copy_of_bn(plain) for _ in range(4)]
    for g, bn in enumerate(groups):  # image i belongs to group i mod 4
        torch.testing.assert_close(output[g::4], bn(x[g::4]))
    torch.testing.assert_close(split.running_mean, torch.stack([bn.running_mean for bn in groups]).mean(0))
    torch.testing.assert_close(split.running_var, torch.stack([bn.running_var for bn in groups]).mean(0))
    output.sum().backward()  # the gradient reaches the per-channel parameters
    assert split.weight.grad.shape == (3,) and split.weight.grad.abs().sum() > 0
    split.eval(), plain.eval()
    plain.load_state_dict(split.state_dict())
    torch.testing.assert_close(split(x), plain(x))
    with pytest.raises(ValueError, match="does not split into 4"):
        split.train()(x[:6])


def copy_of_bn(bn):
    copy = nn.BatchNorm2d(bn.num_features)
    copy.load_state_dict(bn.state_dict())
    return copy


def batch_independent_moco(bn_splits: int = 1) -> MoCo:
    """A MoCo whose key encoder is in eval mode: each key depends on its own image only, so order is checkable."""
    torch.manual_seed(0)
    model = MoCo(build_resnet_encoder("resnet18", 16, bn_splits=bn_splits), 16, 32, 0.99, 0.2)
    model.encoder_k.eval()
    return model


def test_one_process_key_shuffle_is_undone():
    model = batch_independent_moco(bn_splits=4)
    assert isinstance(model.encoder_k.layer1[0].bn1, SplitBatchNorm)
    images = torch.randn(8, 3, 32, 32)
    expected = nn.functional.normalize(model.encoder_k(images), dim=1)
    torch.manual_seed(1)
    torch.testing.assert_close(model.encode_keys(images), expected)
    torch.manual_seed(1)
    assert not torch.equal(torch.randperm(8), torch.arange(8))  # the keys really went through shuffled


def _unshuffle_worker(rendezvous: str):
    init_distributed()
    model = batch_independent_moco()
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(10 + get_rank()))
    expected = nn.functional.normalize(model.encoder_k(images), dim=1)
    torch.testing.assert_close(model.encode_keys(images), expected)
    Path(rendezvous, f"ok{get_rank()}").write_text("unshuffled")


def test_two_process_key_shuffle_is_undone(tmp_path):
    launch(_unshuffle_worker, 2, (str(tmp_path),))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ok0", "ok1"]


def test_torchrun_two_processes_with_shuffle_bn_and_exact_resume(image_dir, tmp_path):
    """Two gloo processes: shuffle-BN runs, and a resumed run replays the same permutations and data."""
    schedule = ["SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 2]
    result = torchrun_pretrain(image_dir, tmp_path / "straight", *schedule)
    log = (tmp_path / "straight" / "log.txt").read_text()
    assert "2 process(es) x 4 images = global batch 8" in log and "single process" not in log
    assert str(tmp_path / "straight" / "last.pth") in result.stdout
    state_dict, meta = load_backbone(tmp_path / "straight" / "last.pth")
    assert meta["step"] == 4 and sorted(state_dict) == sorted(expected_backbone_keys("resnet18"))

    killed_after_checkpoint(tmp_path / "straight", tmp_path / "resumed", "model_0000001.pth")
    torchrun_pretrain(image_dir, tmp_path / "resumed", "--resume", *schedule)
    expected = load_torch_file(tmp_path / "straight" / "last.pth")["train_state"]["model"]
    actual = load_torch_file(tmp_path / "resumed" / "last.pth")["train_state"]["model"]
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name


def test_torchrun_two_processes_run_a_supervised_method(image_dir, tmp_path):
    """SL under torchrun: DDP over the classifier too, each process loading its share of the labelled batch."""
    torchrun_pretrain(image_dir, tmp_path / "sl", "--method", "sl", "SOLVER.MAX_ITER", 2)
    log = (tmp_path / "sl" / "log.txt").read_text()
    assert "2 process(es) x 4 images = global batch 8" in log and "iter 2/2" in log and "shuffle-BN" not in log
    state_dict, meta = load_backbone(tmp_path / "sl" / "last.pth")
    assert meta["method"] == "sl" and sorted(state_dict) == sorted(expected_backbone_keys("resnet18"))


def test_cli_help_runs():
    result = subprocess.run([sys.executable, str(REPO / "tools" / "pretrain.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--resume" in result.stdout and "KEY VALUE" in result.stdout


def test_an_unknown_method_names_the_implemented_ones():
    with pytest.raises(ConfigError, match="METHOD 'simclr' is not one of .*'hpt'.*'mocov2'.*'sl', 'slmlp'"):
        check_config(tiny_config(METHOD="simclr", OUTPUT_DIR="work/x"), world_size=1)
    with pytest.raises(ConfigError, match="MODEL.SYNC_BN True: does not apply to mocov2"):
        check_config(tiny_config(MODEL__SYNC_BN=True, OUTPUT_DIR="work/x"), world_size=1)
    with pytest.raises(ConfigError, match="continues pretraining from a base checkpoint: give it with --init"):
        check_config(tiny_config(METHOD="hpt", OUTPUT_DIR="work/x"), world_size=1)
