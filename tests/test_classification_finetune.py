"""Label-budget finetuning on tiny tensors: the loss falls, a killed sweep resumes to the same weights, val chooses."""
import json

import pytest
import torch
from torch.utils.data import Dataset

from benchmarks.classification import finetune as finetune_module
from benchmarks.classification.features import build_backbone
from benchmarks.classification.finetune import (
    Classifier,
    best_evaluation,
    decay_steps,
    finetune,
    schedule_steps,
    with_norm,
)
from benchmarks.engine.distributed import init_distributed
from benchmarks.engine.launch import launch
from benchmarks.engine.trainer import IterationTrainer
from benchmarks.modeling.norm import NaiveSyncBatchNorm
from converters import load_torch_file, save_canonical

NUM_CLASSES = 3
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions run faster on one thread than on two that contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyImages(Dataset):
    """Images whose class sets the mean of one colour channel, with a random flip (drawn from the torch RNG
    that SeededSamples seeds) so that augmentation matters for exact resume."""

    def __init__(self, size: int, seed: int, multilabel: bool = False, augment: bool = False, side: int = 16):
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(size) % NUM_CLASSES
        self.images = torch.randn(size, 3, side, side, generator=generator) * 0.5
        if multilabel:  # two classes an image: its own and the next
            self.targets = torch.zeros(size, NUM_CLASSES)
            self.targets[torch.arange(size), self.labels] = 1.0
            self.targets[torch.arange(size), (self.labels + 1) % NUM_CLASSES] = 1.0
        else:
            self.targets = self.labels
        self.images[torch.arange(size), self.labels] += 1.5
        self.augment = augment

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.images[index]
        if self.augment and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, self.targets[index]


def sweep(output, multilabel=False, side=16, **overrides):
    options = dict(num_classes=NUM_CLASSES, multilabel=multilabel, output_dir=output, device=CPU, lrs=(0.05,),
                   schedules=("6steps",), batch_size=6, checkpoint_period=2, evaluations=3, num_workers=0)
    options.update(overrides)
    return finetune(build_backbone("none", "resnet18")[0], TinyImages(12, 1, multilabel, augment=True, side=side),
                    TinyImages(6, 2, multilabel, side=side), TinyImages(6, 3, multilabel, side=side), **options)


def losses(run_dir):
    return [json.loads(line)["total_loss"] for line in (run_dir / "events.jsonl").read_text().splitlines()
            if "total_loss" in line]


def test_schedules_follow_hpt_table_4():
    assert schedule_steps("2500steps", train_size=1000, batch_size=256) == 2500
    assert schedule_steps("90epochs", train_size=1000, batch_size=256) == 352  # ceil(90 * 1000 / 256)
    assert decay_steps(2500) == (833, 1667)  # 10x decay at 1/3 and 2/3
    with pytest.raises(ValueError, match="'90 weeks'"):
        schedule_steps("90 weeks", 1000, 256)


def test_loss_falls_and_outputs(tmp_path):
    result = sweep(tmp_path, schedules=("12steps",), lrs=(0.02,), checkpoint_period=0, evaluations=2)
    run_dir = tmp_path / "lr0.02_12steps"
    values = losses(run_dir)
    assert len(values) == 2 and values[1] < 0.5 * values[0]  # mean losses of steps 1-6 and 7-12
    assert result["chosen"] == "lr0.02_12steps" and result["metric"] == "top1"
    assert set(result["test"]) == {"top1"}  # no top-5 with 3 classes
    assert [entry["iteration"] for entry in json.loads((run_dir / "evaluations.json").read_text())] == [6, 12]
    assert json.loads((tmp_path / "finetune.json").read_text()) == result


def test_killed_sweep_resumes_to_the_same_weights(tmp_path, monkeypatch):
    options = dict(lrs=(0.05, 0.01), head_lr_multiplier=10.0)
    sweep(tmp_path / "whole", **options)

    step = IterationTrainer._step
    calls = {"count": 0}

    def killed_at_the_tenth_step(self, batch, iteration):
        calls["count"] += 1
        if calls["count"] == 10:  # the 4th step of the second run, after its checkpoint at 2
            raise KeyboardInterrupt
        return step(self, batch, iteration)

    monkeypatch.setattr(IterationTrainer, "_step", killed_at_the_tenth_step)
    with pytest.raises(KeyboardInterrupt):
        sweep(tmp_path / "killed", **options)
    monkeypatch.setattr(IterationTrainer, "_step", step)
    assert (tmp_path / "killed" / "lr0.01_6steps" / "model_0000001.pth").is_file()
    assert not (tmp_path / "killed" / "lr0.01_6steps" / "model_final.pth").is_file()
    with pytest.raises(RuntimeError, match="already holds a run"):
        sweep(tmp_path / "killed", **options)
    resumed = sweep(tmp_path / "killed", resume=True, **options)

    for name in ("lr0.05_6steps", "lr0.01_6steps"):
        whole = load_torch_file(tmp_path / "whole" / name / "model_final.pth")["model"]
        again = load_torch_file(tmp_path / "killed" / name / "model_final.pth")["model"]
        assert whole.keys() == again.keys()
        for key in whole:
            assert torch.equal(whole[key], again[key]), key
    groups = load_torch_file(tmp_path / "whole" / "lr0.01_6steps" / "model_final.pth")["optimizer"]["param_groups"]
    assert groups[-1]["lr"] == pytest.approx(10.0 * groups[0]["lr"])  # the head's multiplier
    assert groups[0]["lr"] == pytest.approx(0.01 * 0.1 * 0.1)  # decayed 10x at steps 2 and 4 of 6
    assert resumed == json.loads((tmp_path / "whole" / "finetune.json").read_text())


