"""Training events as Detectron2 writes them: ``events.jsonl`` (one JSON object per logging step and per
evaluation) and, when ``tensorboard`` is installed, TensorBoard event files in the same directory.

Only the main process writes. A resumed run appends, so iterations replayed after a kill appear twice,
as they do in Detectron2's ``metrics.json``; readers keep the last record of an iteration.
"""
import json
import logging
import math
import resource
from pathlib import Path

import torch

from .distributed import is_main_process

logger = logging.getLogger("transferlab")

EVENTS_FILE = "events.jsonl"


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocations on a GPU, the resident set size on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux reports KiB


class EventWriter:
    def __init__(self, output_dir):
        self.path = Path(output_dir) / EVENTS_FILE
        self.enabled = is_main_process()
        self.tensorboard = None
        if self.enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.info("tensorboard is not installed: events go to %s only", self.path)
            else:
                self.tensorboard = SummaryWriter(log_dir=str(self.path.parent))

    def write(self, iteration: int, scalars: dict) -> None:
        """One record: ``{"iteration": iteration, **scalars}``; non-finite numbers are written as null."""
        if not self.enabled:
            return
        record = {"iteration": iteration}
        record.update({k: (v if math.isfinite(v) else None) for k, v in scalars.items()})
        with open(self.path, "a") as events:
            events.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in scalars.items():
                if math.isfinite(value):
                    self.tensorboard.add_scalar(key, value, iteration)
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
