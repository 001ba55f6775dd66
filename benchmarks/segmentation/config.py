"""Semantic segmentation defaults: mmsegmentation's DeepLab-v3 R50-D8 40k Cityscapes recipe
(``deeplabv3_r50-d8_4xb2-40k_cityscapes-512x1024.py`` and its ``_base_`` files) in Detectron2-style keys, with the
basic stem that self-supervised checkpoints have. ``configs/segmentation/`` cites the sources value by value."""
import operator

from fvcore.common.config import CfgNode as CN

from ..engine.distributed import get_world_size
from ..engine.validation import BOOLEAN, STRING, Rule, check_rules, choice, fail, integer, number, sequence
from ..modeling.deeplab import OUTPUT_STRIDES

_C = CN()
_C.TASK = "cityscapes_deeplabv3"
_C.OUTPUT_DIR = ""
_C.SEED = 0

_C.MODEL = CN()
_C.MODEL.WEIGHTS = ""
# RGB, 0-255: mmseg's SegDataPreProcessor mean/std (torchvision's ImageNet statistics x 255) with bgr_to_rgb.
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
_C.MODEL.NUM_CLASSES = 19
_C.MODEL.IGNORE_LABEL = 255
_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50
_C.MODEL.RESNETS.NORM = "SyncBN"  # mmseg's norm_cfg SyncBN, backbone and heads
_C.MODEL.RESNETS.OUTPUT_STRIDE = 8  # D8: strides (1, 2, 1, 1), dilations (1, 1, 2, 4), contract_dilation
_C.MODEL.DECODE_HEAD = CN()
_C.MODEL.DECODE_HEAD.CHANNELS = 512
_C.MODEL.DECODE_HEAD.DILATIONS = (1, 12, 24, 36)
_C.MODEL.DECODE_HEAD.DROPOUT = 0.1
_C.MODEL.AUXILIARY_HEAD = CN()
_C.MODEL.AUXILIARY_HEAD.ENABLED = True
_C.MODEL.AUXILIARY_HEAD.CHANNELS = 256
_C.MODEL.AUXILIARY_HEAD.NUM_CONVS = 1
_C.MODEL.AUXILIARY_HEAD.DROPOUT = 0.1
_C.MODEL.AUXILIARY_HEAD.LOSS_WEIGHT = 0.4

_C.INPUT = CN()
# RandomResize(scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True): (long side, short side)
_C.INPUT.SCALE = (2048, 1024)
_C.INPUT.RATIO_RANGE = (0.5, 2.0)
_C.INPUT.CROP_SIZE = (512, 1024)  # (height, width), as mmseg's crop_size
_C.INPUT.CAT_MAX_RATIO = 0.75
_C.INPUT.FLIP_PROB = 0.5
_C.INPUT.PHOTOMETRIC_DISTORTION = True

_C.DATASETS = CN()
_C.DATASETS.ROOT = ""  # "" = the built-in generated data
_C.DATASETS.TRAIN = "cityscapes_fine_sem_seg_train"
_C.DATASETS.TEST = "cityscapes_fine_sem_seg_val"

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2

_C.SOLVER = CN()
_C.SOLVER.IMS_PER_BATCH = 8  # total: 4 GPUs x 2
_C.SOLVER.BASE_LR = 0.01
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.WEIGHT_DECAY = 0.0005  # mmseg decays every parameter, norms included
_C.SOLVER.POLY_POWER = 0.9
_C.SOLVER.MIN_LR = 0.0001
_C.SOLVER.MAX_ITER = 40000
_C.SOLVER.CHECKPOINT_PERIOD = 4000
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False

_C.TEST = CN()
_C.TEST.EVAL_PERIOD = 4000  # mmseg's val_interval
_C.TEST.SCALE = (2048, 1024)  # Resize(scale=(2048, 1024), keep_ratio=True)
_C.TEST.MODE = "whole"  # or "slide"
_C.TEST.SLIDE_CROP = (512, 1024)
_C.TEST.SLIDE_STRIDE = (341, 683)  # mmseg's slide settings for its 769 configs scaled to 512x1024
_C.TEST.NUM_OVERLAYS = 4  # colour-coded prediction overlays written with the final evaluation
_C.TEST.WRITE_PREDICTIONS = True  # Cityscapes labelIds PNGs in predictions/ (cityscapesscripts' input)


def get_segmentation_defaults() -> CN:
    return _C.clone()


_POSITIVE = number(0, low_open=True)
_SIZE = sequence("two integers >= 1", integer(1), length=2)

