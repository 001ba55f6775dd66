"""One run per output directory.

Two runs writing into one directory both pass the fresh-start check, interleave log.txt, overwrite each
other's checkpoints and config.yaml, and one reports the other's results. A run therefore holds an
exclusive ``flock`` on ``<output>/.lock`` (which records its pid) from before it writes anything there
until it ends; the kernel releases it when the process dies, however it dies, so a stale lock file never
blocks a later run. Under ``torchrun`` only rank 0 locks, and every rank learns the outcome, so that all
of them stop when it fails instead of waiting for rank 0 forever.
"""
import contextlib
import fcntl
import os
import socket
from pathlib import Path

from .distributed import all_gather_object, is_main_process
from .errors import OutputLockedError

LOCK_FILE = ".lock"

_held: dict[Path, int] = {}  # resolved output directory -> the descriptor holding its lock


def holds_lock(output_dir) -> bool:
    """True if this process holds ``output_dir``'s lock: then nothing else writes there."""
    return Path(output_dir).resolve() in _held


def _acquire(output_dir: Path) -> int:
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"output directory {output_dir} exists and is not a directory")
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "a process that has not written its pid yet"
        os.close(fd)
        raise OutputLockedError(
            f"output directory {output_dir} is in use by another run ({holder}; lock file {path}): two runs in one "
            "directory overwrite each other's checkpoints and logs; wait for it to end or choose another --output"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return fd


@contextlib.contextmanager
def lock_output_dir(output_dir):
    """Hold ``output_dir``'s lock (creating the directory) for the ``with`` block; collective under torchrun.

    Raises OutputLockedError naming the directory and the holder's pid if another run holds it (NotADirectoryError
    if the path is a file); the other ranks raise OutputLockedError with rank 0's message.
    """
    output_dir = Path(output_dir)
    fd, failure = None, None
    if is_main_process():
        try:
            fd = _acquire(output_dir)
        except Exception as error:  # whatever it is, the other ranks must hear of it rather than wait
            failure = error
    rank0_failure = all_gather_object(None if failure is None else str(failure))[0]
    if failure is not None:
        raise failure
    if rank0_failure is not None:
        raise OutputLockedError(rank0_failure)
    key = output_dir.resolve()
    if fd is not None:
        _held[key] = fd
    try:
        yield output_dir
    finally:
        if fd is not None:
            del _held[key]
            # Unlock explicitly: forked DataLoader workers share this descriptor, and a lock lasts until the last
            # copy closes. The file stays; an unlocked .lock is no lock.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
