"""Engine parts: the sample stream, synchronized BN over two gloo processes, precise BN, config loading."""
import itertools

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.detection.config import get_detection_defaults
from benchmarks.engine.config import ConfigError, load_config
from benchmarks.engine.precise_bn import update_bn_stats
from benchmarks.engine.sampler import GroupedBatchSampler, InfiniteSampler, sample_seed
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


# 23 samples in two groups (say landscape 0, portrait 1), a fixed arbitrary mixture
GROUPS = [0, 1, 1, 0, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0]


def grouped_batches(num_batches, start_batch=0, rank=0, world_size=1, batch_size=4, groups=GROUPS):
    sampler = InfiniteSampler(len(groups), seed=3, rank=rank, world_size=world_size)
    batches = GroupedBatchSampler(sampler, groups, batch_size, start_batch=start_batch)
    return list(itertools.islice(iter(batches), num_batches))


def stream_indices(length, rank=0, world_size=1, size=len(GROUPS)):
    """position -> dataset index of the first ``length`` samples of a rank's stream."""
    sampler = InfiniteSampler(size, seed=3, rank=rank, world_size=world_size)
    return dict(itertools.islice(sampler.stream(), length))


def test_grouped_batches_are_homogeneous_and_tied_to_stream_positions():
    batches = grouped_batches(40)
    assert all(len(batch) == 4 and len({GROUPS[index] for index, _ in batch}) == 1 for batch in batches)
    assert {GROUPS[batch[0][0]] for batch in batches} == {0, 1}
    # each item carries the seed of the stream position it was drawn at, and each position is used at most once
    stream = stream_indices(400)
    position_of_seed = {sample_seed(3, position): position for position in stream}
    positions = [position_of_seed[seed] for batch in batches for _, seed in batch]
    assert all(stream[position_of_seed[seed]] == index for batch in batches for index, seed in batch)
    assert len(set(positions)) == len(positions) == 160
    # nothing is lost: the positions not yet used are the partly filled buckets, fewer than a batch per group
    assert len(set(range(max(positions) + 1)) - set(positions)) < 2 * 4


def test_grouped_stream_resumes_exactly():
    full = grouped_batches(40)
    for start in (1, 7, 23):
        assert grouped_batches(40 - start, start_batch=start) == full[start:]


def test_grouping_one_group_is_the_consecutive_stream():
    """Square-only data (the built-in set) batches exactly as without grouping."""
    batches = grouped_batches(10, groups=[1] * 23)
    consecutive = list(itertools.islice(iter(InfiniteSampler(23, seed=3, rank=0, world_size=1)), 40))
    assert [item for batch in batches for item in batch] == consecutive


def test_grouping_under_ddp_groups_each_rank_shard():
    for rank in (0, 1):
        batches = grouped_batches(10, rank=rank, world_size=2, batch_size=2)
        assert all(len({GROUPS[index] for index, _ in batch}) == 1 for batch in batches)
        stream = stream_indices(100, rank=rank, world_size=2)
        position_of_seed = {sample_seed(3, position): position for position in stream}
        assert all(position_of_seed[seed] % 2 == rank for batch in batches for _, seed in batch)
        assert grouped_batches(6, start_batch=4, rank=rank, world_size=2, batch_size=2) == batches[4:]


def test_grouped_batch_sampler_needs_the_whole_stream():
    with pytest.raises(ValueError, match="start 0"):
        GroupedBatchSampler(InfiniteSampler(23, seed=3, start=5, rank=0, world_size=1), GROUPS, 4)
    with pytest.raises(ValueError, match="3 group ids for a dataset of 23"):
        GroupedBatchSampler(InfiniteSampler(23, seed=3, rank=0, world_size=1), [0, 1, 0], 4)


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
