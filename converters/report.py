"""The account of a conversion: what was read, written and left out, each omission with its reason.

Engines load checkpoints by name and skip what does not fit with a log line, so a conversion that
quietly loses tensors produces a model that silently trains from random init. Every conversion
therefore returns a ``CoverageReport`` that places each backbone tensor either in the output
(under a named key) or in a list of omissions with the reason, and lists the source entries the
reader skipped (classifier, projector, key encoder, queue, ...) with theirs.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from .io import CheckpointError

__all__ = ["OutputFile", "WriterOutput", "SourceSummary", "CoverageReport", "ancestors"]

_SHOWN = 3  # names shown per reason unless verbose


@dataclass(frozen=True)
class OutputFile:
    """One file a writer wants to create; ``write`` fills it (run under ``atomic_write``)."""

    path: str
    description: str
    write: Callable[[BinaryIO], None]

    @classmethod
    def text(cls, path: str | os.PathLike, description: str, text: str) -> OutputFile:
        """A config file written next to a checkpoint."""
        return cls(os.fspath(path), description, lambda file: file.write(text.encode("utf-8")))


@dataclass
class WriterOutput:
    """A writer's plan, before anything touches the disk: its files (the checkpoint first) and where each tensor goes.

    ``written`` maps torchvision backbone names to their keys in the output; ``dropped`` maps the
    backbone tensors the format has no place for to the reason.
    """

    files: list[OutputFile]
    written: dict[str, str]
    dropped: dict[str, str] = field(default_factory=dict)


def _names_by_reason(reasons: Mapping[str, str], verbose: bool, indent: str = "    ") -> list[str]:
    """One line per reason, with how many names share it and (some of) the names."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name, reason in reasons.items():
        groups[reason].append(name)
    lines = []
    for reason, names in groups.items():
        shown = names if verbose else names[:_SHOWN]
        more = f" (+{len(names) - len(shown)} more)" if len(shown) < len(names) else ""
        lines.append(f"{indent}{len(names):>4}  {reason}: {', '.join(shown)}{more}")
    return lines


def ancestors(parent: object) -> list[dict]:
    """The checkpoints a canonical meta's ``parent`` chain names, nearest first, each without its own ``parent``."""
    chain = []
    while isinstance(parent, Mapping):
        chain.append({key: value for key, value in parent.items() if key != "parent"})
        parent = parent.get("parent")
    return chain


@dataclass
class SourceSummary:
    """What the reader found in a checkpoint (``load_backbone``'s meta, in a form people read)."""

    path: str
    source_format: str
    arch: str
    method: str | None
    read: list[str]  # backbone tensors taken from the file (torchvision names)
    filled: dict[str, str]  # backbone tensors the file lacks that were filled in, with how
    ignored: dict[str, str]  # source entries that are not backbone weights -> why
    missing: dict[str, str] = field(default_factory=dict)  # backbone tensors the file lacks (allow_partial)
    discarded: dict[str, str] = field(default_factory=dict)  # tensors no rule explains, dropped (allow_partial)
    parent: object = None  # the canonical meta's parent: {"path", "sha256", "method", "parent"} or None

    @classmethod
    def from_meta(
        cls, path: str | os.PathLike, state_dict: Mapping[str, object], meta: Mapping[str, object]
    ) -> SourceSummary:
        filled = dict(meta.get("filled") or {})
        return cls(
            path=os.fspath(path),
            source_format=str(meta["source_format"]),
            arch=str(meta["arch"]),
            method=meta.get("method"),
            read=[name for name in state_dict if name not in filled],
            filled=filled,
            ignored=dict(meta.get("ignored") or {}),
            missing=dict(meta.get("missing") or {}),
            discarded=dict(meta.get("dropped") or {}),
            parent=meta.get("parent"),
        )

    def format(self, verbose: bool = False) -> str:
        method = f", method {self.method}" if self.method else ""
        lines = [f"{self.path}: {self.source_format} checkpoint, {self.arch}{method}",
                 f"  read     {len(self.read)} backbone tensors"]
        if self.filled:
            lines.append(f"  filled   {len(self.filled)} backbone tensors absent from the file:")
            lines += _names_by_reason(self.filled, verbose)
        if self.ignored:
            lines.append(f"  ignored  {len(self.ignored)} entries that are not backbone weights:")
            lines += _names_by_reason(self.ignored, verbose)
        if self.partial:
            lines.append(self.partial_warning())
        lines += self.lineage()
        return "\n".join(lines)

    def lineage(self) -> list[str]:
        """One line per ancestor, nearest first, from the ``parent`` chain a pretraining recorded."""
        lines = []
        for parent in ancestors(self.parent):
            method = f", method {parent['method']}" if parent.get("method") else ""
            digest = f", sha256 {parent['sha256'][:12]}" if parent.get("sha256") else ""
            lines.append(f"  {'parent' if not lines else 'then':<8} {parent.get('path')}{method}{digest}")
        return lines

    @property
    def partial(self) -> bool:
        return bool(self.missing or self.discarded)

    def partial_warning(self) -> str:
        """Every missing and every discarded name, always: a partial conversion must be impossible to overlook."""
        lines = []
        if self.missing:
            lines.append(f"WARNING: --allow-partial: {len(self.missing)} backbone tensors are MISSING from "
                         f"{self.path}, so the output lacks them:")
            lines += _names_by_reason(self.missing, verbose=True)
        if self.discarded:
            lines.append(f"WARNING: --allow-partial: {len(self.discarded)} tensors of {self.path} that no rule "
                         "explains were DROPPED:")
            lines += _names_by_reason(self.discarded, verbose=True)
        return "\n".join(lines)


@dataclass
class CoverageReport:
    """Where every tensor of a conversion went; building one checks that the account is complete."""

    source: SourceSummary
    target_format: str
    files: dict[str, str]  # path -> what the file is (the converted checkpoint first)
    written: dict[str, str]  # backbone tensor -> key in the output
    dropped: dict[str, str]  # backbone tensor -> why the output has no place for it

    def __post_init__(self):
        present = {*self.source.read, *self.source.filled}
        unaccounted = sorted(name for name in present if name not in self.written and name not in self.dropped)
        unknown = [name for name in [*self.written, *self.dropped] if name not in present]
        both = [name for name in self.written if name in self.dropped]
        clashing = [key for key, count in Counter(self.written.values()).items() if count > 1]
        problems = [
            f"{label}: {', '.join(names)}"
            for label, names in (
                ("neither written nor dropped", unaccounted),
                ("written or dropped but never read", unknown),
                ("both written and dropped", both),
                ("written twice under the key", clashing),
            )
            if names
        ]
        if problems:
            raise CheckpointError(f"the {self.target_format} writer's account is wrong: " + "; ".join(problems))

    @property
    def output(self) -> str:
        return next(iter(self.files))

    def format(self, verbose: bool = False) -> str:
        lines = [self.source.format(verbose), f"{self.output}: {self.target_format}",
                 f"  wrote    {len(self.written)} tensors"]
        if verbose:
            lines += [f"    {name} -> {key}" for name, key in self.written.items()]
        if self.dropped:
            lines.append(f"  dropped  {len(self.dropped)} backbone tensors the format has no place for:")
            lines += _names_by_reason(self.dropped, verbose)
        lines += [f"  also wrote {path}: {description}" for path, description in list(self.files.items())[1:]]
        if self.source.partial:  # repeated last, where it cannot scroll away
            lines.append(self.source.partial_warning())
        return "\n".join(lines)
