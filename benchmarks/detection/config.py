"""Detection defaults. Keys carry Detectron2's names and, where the concept exists, its default values;
the MoCo protocol (``configs/detection/Base-RCNN-C4-BN.yaml``) overrides them from there."""
import operator
import os

from fvcore.common.config import CfgNode as CN

from ..diagnosis.hoiem import SIMILAR_KEYWORDS
from ..engine.config import ConfigError
from ..engine.distributed import get_world_size
from ..engine.validation import BOOLEAN, STRING, Rule, check_rules, choice, fail, get_key, integer, number, sequence
from ..modeling.norm import GN_GROUPS, HEAD_NORM_CHOICES, NORM_CHOICES
from .evaluation import COCO_BACKENDS

_C = CN()
_C.TASK = "coco_maskrcnn"
_C.OUTPUT_DIR = ""
_C.SEED = 0

_C.MODEL = CN()
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
_C.MODEL.MASK_ON = False
_C.MODEL.WEIGHTS = ""
# RGB, 0-255 scale: torchvision's ImageNet mean/std x 255, the statistics torchvision-style backbones expect.
_C.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
_C.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]

_C.MODEL.BACKBONE = CN()
# "build_resnet_backbone": R50-C4; "build_resnet_fpn_backbone": R50-FPN (Detectron2's names).
_C.MODEL.BACKBONE.NAME = "build_resnet_backbone"
# 0: nothing frozen (MoCo protocol); k >= 1 freezes the stem and res2..res{k}, as in Detectron2.
_C.MODEL.BACKBONE.FREEZE_AT = 2

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50
_C.MODEL.RESNETS.NORM = "FrozenBN"
_C.MODEL.RESNETS.STRIDE_IN_1X1 = False  # torchvision layout: the stride sits in the 3x3 conv
_C.MODEL.RESNETS.OUT_FEATURES = ["res4"]

# R50-FPN only (Detectron2's keys and defaults): the ResNet stages the FPN reads, its width, its norm ("" none,
# "GN", or a BN flavour) and how top-down and lateral features are fused.
_C.MODEL.FPN = CN()
_C.MODEL.FPN.IN_FEATURES = []
_C.MODEL.FPN.OUT_CHANNELS = 256
_C.MODEL.FPN.NORM = ""
_C.MODEL.FPN.FUSE_TYPE = "sum"

_C.MODEL.ANCHOR_GENERATOR = CN()
# One list per feature map, or one list for all of them (C4 has one map; FPN's p2..p6 take one size each).
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32, 64, 128, 256, 512]]
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]
# Centre of the first anchor relative to the image's top-left corner, in strides (Detectron2's default 0.0).
_C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0

_C.MODEL.PROPOSAL_GENERATOR = CN()
_C.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"
# Proposals narrower or lower than this (pixels of the resized image) are dropped; 0 drops only empty ones.
_C.MODEL.PROPOSAL_GENERATOR.MIN_SIZE = 0.0

_C.MODEL.RPN = CN()
_C.MODEL.RPN.IN_FEATURES = ["res4"]
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5
_C.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
_C.MODEL.RPN.SMOOTH_L1_BETA = 0.0
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 12000
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 2000
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 6000
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.NMS_THRESH = 0.7

_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.NAME = "Res5ROIHeadsExtraNorm"
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80
_C.MODEL.ROI_HEADS.IN_FEATURES = ["res4"]
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5
_C.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = True

_C.MODEL.ROI_BOX_HEAD = CN()
# FPN only: "FastRCNNConvFCHead" with NUM_CONV 3x3 convs of CONV_DIM (with NORM) and NUM_FC fcs of FC_DIM;
# R50-C4's box head is res5, so there these keep Detectron2's defaults.
_C.MODEL.ROI_BOX_HEAD.NAME = ""
_C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0
_C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 0
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
_C.MODEL.ROI_BOX_HEAD.NORM = ""
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = [10.0, 10.0, 5.0, 5.0]
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"

