"""The built-in generated dataset: what every command uses when no data root is given.

It is generated on first use into a cache directory. Generation writes into a temporary directory
that is renamed into place only when complete, under a file lock, so a killed run never leaves a
set that looks complete and the processes of one ``torchrun`` job generate it once.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from .streets import StreetSpec
from .synthetic import CATEGORIES, GENERATOR_VERSION, SceneSpec
from .writers import (
    _atomic_write_bytes,
    write_bdd,
    write_cityscapes,
    write_coco,
    write_image_folder,
    write_image_pool,
    write_multilabel_csv,
    write_voc,
)

__all__ = ["builtin_data_root", "cache_root", "write_builtin_set"]

logger = logging.getLogger(__name__)

# Sizes of the default set, tuned so the CPU demo trains a detector that really learns in minutes.
TRAIN_IMAGES = 800
VAL_IMAGES = 100
POOL_IMAGES = 2000
CLASSIFICATION_TRAIN_IMAGES = 1200
CLASSIFICATION_VAL_IMAGES = 300
CLASSIFICATION_TEST_IMAGES = 300
MULTILABEL_TRAIN_IMAGES = 1200
MULTILABEL_VAL_IMAGES = 300
MULTILABEL_TEST_IMAGES = 300
DOMAIN_TRAIN_IMAGES = 600  # of each domain
DOMAIN_VAL_IMAGES = 150
DOMAIN_TEST_IMAGES = 150
STREET_TRAIN_IMAGES = 300  # Cityscapes-layout street scenes (cityscapes/)
STREET_VAL_IMAGES = 50
SEED = 0
DETECTION_SPEC = SceneSpec(height=256, width=256, min_objects=2, max_objects=4, min_object_size=0.3,
                           max_object_size=0.55, background_contrast=0.15, texture_prob=0.15, max_occlusion=0.35)
# Pretraining pool and classification probes use smaller images: they are only ever cropped and resized.
SMALL_IMAGE_SPEC = SceneSpec(height=96, width=96)
# One large object per classification image, as in ImageNet-style sets: with the pool's 1-4 objects, labelled by
# the largest, the label was ambiguous and even raw pixels or a random-init ResNet-50 probed at chance.
CLASSIFICATION_SPEC = SceneSpec(height=96, width=96, min_objects=1, max_objects=1, min_object_size=0.45,
                                max_object_size=0.8, background_contrast=0.15, texture_prob=0.15, crowd_prob=0.0)
# Multi-label images hold 1-3 objects and no crowd, so each has 1-3 of the shape categories as labels.
MULTILABEL_SPEC = SceneSpec(height=96, width=96, max_objects=3, crowd_prob=0.0)
# Two visually distinct domains of the classification task (one object per image, its shape the label), for
# hierarchical pretraining (base -> source domain -> target domain) and source selection. A: saturated warm objects,
# solid, large and little stretched, on pale warm, smooth, low-contrast backgrounds. B: desaturated cool objects,
# all textured, smaller and more stretched, on dark cool, busy backgrounds (stripes, checker, per-pixel grain).
DOMAIN_A_SPEC = SceneSpec(height=96, width=96, min_objects=1, max_objects=1, min_object_size=0.5,
                          max_object_size=0.85, aspect_jitter=0.1, background_contrast=0.1, texture_prob=0.0,
                          crowd_prob=0.0, object_hsv=((-20.0, 50.0), (0.75, 1.0), (0.8, 1.0)),
                          background_hsv=((20.0, 60.0), (0.2, 0.4), (0.75, 0.95)),
                          background_kinds=("gradient", "smooth_noise"))
DOMAIN_B_SPEC = SceneSpec(height=96, width=96, min_objects=1, max_objects=1, min_object_size=0.3,
                          max_object_size=0.6, aspect_jitter=0.35, background_contrast=0.4, min_color_distance=90.0,
                          texture_prob=1.0, crowd_prob=0.0, object_hsv=((180.0, 260.0), (0.05, 0.3), (0.55, 1.0)),
                          background_hsv=((190.0, 250.0), (0.05, 0.3), (0.1, 0.35)),
                          background_kinds=("stripes", "checker", "grain"), background_stripe_period=(4.0, 10.0))
# The domains' directories in a generated set's root, in the order of write_builtin_set's domain_a_spec, domain_b_spec.
DOMAINS = ("domain_a", "domain_b")


def cache_root() -> Path:
    """``$TRANSFERLAB_CACHE`` if set, else ``~/.cache/transferlab``."""
    return Path(os.environ.get("TRANSFERLAB_CACHE") or Path.home() / ".cache" / "transferlab")


def write_builtin_set(
    root,
    *,
    train_images: int,
    val_images: int,
    pool_images: int,
    classification_train_images: int,
    classification_val_images: int,
    classification_test_images: int,
    multilabel_train_images: int,
    multilabel_val_images: int,
    multilabel_test_images: int,
    domain_train_images: int,
    domain_val_images: int,
    domain_test_images: int,
    street_train_images: int,
    street_val_images: int,
    seed: int,
    detection_spec: SceneSpec,
    small_image_spec: SceneSpec,
    classification_spec: SceneSpec,
    multilabel_spec: SceneSpec,
    domain_a_spec: SceneSpec,
    domain_b_spec: SceneSpec,
    street_spec: StreetSpec,
) -> Path:
    """Write a complete generated set into ``root``.

    Layout: COCO splits ``annotations/instances_{train,val}.json`` with images in ``train/`` and
    ``val/``; the same scenes in the VOCdevkit layout, ``VOC2007/`` with ``trainval`` (the COCO train scenes) and
    ``test`` (the val scenes), and in BDD100K's, ``bdd100k/images/100k/{train,val}/`` with
    ``bdd100k/labels/det_20/det_{train,val}.json``; street scenes in the Cityscapes layout,
    ``cityscapes/leftImg8bit/{train,val}/<city>/`` and ``cityscapes/gtFine/...`` (``street_*_images``); an unlabeled
    ``pool/``; ImageFolder splits ``classification/{train,val,test}/<class>/``;
    multi-label splits ``classification_multilabel/{train,val,test}.csv`` with their images in
    ``classification_multilabel/{train,val,test}/``; ImageFolder splits of two visually distinct domains of the
    classification task, ``domain_a/{train,val,test}/<class>/`` and ``domain_b/...`` (each split's count per
    domain); and ``manifest.json`` recording how the set was made.
    """
    root = Path(root)
    write_coco(root, "train", train_images, detection_spec, seed)
    write_coco(root, "val", val_images, detection_spec, seed)
    write_voc(root / "VOC2007", {"trainval": ("train", train_images), "test": ("val", val_images)}, detection_spec,
              seed)
    write_bdd(root, {"train": ("train", train_images), "val": ("val", val_images)}, detection_spec, seed)
    write_cityscapes(root / "cityscapes", {"train": street_train_images, "val": street_val_images}, street_spec, seed)
    write_image_pool(root / "pool", pool_images, small_image_spec, seed)
    for split, count in (("train", classification_train_images), ("val", classification_val_images),
                         ("test", classification_test_images)):
        write_image_folder(root / "classification", split, count, classification_spec, seed)
    for split, count in (("train", multilabel_train_images), ("val", multilabel_val_images),
                         ("test", multilabel_test_images)):
        write_multilabel_csv(root / "classification_multilabel", split, count, multilabel_spec, seed)
    for domain, spec in zip(DOMAINS, (domain_a_spec, domain_b_spec)):
        for split, count in (("train", domain_train_images), ("val", domain_val_images),
                             ("test", domain_test_images)):
            write_image_folder(root / domain, split, count, spec, seed, stream=domain)
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "train_images": train_images,
        "val_images": val_images,
        "pool_images": pool_images,
        "classification_train_images": classification_train_images,
        "classification_val_images": classification_val_images,
        "classification_test_images": classification_test_images,
        "multilabel_train_images": multilabel_train_images,
        "multilabel_val_images": multilabel_val_images,
        "multilabel_test_images": multilabel_test_images,
        "domain_train_images": domain_train_images,
        "domain_val_images": domain_val_images,
        "domain_test_images": domain_test_images,
        "street_train_images": street_train_images,
        "street_val_images": street_val_images,
        "detection_spec": dataclasses.asdict(detection_spec),
        "small_image_spec": dataclasses.asdict(small_image_spec),
        "classification_spec": dataclasses.asdict(classification_spec),
        "multilabel_spec": dataclasses.asdict(multilabel_spec),
        "domain_a_spec": dataclasses.asdict(domain_a_spec),
        "domain_b_spec": dataclasses.asdict(domain_b_spec),
        "street_spec": dataclasses.asdict(street_spec),
        "categories": CATEGORIES,
    }
    _atomic_write_bytes(root / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return root


def _default_set_arguments() -> dict:
    # Read at call time, so tuning the module constants takes effect without a restart of anything.
    return {
        "train_images": TRAIN_IMAGES,
        "val_images": VAL_IMAGES,
        "pool_images": POOL_IMAGES,
        "classification_train_images": CLASSIFICATION_TRAIN_IMAGES,
        "classification_val_images": CLASSIFICATION_VAL_IMAGES,
        "classification_test_images": CLASSIFICATION_TEST_IMAGES,
        "multilabel_train_images": MULTILABEL_TRAIN_IMAGES,
        "multilabel_val_images": MULTILABEL_VAL_IMAGES,
        "multilabel_test_images": MULTILABEL_TEST_IMAGES,
        "domain_train_images": DOMAIN_TRAIN_IMAGES,
        "domain_val_images": DOMAIN_VAL_IMAGES,
        "domain_test_images": DOMAIN_TEST_IMAGES,
        "street_train_images": STREET_TRAIN_IMAGES,
        "street_val_images": STREET_VAL_IMAGES,
        "seed": SEED,
        "detection_spec": DETECTION_SPEC,
        "small_image_spec": SMALL_IMAGE_SPEC,
        "classification_spec": CLASSIFICATION_SPEC,
        "multilabel_spec": MULTILABEL_SPEC,
        "domain_a_spec": DOMAIN_A_SPEC,
        "domain_b_spec": DOMAIN_B_SPEC,
        "street_spec": StreetSpec(),
    }


_BUILTIN_SETS = {"default": _default_set_arguments}
# Bump when write_builtin_set writes a new layout (not new pixels: that is GENERATOR_VERSION), so caches without it
# are regenerated. 2: VOC2007/. 3: bdd100k/. 4: cityscapes/.
LAYOUT_VERSION = 4


def generated_set_version(data_root):
    """The ``generator_version`` in ``data_root/manifest.json`` if it is a transferlab generated set, else None."""
    try:
        manifest = json.loads((Path(data_root) / "manifest.json").read_text())
    except (OSError, ValueError):  # no manifest, or someone else's that is not JSON
        return None
    return manifest.get("generator_version") if isinstance(manifest, dict) else None


def builtin_data_root(name: str = "default") -> Path:
    """Directory of the named built-in set, generating it on first use.

    The directory name carries the generator version and a digest of the set's parameters, so a
    change of either generates a fresh set instead of reusing a stale one.
    """
    if name not in _BUILTIN_SETS:
        raise ValueError(f"Unknown built-in dataset {name!r}; known: {', '.join(sorted(_BUILTIN_SETS))}")
    arguments = _BUILTIN_SETS[name]()
    serialized = json.dumps(
        {"layout": LAYOUT_VERSION,
         **{k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in arguments.items()}},
        sort_keys=True
    )
    digest = hashlib.sha256(serialized.encode()).hexdigest()[:8]
    data_dir = cache_root() / "data"
    final = data_dir / f"{name}-v{GENERATOR_VERSION}-{digest}"
    if final.is_dir():
        return final

    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, also if the process dies
        if final.is_dir():  # another process generated it while we waited
            return final
        # Every generator holds the lock, so temporary directories seen now belong to killed runs.
        for leftover in data_dir.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(leftover)
        temporary = data_dir / f".{final.name}.tmp-{os.getpid()}"
        temporary.mkdir()
        logger.info("Generating built-in dataset %r into %s (first use) ...", name, final)
        start = time.perf_counter()
        try:
            write_builtin_set(temporary, **arguments)
            os.rename(temporary, final)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        logger.info("Generated built-in dataset %r in %.1f s", name, time.perf_counter() - start)
    return final
