"""An endless, rank-sharded, restartable sample stream: the data-order half of exact resume."""
import torch
from torch.utils.data import Dataset, Sampler

from .distributed import get_rank, get_world_size


def sample_seed(seed: int, position: int) -> int:
    """A seed for one sample's augmentations that depends only on the run seed and its stream position."""
    return (seed * 1_000_003 + position * 7_919 + 12_345) % (2**31 - 1)


class InfiniteSampler(Sampler):
    """Yields ``(dataset_index, sample_seed)`` forever, like Detectron2's TrainingSampler.

    Epoch ``e`` is a permutation drawn from ``seed + e``; global stream position ``p`` goes to rank
    ``p % world_size``. ``start`` counts the samples this rank already consumed, so a run resumed at
    iteration ``k`` with ``start = k * per_rank_batch`` sees exactly the samples it would have seen.
    """

    def __init__(self, size: int, seed: int, start: int = 0, shuffle: bool = True, rank=None, world_size=None):
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size = size
        self.seed = seed
        self.start = start
        self.shuffle = shuffle
        self.rank = get_rank() if rank is None else rank
        self.world_size = get_world_size() if world_size is None else world_size

    def _permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self):
        position = self.start * self.world_size + self.rank
        epoch, permutation = None, None
        while True:
            if position // self.size != epoch:
                epoch = position // self.size
                permutation = self._permutation(epoch)
            yield int(permutation[position % self.size]), sample_seed(self.seed, position)
            position += self.world_size


class SeededSamples(Dataset):
    """Runs ``dataset[index]`` under the torch RNG seeded for that sample, leaving the caller's RNG untouched.

    Random transforms (flip, scale, crops, colour jitter) then depend on the stream position only, not
    on worker count, worker scheduling or where a run was resumed.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
