"""Safe reading and atomic writing of checkpoint files.

Reading never runs code stored in a file: torch files go through ``torch.load(weights_only=True)``
(which also rebuilds the argparse.Namespace training scripts store, a plain attribute bag),
``.pkl`` files through an unpickler that only knows numpy arrays and plain containers, and
``.safetensors`` files hold no code at all. Writing goes to a temporary file in the target's
directory and is renamed into place, so a crash or a failing serializer never leaves a partial
file under the final name.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import os
import pickle
import re
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import safetensors

if TYPE_CHECKING:  # else imported by the functions that need it: the diagnosis writes its json and charts here
    import torch

__all__ = [
    "CheckpointError",
    "atomic_write",
    "atomic_write_text",
    "atomic_torch_save",
    "remove_stale_temporaries",
    "refuse_to_overwrite",
    "TORCH_SUFFIXES",
    "require_suffix",
    "load_torch_file",
    "load_pickle_file",
    "load_safetensors_file",
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read safely, or does not hold the backbone it should."""


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, then rename it to ``path``.

    The temporary name starts with a dot and ends in ``.tmp`` so that watchers globbing for
    ``*.pth`` never pick up a half-written file. If ``write`` raises, the temporary file is removed
    and ``path`` keeps its previous content (or stays absent).
    """
    with _renamed_into_place(path) as tmp_path:
        # os.open with mode 0o666 lets the umask decide the final permissions, as a plain open() would.
        with os.fdopen(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())


def atomic_link(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give a finished file a second name without writing it again: a hard link renamed into place (a copy where
    the filesystem has no hard links). Files written by ``atomic_write`` are replaced, never modified, so the
    two names never affect each other."""
    with _renamed_into_place(path) as tmp_path:
        try:
            os.link(source, tmp_path)
        except OSError:
            with open(source, "rb") as original, open(tmp_path, "wb") as copy:
                shutil.copyfileobj(original, copy)
                copy.flush()
                os.fsync(copy.fileno())


# ``.<final name>.<uuid4 hex>.tmp``: what a write killed before its rename leaves behind.
_TEMPORARY_NAME = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")


