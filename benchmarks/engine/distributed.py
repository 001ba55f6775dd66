"""Process-group helpers that behave identically in one process and under ``torchrun``."""
import datetime
import os

import torch
import torch.distributed as dist


def launched_with_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed() -> torch.device:
    """Join the ``torchrun`` process group (NCCL on GPUs, gloo on CPUs) and pick this rank's device."""
    if launched_with_torchrun() and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    if torch.cuda.is_available():
        device = torch.device("cuda", get_local_rank())
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def current_device() -> torch.device:
    """This process's device: the GPU ``init_distributed`` selected, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_object(obj) -> list:
    """Every rank's ``obj`` in rank order (a one-element list in a single process)."""
    if not is_distributed():
        return [obj]
    gathered = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_object(obj):
    """Every rank's ``obj`` in rank order on the main process (``None`` elsewhere), e.g. one shard of detections
    each: only the main process evaluates, so the others need not hold the whole result."""
    if not is_distributed():
        return [obj]
    gathered = [None] * get_world_size() if is_main_process() else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor from all ranks along dim 0; no gradient flows back."""
    if not is_distributed():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


class _DifferentiableAllReduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor):
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def differentiable_all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks with a gradient that is also summed, as synchronized BN statistics need."""
    if not is_distributed():
        return tensor
    return _DifferentiableAllReduce.apply(tensor)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean over processes of a tensor on a device its process group can reduce (CUDA for NCCL)."""
    if not is_distributed():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor / get_world_size()


def reduce_scalars(values: dict) -> dict:
    """Average a dict of floats over ranks, for logging."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    device = current_device() if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    return dict(zip(keys, all_reduce_mean(tensor).cpu().tolist()))
