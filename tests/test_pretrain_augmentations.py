"""Augmentation policies as named steps (AUG.DROP / AUG.ONLY, the ablations of HPT Sec. 4.4 and Exemplar Table 1)
and the seeded, nested, stratified data subsets of DATA.FRACTION (HPT's data-robustness study)."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from benchmarks.engine.config import ConfigError, load_config
from benchmarks.engine.validation import check_rules
from pretrain.augmentations import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    GaussianBlur,
    TwoCrops,
    build_policy,
    check_policy,
    mocov1_augmentation,
    mocov2_augmentation,
    optional_steps,
    policy_steps,
)
from pretrain.config import PRETRAIN_RULES, get_defaults
from pretrain.data import ImageDirectory, LabelledImageFolder, subset, subset_indices

CROP = 16


def today_mocov1(crop_size, min_scale):
    """A literal copy of mocov1_augmentation before the policies became named steps."""
    return transforms.Compose([
        transforms.RandomResizedCrop(crop_size, scale=(min_scale, 1.0)),
        transforms.RandomGrayscale(p=0.2),
        transforms.ColorJitter(0.4, 0.4, 0.4, 0.4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def today_mocov2(crop_size, min_scale):
    """A literal copy of mocov2_augmentation before the policies became named steps."""
    return transforms.Compose([
        transforms.RandomResizedCrop(crop_size, scale=(min_scale, 1.0)),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.RandomApply([GaussianBlur((0.1, 2.0))], p=0.5),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


@pytest.fixture(scope="module")
def image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 22, 3), dtype=np.uint8))


def views(transform, image, seed=5, count=12):
    torch.manual_seed(seed)
    return torch.stack([torch.stack(TwoCrops(transform)(image)) for _ in range(count)])


def aug_config(drop=(), only=()):
    cfg = get_defaults()
    cfg.AUG.DROP, cfg.AUG.ONLY = drop, only
    return cfg


@pytest.mark.parametrize(("new", "today"), [(mocov1_augmentation, today_mocov1), (mocov2_augmentation, today_mocov2)])
def test_nothing_dropped_is_bit_identical_to_the_fixed_compose(image, new, today):
    expected = views(today(CROP, 0.3), image)
    assert torch.equal(views(new(CROP, 0.3), image), expected)
    assert torch.equal(views(new(CROP, 0.3, drop=[], only=()), image), expected)
    # ONLY naming every step is the full policy too
    assert torch.equal(views(new(CROP, 0.3, only=policy_steps(new)), image), expected)


def test_step_names_of_each_policy():
    assert policy_steps("mocov1") == ("crop", "grayscale", "color_jitter", "flip", "to_tensor", "normalize")
    assert policy_steps(mocov2_augmentation) == ("crop", "color_jitter", "grayscale", "blur", "flip", "to_tensor",
                                                 "normalize")
    assert optional_steps("mocov2") == ("crop", "color_jitter", "grayscale", "blur", "flip")
    assert mocov2_augmentation().names == policy_steps("mocov2")
    assert "blur: RandomApply" in repr(mocov2_augmentation()) and "GaussianBlur" not in repr(mocov1_augmentation())
    with pytest.raises(ValueError, match="unknown augmentation policy 'simclr'; known: mocov1, mocov2"):
        policy_steps("simclr")


def test_dropping_a_step_removes_exactly_that_transform(image):
    policy = mocov2_augmentation(CROP, drop=("blur", "grayscale"))
    assert policy.names == ("crop", "color_jitter", "flip", "to_tensor", "normalize")
    assert "GaussianBlur" not in repr(policy) and "Grayscale" not in repr(policy)
    assert mocov2_augmentation(CROP, only=("crop", "flip")).names == ("crop", "flip", "to_tensor", "normalize")
    # ONLY keeps the policy's order, whatever order it names the steps in
    assert mocov1_augmentation(CROP, only=("flip", "grayscale")).names == (
        "resize_center_crop", "grayscale", "flip", "to_tensor", "normalize")
    # the kept transforms draw as before: dropping blur from v2 equals today's v2 without its blur entry
    reference = today_mocov2(CROP, 0.2)
    del reference.transforms[3]
    assert torch.equal(views(mocov2_augmentation(CROP, drop=("blur",)), image), views(reference, image))


def test_without_crop_views_keep_the_crop_size_by_a_deterministic_centre_crop(image):
    for policy in (mocov1_augmentation(CROP, drop=("crop",)), mocov2_augmentation(CROP, only=("flip",))):
        assert policy.names[0] == "resize_center_crop"
        assert views(policy, image).shape == (12, 2, 3, CROP, CROP)
    # with every random step gone both views are the image's centre square: short side resized to CROP
    still = mocov2_augmentation(CROP, drop=optional_steps("mocov2"))
    assert still.names == ("resize_center_crop", "to_tensor", "normalize")
    first, second = TwoCrops(still)(image)
    assert torch.equal(first, second)
    centre = transforms.functional.center_crop(transforms.functional.resize(image, CROP), CROP)
    expected = transforms.functional.normalize(transforms.functional.to_tensor(centre), IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(first, expected)
    portrait = Image.new("RGB", (9, 41))
    assert still(portrait).shape == (3, CROP, CROP)


@pytest.mark.parametrize(("drop", "only", "key", "says"), [
    (("blurr",), (), "AUG.DROP", "'blurr' is not a step of the mocov2 policy; the mocov2 policy's steps are crop, "
                                 "color_jitter, grayscale, blur, flip, to_tensor, normalize (to_tensor and "
                                 "normalize always applied)"),
    ((), ("crop", "solarize"), "AUG.ONLY", "'solarize' is not a step of the mocov2 policy"),
    (("normalize",), (), "AUG.DROP", "'normalize' cannot be dropped"),
    (("blur",), ("crop",), "AUG.DROP", "AUG.DROP and AUG.ONLY exclude each other"),
    (("flip", "flip"), (), "AUG.DROP", "names 'flip' more than once"),
    ("blur", (), "AUG.DROP", "must be a list of step names"),
])
def test_bad_drop_or_only_names_the_key_the_name_and_the_steps(drop, only, key, says):
    cfg = aug_config(drop, only)
    with pytest.raises(ConfigError) as raised:
        check_policy(cfg, mocov2_augmentation)
    value = cfg.AUG.DROP if key == "AUG.DROP" else cfg.AUG.ONLY
    assert str(raised.value).startswith(f"{key} {value!r}: ") and says in str(raised.value), str(raised.value)
    with pytest.raises(ConfigError, match=f"^{key.split('.')[1].lower()} "):
        build_policy("mocov2", CROP, drop=drop, only=only)


def test_good_drop_and_only_pass_the_checks_and_load_from_overrides():
    cfg = load_config(get_defaults(), None, ["AUG.DROP", "('blur', 'grayscale')", "DATA.FRACTION", 0.1])
    assert tuple(cfg.AUG.DROP) == ("blur", "grayscale") and cfg.DATA.FRACTION == 0.1
    check_policy(cfg, "mocov2")
    with pytest.raises(ConfigError, match="'blur' is not a step of the mocov1 policy"):
        check_policy(cfg, "mocov1")  # v1 has no blur
    check_policy(aug_config(only=("crop", "to_tensor")), mocov1_augmentation)
    check_rules(cfg, {key: PRETRAIN_RULES[key] for key in ("AUG.DROP", "AUG.ONLY", "DATA.FRACTION")})


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5, float("nan"), True])
def test_bad_fractions_are_refused_by_the_rule_and_by_subset(value):
    cfg = get_defaults()
    cfg.DATA.FRACTION = value
    with pytest.raises(ConfigError, match=rf"^DATA.FRACTION {value!r}: must be a number in \(0, 1\]"):
        check_rules(cfg, {"DATA.FRACTION": PRETRAIN_RULES["DATA.FRACTION"]})
    if value == value:  # nan fails every comparison: subset's range check refuses it too
        with pytest.raises(ValueError, match=r"must be a number in \(0, 1\]"):
            subset(list(range(10)), value)


def test_subsets_are_seeded_nested_sorted_and_keep_at_least_one():
    files = [f"f{i:03d}" for i in range(200)]
    assert subset(files, 1.0, seed=3) == files and subset(files, 1, seed=3) == files
    ten = subset(files, 0.1, seed=3)
    assert ten == subset(files, 0.1, seed=3) and ten != subset(files, 0.1, seed=4)
    assert len(ten) == 20 and ten == sorted(ten)
    previous = set()
    for fraction in (0.01, 0.1, 0.25, 0.5, 1.0):
        kept = set(subset(files, fraction, seed=3))
        assert previous <= kept and len(kept) == round(fraction * 200)
        previous = kept
    assert len(subset(files[:7], 0.01, seed=0)) == 1
    state = torch.get_rng_state()
    subset(files, 0.3, seed=1)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG (the augmentations' draws) is untouched


def test_stratified_subsets_keep_every_class_in_proportion():
    groups = [0] * 100 + [1] * 30 + [2] * 3
    kept = subset_indices(len(groups), 0.1, seed=0, groups=groups)
    assert [sum(groups[i] == g for i in kept) for g in range(3)] == [10, 3, 1]
    assert [sum(groups[i] == g for i in subset_indices(133, 0.01, 0, groups)) for g in range(3)] == [1, 1, 1]
    previous = set()
    for fraction in (0.01, 0.1, 0.25, 1.0):
        indices = set(subset_indices(133, fraction, 7, groups))
        assert previous <= indices
        previous = indices
    assert previous == set(range(133))


@pytest.fixture(scope="module")
def class_dir(tmp_path_factory):
    """Two classes of 12 and 3 tiny images."""
    root = tmp_path_factory.mktemp("classes")
    for name, count in (("cat", 12), ("dog", 3)):
        (root / name).mkdir()
        for i in range(count):
            Image.new("RGB", (4, 4), (i, 0, 0)).save(root / name / f"{i:02d}.png")
    return root


def test_datasets_keep_a_seeded_fraction(class_dir):
    whole = ImageDirectory(class_dir)
    assert len(whole) == whole.num_found == 15
    part = ImageDirectory(class_dir, fraction=0.2, seed=1)
    assert len(part) == 3 and part.num_found == 15 and part.files == sorted(part.files)
    assert set(part.files) <= set(ImageDirectory(class_dir, fraction=0.5, seed=1).files)
    assert part.files == ImageDirectory(class_dir, fraction=0.2, seed=1).files

    labelled = LabelledImageFolder(class_dir, fraction=0.01, seed=0)
    assert labelled.classes == ["cat", "dog"] and sorted(labelled.labels) == [0, 1]
    quarter = LabelledImageFolder(class_dir, fraction=0.25, seed=0)
    assert sorted(quarter.labels) == [0, 0, 0, 1] and quarter.files == sorted(quarter.files)
    assert all(path.parent.name == quarter.classes[label] for path, label in zip(quarter.files, quarter.labels))
    assert quarter[0][1] == quarter.labels[0]
    full = LabelledImageFolder(class_dir)
    assert full.files == whole.files and full.labels == [0] * 12 + [1] * 3
    with pytest.raises(ValueError, match=r"fraction 0: must be a number in \(0, 1\]"):
        LabelledImageFolder(class_dir, fraction=0)
