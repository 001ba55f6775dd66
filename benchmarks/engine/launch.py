"""``--num-gpus N`` without torchrun: start N local processes the way torchrun would (env:// rendezvous)."""
import os
import socket

import torch.multiprocessing as mp

from .distributed import launched_with_torchrun


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(local_rank: int, world_size: int, port: int, main, args):
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size),
                       "RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "LOCAL_WORLD_SIZE": str(world_size)})
    main(*args)


def launch(main, num_processes: int, args=()):
    """Run ``main(*args)`` once here, or in ``num_processes`` spawned workers when more than one is asked for."""
    if num_processes <= 1 or launched_with_torchrun():
        return main(*args)
    mp.start_processes(_worker, args=(num_processes, _free_port(), main, args), nprocs=num_processes,
                       start_method="spawn")
    return None
