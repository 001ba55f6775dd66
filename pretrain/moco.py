"""MoCo v1 (He et al. 2020) and v2 (Chen et al. 2020): a query encoder, its momentum copy, a queue of keys.

Parameter and buffer names and shapes follow the official facebookresearch/moco model (``encoder_q.*``,
``encoder_k.*``, ``queue`` as DIM x K, ``queue_ptr``), so a full state dict reads like theirs.
"""
import copy
import functools

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from benchmarks.engine.distributed import concat_all_gather, get_rank, get_world_size, is_distributed

from .losses import info_nce


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d that normalises ``num_splits`` groups of a training batch separately (image i in group
    i mod num_splits), as ``num_splits`` processes would each normalise their share.

    The stand-in for MoCo's multi-GPU BN in one process (MoCo's single-GPU notebook does the same); the running
    statistics are the mean of the groups' updates, and parameters, buffers and state-dict names are
    BatchNorm2d's, so checkpoints do not change. In eval mode it is plain BatchNorm2d.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs):
        super().__init__(num_features, **kwargs)
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        g = self.num_splits
        if n % g:
            raise ValueError(f"SplitBatchNorm: a batch of {n} does not split into {g} equal groups")
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        running_mean, running_var = self.running_mean.repeat(g), self.running_var.repeat(g)
        output = F.batch_norm(x.reshape(n // g, c * g, h, w), running_mean, running_var, self.weight.repeat(g),
                              self.bias.repeat(g), True, momentum, self.eps).view(n, c, h, w)
        self.running_mean.copy_(running_mean.view(g, c).mean(dim=0))
        self.running_var.copy_(running_var.view(g, c).mean(dim=0))
        return output

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_splits={self.num_splits}"


def build_resnet_encoder(arch: str, dim: int, mlp_dim=None, bn_splits: int = 1) -> nn.Module:
    """A torchvision ResNet whose ``fc`` is the projection head: linear, or Linear-ReLU-Linear if ``mlp_dim``;
    its BN layers normalise ``bn_splits`` groups of each batch separately (``SplitBatchNorm``)."""
    norm_layer = functools.partial(SplitBatchNorm, num_splits=bn_splits) if bn_splits > 1 else None
    encoder = torchvision.models.get_model(arch, weights=None, norm_layer=norm_layer)
    if not isinstance(encoder, torchvision.models.ResNet):
        raise ValueError(f"MODEL.ARCH must name a torchvision ResNet, got {arch!r}")
    width = encoder.fc.in_features
    if mlp_dim is None:
        encoder.fc = nn.Linear(width, dim)
    else:
        encoder.fc = nn.Sequential(nn.Linear(width, mlp_dim), nn.ReLU(inplace=True), nn.Linear(mlp_dim, dim))
    return encoder


class MoCo(nn.Module):
    """Contrasts each query with its key (another view of the same image) and a queue of earlier keys."""

    def __init__(self, encoder: nn.Module, dim: int, queue_size: int, momentum: float, temperature: float):
        super().__init__()
        self.momentum = momentum
        self.temperature = temperature
        self.encoder_q = encoder
        self.encoder_k = copy.deepcopy(encoder)
        for param in self.encoder_k.parameters():
            param.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def momentum_update_key_encoder(self) -> None:
        """key = m * key + (1 - m) * query, parameter by parameter (BN statistics are the key encoder's own)."""
        m = self.momentum
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.mul_(m).add_(param_q.detach() * (1.0 - m))

    @torch.no_grad()
    def dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """Overwrite the oldest entries with this step's keys from every process."""
        keys = concat_all_gather(keys)
        batch = keys.shape[0]
        queue_size = self.queue.shape[1]
        assert queue_size % batch == 0, (
            f"MoCo queue size {queue_size} (MODEL.MOCO.QUEUE_SIZE) must be a multiple of the global batch "
            f"{batch} (SOLVER.IMS_PER_BATCH) so that each step replaces a contiguous block")
        ptr = int(self.queue_ptr)
        self.queue[:, ptr:ptr + batch] = keys.T
        self.queue_ptr[0] = (ptr + batch) % queue_size

    @torch.no_grad()
    def shuffle_across_processes(self, images: torch.Tensor):
        """Shuffle-BN: give each process a random share of all processes' key images.

        Batch statistics then come from other images than the matching queries', so BN cannot leak
        which query goes with which key. Returns this process's images and the inverse permutation.
        """
        gathered = concat_all_gather(images)
        permutation = torch.randperm(gathered.shape[0]).to(images.device)
        dist.broadcast(permutation, src=0)
        this_process = permutation.view(get_world_size(), -1)[get_rank()]
        return gathered[this_process], torch.argsort(permutation)

    @torch.no_grad()
    def unshuffle_across_processes(self, keys: torch.Tensor, inverse_permutation: torch.Tensor) -> torch.Tensor:
        gathered = concat_all_gather(keys)
        return gathered[inverse_permutation.view(get_world_size(), -1)[get_rank()]]

    @torch.no_grad()
    def encode_keys(self, images: torch.Tensor) -> torch.Tensor:
        """Keys in the order of ``images``, encoded after a shuffle so that a key's BN group (its process's batch,
        or its SplitBatchNorm group in one process) is not its query's."""
        if is_distributed():
            images, inverse_permutation = self.shuffle_across_processes(images)
            keys = F.normalize(self.encoder_k(images).float(), dim=1)
            return self.unshuffle_across_processes(keys, inverse_permutation)
        permutation = torch.randperm(images.shape[0], device=images.device)
        keys = F.normalize(self.encoder_k(images[permutation]).float(), dim=1)
        return keys[torch.argsort(permutation)]

    def contrastive_loss(self, query: torch.Tensor, key: torch.Tensor):
        """InfoNCE of each query against its key and the queue (cloned: it changes after the loss)."""
        return info_nce(query, key, self.queue.clone().T, self.temperature)

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor, *labels: torch.Tensor):
        """One step on two views of a batch (and, for a subclass whose loss uses them, its labels); returns the
        loss and the contrastive top-1 accuracy in % (how often the positive key scores highest)."""
        query = F.normalize(self.encoder_q(im_q).float(), dim=1)
        self.momentum_update_key_encoder()
        key = self.encode_keys(im_k)
        # In fp32 even under autocast: 1/T amplifies rounding.
        with torch.autocast(query.device.type, enabled=False):
            loss, logits = self.contrastive_loss(query, key, *labels)
        self.dequeue_and_enqueue(key, *labels)
        return {"loss": loss, "acc1": (logits.detach().argmax(dim=1) == 0).float().mean() * 100}

    def backbone_state_dict(self) -> dict:
        """The query encoder in torchvision names without the head: what transfers downstream."""
        return {name: tensor for name, tensor in self.encoder_q.state_dict().items() if not name.startswith("fc.")}