_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
# 3x3 convs (with NORM) before the 2x deconvolution: 0 on C4's res5 features, 4 on the FPN's pooled features.
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 0
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
_C.MODEL.ROI_MASK_HEAD.NORM = ""
# FPN only (C4's mask head reuses the box RoIs' res5 features): the mask branch's own RoIAlign.
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"

_C.INPUT = CN()
_C.INPUT.MIN_SIZE_TRAIN = (800,)
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
_C.INPUT.MAX_SIZE_TRAIN = 1333
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
# Channel order the model sees: "RGB" (torchvision-style backbones) or "BGR" (MSRA/Caffe2-style);
# PIXEL_MEAN/PIXEL_STD are in this order.
_C.INPUT.FORMAT = "RGB"
# Mask targets: "polygon" rasterises polygon annotations inside each proposal (Detectron2's default; RLE
# annotations are cropped from their bitmask), "bitmask" crops every mask from its full-image bitmask.
_C.INPUT.MASK_FORMAT = "polygon"
_C.INPUT.RANDOM_FLIP = "horizontal"

_C.DATASETS = CN()
# Root of the datasets' usual layouts ("" = the built-in generated data).
_C.DATASETS.ROOT = ""
_C.DATASETS.TRAIN = ("coco_2017_train",)
_C.DATASETS.TEST = ("coco_2017_val",)
# Class names in category-id order. VOC-layout data is read with them (empty: VOC's 20 classes); COCO json and
# BDD100K name their own categories, which must then be these.
_C.DATASETS.CLASS_NAMES = ()

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 2
# Batches of only landscape or only portrait images (less padding), as Detectron2's default loader makes them.
_C.DATALOADER.ASPECT_RATIO_GROUPING = True

_C.SOLVER = CN()
_C.SOLVER.IMS_PER_BATCH = 16  # total over all processes
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
_C.SOLVER.BASE_LR = 0.02
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.WEIGHT_DECAY = 0.0001
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0
_C.SOLVER.MAX_ITER = 90000
_C.SOLVER.STEPS = (60000, 80000)
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.WARMUP_FACTOR = 0.001
_C.SOLVER.WARMUP_ITERS = 1000
_C.SOLVER.WARMUP_METHOD = "linear"
_C.SOLVER.CHECKPOINT_PERIOD = 5000
# Linear scaling rule (Goyal et al.): with a non-zero reference, IMS_PER_BATCH, BASE_LR, MAX_ITER, STEPS
# and the periods are rescaled when the process count differs from it, as Detectron2 does.
_C.SOLVER.REFERENCE_WORLD_SIZE = 0
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
# Mixed precision: fp16 + GradScaler on CUDA, bf16 on CPUs.
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False

_C.TEST = CN()
_C.TEST.EVAL_PERIOD = 0
_C.TEST.DETECTIONS_PER_IMAGE = 100
# COCO AP backend: auto (faster-coco-eval when installed, else pycocotools), faster_coco_eval, pycocotools; the
# numbers are the same, faster-coco-eval is ~8x faster on COCO val.
_C.TEST.COCO_BACKEND = "auto"
_C.TEST.PRECISE_BN = CN()
_C.TEST.PRECISE_BN.ENABLED = False
_C.TEST.PRECISE_BN.NUM_ITER = 200
# TIDE and Hoiem error diagnosis after every evaluation (tide.json, hoiem.json, charts next to metrics.json).
_C.TEST.DIAGNOSIS = CN()
_C.TEST.DIAGNOSIS.ENABLED = True
# Hoiem's similar classes: "" (VOC's groups on VOC classes, else supercategories), voc, supercategory, none, a file
_C.TEST.DIAGNOSIS.SIMILAR = ""


def get_detection_defaults() -> CN:
    return _C.clone()


# ---------------------------------------------------------------------------------------------
# validation

