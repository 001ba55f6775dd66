"""The classification tasks' config keys (one tree for every probe, each task reading its own section) and their
rules, checked before any data is read."""
import operator

from fvcore.common.config import CfgNode as CN

from ..engine.validation import BOOLEAN, STRING, Rule, check_rules, choice, fail, integer, number, sequence
from .features import STAGES
from .fewshot import FEWSHOT_EPISODES, FEWSHOT_QUERIES, FEWSHOT_SHOTS, FEWSHOT_WAYS
from .finetune import HPT_HEAD_LR_MULTIPLIER, NORMS, PAPER_BATCH_SIZE, PAPER_LRS, PAPER_SCHEDULES, schedule_steps
from .knn import KNN_KS, KNN_TEMPERATURE
from .linear import HPT_BATCH_SIZE, HPT_LRS, HPT_MILESTONES, HPT_STEPS, HPT_WEIGHT_DECAYS

# The built-in generated sets a classification task can run on (subdirectories of a generated data root).
BUILTIN_SETS = ("classification", "classification_multilabel", "domain_a", "domain_b")


def get_classification_defaults() -> CN:
    _C = CN()
    _C.TASK = ""
    _C.OUTPUT_DIR = ""
    _C.SEED = 0

    _C.MODEL = CN()
    _C.MODEL.WEIGHTS = ""  # a checkpoint converters.load_backbone reads, or "none"
    _C.MODEL.ARCH = "resnet50"  # for "none"; a checkpoint's own arch wins

    _C.DATASETS = CN()
    _C.DATASETS.ROOT = ""  # an image folder or a directory with train.csv; empty: the built-in set below
    _C.DATASETS.BUILTIN = "classification"  # which generated set, when ROOT is empty or a generated data root
    _C.DATASETS.VAL_FRACTION = 0.1  # of each train class, when the data has no val split
    _C.DATASETS.TEST_FRACTION = 0.2  # the same for test
    _C.DATASETS.LABELS = 0  # > 0: train on a seeded subset of this many labels, every class at least once (HPT)
    _C.DATASETS.SHOTS = 0  # > 0: train on this many images per class

    _C.INPUT = CN()
    _C.INPUT.CROP_SIZE = 224  # the centre crop (and the RandomResizedCrop of training)
    _C.INPUT.RESIZE = 256  # the short side before the centre crop

    _C.DATALOADER = CN()
    _C.DATALOADER.NUM_WORKERS = 2
    _C.DATALOADER.BATCH_SIZE = 64  # feature extraction and evaluation

    # linear and stagewise. HPT appendix A (Table 4): SGD momentum 0.9, batch 512, 5000 steps, lr {0.3, 3, 30}.
    _C.PROBE = CN()
    _C.PROBE.PROTOCOL = "cached"  # cached features (fast), or "augmented" (HPT: a fresh crop every step)
    # Cached fits: "sgd" is HPT's lr x weight decay sweep below on the cached tensors; "lbfgs" is Kornblith et
    # al. 2019's logistic regression over 45 L2 strengths (exact, slower: up to 1000 iterations per strength).
    _C.PROBE.SOLVER = "sgd"
    # z-score the cached features with the train statistics before the fit: HPT's lrs on raw features diverge
    # where the feature scale is large (random-init ResNet-50 features have norms near 900).
    _C.PROBE.STANDARDIZE = True
    _C.PROBE.LRS = HPT_LRS
    _C.PROBE.WEIGHT_DECAYS = HPT_WEIGHT_DECAYS
    _C.PROBE.STEPS = HPT_STEPS
    _C.PROBE.BATCH_SIZE = HPT_BATCH_SIZE
    _C.PROBE.MILESTONES = HPT_MILESTONES  # fractions of STEPS where the lr drops 10x
    _C.PROBE.RECALIBRATE_BN = False  # re-estimate BN statistics on the target train set first (HPT's "Base")
    _C.PROBE.RECALIBRATE_BN_BATCHES = 200
    _C.PROBE.STAGES = STAGES[:-1]  # stagewise: the stem and the four stages (SL-MLP Fig. 1)
    _C.PROBE.CACHE_DIR = ""  # empty: $TRANSFERLAB_CACHE/features

    _C.KNN = CN()
    _C.KNN.KS = KNN_KS
    _C.KNN.TEMPERATURE = KNN_TEMPERATURE
    _C.KNN.SPLIT = "test"  # the query images (the train split is the memory)

    _C.FEWSHOT = CN()
    _C.FEWSHOT.WAYS = FEWSHOT_WAYS
    _C.FEWSHOT.SHOTS = FEWSHOT_SHOTS
    _C.FEWSHOT.QUERIES = FEWSHOT_QUERIES
    _C.FEWSHOT.EPISODES = FEWSHOT_EPISODES
    _C.FEWSHOT.SPLIT = "test"  # the episodes' images

    # HPT appendix A (Table 4, finetune): lr {0.01, 0.001} x {2500 steps, 90 epochs}, batch 256.
    _C.FINETUNE = CN()
    _C.FINETUNE.LRS = PAPER_LRS
    _C.FINETUNE.SCHEDULES = PAPER_SCHEDULES
    _C.FINETUNE.BATCH_SIZE = PAPER_BATCH_SIZE
    _C.FINETUNE.HEAD_LR_MULTIPLIER = HPT_HEAD_LR_MULTIPLIER
    _C.FINETUNE.CHECKPOINT_PERIOD = 500
    _C.FINETUNE.EVALUATIONS = 10  # evaluation points per run, the last at its end
    _C.FINETUNE.NORM = "SyncBN"
    _C.FINETUNE.AMP = False
    return _C


