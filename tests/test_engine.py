"""Engine parts: the sample stream, synchronized BN over two gloo processes, precise BN, config loading."""
import itertools

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.detection.config import get_detection_defaults
from benchmarks.engine.config import ConfigError, load_config
from benchmarks.engine.precise_bn import update_bn_stats
from benchmarks.engine.sampler import InfiniteSampler
from benchmarks.modeling.norm import NaiveSyncBatchNorm


def test_sampler_restarts_exactly_and_shards_disjointly():
    full = list(itertools.islice(iter(InfiniteSampler(7, seed=3, rank=0, world_size=1)), 20))
    resumed = list(itertools.islice(iter(InfiniteSampler(7, seed=3, start=9, rank=0, world_size=1)), 11))
    assert resumed == full[9:]
    assert sorted(index for index, _ in full[:7]) == list(range(7))  # each epoch is a permutation
    rank0 = list(itertools.islice(iter(InfiniteSampler(8, seed=3, rank=0, world_size=2)), 4))
    rank1 = list(itertools.islice(iter(InfiniteSampler(8, seed=3, rank=1, world_size=2)), 4))
    assert sorted(i for i, _ in rank0 + rank1) == list(range(8))
    assert len({seed for _, seed in rank0 + rank1}) == 8


def _sync_bn_worker(rank, init_file, inputs, weights, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    bn = NaiveSyncBatchNorm(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x = inputs[rank].clone().requires_grad_()
    out = bn(x)
    (out * weights[rank]).sum().backward()
    results[rank] = (out.detach(), x.grad, bn.weight.grad, bn.running_mean.clone(), bn.running_var.clone())
    dist.destroy_process_group()


def test_naive_sync_bn_equals_bn_over_the_global_batch(tmp_path):
    torch.manual_seed(0)
    inputs = [torch.randn(2, 3, 4, 4) * 3 + 1, torch.randn(5, 3, 4, 4)]  # unequal batches per process
    weights = [torch.randn(2, 3, 4, 4), torch.randn(5, 3, 4, 4)]
    results = mp.Manager().dict()
    mp.spawn(_sync_bn_worker, args=(str(tmp_path / "rendezvous"), inputs, weights, results), nprocs=2)

    reference = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        reference.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    x = torch.cat(inputs).requires_grad_()
    out = reference(x)
    (out * torch.cat(weights)).sum().backward()
    # float32 sums taken in a different order: agreement to ~1e-5 relative
    torch.testing.assert_close(torch.cat([results[0][0], results[1][0]]), out.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat([results[0][1], results[1][1]]), x.grad, rtol=1e-4, atol=1e-5)
    # each process holds its own share of the weight gradient; DDP sums them
    torch.testing.assert_close(results[0][2] + results[1][2], reference.weight.grad, rtol=1e-4, atol=1e-5)
    for rank in (0, 1):
        torch.testing.assert_close(results[rank][3], reference.running_mean, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(results[rank][4], reference.running_var, rtol=1e-4, atol=1e-6)


def test_naive_sync_bn_in_one_process_is_batch_norm():
    torch.manual_seed(0)
    bn, reference = NaiveSyncBatchNorm(4), torch.nn.BatchNorm2d(4)
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(bn(x), reference(x))
    torch.testing.assert_close(bn.running_var, reference.running_var)


def test_precise_bn_gives_the_exact_average_and_leaves_rng_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), torch.nn.BatchNorm2d(2))
    batches = [torch.randn(4, 2, 3, 3) + i for i in range(5)]
    with torch.no_grad():
        features = [model[0](b) for b in batches]
    expected_mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in features]).mean(0)
    expected_var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in features]).mean(0)
    state = torch.get_rng_state()
    seen = update_bn_stats(model, iter(batches), lambda m, b: m(b), num_iter=5)
    assert seen == 5
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(model[1].running_mean, expected_mean)
    torch.testing.assert_close(model[1].running_var, expected_var)
    assert model[1].momentum == 0.1


def test_config_base_inheritance_overrides_and_unknown_keys(tmp_path):
    (tmp_path / "base.yaml").write_text("SOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 7\n")
    (tmp_path / "child.yaml").write_text('_BASE_: "base.yaml"\nSOLVER:\n  MAX_ITER: 9\n')
    cfg = load_config(get_detection_defaults(), tmp_path / "child.yaml", ["SOLVER.STEPS", "(3, 5)"])
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS) == (0.5, 9, (3, 5))
    with pytest.raises(ConfigError, match="SOLVER.NOT_A_KEY"):
        load_config(get_detection_defaults(), None, ["SOLVER.NOT_A_KEY", "1"])
    (tmp_path / "bad.yaml").write_text("SOLVER:\n  TYPO_KEY: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(get_detection_defaults(), tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(get_detection_defaults(), tmp_path / "missing.yaml")