C4_BACKBONE, FPN_BACKBONE = "build_resnet_backbone", "build_resnet_fpn_backbone"
RESNET_STAGES = ["res2", "res3", "res4", "res5"]
FPN_LEVELS = ["p2", "p3", "p4", "p5", "p6"]
_POSITIVE = number(0, low_open=True)
_UNIT = number(0, 1)
_UNIT_OPEN_LOW = number(0, 1, low_open=True)
_NAME = Rule("", lambda v: isinstance(v, str) and bool(v))
_FEATURES = sequence("a list of feature names, e.g. ['res4'] (R50-C4) or ['p2', 'p3', 'p4', 'p5', 'p6'] (R50-FPN)",
                     _NAME)
_LISTS_OF_POSITIVES = "one list of numbers > 0 per feature map, or one list for all of them, e.g. "
_HEAD_NORM = choice(*HEAD_NORM_CHOICES)
_ROI_ALIGN_V2 = choice("ROIAlignV2", planned=("ROIAlign", "ROIPool", "ROIAlignRotated"),
                       note="only the protocol's aligned RoIAlign is implemented")
_BOX_WEIGHTS = sequence("four numbers > 0 (x, y, w, h)", _POSITIVE, length=4)
_SIMILAR_CLASSES = Rule(f"'' (the default), {', '.join(SIMILAR_KEYWORDS)} or an existing JSON/YAML file",
                        lambda v: isinstance(v, str) and (v in ("", *SIMILAR_KEYWORDS) or os.path.isfile(v)))


_DATASET_NAME = Rule("", lambda value: isinstance(value, str) and bool(value))


def _one_dataset(example: str) -> Rule:
    return sequence(f"one dataset name, e.g. {example}", _DATASET_NAME, length=1,
                    not_implemented=sequence("", _DATASET_NAME, min_length=2).test,
                    note="testing on several datasets at once is not implemented")


