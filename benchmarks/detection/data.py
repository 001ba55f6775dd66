"""Training and test input pipelines: Detectron2's ResizeShortestEdge + horizontal flip on COCO-format data.

Targets carry their masks as ``PolygonMasks`` or ``BitMasks`` (benchmarks.modeling.masks), which resize and
flip with the image.
"""
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader, Dataset

from ..engine.distributed import get_world_size
from ..engine.sampler import GroupedBatchSampler, InfiniteSampler, SeededSamples, ShardSampler, collate_as_lists


def shortest_edge_size(height: int, width: int, short_edge: int, max_size: int):
    """Detectron2's ResizeShortestEdge output size (rounded half up)."""
    scale = short_edge / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max(new_h, new_w) > max_size:
        rescale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * rescale, new_w * rescale
    return int(new_h + 0.5), int(new_w + 0.5)


def sample_short_edge(sizes, sampling: str) -> int:
    """One training short edge: a choice from the list, or uniform in [min, max] for "range" sampling."""
    if sampling == "choice":
        return int(sizes[torch.randint(len(sizes), ()).item()])
    if sampling == "range":
        if len(sizes) != 2:
            raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING 'range' needs two sizes, got {sizes}")
        return int(torch.randint(sizes[0], sizes[1] + 1, ()).item())
    raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING must be 'choice' or 'range', got {sampling!r}")


def resize_sample(image, target, size):
    height, width = image.shape[-2:]
    new_h, new_w = size
    image = TF.resize(image, [new_h, new_w], antialias=True)
    if target is None:
        return image, None
    target = dict(target)
    scale = torch.tensor([new_w / width, new_h / height, new_w / width, new_h / height])
    target["boxes"] = target["boxes"] * scale
    if "masks" in target:
        target["masks"] = target["masks"].resize(new_h, new_w)
    return image, target


def hflip_sample(image, target):
    width = image.shape[-1]
    image = image.flip(-1)
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"].hflip()
    return image, target


def is_bgr(cfg) -> bool:
    """Whether the model takes BGR images (INPUT.FORMAT "BGR", Detectron2's convention for MSRA weights)."""
    if cfg.INPUT.FORMAT not in ("RGB", "BGR"):
        raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got {cfg.INPUT.FORMAT!r}")
    return cfg.INPUT.FORMAT == "BGR"


class TrainingSamples(Dataset):
    """Read, resize to a sampled short edge, flip, drop empty instances (Detectron2's filter_empty_instances).

    Random draws use the torch RNG that SeededSamples seeds.
    """

    def __init__(self, dataset, cfg):
        if cfg.INPUT.RANDOM_FLIP not in ("horizontal", "none"):
            raise NotImplementedError(f"INPUT.RANDOM_FLIP {cfg.INPUT.RANDOM_FLIP!r}: only 'horizontal' and 'none'")
        self.dataset = dataset
        self.min_sizes = list(cfg.INPUT.MIN_SIZE_TRAIN)
        self.sampling = cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        self.max_size = cfg.INPUT.MAX_SIZE_TRAIN
        self.flip = cfg.INPUT.RANDOM_FLIP == "horizontal"
        self.bgr = is_bgr(cfg)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, target = self.dataset[index]
        short_edge = sample_short_edge(self.min_sizes, self.sampling)
        image, target = resize_sample(image, target, shortest_edge_size(*image.shape[-2:], short_edge, self.max_size))
        if self.flip and torch.rand(()) < 0.5:
            image, target = hflip_sample(image, target)
        boxes = target["boxes"]
        keep = ((boxes[:, 2] - boxes[:, 0]) > 1e-5) & ((boxes[:, 3] - boxes[:, 1]) > 1e-5)
        if "masks" in target:
            keep &= target["masks"].nonempty()
        target = {k: (v[keep] if k in ("boxes", "labels", "masks") else v) for k, v in target.items()}
        return image.flip(0) if self.bgr else image, target


class TestSamples(Dataset):
    """Read and resize to the test short edge; keeps the original size to map detections back."""

    def __init__(self, dataset, cfg):
        self.dataset = dataset
        self.min_size = cfg.INPUT.MIN_SIZE_TEST
        self.max_size = cfg.INPUT.MAX_SIZE_TEST
        self.bgr = is_bgr(cfg)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, target = self.dataset[index]
        original_size = tuple(image.shape[-2:])
        if self.min_size > 0:
            image, _ = resize_sample(image, None, shortest_edge_size(*original_size, self.min_size, self.max_size))
        return image.flip(0) if self.bgr else image, original_size, target["image_id"]


def per_rank_batch_size(cfg) -> int:
    total, world_size = cfg.SOLVER.IMS_PER_BATCH, get_world_size()
    if total % world_size:
        raise ValueError(f"SOLVER.IMS_PER_BATCH {total} is not divisible by the {world_size} processes")
    return total // world_size


def build_train_loader(cfg, dataset, start_iter: int) -> DataLoader:
    """An endless loader that, started at ``start_iter``, yields exactly what an uninterrupted run would.

    With DATALOADER.ASPECT_RATIO_GROUPING each batch holds only landscape (width > height) or only portrait and
    square images of ``dataset`` (``dataset.image_size(i)`` is the original ``(height, width)``), grouped per rank
    as in Detectron2; otherwise a batch is the next ``per_rank_batch_size`` samples of the stream.
    """
    batch_size = per_rank_batch_size(cfg)
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        groups = [0 if width > height else 1 for height, width in map(dataset.image_size, range(len(dataset)))]
        batching = {"batch_sampler": GroupedBatchSampler(InfiniteSampler(len(dataset), seed=cfg.SEED), groups,
                                                         batch_size, start_batch=start_iter)}
    else:
        batching = {"batch_size": batch_size,
                    "sampler": InfiniteSampler(len(dataset), seed=cfg.SEED, start=start_iter * batch_size)}
    return DataLoader(
        SeededSamples(TrainingSamples(dataset, cfg)),
        **batching,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=collate_as_lists,
        generator=torch.Generator().manual_seed(cfg.SEED),
        persistent_workers=cfg.DATALOADER.NUM_WORKERS > 0,
    )


def build_test_loader(cfg, dataset) -> DataLoader:
    return DataLoader(
        TestSamples(dataset, cfg),
        batch_size=1,
        sampler=ShardSampler(len(dataset)),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=collate_as_lists,
    )
