"""Reader of transferlab's canonical checkpoint (the layout ``converters.canonical`` writes)."""

from __future__ import annotations

from collections.abc import Mapping

from ..canonical import CANONICAL_FORMAT, CANONICAL_VERSION
from ..io import CheckpointError
from .base import ReadResult, _entries_around


def read_canonical(obj: object) -> ReadResult | None:
    """transferlab's own layout (see converters.canonical)."""
    if not (isinstance(obj, Mapping) and obj.get("format") == CANONICAL_FORMAT):
        return None
    if obj.get("version") != CANONICAL_VERSION:
        raise CheckpointError(
            f"canonical checkpoint version {obj.get('version')!r}; this reader knows version {CANONICAL_VERSION}"
        )
    if not isinstance(obj.get("state_dict"), Mapping) or not isinstance(obj.get("meta"), Mapping):
        raise CheckpointError("canonical checkpoint without its 'state_dict' and 'meta' dicts")
    ignored, _, unexplained = _entries_around(obj, "state_dict", handled=("format", "version", "arch", "meta"))
    return ReadResult(dict(obj["state_dict"]), ignored, "canonical", dict(obj["meta"]), unexplained)
