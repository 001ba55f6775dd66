"""One logger for every entry point: console on the main process, a log file per rank."""
import logging
import sys
from pathlib import Path

from .distributed import get_rank


def setup_logger(output_dir=None, name: str = "transferlab") -> logging.Logger:
    rank = get_rank()
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter("[%(asctime)s %(name)s] %(message)s", datefmt="%m/%d %H:%M:%S")
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(formatter)
        logger.addHandler(console)
    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        filename = "log.txt" if rank == 0 else f"log.txt.rank{rank}"
        file_handler = logging.FileHandler(output_dir / filename)
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    return logger
