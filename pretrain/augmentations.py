"""MoCo's augmentation policies (as in facebookresearch/moco main_moco.py) and the single view of supervised
pretraining, parameterised by crop size.

A policy is a list of named steps, applied in order: optional ones (``crop``, ``color_jitter``, ``grayscale``,
``blur``, ``flip``) that ``drop`` / ``only`` (config ``AUG.DROP`` / ``AUG.ONLY``) may remove, the augmentation
ablations of HPT (Reed et al. 2022, Sec. 4.4) and Exemplar (Zhao et al. 2021, Table 1), and the always-on
``to_tensor`` and ``normalize``. With nothing removed a policy is exactly MoCo's Compose.

Every random draw goes through torch's RNG, so ``SeededSamples`` makes the views a function of the
sample's stream position: same views after a resume, with any number of workers.
"""
from collections.abc import Callable, Sequence

import torch
from fvcore.common.config import CfgNode
from PIL import Image, ImageFilter
from torchvision import transforms

from benchmarks.engine.config import ConfigError
from benchmarks.engine.validation import fail

# ImageNet statistics on 0-1 RGB, the normalisation of every MoCo/torchvision checkpoint.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The steps every policy ends with: without them a view is no normalised tensor, so they cannot be removed.
ALWAYS_ON = ("to_tensor", "normalize")


class GaussianBlur:
    """PIL Gaussian blur with sigma uniform in ``sigma_range`` (MoCo v2 / SimCLR), drawn from torch's RNG."""

    def __init__(self, sigma_range=(0.1, 2.0)):
        self.sigma_range = sigma_range

    def __call__(self, image: Image.Image) -> Image.Image:
        sigma = torch.empty(()).uniform_(*self.sigma_range).item()
        return image.filter(ImageFilter.GaussianBlur(radius=sigma))

    def __repr__(self):
        return f"{type(self).__name__}(sigma_range={self.sigma_range})"


class TwoCrops:
    """Two independent views of one image: the query's and the key's."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        return [self.transform(image), self.transform(image)]

    def __repr__(self):
        return f"{type(self).__name__}({self.transform!r})"


class Policy(transforms.Compose):
    """A Compose whose transforms carry the names of the policy steps they implement (``names``)."""

    def __init__(self, name: str, steps: Sequence[tuple]):
        super().__init__([transform for _, transform in steps])
        self.name, self.names = name, tuple(step for step, _ in steps)

    def __repr__(self):
        lines = "".join(f"\n    {step}: " + repr(transform).replace("\n", "\n    ")
                        for step, transform in zip(self.names, self.transforms))
        return f"{type(self).__name__}({self.name!r},{lines}\n)"


def _always_on() -> list:
    return [("to_tensor", transforms.ToTensor()), ("normalize", transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD))]


def _mocov1_steps(crop_size: int, min_scale: float) -> list:
    """He et al. 2020, Sec. 3.3: crop, grayscale p 0.2, colour jitter 0.4 (hue 0.4 too), flip."""
    return [
        ("crop", transforms.RandomResizedCrop(crop_size, scale=(min_scale, 1.0))),
        ("grayscale", transforms.RandomGrayscale(p=0.2)),
        ("color_jitter", transforms.ColorJitter(0.4, 0.4, 0.4, 0.4)),
        ("flip", transforms.RandomHorizontalFlip()),
        *_always_on(),
    ]


def _mocov2_steps(crop_size: int, min_scale: float) -> list:
    """Chen et al. 2020 ("Improved Baselines"): v1's policy plus blur, jitter p 0.8 with hue 0.1."""
    return [
        ("crop", transforms.RandomResizedCrop(crop_size, scale=(min_scale, 1.0))),
        ("color_jitter", transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)),
        ("grayscale", transforms.RandomGrayscale(p=0.2)),
        ("blur", transforms.RandomApply([GaussianBlur((0.1, 2.0))], p=0.5)),
        ("flip", transforms.RandomHorizontalFlip()),
        *_always_on(),
    ]


def _supervised_steps(crop_size: int, min_scale: float) -> list:
    """One view for supervised (SL, SL-MLP) pretraining: torchvision's ImageNet training recipe, crop and flip. The
    SL-MLP paper trains SL and SL-MLP "following [20]" (He et al. 2016; §5.1) and names no other augmentation for
    its main runs: Byol's appears only in its §5.3 ablation (Fig. 10c)."""
    return [
        ("crop", transforms.RandomResizedCrop(crop_size, scale=(min_scale, 1.0))),
        ("flip", transforms.RandomHorizontalFlip()),
        *_always_on(),
    ]


POLICIES = {"mocov1": _mocov1_steps, "mocov2": _mocov2_steps, "supervised": _supervised_steps}


