"""What every command-line tool does with a failure, so that all of them behave alike.

A user's mistake (a bad value, key, file or request) ends as one line ``tool.py: error: …`` on stderr and
exit status 2, argparse's status for a bad command line; its traceback goes to log.txt only, where a
maintainer finds it. Anything else is a bug and keeps its traceback. Warnings raised by transferlab's own
code print as one ``tool.py: warning: …`` line (or go to the run's log once it has one), not as Python's
two-line source-location form.
"""
import functools
import logging
import os
import sys
import warnings
from pathlib import Path

from .errors import ExistingRunError, OutputLockedError
from .logging import FILE_ONLY

USER_ERROR_STATUS = 2

# Exceptions whose message speaks to the user. ValueError covers ConfigError and converters' CheckpointError,
# OSError covers FileNotFoundError, FileExistsError and NotADirectoryError; FloatingPointError is a diverged
# loss, whose message says which settings to change.
USER_ERRORS = (ValueError, KeyError, OSError, NotImplementedError, ExistingRunError, OutputLockedError,
               FloatingPointError)

_OWN_CODE = tuple(Path(__file__).resolve().parents[2] / package
                  for package in ("benchmarks", "converters", "pretrain", "tools"))

logger = logging.getLogger("transferlab")


def one_line(error: BaseException) -> str:
    """The error's message on one line (a KeyError's without the quotes ``str`` adds)."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    return " ".join(str(message).split()) or type(error).__name__


def _show_warning(tool, others, message, category, filename, lineno, file=None, line=None):
    if not any(Path(filename).resolve().is_relative_to(package) for package in _OWN_CODE):
        return others(message, category, filename, lineno, file, line)
    if logger.handlers:  # a run with a log: the warning belongs in it too
        logger.warning("%s", message)
    else:
        print(f"{tool}: warning: {message}", file=sys.stderr if file is None else file)


def _run(tool: str, main, args) -> int:
    previous = warnings.showwarning
    warnings.showwarning = functools.partial(_show_warning, tool, previous)
    try:
        return main(*args) or 0
    except USER_ERRORS as error:
        rank = int(os.environ.get("RANK", "0"))  # the process group may be gone by now
        message = one_line(error) if rank == 0 else f"(rank {rank}) {one_line(error)}"
        if logger.handlers:
            logger.error("%s: error: %s", tool, message, exc_info=error, extra=FILE_ONLY)
        print(f"{tool}: error: {message}", file=sys.stderr)
        return USER_ERROR_STATUS
    except Exception as error:
        if logger.handlers:
            logger.error("%s failed", tool, exc_info=error, extra=FILE_ONLY)
        raise
    finally:
        warnings.showwarning = previous


def _worker(tool: str, main, *args) -> None:
    """One spawned process: its status is its exit code, which the parent passes on."""
    status = _run(tool, main, args)
    if status:
        sys.exit(status)


def run_tool(tool: str, main, *args, num_processes: int = 1) -> int:
    """Run ``main(*args)`` (in ``num_processes`` local processes, unless torchrun started this one) and return the
    exit status: ``main``'s return value, or 2 after a user error's one-line message."""
    if num_processes <= 1:  # torch only for the tools that spawn processes: diagnose.py needs none of it
        return _run(tool, main, args)
    from torch.multiprocessing import ProcessExitedException

    from .distributed import launched_with_torchrun
    from .launch import launch

    if launched_with_torchrun():
        return _run(tool, main, args)
    try:
        launch(functools.partial(_worker, tool, main), num_processes, args)
    except ProcessExitedException as exited:
        if exited.exit_code != USER_ERROR_STATUS:
            raise
        return USER_ERROR_STATUS  # the worker printed its message
    return 0


def input_directory(path, option: str) -> Path:
    """An option naming a directory to read, checked before any work."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{option} {path}: no such directory")
    if not path.is_dir():
        raise NotADirectoryError(f"{option} {path}: not a directory")
    return path


def output_directory(path, option: str) -> Path:
    """An option naming a directory to write into (created later if missing), checked before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{option} {path}: exists and is not a directory")
    return path
