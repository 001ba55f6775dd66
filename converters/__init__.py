"""Checkpoint formats: read any supported layout into the canonical backbone, write engine layouts.

Imports nothing else of transferlab; reading never executes code stored in a checkpoint. The names below are
imported on first use, so that ``converters.io`` alone does not import torch.
"""

from .lazy import lazy_exports

_EXPORTS = {
    "load_backbone": "readers",
    "READERS": "readers",
    "convert": "writers",
    "WRITERS": "writers",
    "CoverageReport": "report",
    "save_canonical": "canonical",
    "CheckpointError": "io",
    "atomic_torch_save": "io",
    "load_torch_file": "io",
    "expected_backbone_keys": "canonical",
    "infer_arch": "canonical",
    "check_backbone": "canonical",
    "write_detectron2_pkl": "detectron2",
    "to_detectron2_names": "detectron2",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
