"""Readers: one module per checkpoint layout, and ``load_backbone`` (``pipeline.py``), which tries them.

A reader takes the loaded object and returns None when the layout is not its own, else a
``ReadResult`` (``base.py``: what it must account for, and the helpers several readers share).
Supporting a new format is one module here with its reader, its entry in ``READERS`` (``pipeline.py``,
in the order auto-detection tries them) and its layout in tests/test_converters_readers.py.
"""

from .base import TRAINING_STATE_ENTRIES, ReadResult
from .canonical import read_canonical
from .detectron2 import read_detectron2
from .lightning import read_lightning
from .mmselfsup import read_mmselfsup
from .moco import read_moco
from .mocov3 import read_mocov3
from .pipeline import FORMAT_ALIASES, READERS, PartialBackboneWarning, load_backbone
from .torchvision import read_timm, read_torchvision
from .transferlab_detector import read_transferlab_detector
from .vissl import read_vissl

__all__ = [
    "ReadResult",
    "TRAINING_STATE_ENTRIES",
    "PartialBackboneWarning",
    "READERS",
    "FORMAT_ALIASES",
    "read_canonical",
    "read_transferlab_detector",
    "read_moco",
    "read_torchvision",
    "read_timm",
    "read_mocov3",
    "read_mmselfsup",
    "read_vissl",
    "read_detectron2",
    "read_lightning",
    "load_backbone",
]