def _policy_name(policy) -> str:
    """A policy's name from its name or its ``*_augmentation`` function (what pretrain.train.METHODS holds)."""
    for name, function in _FUNCTIONS.items():
        if policy == name or policy is function:
            return name
    raise ValueError(f"unknown augmentation policy {policy!r}; known: {', '.join(POLICIES)}")


def policy_steps(policy) -> tuple:
    """The step names of ``policy`` ("mocov1", "mocov2" or its augmentation function), in the order applied."""
    return tuple(step for step, _ in POLICIES[_policy_name(policy)](224, 0.2))


def optional_steps(policy) -> tuple:
    """The steps of ``policy`` that DROP / ONLY may name (all but the always-on ``to_tensor`` and ``normalize``)."""
    return tuple(step for step in policy_steps(policy) if step not in ALWAYS_ON)


def _selection_problem(policy, drop, only):
    """None, or ``("DROP" | "ONLY", text)``: what is wrong with removing ``drop`` / keeping ``only``."""
    name, steps = _policy_name(policy), policy_steps(policy)
    described = f"the {name} policy's steps are {', '.join(steps)} ({' and '.join(ALWAYS_ON)} always applied)"
    if drop and only:
        return "DROP", "AUG.DROP and AUG.ONLY exclude each other: set one (ONLY keeps the steps named, DROP " \
                       f"removes them); {described}"
    for which, names in (("DROP", drop), ("ONLY", only)):
        if not isinstance(names, (list, tuple)) or not all(isinstance(step, str) for step in names):
            return which, f"must be a list of step names; {described}"
        for step in names:
            if step not in steps:
                return which, f"{step!r} is not a step of the {name} policy; {described}"
            if which == "DROP" and step in ALWAYS_ON:
                return which, f"{step!r} cannot be dropped; {described}"
        repeated = sorted({step for step in names if list(names).count(step) > 1})
        if repeated:
            return which, f"names {', '.join(map(repr, repeated))} more than once; {described}"
    return None


def check_policy(cfg: CfgNode, policy) -> None:
    """Raise a ConfigError naming the key, the bad name and the policy's steps if cfg.AUG.DROP / AUG.ONLY do
    not fit ``policy`` (a name or augmentation function): for check_config, before any work starts."""
    problem = _selection_problem(policy, cfg.AUG.DROP, cfg.AUG.ONLY)
    if problem is not None:
        which, text = problem
        fail(f"AUG.{which}", cfg.AUG[which], text)


def build_policy(policy, crop_size: int = 224, min_scale: float = 0.2, drop: Sequence[str] = (),
                 only: Sequence[str] = ()) -> Policy:
    """``policy``'s transform of one view without the steps in ``drop`` (or with only those in ``only``, plus
    the always-on ones; empty = every step). Order and parameters of the kept steps are unchanged."""
    problem = _selection_problem(policy, drop, only)
    if problem is not None:
        which, text = problem
        value = drop if which == "DROP" else only
        raise ConfigError(f"{which.lower()} {value!r}: {text}")
    name = _policy_name(policy)
    steps = []
    for step, transform in POLICIES[name](crop_size, min_scale):
        kept = step in ALWAYS_ON or (step in only if only else step not in drop)
        if kept:
            steps.append((step, transform))
        elif step == "crop":
            # Without the random crop the views must still be crop_size x crop_size (the batch is a stack):
            # a deterministic resize of the short side to crop_size and a centre crop replace it, so the view
            # is the whole image's centre square, the same for every draw.
            steps.append(("resize_center_crop", transforms.Compose([transforms.Resize(crop_size),
                                                                    transforms.CenterCrop(crop_size)])))
    return Policy(name, steps)


def mocov1_augmentation(crop_size: int = 224, min_scale: float = 0.2, drop: Sequence[str] = (),
                        only: Sequence[str] = ()) -> Policy:
    """He et al. 2020, Sec. 3.3: crop, grayscale p 0.2, colour jitter 0.4 (hue 0.4 too), flip."""
    return build_policy("mocov1", crop_size, min_scale, drop, only)


def mocov2_augmentation(crop_size: int = 224, min_scale: float = 0.2, drop: Sequence[str] = (),
                        only: Sequence[str] = ()) -> Policy:
    """Chen et al. 2020 ("Improved Baselines"): v1's policy plus blur, jitter p 0.8 with hue 0.1."""
    return build_policy("mocov2", crop_size, min_scale, drop, only)


def supervised_augmentation(crop_size: int = 224, min_scale: float = 0.08, drop: Sequence[str] = (),
                            only: Sequence[str] = ()) -> Policy:
    """SL and SL-MLP: crop (area 0.08-1 by default, as torchvision's recipe) and flip."""
    return build_policy("supervised", crop_size, min_scale, drop, only)


_FUNCTIONS: dict[str, Callable] = {"mocov1": mocov1_augmentation, "mocov2": mocov2_augmentation,
                                   "supervised": supervised_augmentation}