_POSITIVE = number(0, low_open=True)
_FRACTION = number(0, 1, low_open=True, high_open=True)


def _schedule(value) -> bool:
    try:
        schedule_steps(value, 1, 1)
    except (ValueError, TypeError):
        return False
    return True


CLASSIFICATION_RULES = {
    "TASK": STRING,
    "OUTPUT_DIR": STRING,
    "SEED": integer(0),
    "MODEL.WEIGHTS": STRING,
    "MODEL.ARCH": choice("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    "DATASETS.ROOT": STRING,
    "DATASETS.BUILTIN": choice(*BUILTIN_SETS),
    "DATASETS.VAL_FRACTION": _FRACTION,
    "DATASETS.TEST_FRACTION": _FRACTION,
    "DATASETS.LABELS": integer(0),
    "DATASETS.SHOTS": integer(0),
    "INPUT.CROP_SIZE": integer(1),
    "INPUT.RESIZE": integer(1),
    "DATALOADER.NUM_WORKERS": integer(0),
    "DATALOADER.BATCH_SIZE": integer(1),
    "PROBE.PROTOCOL": choice("cached", "augmented"),
    "PROBE.SOLVER": choice("sgd", "lbfgs"),
    "PROBE.LRS": sequence("a non-empty list of numbers > 0", _POSITIVE, min_length=1),
    "PROBE.WEIGHT_DECAYS": sequence("a non-empty list of numbers >= 0", number(0), min_length=1),
    "PROBE.STEPS": integer(1),
    "PROBE.BATCH_SIZE": integer(1),
    "PROBE.MILESTONES": sequence("increasing fractions in (0, 1)", _FRACTION, order=operator.lt),
    "PROBE.STANDARDIZE": BOOLEAN,
    "PROBE.RECALIBRATE_BN": BOOLEAN,
    "PROBE.RECALIBRATE_BN_BATCHES": integer(1),
    "PROBE.STAGES": sequence(f"a non-empty list of stages from {STAGES}", choice(*STAGES), min_length=1),
    "PROBE.CACHE_DIR": STRING,
    "KNN.KS": sequence("a non-empty list of integers >= 1", integer(1), min_length=1),
    "KNN.TEMPERATURE": _POSITIVE,
    "KNN.SPLIT": choice("val", "test"),
    "FEWSHOT.WAYS": integer(2),
    "FEWSHOT.SHOTS": sequence("a non-empty list of integers >= 1", integer(1), min_length=1),
    "FEWSHOT.QUERIES": integer(1),
    "FEWSHOT.EPISODES": integer(1),
    "FEWSHOT.SPLIT": choice("train", "val", "test"),
    "FINETUNE.LRS": sequence("a non-empty list of numbers > 0", _POSITIVE, min_length=1),
    "FINETUNE.SCHEDULES": sequence("a non-empty list of '<N>steps' or '<N>epochs'",
                                   Rule("'<N>steps' or '<N>epochs'", _schedule), min_length=1),
    "FINETUNE.BATCH_SIZE": integer(1),
    "FINETUNE.HEAD_LR_MULTIPLIER": _POSITIVE,
    "FINETUNE.CHECKPOINT_PERIOD": integer(0),
    "FINETUNE.EVALUATIONS": integer(1),
    "FINETUNE.NORM": choice(*NORMS),
    "FINETUNE.AMP": BOOLEAN,
}


def validate_classification_config(cfg: CN) -> None:
    """Refuse values the probes cannot honour, naming the key, before any data is read."""
    check_rules(cfg, CLASSIFICATION_RULES)
    if cfg.PROBE.SOLVER == "lbfgs" and cfg.PROBE.PROTOCOL == "augmented":
        fail("PROBE.SOLVER", "lbfgs", "fits cached features; PROBE.PROTOCOL augmented trains SGD heads on a fresh "
             "crop each step")
    if cfg.DATASETS.LABELS and cfg.DATASETS.SHOTS:
        fail("DATASETS.SHOTS", cfg.DATASETS.SHOTS, f"DATASETS.LABELS is {cfg.DATASETS.LABELS}: give one label budget")
