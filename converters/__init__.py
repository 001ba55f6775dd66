"""Checkpoint formats: read any supported layout into the canonical backbone, write engine layouts.

Imports nothing else of transferlab; reading never executes code stored in a checkpoint.
"""

from .canonical import check_backbone, expected_backbone_keys, infer_arch, save_canonical
from .detectron2 import to_detectron2_names, write_detectron2_pkl
from .io import CheckpointError, atomic_torch_save, load_torch_file
from .readers import READERS, load_backbone
from .report import CoverageReport
from .writers import WRITERS, convert

__all__ = [
    "load_backbone",
    "READERS",
    "convert",
    "WRITERS",
    "CoverageReport",
    "save_canonical",
    "CheckpointError",
    "atomic_torch_save",
    "load_torch_file",
    "expected_backbone_keys",
    "infer_arch",
    "check_backbone",
    "write_detectron2_pkl",
    "to_detectron2_names",
]