SEGMENTATION_RULES = {
    "TASK": STRING,
    "OUTPUT_DIR": STRING,
    "SEED": integer(0),
    "MODEL.WEIGHTS": STRING,
    "MODEL.PIXEL_MEAN": sequence("three numbers, one per input channel", number(), length=3),
    "MODEL.PIXEL_STD": sequence("three numbers > 0, one per input channel", _POSITIVE, length=3),
    "MODEL.NUM_CLASSES": integer(1),
    "MODEL.IGNORE_LABEL": integer(0, 255),
    "MODEL.RESNETS.DEPTH": choice(50, 101, 152, note="torchvision's BasicBlock (ResNet-18/34) cannot be dilated"),
    "MODEL.RESNETS.NORM": choice("SyncBN", "naiveSyncBN", "BN"),
    "MODEL.RESNETS.OUTPUT_STRIDE": choice(*OUTPUT_STRIDES),
    "MODEL.DECODE_HEAD.CHANNELS": integer(1),
    "MODEL.DECODE_HEAD.DILATIONS": sequence("integers >= 1 (the first 1: a 1x1 branch)", integer(1), min_length=1),
    "MODEL.DECODE_HEAD.DROPOUT": number(0, 1, high_open=True),
    "MODEL.AUXILIARY_HEAD.ENABLED": BOOLEAN,
    "MODEL.AUXILIARY_HEAD.CHANNELS": integer(1),
    "MODEL.AUXILIARY_HEAD.NUM_CONVS": integer(1),
    "MODEL.AUXILIARY_HEAD.DROPOUT": number(0, 1, high_open=True),
    "MODEL.AUXILIARY_HEAD.LOSS_WEIGHT": number(0),
    "INPUT.SCALE": _SIZE,
    "INPUT.RATIO_RANGE": sequence("two ascending numbers > 0", _POSITIVE, length=2, order=operator.le),
    "INPUT.CROP_SIZE": _SIZE,
    "INPUT.CAT_MAX_RATIO": number(0, 1, low_open=True),
    "INPUT.FLIP_PROB": number(0, 1),
    "INPUT.PHOTOMETRIC_DISTORTION": BOOLEAN,
    "DATASETS.ROOT": STRING,
    "DATASETS.TRAIN": Rule("a dataset name", lambda v: isinstance(v, str) and bool(v)),
    "DATASETS.TEST": Rule("a dataset name", lambda v: isinstance(v, str) and bool(v)),
    "DATALOADER.NUM_WORKERS": integer(0),
    "SOLVER.IMS_PER_BATCH": integer(1),
    "SOLVER.BASE_LR": _POSITIVE,
    "SOLVER.MOMENTUM": number(0, 1, high_open=True),
    "SOLVER.WEIGHT_DECAY": number(0),
    "SOLVER.POLY_POWER": number(0),
    "SOLVER.MIN_LR": number(0),
    "SOLVER.MAX_ITER": integer(1),
    "SOLVER.CHECKPOINT_PERIOD": integer(0),
    "SOLVER.AMP.ENABLED": BOOLEAN,
    "TEST.EVAL_PERIOD": integer(0),
    "TEST.SCALE": _SIZE,
    "TEST.MODE": choice("whole", "slide"),
    "TEST.SLIDE_CROP": _SIZE,
    "TEST.SLIDE_STRIDE": _SIZE,
    "TEST.NUM_OVERLAYS": integer(0),
    "TEST.WRITE_PREDICTIONS": BOOLEAN,
}


def validate_segmentation_config(cfg: CN, world_size: int | None = None) -> None:
    """Refuse values the segmentation engine cannot honour before it reads data or builds a model."""
    check_rules(cfg, SEGMENTATION_RULES)
    if cfg.MODEL.DECODE_HEAD.DILATIONS[0] != 1:
        fail("MODEL.DECODE_HEAD.DILATIONS", cfg.MODEL.DECODE_HEAD.DILATIONS,
             "the first ASPP branch is mmseg's 1x1 conv: start with 1, e.g. (1, 12, 24, 36)")
    if cfg.SOLVER.MIN_LR > cfg.SOLVER.BASE_LR:
        fail("SOLVER.MIN_LR", cfg.SOLVER.MIN_LR, f"must not exceed SOLVER.BASE_LR {cfg.SOLVER.BASE_LR}")
    if any(s > c for s, c in zip(cfg.TEST.SLIDE_STRIDE, cfg.TEST.SLIDE_CROP)):
        fail("TEST.SLIDE_STRIDE", cfg.TEST.SLIDE_STRIDE, f"must not exceed TEST.SLIDE_CROP {cfg.TEST.SLIDE_CROP} "
             "(windows would leave pixels unpredicted)")
    world_size = get_world_size() if world_size is None else world_size
    if cfg.SOLVER.IMS_PER_BATCH % world_size:
        fail("SOLVER.IMS_PER_BATCH", cfg.SOLVER.IMS_PER_BATCH,
             f"the total batch must divide evenly over the {world_size} processes")
    synced = cfg.MODEL.RESNETS.NORM != "BN" and world_size > 1
    if cfg.SOLVER.IMS_PER_BATCH // world_size < 2 and not synced:
        fail("SOLVER.IMS_PER_BATCH", cfg.SOLVER.IMS_PER_BATCH,
             "BN needs at least 2 images per process unless synchronised over processes (the ASPP image-pooling "
             "branch normalises one value per image)")