def finetune_in_this_process(output: str) -> None:
    """One process of a DDP run (or the whole single-process run)."""
    torch.set_num_threads(1)
    init_distributed()
    # head at the backbone's lr: at HPT's 100x, 1.0, three steps amplify float rounding beyond the tolerance
    sweep(output, side=64, lrs=(0.01,), schedules=("3steps",), evaluations=1, checkpoint_period=0,
          head_lr_multiplier=1.0)


def test_two_processes_train_what_one_does(tmp_path):
    """Half the global batch per process, gradients averaged by DDP and BN statistics synchronized (naiveSyncBN
    over gloo): the training one process does on the whole batch. (64 px images: on 16 px ones BN normalizes
    over 6 values of 1x1 maps, and float rounding alone, even the thread count, changes the third step.)"""
    finetune_in_this_process(str(tmp_path / "one"))
    launch(finetune_in_this_process, 2, (str(tmp_path / "two"),))
    one = load_torch_file(tmp_path / "one" / "lr0.01_3steps" / "model_final.pth")["model"]
    two = load_torch_file(tmp_path / "two" / "lr0.01_3steps" / "model_final.pth")["model"]
    initial = {f"backbone.{k}": v for k, v in build_backbone("none", "resnet18", seed=0)[0].state_dict().items()}
    assert one.keys() == two.keys() == initial.keys() | {"head.weight", "head.bias"}
    for key, value in one.items():
        if value.is_floating_point() and key in initial:  # what training changed, the same to 1e-3 of the change
            assert (two[key] - value).norm() <= 1e-3 * (value - initial[key]).norm() + 1e-7, key
    torch.testing.assert_close(two["head.weight"], one["head.weight"], rtol=1e-3, atol=1e-6)
    results = [json.loads((tmp_path / name / "finetune.json").read_text()) for name in ("one", "two")]
    assert results[1]["test"] == pytest.approx(results[0]["test"])


def test_selection_on_val_reports_test(tmp_path, monkeypatch):
    # the runs' evaluations are made up, so that val and test disagree: val must choose
    histories = {0.1: [{"iteration": 2, "val": {"top1": 50.0}, "test": {"top1": 90.0}},
                       {"iteration": 4, "val": {"top1": 60.0}, "test": {"top1": 10.0}}],
                 0.01: [{"iteration": 2, "val": {"top1": 70.0}, "test": {"top1": 20.0}},
                        {"iteration": 4, "val": {"top1": 70.0}, "test": {"top1": 30.0}}]}
    monkeypatch.setattr(finetune_module, "finetune_run", lambda **kw: histories[kw["lr"]])
    result = sweep(tmp_path, lrs=(0.1, 0.01))
    assert result["chosen"] == "lr0.01_6steps"
    assert result["iteration"] == 2 and result["test"] == {"top1": 20.0}  # the earlier of equal val points
    assert result["runs"]["lr0.1_6steps"]["test"] == {"top1": 10.0}
    assert best_evaluation(histories[0.1], "top1")["iteration"] == 4


def test_multilabel_bce_from_a_checkpoint(tmp_path, resnet18):
    weights = tmp_path / "backbone.pth"
    save_canonical(weights, {k: v for k, v in resnet18.state_dict().items() if not k.startswith("fc.")},
                   {"method": "test"})
    # the DDP norm keeps the checkpoint's statistics
    model = Classifier(with_norm(build_backbone(weights)[0], "naiveSyncBN"), NUM_CLASSES)
    assert isinstance(model.backbone.layer3[1].bn2, NaiveSyncBatchNorm)
    assert torch.equal(model.backbone.layer3[1].bn2.running_var, resnet18.layer3[1].bn2.running_var)
    assert model.head.in_features == 512

    result = finetune(build_backbone(weights)[0], TinyImages(12, 1, multilabel=True, augment=True),
                      TinyImages(6, 2, multilabel=True), TinyImages(6, 3, multilabel=True), num_classes=NUM_CLASSES,
                      multilabel=True, output_dir=tmp_path / "run", device=CPU, lrs=(0.05,), schedules=("2epochs",),
                      batch_size=6, evaluations=1, num_workers=0)
    assert result["metric"] == "auroc" and set(result["test"]) == {"auroc", "mAP"}
    assert result["runs"]["lr0.05_2epochs"]["max_iter"] == 4  # 2 epochs of 12 images at batch 6
    assert "loss_bce" in (tmp_path / "run" / "lr0.05_2epochs" / "events.jsonl").read_text()
