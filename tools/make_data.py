#!/usr/bin/env python
"""Write a generated dataset to a directory, in the same layout as the built-in default set.

The built-in set is generated automatically on first use; use this to write one with other sizes,
seed or image size, e.g. to share it or to point ``--data-root`` at it.
"""

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.data import builtin  # noqa: E402
from benchmarks.engine.cli import output_directory, run_tool  # noqa: E402

# --NAME sets write_builtin_set's NAME_images; its default is builtin.NAME_IMAGES.
COUNT_OPTIONS = {
    "train": "COCO train images",
    "val": "COCO val images",
    "pool": "unlabeled pool images",
    "classification_train": "ImageFolder train images (one object each, its class the label)",
    "classification_val": "ImageFolder val images",
    "classification_test": "ImageFolder test images",
    "multilabel_train": "multi-label train images (labels: every category in the image)",
    "multilabel_val": "multi-label val images",
    "multilabel_test": "multi-label test images",
    "domain_train": "ImageFolder train images of each of the two domains (domain_a/, domain_b/)",
    "domain_val": "ImageFolder val images of each domain",
    "domain_test": "ImageFolder test images of each domain",
    "street_train": "Cityscapes-layout street scenes for semantic segmentation (cityscapes/), train",
    "street_val": "Cityscapes-layout street scenes, val",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Write generated scenes as COCO detection splits (annotations/instances_{train,val}.json, "
            "train/, val/), an unlabeled pretraining pool (pool/), ImageFolder classification "
            "splits (classification/{train,val,test}/<class>/), multi-label CSV splits "
            "(classification_multilabel/{train,val,test}.csv, rows path,label1;label2) and ImageFolder "
            "splits of two visually distinct domains of the classification task "
            "(domain_a/{train,val,test}/<class>/, domain_b/...), the COCO scenes again in the VOCdevkit (VOC2007/) "
            "and BDD100K (bdd100k/) layouts, and street scenes in the Cityscapes layout (cityscapes/). "
            "The same seed gives identical files."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    for name, help_text in COUNT_OPTIONS.items():
        option = f"--{name.replace('_', '-')}"
        parser.add_argument(option, type=int, default=getattr(builtin, f"{name.upper()}_IMAGES"), help=help_text)
    parser.add_argument("--seed", type=int, default=builtin.SEED, help="random seed of the whole set")
    parser.add_argument(
        "--image-size", type=int, default=builtin.DETECTION_SPEC.height, help="side of the square COCO images"
    )
    parser.add_argument(
        "--small-image-size",
        type=int,
        default=builtin.SMALL_IMAGE_SPEC.height,
        help="side of the square pool, classification, multi-label and domain images",
    )
    return parser.parse_args(argv)


def check_args(args) -> None:
    """One clear line per bad value, before anything is written."""
    output_directory(args.out, "--out")
    for name in COUNT_OPTIONS:
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: an image count must be >= 0")


def square_spec(spec, side: int, option: str):
    """``spec`` at ``side`` x ``side`` px; the generator's own check, naming the option."""
    try:
        return dataclasses.replace(spec, height=side, width=side)
    except ValueError as error:
        raise ValueError(f"{option} {side}: {error}") from None


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    builtin.write_builtin_set(
        args.out,
        **{f"{name}_images": getattr(args, name) for name in COUNT_OPTIONS},
        seed=args.seed,
        detection_spec=square_spec(builtin.DETECTION_SPEC, args.image_size, "--image-size"),
        small_image_spec=square_spec(builtin.SMALL_IMAGE_SPEC, args.small_image_size, "--small-image-size"),
        classification_spec=square_spec(builtin.CLASSIFICATION_SPEC, args.small_image_size, "--small-image-size"),
        multilabel_spec=square_spec(builtin.MULTILABEL_SPEC, args.small_image_size, "--small-image-size"),
        domain_a_spec=square_spec(builtin.DOMAIN_A_SPEC, args.small_image_size, "--small-image-size"),
        domain_b_spec=square_spec(builtin.DOMAIN_B_SPEC, args.small_image_size, "--small-image-size"),
        street_spec=builtin.StreetSpec(),
    )
    logging.info("Wrote %s in %.1f s", args.out, time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(run_tool("make_data.py", main))
