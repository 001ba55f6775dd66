"""Exemplar v1 and v2 (Zhao et al. 2021, "What makes instance discrimination good for transfer learning?", §3):
MoCo v1 / v2 whose queue also stores each key's class, so that eq. 2 can drop the query's own class from the
denominator. The positive key stays, so positives are not pulled together: each instance is only pushed away
from true negatives. Temperatures 0.07 (v1) and 0.1 (v2), queue 1M on ImageNet (appendix E, Table 10).
"""
import torch

from benchmarks.engine.distributed import concat_all_gather

from .losses import exemplar_nce
from .moco import MoCo, build_moco


class Exemplar(MoCo):
    """A MoCo with a label per queued key (-1 for the random initial keys, which belong to no class)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("queue_labels", torch.full((self.queue.shape[1],), -1, dtype=torch.long))

    @torch.no_grad()
    def dequeue_and_enqueue(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        ptr = int(self.queue_ptr)  # the block the keys are about to fill
        labels = concat_all_gather(labels)
        super().dequeue_and_enqueue(keys)
        self.queue_labels[ptr:ptr + len(labels)] = labels

    def contrastive_loss(self, query: torch.Tensor, key: torch.Tensor, labels: torch.Tensor):
        """Eq. 2: the query's own class left out of the denominator."""
        return exemplar_nce(query, key, self.queue.clone().T, labels, self.queue_labels.clone(), self.temperature)


def build_exemplar_v1(cfg) -> Exemplar:
    """Exemplar-v1: MoCo v1's linear head (and, in train.METHODS, its augmentation)."""
    return build_moco(cfg, 1, Exemplar)


def build_exemplar_v2(cfg) -> Exemplar:
    """Exemplar-v2: MoCo v2's MLP head (and, in train.METHODS, its augmentation)."""
    return build_moco(cfg, 2, Exemplar)
