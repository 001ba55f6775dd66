"""Pretraining defaults: the MoCo v2 recipe (Chen et al. 2020), in Detectron2-style upper-case keys.

A config file overrides these (with ``_BASE_`` inheritance) and ``KEY VALUE`` pairs override the file;
``benchmarks.engine.config.load_config`` rejects keys that are not defined here, and ``PRETRAIN_RULES``
(checked by ``pretrain.train.check_config``) the values a run cannot honour.
"""
import operator

from fvcore.common.config import CfgNode as CN

from benchmarks.engine.validation import BOOLEAN, STRING, Rule, choice, integer, number, sequence

_C = CN()

# "mocov1" (linear head, augmentation without blur), "mocov2" (MLP head, blur), "exemplar_v1" / "exemplar_v2"
# (their labelled variants: DATA.ROOT holds class subfolders); see pretrain/train.py METHODS.
_C.METHOD = "mocov2"
_C.SEED = 0
# Where last.pth, periodic checkpoints, config.yaml and log.txt go; tools/pretrain.py fills it in.
_C.OUTPUT_DIR = ""
# Log loss, contrastive accuracy and lr every this many iterations.
_C.LOG_PERIOD = 20

_C.MODEL = CN()
# A torchvision ResNet: resnet18, resnet34, resnet50, resnet101 or resnet152 (what the canonical checkpoint holds).
_C.MODEL.ARCH = "resnet50"
# The base checkpoint a method starts from (tools/pretrain.py --init): any format converters.load_backbone
# reads. Required by bn_recalibrate and hpt; rejected by methods that start from random initialization.
_C.MODEL.INIT = ""
# Convert every BatchNorm to torch.nn.SyncBatchNorm, so that batch statistics pool over all processes
# (pretrain.sl.convert_sync_bn, read by the supervised methods sl and slmlp; MoCo's BN is shuffle-BN instead).
# Takes effect only under torchrun: in one process SyncBatchNorm is plain BN. nn.SyncBatchNorm runs on CUDA
# (or XPU) only, so a multi-process run on CPUs (gloo) with it fails at the first forward.
_C.MODEL.SYNC_BN = False

_C.MODEL.MOCO = CN()
# Output dimension of the projection head (the embedding the contrastive loss compares).
_C.MODEL.MOCO.DIM = 128
# Hidden width of the v2 MLP head (backbone width -> MLP_DIM -> DIM); 2048 is ResNet-50's width as in the paper.
_C.MODEL.MOCO.MLP_DIM = 2048
# Number of negative keys kept; must be a multiple of SOLVER.IMS_PER_BATCH.
_C.MODEL.MOCO.QUEUE_SIZE = 65536
# Key encoder update: key = MOMENTUM * key + (1 - MOMENTUM) * query.
_C.MODEL.MOCO.MOMENTUM = 0.999
_C.MODEL.MOCO.TEMPERATURE = 0.2
# BN groups per process. Keys are shuffled before the key encoder, so a key's BN group is not its query's
# (shuffle-BN; else BN statistics leak which key is the positive). 0 = auto: 8 groups in one process (the
# paper's 8 GPUs, as MoCo's single-GPU notebook emulates them), 1 under torchrun (the processes are the groups).
_C.MODEL.MOCO.BN_SPLITS = 0

# SL-MLP's projector between the pooled backbone features and the classifier (Wang et al. 2022, §4.1):
# fc(backbone width -> HIDDEN_DIM), BN, ReLU, fc(HIDDEN_DIM -> OUT_DIM); the classifier reads OUT_DIM features.
_C.MODEL.SLMLP = CN()
_C.MODEL.SLMLP.HIDDEN_DIM = 4096  # "the hidden feature dimension in the MLP projector is set to 4096" (§4.1)
_C.MODEL.SLMLP.OUT_DIM = 256  # "D_g is set to 256" (§4.1)

_C.INPUT = CN()
_C.INPUT.CROP_SIZE = 224
# Smallest area fraction of RandomResizedCrop.
_C.INPUT.MIN_SCALE = 0.2

# Augmentation ablations: the METHOD's policy (mocov1 or mocov2, pretrain/augmentations.py) as named steps, applied
# in order. mocov1: crop, grayscale, color_jitter, flip; mocov2: crop, color_jitter, grayscale, blur, flip; both
# end with to_tensor and normalize, which are always applied. Without "crop" a deterministic resize + centre crop
# to INPUT.CROP_SIZE takes its place, so views keep their size. HPT (Reed et al. 2022) Sec. 4.4 / Fig. 5 removes
# MoCo v2's augmentations one after another ("only cropping" is ONLY ("crop",)); Exemplar (Zhao et al. 2021)
# Table 1 adds them one at a time (flip; + crop; + jitter; + grayscale; + blur = the full mocov2 policy).
_C.AUG = CN()
# Step names to remove, e.g. ("blur", "grayscale"); () = none.
_C.AUG.DROP = ()
# Step names to keep, e.g. ("crop", "flip"); () = all. Set DROP or ONLY, not both.
_C.AUG.ONLY = ()

_C.DATA = CN()
# A directory of images (flat or class subfolders; class subfolders for a labelled method); "" = the built-in
# generated pool (a labelled method: the built-in classification train split).
_C.DATA.ROOT = ""
# Without DATA.ROOT, which part of the built-in generated set to pretrain on: "" = the image pool (a labelled
# method: the classification train split), "pool", "classification" (its train split, in class folders), or
# "domain_a" / "domain_b" (the train split of a generated domain, in class folders: the source and target of the
# demo HPT chain, `make hpt-chain`).
_C.DATA.BUILTIN = ""
# Pretrain on this fraction of DATA.ROOT's images, a random subset drawn with SEED: HPT's data-robustness study
# (Reed et al. 2022, Sec. 4.4 "Pretraining data robustness", Fig. 6) uses 0.01, 0.1, 0.25 and 1.0. The subsets
# are nested (a smaller fraction's images are all in a larger one's, for the same SEED); a labelled method keeps
# the fraction of every class (at least one image each). See pretrain/data.py subset.
_C.DATA.FRACTION = 1.0

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 8