DETECTION_RULES = {
    "TASK": STRING,  # the task's name is checked by benchmarks.tasks
    "OUTPUT_DIR": STRING,
    "SEED": integer(0),
    "MODEL.META_ARCHITECTURE": choice("GeneralizedRCNN",
                                      planned=("RetinaNet", "ProposalNetwork", "PanopticFPN", "SemanticSegmentor"),
                                      note="only Faster/Mask R-CNN is implemented"),
    "MODEL.MASK_ON": BOOLEAN,
    "MODEL.WEIGHTS": STRING,  # read (and so checked) when the backbone is initialized
    "MODEL.PIXEL_MEAN": sequence("three numbers, one per input channel", number(), length=3),
    "MODEL.PIXEL_STD": sequence("three numbers > 0, one per input channel", _POSITIVE, length=3),
    "MODEL.BACKBONE.NAME": choice(C4_BACKBONE, FPN_BACKBONE, planned=("build_retinanet_resnet_fpn_backbone",),
                                  note="R50-C4 and R50-FPN; RetinaNet's FPN (P3-P7) is not implemented"),
    "MODEL.BACKBONE.FREEZE_AT": integer(0, 5),
    "MODEL.RESNETS.DEPTH": choice(18, 34, 50, 101, 152),
    "MODEL.RESNETS.NORM": choice(*NORM_CHOICES),
    "MODEL.RESNETS.STRIDE_IN_1X1": choice(False, planned=(True,), note="the MSRA/Caffe2 layout with the stride in "
                                          "the 1x1 conv; torchvision-layout backbones put it in the 3x3 conv"),
    "MODEL.RESNETS.OUT_FEATURES": sequence("stage names among 'res2'..'res5', e.g. ['res4'] (R50-C4)",
                                           choice(*RESNET_STAGES), min_length=1),
    "MODEL.FPN.IN_FEATURES": sequence("stage names among 'res2'..'res5', e.g. ['res2', 'res3', 'res4', 'res5']",
                                      choice(*RESNET_STAGES)),
    "MODEL.FPN.OUT_CHANNELS": integer(1),
    "MODEL.FPN.NORM": _HEAD_NORM,
    "MODEL.FPN.FUSE_TYPE": choice("sum", planned=("avg",), note="the FPN sums top-down and lateral features"),
    "MODEL.ANCHOR_GENERATOR.SIZES": sequence(_LISTS_OF_POSITIVES + "[[32, 64, 128, 256, 512]] (C4) or [[32], [64], "
                                             "[128], [256], [512]] (FPN)", sequence("", _POSITIVE, min_length=1),
                                             min_length=1),
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": sequence(_LISTS_OF_POSITIVES + "[[0.5, 1.0, 2.0]]",
                                                     sequence("", _POSITIVE, min_length=1), min_length=1),
    "MODEL.ANCHOR_GENERATOR.OFFSET": number(0, 1, high_open=True),
    "MODEL.PROPOSAL_GENERATOR.NAME": choice("RPN", planned=("RRPN", "PrecomputedProposals"),
                                            note="only the RPN is implemented"),
    "MODEL.PROPOSAL_GENERATOR.MIN_SIZE": number(0),
    "MODEL.RPN.IN_FEATURES": _FEATURES,
    "MODEL.RPN.IOU_THRESHOLDS": sequence("two ascending numbers in [0, 1] (background below the first, foreground "
                                         "from the second)", _UNIT, length=2, order=operator.le),
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": integer(1),
    "MODEL.RPN.POSITIVE_FRACTION": _UNIT_OPEN_LOW,
    "MODEL.RPN.BBOX_REG_WEIGHTS": _BOX_WEIGHTS,
    "MODEL.RPN.SMOOTH_L1_BETA": number(0),
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": integer(1),
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": integer(1),
    "MODEL.RPN.PRE_NMS_TOPK_TEST": integer(1),
    "MODEL.RPN.POST_NMS_TOPK_TEST": integer(1),
    "MODEL.RPN.NMS_THRESH": _UNIT_OPEN_LOW,
    "MODEL.ROI_HEADS.NAME": choice("Res5ROIHeadsExtraNorm", "Res5ROIHeads", "StandardROIHeads",
                                   planned=("CascadeROIHeads", "RROIHeads"),
                                   note="Res5ROIHeads* for R50-C4, StandardROIHeads for R50-FPN"),
    "MODEL.ROI_HEADS.NUM_CLASSES": integer(1),
    "MODEL.ROI_HEADS.IN_FEATURES": _FEATURES,
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": sequence("one number in [0, 1], e.g. [0.5]", _UNIT, length=1,
                                               not_implemented=sequence("", _UNIT, min_length=2).test,
                                               note="several thresholds make an ignore band, which is not implemented"),
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": integer(1),
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": _UNIT_OPEN_LOW,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": _UNIT,
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": _UNIT_OPEN_LOW,
    "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT": BOOLEAN,
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": _BOX_WEIGHTS,
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": number(0),
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": integer(1),
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": integer(0),
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": _ROI_ALIGN_V2,
    "MODEL.ROI_BOX_HEAD.NAME": choice("", "FastRCNNConvFCHead",
                                      note="'' for R50-C4 (res5 is its box head), FastRCNNConvFCHead for R50-FPN"),
    "MODEL.ROI_BOX_HEAD.NUM_CONV": integer(0),
    "MODEL.ROI_BOX_HEAD.CONV_DIM": integer(1),
    "MODEL.ROI_BOX_HEAD.NUM_FC": integer(0),
    "MODEL.ROI_BOX_HEAD.FC_DIM": integer(1),
    "MODEL.ROI_BOX_HEAD.NORM": _HEAD_NORM,
    "MODEL.ROI_MASK_HEAD.NAME": choice("MaskRCNNConvUpsampleHead"),
    "MODEL.ROI_MASK_HEAD.NUM_CONV": integer(0),
    "MODEL.ROI_MASK_HEAD.CONV_DIM": integer(1),
    "MODEL.ROI_MASK_HEAD.NORM": _HEAD_NORM,
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": integer(1),
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": integer(0),
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": _ROI_ALIGN_V2,
    "TEST.COCO_BACKEND": choice(*COCO_BACKENDS),
    "INPUT.MIN_SIZE_TRAIN": sequence("a non-empty list of integers > 0", integer(1), min_length=1),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": choice("choice", "range"),
    "INPUT.MAX_SIZE_TRAIN": integer(1),
    "INPUT.MIN_SIZE_TEST": integer(0),  # 0: test images are not resized
    "INPUT.MAX_SIZE_TEST": integer(1),
    "INPUT.FORMAT": choice("RGB", "BGR"),
    "INPUT.MASK_FORMAT": choice("polygon", "bitmask"),
    "INPUT.RANDOM_FLIP": choice("horizontal", "none", planned=("vertical",),
                                note="only horizontal flips are implemented"),
    "DATASETS.ROOT": STRING,  # read (and so checked) when the datasets are resolved
    # the names are checked when they are resolved; several training sets are concatenated (VOC07+12)
    "DATASETS.TRAIN": sequence("one or more dataset names, e.g. ('voc_2007_trainval', 'voc_2012_trainval')",
                               _DATASET_NAME, min_length=1),
    "DATASETS.TEST": _one_dataset("('coco_2017_val',)"),
    "DATASETS.CLASS_NAMES": Rule("a list of distinct class names (VOC-layout data), or empty",
                                 lambda v: isinstance(v, (list, tuple)) and all(isinstance(n, str) and n for n in v)
                                 and len(set(v)) == len(v)),
    "DATALOADER.NUM_WORKERS": integer(0),
    "DATALOADER.ASPECT_RATIO_GROUPING": BOOLEAN,
    "SOLVER.IMS_PER_BATCH": integer(1),
    "SOLVER.LR_SCHEDULER_NAME": choice("WarmupMultiStepLR", "WarmupCosineLR"),
    "SOLVER.BASE_LR": _POSITIVE,
    "SOLVER.MOMENTUM": number(0, 1, high_open=True),
    "SOLVER.WEIGHT_DECAY": number(0),
    "SOLVER.WEIGHT_DECAY_NORM": number(0),
    "SOLVER.MAX_ITER": integer(1),
    "SOLVER.STEPS": sequence("strictly increasing integers > 0 (the iterations at which the lr drops)", integer(1),
                             order=operator.lt),
    "SOLVER.GAMMA": _POSITIVE,
    "SOLVER.WARMUP_FACTOR": _UNIT,
    "SOLVER.WARMUP_ITERS": integer(0),
    "SOLVER.WARMUP_METHOD": choice("linear", "constant"),
    "SOLVER.CHECKPOINT_PERIOD": integer(0),  # 0: model_final.pth only
    "SOLVER.REFERENCE_WORLD_SIZE": integer(0),
    "SOLVER.CLIP_GRADIENTS.ENABLED": BOOLEAN,
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": choice("value", "norm"),
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": _POSITIVE,
    "SOLVER.CLIP_GRADIENTS.NORM_TYPE": Rule("a number > 0 or .inf (the largest absolute value)",
                                            lambda v: _POSITIVE.test(v) or v == float("inf")),
    "SOLVER.AMP.ENABLED": BOOLEAN,
    "TEST.EVAL_PERIOD": integer(0),  # 0: at the end only
    "TEST.DETECTIONS_PER_IMAGE": integer(1),
    "TEST.PRECISE_BN.ENABLED": BOOLEAN,
    "TEST.PRECISE_BN.NUM_ITER": integer(0),  # and >= 1 when enabled, below
    "TEST.DIAGNOSIS.ENABLED": BOOLEAN,
    "TEST.DIAGNOSIS.SIMILAR": _SIMILAR_CLASSES,
}


