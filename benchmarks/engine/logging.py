"""One logger for every entry point: console on the main process, a log file per rank."""
import logging
import sys
from pathlib import Path

# "transferlab" for the entry points; the package names for modules that log under ``__name__``.
LOGGER_NAMES = ("transferlab", "benchmarks", "pretrain", "converters")

# ``logger.error(..., exc_info=error, extra=FILE_ONLY)``: a traceback for log.txt that the console does not show.
FILE_ONLY = {"file_only": True}


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)


def setup_logger(output_dir=None) -> logging.Logger:
    from .distributed import get_rank  # torch: not for the tools that only import FILE_ONLY

    rank = get_rank()
    formatter = logging.Formatter("[%(asctime)s %(name)s] %(message)s", datefmt="%m/%d %H:%M:%S")
    handlers = []
    if rank == 0:
        console = logging.StreamHandler(sys.stdout)
        console.addFilter(_not_file_only)
        handlers.append(console)
    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(output_dir / ("log.txt" if rank == 0 else f"log.txt.rank{rank}")))
    for handler in handlers:
        handler.setFormatter(formatter)
    for name in LOGGER_NAMES:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            if handler not in handlers:
                handler.close()
        for handler in handlers:
            logger.addHandler(handler)
    return logging.getLogger("transferlab")
