"""Checkpoints of transfer runs: killed writes are cleaned up, resuming names what is wrong with the file it was
pointed at, and a fine-tuned detector's own checkpoint is readable (``--inspect``) and usable as ``--weights``."""
import logging
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from benchmarks.detection import train_net
from benchmarks.detection.config import get_detection_defaults
from benchmarks.engine.checkpoint import LAST_CHECKPOINT, Checkpointer
from benchmarks.engine.lock import lock_output_dir
from benchmarks.modeling.rcnn import build_rcnn_c4
from converters import CheckpointError, load_backbone
from converters.io import atomic_torch_save, remove_stale_temporaries

from .conftest import REPO

KILLED_WRITE = ".model_0000999.pth.0123456789abcdef0123456789abcdef.tmp"  # what converters.io leaves when killed


def test_only_the_temporaries_of_killed_writes_are_removed(tmp_path):
    (tmp_path / KILLED_WRITE).write_bytes(b"x" * 1000)
    keep = [".model_final.pth.tmp", "model.tmp", ".notes.0123.tmp", "model_0000999.pth", ".lock"]
    for name in keep:
        (tmp_path / name).write_text("")
    (tmp_path / ".dir.0123456789abcdef0123456789abcdef.tmp").mkdir()
    assert remove_stale_temporaries(tmp_path) == {str(tmp_path / KILLED_WRITE): 1000}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, ".dir.0123456789abcdef0123456789abcdef.tmp"])


def test_a_run_holding_the_lock_cleans_its_directory_and_logs_it(tmp_path, caplog):
    (tmp_path / KILLED_WRITE).write_bytes(b"x" * 2**20)
    Checkpointer(tmp_path, nn.Linear(2, 2))  # not locked: another process might be writing it
    assert (tmp_path / KILLED_WRITE).exists()
    logging.getLogger("transferlab").propagate = True  # setup_logger, run by other tests, stops it for caplog
    with caplog.at_level(logging.INFO, logger="transferlab"), lock_output_dir(tmp_path):
        Checkpointer(tmp_path, nn.Linear(2, 2))
    assert not (tmp_path / KILLED_WRITE).exists()
    assert f"Removed {tmp_path / KILLED_WRITE} (1.0 MB), left by a write that was killed" in caplog.text


def test_resume_names_a_missing_or_backbone_only_checkpoint(tmp_path, resnet18):
    checkpointer = Checkpointer(tmp_path, nn.Linear(2, 2))
    (tmp_path / LAST_CHECKPOINT).write_text("model_0000999.pth")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / LAST_CHECKPOINT} names model_0000999.pth, which is "
                                                rf"not in {tmp_path}"):
        checkpointer.resume()
    atomic_torch_save(resnet18.state_dict(), tmp_path / "model_0000999.pth")  # a user copied a backbone there
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'model_0000999.pth'} \(named by .*last_checkpoint\) "
                                              r"holds no training state to resume \(no model, iteration, rng_states\)"):
        checkpointer.resume()
    checkpointer.save("model_0000001", 2)  # a real one, of another model
    with pytest.raises(CheckpointError, match=r"model_0000001.pth does not fit the model and optimizer this config "
                                              r"builds .*size mismatch for weight"):
        Checkpointer(tmp_path, nn.Linear(3, 2)).resume()


def test_transfer_resume_from_a_backbone_only_file_is_one_clear_error(tmp_path, resnet18, tiny_coco_root,
                                                                      tiny_detection_config):
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"state_dict": resnet18.state_dict()}, out / "model_final.pth")
    (out / LAST_CHECKPOINT).write_text("model_final.pth")
    result = subprocess.run(
        [sys.executable, "tools/transfer.py", "--task", "coco_maskrcnn", "--config", tiny_detection_config,
         "--data-root", tiny_coco_root, "--output", out, "--resume"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.splitlines() == [
        f"transfer.py: error: {out / 'model_final.pth'} (named by {out / LAST_CHECKPOINT}) holds no training state "
        "to resume (no model, iteration, rng_states): it is not a checkpoint this trainer wrote; a backbone "
        "checkpoint starts a new run with --weights instead"]


def tiny_detector(seed: int):
    cfg = get_detection_defaults()
    cfg.merge_from_list(["MODEL.RESNETS.DEPTH", 18, "MODEL.MASK_ON", True, "MODEL.ROI_HEADS.NUM_CLASSES", 3])
    torch.manual_seed(seed)
    return build_rcnn_c4(cfg, "BN"), cfg


def test_a_finetuned_detector_checkpoint_is_inspectable_and_usable_as_weights(tmp_path):
    """model_final.pth as the trainer writes it (with optimizer, scheduler, RNG states): read with weights_only."""
    trained, cfg = tiny_detector(seed=1)
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1, momentum=0.9)
    for parameter in trained.parameters():
        parameter.grad = torch.ones_like(parameter)
    optimizer.step()  # momentum buffers in the optimizer state
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    Checkpointer(tmp_path, trained, optimizer, scheduler).save("model_final", 6)

    state_dict, meta = load_backbone(tmp_path / "model_final.pth")
    assert meta["source_format"] == "transferlab_detector" and meta["arch"] == "resnet18" and meta["iteration"] == 6
    model_state = trained.state_dict()
    for name, tensor in state_dict.items():
        if name in meta["filled"]:  # BN counters the detector's norm layers do not keep
            continue
        source = f"roi_heads.res5.{name.removeprefix('layer4.')}" if name.startswith("layer4.") else f"backbone.{name}"
        assert torch.equal(tensor, model_state[source]), name
    reasons = meta["ignored"]
    assert reasons["roi_heads.res5.norm.weight"].startswith("extra BatchNorm after res5")
    assert {reasons[key] for key in reasons if key.startswith(("proposal_generator.", "rpn.", "roi_heads.box"))} == {
        "detector head, not backbone"}
    assert {"optimizer", "scheduler", "rng_states"} <= reasons.keys()

    fresh, cfg = tiny_detector(seed=2)
    cfg.MODEL.WEIGHTS = str(tmp_path / "model_final.pth")
    train_net.initialize_backbone(fresh, cfg)  # what --weights does
    loaded = fresh.state_dict()
    parameters = {key for key, _ in trained.named_parameters()}  # all moved by the step above
    for key, tensor in model_state.items():
        backbone = key.startswith(("backbone.", "roi_heads.res5.")) and not key.startswith("roi_heads.res5.norm.")
        if backbone:
            assert torch.equal(loaded[key], tensor), key
        elif key in parameters:  # the heads and the extra norm keep their initialisation
            assert not torch.equal(loaded[key], tensor), key

    result = subprocess.run([sys.executable, "tools/convert.py", "--inspect", tmp_path / "model_final.pth"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "transferlab_detector" in result.stdout and "resnet18" in result.stdout