def validate_detection_config(cfg: CN, world_size: int | None = None) -> None:
    """Refuse values the detection engine cannot honour before it reads data or builds a model.

    Raises ConfigError (or NotImplementedError for what Detectron2 has and this engine lacks) naming the key,
    the value and what is allowed. ``world_size`` defaults to this job's process count.
    """
    check_rules(cfg, DETECTION_RULES)
    _check_architecture(cfg)
    sizes = cfg.INPUT.MIN_SIZE_TRAIN
    if cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "range" and not (len(sizes) == 2 and sizes[0] <= sizes[1]):
        fail("INPUT.MIN_SIZE_TRAIN", sizes, "with INPUT.MIN_SIZE_TRAIN_SAMPLING 'range' it must be two sizes, "
             "(smallest, largest) short edge")
    if cfg.TEST.PRECISE_BN.ENABLED and cfg.TEST.PRECISE_BN.NUM_ITER < 1:
        fail("TEST.PRECISE_BN.NUM_ITER", cfg.TEST.PRECISE_BN.NUM_ITER,
             "must be >= 1 with TEST.PRECISE_BN.ENABLED (set ENABLED False to skip precise BN)")
    world_size = get_world_size() if world_size is None else world_size
    reference = cfg.SOLVER.REFERENCE_WORLD_SIZE
    processes = reference if reference else world_size  # with a reference, the batch is rescaled per process
    if cfg.SOLVER.IMS_PER_BATCH % processes:
        which = (f"SOLVER.REFERENCE_WORLD_SIZE {reference} (the batch is rescaled from there)" if reference
                 else f"{world_size} processes")
        fail("SOLVER.IMS_PER_BATCH", cfg.SOLVER.IMS_PER_BATCH,
             f"the total batch must divide evenly over {which}")