_C.SOLVER = CN()
# Global batch over all processes (Detectron2 convention); each of N processes loads IMS_PER_BATCH / N.
_C.SOLVER.IMS_PER_BATCH = 256
# Learning rate at REFERENCE_BATCH images; the run uses BASE_LR * IMS_PER_BATCH / REFERENCE_BATCH (linear scaling).
_C.SOLVER.BASE_LR = 0.03
_C.SOLVER.REFERENCE_BATCH = 256
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.WEIGHT_DECAY = 1e-4
# Length of training in passes over the data; MAX_ITER > 0 overrides it.
_C.SOLVER.EPOCHS = 200
_C.SOLVER.MAX_ITER = 0
# "cosine" (MoCo v2): lr * 0.5 * (1 + cos(pi * progress)), updated every iteration. The official code updates
# it once per epoch; per iteration is the smooth equivalent and also works for runs shorter than an epoch.
# "step" (MoCo v1): lr * 0.1 at each fraction of training in STEPS (0.6, 0.8 = epochs 120 and 160 of 200).
_C.SOLVER.LR_SCHEDULE = "cosine"
_C.SOLVER.STEPS = (0.6, 0.8)
# Write last.pth and model_{iter:07d}.pth every this many iterations (and last.pth at the end); iter is the
# zero-based index of the last finished iteration, as Detectron2 names checkpoints (model_0004999.pth after 5000).
_C.SOLVER.CHECKPOINT_PERIOD = 5000

_C.SOLVER.AMP = CN()
# Mixed precision: bf16 autocast on CPU, fp16 autocast with a GradScaler on CUDA.
_C.SOLVER.AMP.ENABLED = False

# hpt (Reed et al. 2022, pretrain/hpt.py): MoCo v2 continued from MODEL.INIT's backbone; the key encoder (a copy of
# the loaded query encoder), the queue and the projector restart at every stage.
_C.HPT = CN()
# HPT-BN: every convolution keeps MODEL.INIT's weights; the BN layers (affine parameters and running statistics) and
# the projector train (§3 "Target pretraining"; the projector trains in HPT's BN-only configs too).
_C.HPT.TRAIN_BN_ONLY = False

# bn_recalibrate: batches of SOLVER.IMS_PER_BATCH target images whose statistics are averaged; 0 = one pass.
_C.BN_RECALIBRATE = CN()
_C.BN_RECALIBRATE.BATCHES = 0


def get_defaults() -> CN:
    """A fresh copy of the defaults, safe to modify."""
    return _C.clone()


# Every key but METHOD and MODEL.ARCH, which check_config checks against what is implemented.
PRETRAIN_RULES = {
    "SEED": integer(0),
    "OUTPUT_DIR": Rule("a directory path", lambda value: isinstance(value, str) and bool(value)),
    "LOG_PERIOD": integer(1),
    "MODEL.MOCO.DIM": integer(1),
    "MODEL.MOCO.MLP_DIM": integer(1),
    "MODEL.MOCO.QUEUE_SIZE": integer(1),
    "MODEL.MOCO.MOMENTUM": number(0, 1),
    "MODEL.MOCO.TEMPERATURE": number(0, low_open=True),
    "MODEL.MOCO.BN_SPLITS": integer(0),
    "MODEL.SYNC_BN": BOOLEAN,
    "MODEL.SLMLP.HIDDEN_DIM": integer(1),
    "MODEL.SLMLP.OUT_DIM": integer(1),
    "INPUT.CROP_SIZE": integer(1),
    "INPUT.MIN_SCALE": number(0, 1, low_open=True),
    # names checked against the METHOD's policy by pretrain.augmentations.check_policy (and DROP with ONLY)
    "AUG.DROP": sequence("a list of augmentation step names", STRING),
    "AUG.ONLY": sequence("a list of augmentation step names", STRING),
    "DATA.ROOT": STRING,  # read (and so checked) when the images are listed
    "DATA.BUILTIN": choice("", "pool", "classification", "domain_a", "domain_b"),
    "DATA.FRACTION": number(0, 1, low_open=True),
    "DATALOADER.NUM_WORKERS": integer(0),
    "SOLVER.IMS_PER_BATCH": integer(1),
    "SOLVER.BASE_LR": number(0, low_open=True),
    "SOLVER.REFERENCE_BATCH": integer(1),
    "SOLVER.MOMENTUM": number(0, 1, high_open=True),
    "SOLVER.WEIGHT_DECAY": number(0),
    "SOLVER.EPOCHS": integer(0),
    "SOLVER.MAX_ITER": integer(0),  # 0: SOLVER.EPOCHS decides
    "SOLVER.LR_SCHEDULE": choice("cosine", "step"),
    "SOLVER.STEPS": sequence("strictly increasing fractions of training in (0, 1)",
                             number(0, 1, low_open=True, high_open=True), order=operator.lt),
    "SOLVER.CHECKPOINT_PERIOD": integer(1),
    "SOLVER.AMP.ENABLED": BOOLEAN,
    "MODEL.INIT": STRING,  # read (and so checked) by the methods that take it
    "BN_RECALIBRATE.BATCHES": integer(0),
    "HPT.TRAIN_BN_ONLY": BOOLEAN,
}
