"""Config values are checked before any work: every key of the detection and pretraining defaults has a rule, each
bad value is one error naming the key, the value and what is allowed, and the shipped configs pass."""
import math
from pathlib import Path

import pytest

from benchmarks.detection.config import DETECTION_RULES, get_detection_defaults, validate_detection_config
from benchmarks.engine.config import ConfigError, load_config
from benchmarks.engine.validation import leaf_keys
from pretrain.config import PRETRAIN_RULES, get_defaults
from pretrain.train import check_config

REPO = Path(__file__).resolve().parents[1]
NI = NotImplementedError


def with_values(cfg, **values):
    """``cfg`` with ``KEY__SUB=value`` set directly, past yacs's type checks (as code building a config could)."""
    cfg = cfg.clone()
    cfg.defrost()
    for dotted, value in values.items():
        *parents, leaf = dotted.split("__")
        node = cfg
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return cfg


# key, bad value, error type, what the message must say besides "KEY VALUE:"
DETECTION_CASES = [
    ("SOLVER.MAX_ITER", -5, ConfigError, "an integer >= 1"),
    ("SOLVER.MAX_ITER", 0, ConfigError, "an integer >= 1"),
    ("SOLVER.IMS_PER_BATCH", 0, ConfigError, "an integer >= 1"),
    ("SOLVER.BASE_LR", 0.0, ConfigError, "a number > 0"),
    ("SOLVER.BASE_LR", math.nan, ConfigError, "a number > 0"),
    ("SOLVER.STEPS", (80000, 60000), ConfigError, "strictly increasing integers > 0"),
    ("SOLVER.STEPS", (0, 10), ConfigError, "strictly increasing integers > 0"),
    ("SOLVER.STEPS", (1.5,), ConfigError, "strictly increasing integers > 0"),
    ("SOLVER.GAMMA", 0.0, ConfigError, "a number > 0"),
    ("SOLVER.WARMUP_ITERS", -1, ConfigError, "an integer >= 0"),
    ("SOLVER.WARMUP_FACTOR", 1.5, ConfigError, "a number in [0, 1]"),
    ("SOLVER.WARMUP_METHOD", "exp", ConfigError, "one of 'linear', 'constant'"),
    ("SOLVER.LR_SCHEDULER_NAME", "Poly", ConfigError, "one of 'WarmupMultiStepLR', 'WarmupCosineLR'"),
    ("SOLVER.MOMENTUM", 1.0, ConfigError, "a number in [0, 1)"),
    ("SOLVER.WEIGHT_DECAY", -1e-4, ConfigError, "a number >= 0"),
    ("SOLVER.WEIGHT_DECAY_NORM", -1.0, ConfigError, "a number >= 0"),
    ("SOLVER.CHECKPOINT_PERIOD", -1, ConfigError, "an integer >= 0"),
    ("SOLVER.REFERENCE_WORLD_SIZE", -1, ConfigError, "an integer >= 0"),
    ("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "full", ConfigError, "one of 'value', 'norm'"),
    ("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", 0.0, ConfigError, "a number > 0"),
    ("SOLVER.CLIP_GRADIENTS.NORM_TYPE", -2.0, ConfigError, "a number > 0 or .inf"),
    ("SOLVER.AMP.ENABLED", 1, ConfigError, "True or False"),
    ("TEST.EVAL_PERIOD", -1, ConfigError, "an integer >= 0"),
    ("TEST.DETECTIONS_PER_IMAGE", 0, ConfigError, "an integer >= 1"),
    ("TEST.PRECISE_BN.NUM_ITER", -1, ConfigError, "an integer >= 0"),
    ("TEST.DIAGNOSIS.SIMILAR", "no/such/groups.yaml", ConfigError, "voc, supercategory, none or an existing"),
    ("SEED", -1, ConfigError, "an integer >= 0"),
    ("MODEL.META_ARCHITECTURE", "RetinaNet", NI,
     "not implemented yet (only Faster/Mask R-CNN is implemented); supported: one of 'GeneralizedRCNN'"),
    ("MODEL.META_ARCHITECTURE", "Magic", ConfigError, "one of 'GeneralizedRCNN'"),
    ("MODEL.MASK_ON", "yes", ConfigError, "True or False"),
    ("MODEL.PIXEL_MEAN", [123.675, 116.28], ConfigError, "three numbers"),
    ("MODEL.PIXEL_STD", [58.395, 0.0, 57.375], ConfigError, "three numbers > 0"),
    ("MODEL.BACKBONE.NAME", "build_retinanet_resnet_fpn_backbone", NI, "RetinaNet's FPN (P3-P7) is not implemented"),
    ("MODEL.BACKBONE.NAME", "build_vit_backbone", ConfigError, "one of 'build_resnet_backbone', "
                                                               "'build_resnet_fpn_backbone'"),
    ("MODEL.BACKBONE.FREEZE_AT", 6, ConfigError, "an integer from 0 to 5"),
    ("MODEL.RESNETS.DEPTH", 42, ConfigError, "one of 18, 34, 50, 101, 152"),
    ("MODEL.RESNETS.NORM", "GN", ConfigError, "one of 'SyncBN', 'naiveSyncBN', 'BN', 'FrozenBN'"),
    ("MODEL.RESNETS.STRIDE_IN_1X1", True, NI, "not implemented yet (the MSRA/Caffe2 layout"),
    ("MODEL.RESNETS.OUT_FEATURES", ["res2", "res4"], ConfigError, "must be ['res4'] (R50-C4 has one feature map)"),
    ("MODEL.RESNETS.OUT_FEATURES", ["res6"], ConfigError, "stage names among 'res2'..'res5'"),
    ("MODEL.ANCHOR_GENERATOR.SIZES", [[32, 64], [128]], ConfigError, "R50-C4 runs the RPN on 1 feature map(s)"),
    ("MODEL.ANCHOR_GENERATOR.SIZES", [[0, 32]], ConfigError, "one list of numbers > 0 per feature map"),
    ("MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", [[-1.0, 1.0]], ConfigError, "one list of numbers > 0 per feature map"),
    ("MODEL.ANCHOR_GENERATOR.OFFSET", 1.0, ConfigError, "a number in [0, 1)"),
    ("MODEL.PROPOSAL_GENERATOR.NAME", "RRPN", NI, "supported: one of 'RPN'"),
    ("MODEL.PROPOSAL_GENERATOR.MIN_SIZE", -1.0, ConfigError, "a number >= 0"),
    ("MODEL.RPN.IN_FEATURES", ["p2", "p3"], ConfigError, "must be ['res4'] (R50-C4 has one feature map)"),
    ("MODEL.RPN.IOU_THRESHOLDS", [0.7, 0.3], ConfigError, "two ascending numbers in [0, 1]"),
    ("MODEL.RPN.IOU_THRESHOLDS", [0.5], ConfigError, "two ascending numbers in [0, 1]"),
    ("MODEL.RPN.IOU_THRESHOLDS", [0.3, 1.2], ConfigError, "two ascending numbers in [0, 1]"),
    ("MODEL.RPN.BATCH_SIZE_PER_IMAGE", 0, ConfigError, "an integer >= 1"),
    ("MODEL.RPN.POSITIVE_FRACTION", 0.0, ConfigError, "a number in (0, 1]"),
    ("MODEL.RPN.BBOX_REG_WEIGHTS", (1.0, 1.0, 1.0), ConfigError, "four numbers > 0"),
    ("MODEL.RPN.SMOOTH_L1_BETA", -0.1, ConfigError, "a number >= 0"),
    ("MODEL.RPN.PRE_NMS_TOPK_TRAIN", 0, ConfigError, "an integer >= 1"),
    ("MODEL.RPN.POST_NMS_TOPK_TEST", 0, ConfigError, "an integer >= 1"),
    ("MODEL.RPN.NMS_THRESH", 0.0, ConfigError, "a number in (0, 1]"),
    ("MODEL.ROI_HEADS.NAME", "StandardROIHeads", ConfigError, "R50-C4 takes 'Res5ROIHeadsExtraNorm' or "
                                                            "'Res5ROIHeads'"),
    ("MODEL.ROI_HEADS.NAME", "CascadeROIHeads", NI, "not implemented yet (Res5ROIHeads* for R50-C4, "
                                                    "StandardROIHeads for R50-FPN)"),
    ("MODEL.ROI_HEADS.NAME", "MyHeads", ConfigError, "one of 'Res5ROIHeadsExtraNorm', 'Res5ROIHeads', "
                                                     "'StandardROIHeads'"),
    ("MODEL.ROI_HEADS.NUM_CLASSES", 0, ConfigError, "an integer >= 1"),
    ("MODEL.ROI_HEADS.IN_FEATURES", ["res5"], ConfigError, "must be ['res4']"),
    ("MODEL.ROI_HEADS.IOU_THRESHOLDS", [0.4, 0.5], NI, "several thresholds make an ignore band"),
    ("MODEL.ROI_HEADS.IOU_THRESHOLDS", [1.5], ConfigError, "one number in [0, 1]"),
    ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 0, ConfigError, "an integer >= 1"),
    ("MODEL.ROI_HEADS.POSITIVE_FRACTION", 1.5, ConfigError, "a number in (0, 1]"),
    ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", 1.5, ConfigError, "a number in [0, 1]"),
    ("MODEL.ROI_HEADS.NMS_THRESH_TEST", 0.0, ConfigError, "a number in (0, 1]"),
    ("MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS", [10.0, 10.0, 5.0, 0.0], ConfigError, "four numbers > 0"),
    ("MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIPool", NI, "supported: one of 'ROIAlignV2'"),
    ("MODEL.ROI_BOX_HEAD.POOLER_TYPE", "Bogus", ConfigError, "one of 'ROIAlignV2'"),
    ("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 0, ConfigError, "an integer >= 1"),
    ("MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", -1, ConfigError, "an integer >= 0"),
    ("MODEL.ROI_MASK_HEAD.CONV_DIM", 0, ConfigError, "an integer >= 1"),
    ("INPUT.MIN_SIZE_TRAIN", (), ConfigError, "a non-empty list of integers > 0"),
    ("INPUT.MIN_SIZE_TRAIN", (0, 800), ConfigError, "a non-empty list of integers > 0"),
    ("INPUT.MIN_SIZE_TRAIN_SAMPLING", "random", ConfigError, "one of 'choice', 'range'"),
    ("INPUT.MAX_SIZE_TRAIN", 0, ConfigError, "an integer >= 1"),
    ("INPUT.MIN_SIZE_TEST", -1, ConfigError, "an integer >= 0"),
    ("INPUT.MAX_SIZE_TEST", 0, ConfigError, "an integer >= 1"),
    ("INPUT.FORMAT", "RGBA", ConfigError, "one of 'RGB', 'BGR'"),
    ("INPUT.MASK_FORMAT", "rle", ConfigError, "one of 'polygon', 'bitmask'"),
    ("INPUT.RANDOM_FLIP", "vertical", NI, "only horizontal flips are implemented"),
    ("INPUT.RANDOM_FLIP", "diagonal", ConfigError, "one of 'horizontal', 'none'"),
    ("DATASETS.TEST", ("coco_2017_val", "voc_2007_test"), NI, "several datasets at once is not implemented"),
    ("DATASETS.TRAIN", (), ConfigError, "one or more dataset names"),
    ("DATASETS.CLASS_NAMES", ("cat", "cat"), ConfigError, "distinct class names"),
    ("DATASETS.TEST", ("",), ConfigError, "one dataset name"),
    ("DATALOADER.NUM_WORKERS", -1, ConfigError, "an integer >= 0"),
    ("DATALOADER.ASPECT_RATIO_GROUPING", None, ConfigError, "True or False"),
]


def test_every_detection_key_has_a_rule():
    assert sorted(DETECTION_RULES) == sorted(leaf_keys(get_detection_defaults()))


@pytest.mark.parametrize(("key", "value", "error", "allowed"), DETECTION_CASES,
                         ids=[f"{case[0]}={case[1]!r}" for case in DETECTION_CASES])
def test_bad_detection_values_name_key_value_and_what_is_allowed(key, value, error, allowed):
    cfg = with_values(get_detection_defaults(), **{key.replace(".", "__"): value})
    with pytest.raises(error) as raised:
        validate_detection_config(cfg, world_size=1)
    assert type(raised.value) is error  # ConfigError is a ValueError, not a NotImplementedError, and vice versa
    message = str(raised.value)
    assert message.startswith(f"{key} {value!r}: ") and allowed in message, message


@pytest.mark.parametrize(("values", "world_size", "message"), [
    ({"INPUT__MIN_SIZE_TRAIN_SAMPLING": "range", "INPUT__MIN_SIZE_TRAIN": (640, 672, 704)}, 1,
     "INPUT.MIN_SIZE_TRAIN (640, 672, 704): with INPUT.MIN_SIZE_TRAIN_SAMPLING 'range' it must be two sizes"),
    ({"INPUT__MIN_SIZE_TRAIN_SAMPLING": "range", "INPUT__MIN_SIZE_TRAIN": (800, 640)}, 1,
     "INPUT.MIN_SIZE_TRAIN (800, 640): with INPUT.MIN_SIZE_TRAIN_SAMPLING 'range' it must be two sizes, (smallest"),
    ({"TEST__PRECISE_BN__ENABLED": True, "TEST__PRECISE_BN__NUM_ITER": 0}, 1,
     "TEST.PRECISE_BN.NUM_ITER 0: must be >= 1 with TEST.PRECISE_BN.ENABLED"),
    ({"SOLVER__IMS_PER_BATCH": 3}, 2, "SOLVER.IMS_PER_BATCH 3: the total batch must divide evenly over 2 processes"),
    ({"SOLVER__IMS_PER_BATCH": 6, "SOLVER__REFERENCE_WORLD_SIZE": 4}, 2,
     "SOLVER.IMS_PER_BATCH 6: the total batch must divide evenly over SOLVER.REFERENCE_WORLD_SIZE 4"),
])
def test_values_that_depend_on_each_other(values, world_size, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        validate_detection_config(with_values(get_detection_defaults(), **values), world_size=world_size)


def test_good_values_pass(tmp_path):
    groups = tmp_path / "groups.yaml"
    groups.write_text("round: [circle, ring]\n")
    for values, world_size in [
        ({}, 1),
        ({"SOLVER__IMS_PER_BATCH": 16}, 8),
        ({"SOLVER__IMS_PER_BATCH": 16, "SOLVER__REFERENCE_WORLD_SIZE": 8}, 3),  # rescaled to 6 = 3 x 2
        ({"MODEL__ROI_HEADS__NAME": "Res5ROIHeads", "MODEL__RESNETS__DEPTH": 18, "MODEL__BACKBONE__FREEZE_AT": 5}, 1),
        ({"INPUT__MIN_SIZE_TRAIN_SAMPLING": "range", "INPUT__MIN_SIZE_TRAIN": (640, 800),
          "INPUT__MIN_SIZE_TEST": 0}, 1),
        ({"SOLVER__STEPS": (), "SOLVER__CHECKPOINT_PERIOD": 0, "SOLVER__CLIP_GRADIENTS__NORM_TYPE": math.inf}, 1),
        ({"TEST__DIAGNOSIS__SIMILAR": str(groups), "TEST__PRECISE_BN__ENABLED": False,
          "TEST__PRECISE_BN__NUM_ITER": 0}, 1),
    ]:
        validate_detection_config(with_values(get_detection_defaults(), **values), world_size=world_size)


@pytest.mark.parametrize("config", sorted((REPO / "configs" / "detection").glob("*.yaml")), ids=lambda path: path.name)
def test_shipped_detection_configs_pass(config):
    validate_detection_config(load_config(get_detection_defaults(), config), world_size=1)


# ---------------------------------------------------------------------------------------------
# pretraining: pretrain.train.check_config, which train() runs before it locks or writes anything

PRETRAIN_CASES = [
    ("SOLVER.MAX_ITER", -5, "an integer >= 0"),
    ("SOLVER.IMS_PER_BATCH", 0, "an integer >= 1"),
    ("SOLVER.BASE_LR", 0.0, "a number > 0"),
    ("SOLVER.REFERENCE_BATCH", 0, "an integer >= 1"),
    ("SOLVER.MOMENTUM", 1.0, "a number in [0, 1)"),
    ("SOLVER.WEIGHT_DECAY", -1.0, "a number >= 0"),
    ("SOLVER.EPOCHS", -1, "an integer >= 0"),
    ("SOLVER.LR_SCHEDULE", "poly", "one of 'cosine', 'step'"),
    ("SOLVER.STEPS", (0.8, 0.6), "strictly increasing fractions of training in (0, 1)"),
    ("SOLVER.STEPS", (120, 160), "strictly increasing fractions of training in (0, 1)"),
    ("SOLVER.CHECKPOINT_PERIOD", 0, "an integer >= 1"),
    ("LOG_PERIOD", 0, "an integer >= 1"),
    ("SEED", -3, "an integer >= 0"),
    ("OUTPUT_DIR", "", "a directory path"),
    ("MODEL.MOCO.DIM", 0, "an integer >= 1"),
    ("MODEL.MOCO.MLP_DIM", 0, "an integer >= 1"),
    ("MODEL.MOCO.QUEUE_SIZE", 0, "an integer >= 1"),
    ("MODEL.MOCO.MOMENTUM", 1.5, "a number in [0, 1]"),
    ("MODEL.MOCO.TEMPERATURE", 0.0, "a number > 0"),
    ("INPUT.CROP_SIZE", 0, "an integer >= 1"),
    ("INPUT.MIN_SCALE", 0.0, "a number in (0, 1]"),
    ("DATALOADER.NUM_WORKERS", -1, "an integer >= 0"),
    ("SOLVER.AMP.ENABLED", "no", "True or False"),
]


def pretrain_config(**values):
    return with_values(get_defaults(), **{"OUTPUT_DIR": "work/x", **values})


def test_every_pretraining_key_has_a_rule():
    assert sorted([*PRETRAIN_RULES, "METHOD", "MODEL.ARCH"]) == sorted(leaf_keys(get_defaults()))


@pytest.mark.parametrize(("key", "value", "allowed"), PRETRAIN_CASES,
                         ids=[f"{case[0]}={case[1]!r}" for case in PRETRAIN_CASES])
def test_bad_pretraining_values_name_key_value_and_what_is_allowed(key, value, allowed):
    with pytest.raises(ConfigError) as raised:
        check_config(pretrain_config(**{key.replace(".", "__"): value}), world_size=1)
    assert str(raised.value).startswith(f"{key} {value!r}: ") and allowed in str(raised.value), str(raised.value)


def test_pretraining_needs_epochs_or_iterations_and_passes_its_shipped_configs():
    with pytest.raises(ConfigError, match=r"^SOLVER.EPOCHS 0: must be >= 1 when SOLVER.MAX_ITER is 0"):
        check_config(pretrain_config(SOLVER__EPOCHS=0), world_size=1)
    for config in sorted((REPO / "configs" / "pretrain").glob("*.yaml")):
        cfg = load_config(get_defaults(), config, ["OUTPUT_DIR", "work/x"])
        if cfg.METHOD == "hpt":  # the base checkpoint comes from the command line (--init)
            cfg = load_config(get_defaults(), config, ["OUTPUT_DIR", "work/x", "MODEL.INIT", "base.pth"])
        check_config(cfg, world_size=1)