AUTO_BN_SPLITS = 8


def bn_splits(cfg) -> int:
    """MODEL.MOCO.BN_SPLITS, with 0 (auto) resolved: 8 groups in one process (the paper's 8 GPUs), 1 per process
    under torchrun (there shuffle-BN runs across the processes)."""
    if cfg.MODEL.MOCO.BN_SPLITS:
        return cfg.MODEL.MOCO.BN_SPLITS
    return 1 if is_distributed() else AUTO_BN_SPLITS


def build_moco(cfg, version: int, model_class=MoCo) -> MoCo:
    """A ``model_class`` (MoCo or a subclass) with v1's linear projection head or v2's MLP head."""
    moco_cfg = cfg.MODEL.MOCO
    mlp_dim = {1: None, 2: moco_cfg.MLP_DIM}[version]
    encoder = build_resnet_encoder(cfg.MODEL.ARCH, moco_cfg.DIM, mlp_dim, bn_splits(cfg))
    return model_class(encoder, moco_cfg.DIM, moco_cfg.QUEUE_SIZE, moco_cfg.MOMENTUM, moco_cfg.TEMPERATURE)


def build_mocov1(cfg) -> MoCo:
    """MoCo v1: linear projection head."""
    return build_moco(cfg, 1)


def build_mocov2(cfg) -> MoCo:
    """MoCo v2: MLP projection head."""
    return build_moco(cfg, 2)