# Keys a model does not read: they must keep their defaults there, so a value set for them is an error, not ignored.
_FPN_ONLY = ("MODEL.FPN.IN_FEATURES", "MODEL.FPN.OUT_CHANNELS", "MODEL.FPN.NORM", "MODEL.FPN.FUSE_TYPE",
             "MODEL.ROI_BOX_HEAD.NAME", "MODEL.ROI_BOX_HEAD.NUM_CONV", "MODEL.ROI_BOX_HEAD.CONV_DIM",
             "MODEL.ROI_BOX_HEAD.NUM_FC", "MODEL.ROI_BOX_HEAD.FC_DIM", "MODEL.ROI_BOX_HEAD.NORM",
             "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO",
             "MODEL.ROI_MASK_HEAD.POOLER_TYPE")


def _ordered_subset(names, universe) -> bool:
    positions = [universe.index(n) for n in names if n in universe]
    return len(positions) == len(names) and all(a < b for a, b in zip(positions, positions[1:]))


def _check_architecture(cfg: CN) -> None:
    """The rules between keys that depend on MODEL.BACKBONE.NAME (R50-C4 or R50-FPN)."""
    model = cfg.MODEL
    fpn = model.BACKBONE.NAME == FPN_BACKBONE
    arch = "R50-FPN (MODEL.BACKBONE.NAME build_resnet_fpn_backbone)" if fpn else "R50-C4"
    if not fpn:
        for key in _FPN_ONLY:
            value, default = get_key(cfg, key), get_key(_C, key)
            if (list(value) if isinstance(value, tuple) else value) != default:
                fail(key, value, f"is read only by R50-FPN (MODEL.BACKBONE.NAME {FPN_BACKBONE}); R50-C4 needs its "
                     f"default {default!r}")
        for key in ("MODEL.RESNETS.OUT_FEATURES", "MODEL.RPN.IN_FEATURES", "MODEL.ROI_HEADS.IN_FEATURES"):
            if list(get_key(cfg, key)) != ["res4"]:
                fail(key, get_key(cfg, key), "must be ['res4'] (R50-C4 has one feature map)")
        if model.ROI_HEADS.NAME not in ("Res5ROIHeadsExtraNorm", "Res5ROIHeads"):
            fail("MODEL.ROI_HEADS.NAME", model.ROI_HEADS.NAME, "R50-C4 takes 'Res5ROIHeadsExtraNorm' or "
                 "'Res5ROIHeads' (StandardROIHeads goes with MODEL.BACKBONE.NAME build_resnet_fpn_backbone)")
        num_maps = 1
    else:
        if list(model.FPN.IN_FEATURES) != RESNET_STAGES:
            error = NotImplementedError if _ordered_subset(model.FPN.IN_FEATURES, RESNET_STAGES) else ConfigError
            fail("MODEL.FPN.IN_FEATURES", model.FPN.IN_FEATURES, f"R50-FPN reads {RESNET_STAGES} (p2-p5 and p6 from "
                 "p5); other stage sets are not implemented", error)
        if list(model.RESNETS.OUT_FEATURES) != list(model.FPN.IN_FEATURES):
            fail("MODEL.RESNETS.OUT_FEATURES", model.RESNETS.OUT_FEATURES, "must equal MODEL.FPN.IN_FEATURES "
                 f"{list(model.FPN.IN_FEATURES)}: the FPN reads those stages and nothing else")
        if not model.RPN.IN_FEATURES or not _ordered_subset(model.RPN.IN_FEATURES, FPN_LEVELS):
            fail("MODEL.RPN.IN_FEATURES", model.RPN.IN_FEATURES, f"must be FPN levels among {FPN_LEVELS}, finest "
                 "first, each once, e.g. all of them (Detectron2's Base-RCNN-FPN)")
        roi_features = list(model.ROI_HEADS.IN_FEATURES)
        start = FPN_LEVELS.index(roi_features[0]) if roi_features and roi_features[0] in FPN_LEVELS else -1
        if start < 0 or roi_features != FPN_LEVELS[start:start + len(roi_features)]:
            fail("MODEL.ROI_HEADS.IN_FEATURES", roi_features, f"must be consecutive FPN levels among {FPN_LEVELS}, "
                 "finest first, e.g. ['p2', 'p3', 'p4', 'p5'] (Detectron2's Base-RCNN-FPN)")
        if model.ROI_HEADS.NAME != "StandardROIHeads":
            fail("MODEL.ROI_HEADS.NAME", model.ROI_HEADS.NAME, "R50-FPN takes 'StandardROIHeads' (the Res5 heads go "
                 "with MODEL.BACKBONE.NAME build_resnet_backbone)")
        if model.ROI_BOX_HEAD.NAME != "FastRCNNConvFCHead":
            fail("MODEL.ROI_BOX_HEAD.NAME", model.ROI_BOX_HEAD.NAME, "R50-FPN takes 'FastRCNNConvFCHead'")
        for key, width in (("MODEL.FPN.NORM", "MODEL.FPN.OUT_CHANNELS"), ("MODEL.ROI_BOX_HEAD.NORM",
                                                                          "MODEL.ROI_BOX_HEAD.CONV_DIM")):
            if get_key(cfg, key) == "GN" and get_key(cfg, width) % GN_GROUPS:
                fail(width, get_key(cfg, width), f"must be a multiple of {GN_GROUPS} with {key} 'GN' (GroupNorm's "
                     f"{GN_GROUPS} groups)")
        num_maps = len(model.RPN.IN_FEATURES)
    if model.MASK_ON and model.ROI_MASK_HEAD.NORM == "GN" and model.ROI_MASK_HEAD.CONV_DIM % GN_GROUPS:
        fail("MODEL.ROI_MASK_HEAD.CONV_DIM", model.ROI_MASK_HEAD.CONV_DIM, f"must be a multiple of {GN_GROUPS} with "
             "MODEL.ROI_MASK_HEAD.NORM 'GN'")
    anchors = model.ANCHOR_GENERATOR
    for key in ("SIZES", "ASPECT_RATIOS"):
        if len(anchors[key]) not in (1, num_maps):
            fail(f"MODEL.ANCHOR_GENERATOR.{key}", anchors[key], f"{arch} runs the RPN on {num_maps} feature map(s) "
                 f"(MODEL.RPN.IN_FEATURES): give one list per map or one list for all")
    sizes = anchors.SIZES * (num_maps if len(anchors.SIZES) == 1 else 1)
    ratios = anchors.ASPECT_RATIOS * (num_maps if len(anchors.ASPECT_RATIOS) == 1 else 1)
    counts = [len(s) * len(r) for s, r in zip(sizes, ratios)]
    if len(set(counts)) != 1:
        fail("MODEL.ANCHOR_GENERATOR.SIZES", anchors.SIZES, f"gives {counts} anchors per location on the maps; the "
             "RPN head is shared by all maps, so each needs the same number")