@contextlib.contextmanager
def _renamed_into_place(path: str | os.PathLike):
    """Yield a fresh hidden name next to ``path``; rename what was made there to ``path`` durably, or remove it."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):  # else the error would name the hidden temporary file
        problem = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise FileNotFoundError(f"cannot write {path}: its directory {directory} {problem}")
    tmp_path = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise
    if os.name == "posix":  # make the rename itself durable
        directory_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)


def remove_stale_temporaries(directory: str | os.PathLike) -> dict[str, int]:
    """Delete the temporary files of writes into ``directory`` that were killed midway; returns path -> bytes.

    Safe only while no other process writes there (a run holding the directory's lock): a live write's
    temporary looks the same.
    """
    removed = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            if _TEMPORARY_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                removed[entry.path] = entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file (results, resolved configs) so that readers never see half of it."""
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a partial file at ``path``."""
    import torch

    atomic_write(path, lambda file: torch.save(obj, file))


def refuse_to_overwrite(output: str | os.PathLike, source: str | os.PathLike) -> None:
    """Raise CheckpointError if writing ``output`` would replace ``source``.

    Compares files, not strings, so a relative path, a symlink or a hard link to the input is
    caught too: a conversion must never destroy the only copy of a checkpoint.
    """
    if os.path.exists(output) and os.path.exists(source) and os.path.samefile(output, source):
        raise CheckpointError(
            f"{os.fspath(output)}: refusing to overwrite the input checkpoint {os.fspath(source)}; "
            "choose another output name"
        )


# What torch.save files are usually called; readers open .pkl and .safetensors files with other loaders.
TORCH_SUFFIXES = (".pth", ".pt", ".tar")


def require_suffix(
    path: str | os.PathLike,
    suffixes: tuple[str, ...] = TORCH_SUFFIXES,
    reason: str = "a torch.save file; names ending in .pkl or .safetensors are read with other loaders",
) -> None:
    """Raise CheckpointError unless ``path`` ends in one of ``suffixes``.

    Loaders pick their (safe) reader by suffix, so a wrongly named file would not read back.
    """
    if not os.fspath(path).lower().endswith(suffixes):
        raise CheckpointError(f"{os.fspath(path)}: the output must be named *{' or *'.join(suffixes)} ({reason})")


def _unreadable(path: str | os.PathLike, err: BaseException) -> CheckpointError:
    first_line = (str(err).strip().splitlines() or [""])[0]
    return CheckpointError(
        f"{os.fspath(path)}: cannot read checkpoint, the file is corrupted or truncated "
        f"({type(err).__name__}: {first_line})"
    )


# timm's and torchvision's training scripts save their argparse.Namespace as "args" next to the
# weights. Unpickling one only sets attributes on an empty Namespace, which runs no code.
_SAFE_TORCH_GLOBALS = [argparse.Namespace]

# torch's weights-only unpickler names the global it refused in one of these two phrasings.
_REFUSED_TORCH_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)")


def load_torch_file(path: str | os.PathLike) -> object:
    """``torch.load`` on CPU with ``weights_only=True``; refusals and corruption become CheckpointError.

    A missing file raises FileNotFoundError (which names the path).
    """
    import torch

    try:
        with torch.serialization.safe_globals(_SAFE_TORCH_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError as err:
        refused = _REFUSED_TORCH_GLOBAL.search(str(err))
        if refused is None:
            raise _unreadable(path, err) from err
        raise CheckpointError(
            f"{os.fspath(path)}: refused to load: unpickling it needs {refused.group(1)}, so loading it "
            "would execute code from the file (checkpoints are read with torch.load(weights_only=True))"
        ) from None
    except Exception as err:
        raise _unreadable(path, err) from err


def _safe_pickle_globals() -> dict[tuple[str, str], object]:
    """The globals a pickle of numpy arrays in plain containers needs, under every name they were pickled with.

    numpy 1.x pickles name ``numpy.core.*``, numpy 2 pickles name ``numpy._core.*``; Python 2 pickles
    (Caffe2-era Detectron ``.pkl``) name ``__builtin__``. Each name maps to the object itself, so
    nothing is imported by name and the deprecated ``numpy.core`` alias is never touched.
    """
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric

    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): OrderedDict,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles written by Python 3
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol-5 arrays
    for builtins_module in ("builtins", "__builtin__"):
        for container in (set, frozenset, bytearray):
            allowed[(builtins_module, container.__name__)] = container
    return allowed


_SAFE_PICKLE_GLOBALS = _safe_pickle_globals()


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.global_name = f"{module}.{name}"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals; anything else stops the load before it runs."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _SAFE_PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(module, name) from None


def load_pickle_file(path: str | os.PathLike) -> object:
    """Read a Detectron2-style ``.pkl`` (numpy arrays in dicts/lists) without running code from it.

    ``encoding="latin1"`` is what Detectron2 uses, so Python 2 pickles of numpy arrays load too.
    A missing file raises FileNotFoundError (which names the path).
    """
    try:
        with open(path, "rb") as file:
            return _ArrayUnpickler(file, encoding="latin1").load()
    except _RefusedGlobal as err:
        raise CheckpointError(
            f"{os.fspath(path)}: refused to load: unpickling it needs {err.global_name}, which is not a "
            "numpy array or plain container, so loading it could execute code from the file"
        ) from None
    except OSError:
        raise
    except Exception as err:
        raise _unreadable(path, err) from err


def load_safetensors_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and the string metadata of a ``.safetensors`` file (a format that cannot hold code)."""
    if not os.path.exists(path):
        raise FileNotFoundError(2, "No such file or directory", os.fspath(path))
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as file:  # opened once for both
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except Exception as err:
        raise _unreadable(path, err) from err
    return tensors, metadata
