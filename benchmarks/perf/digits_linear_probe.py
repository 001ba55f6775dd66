#!/usr/bin/env python
"""The cached linear probe on a real image folder the project never generated, against scikit-learn.

  python benchmarks/perf/digits_linear_probe.py [--work DIR]

scikit-learn ships a small labelled image set (``load_digits``: 1797 8x8 digits). This writes it as PNGs into
``train/<digit>/`` and ``test/<digit>/`` class folders (360 test images, seeded), runs
``tools/transfer.py --task linear --weights none`` on it as a user would (the paper recipe, 64 px crops),
then reads the same cached random-init ResNet-50 features back from the feature cache and fits scikit-learn's
LogisticRegression on them (z-scored, C chosen on the same val split). Prints both test top-1 accuracies.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.classification.data import read_classification_data  # noqa: E402
from benchmarks.classification.features import (  # noqa: E402
    FeatureCache,
    build_backbone,
    checkpoint_id,
    eval_transform,
)

CROP, RESIZE, TEST_IMAGES = 64, 73, 360


def write_digits(root: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))
    for rank, index in enumerate(order):
        folder = root / ("test" if rank < TEST_IMAGES else "train") / str(digits.target[index])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[index] * (255 / 16)).astype(np.uint8)).save(folder / f"{index:04d}.png")


def sklearn_top1(splits) -> tuple[float, float]:
    """Test top-1 of LogisticRegression on z-scored features, C = 1 / l2 chosen on val; and that l2."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = splits
    scaler = StandardScaler().fit(x_train)
    best = None
    for l2 in np.logspace(-4, 4, 9):
        model = LogisticRegression(C=1.0 / l2, max_iter=1000).fit(scaler.transform(x_train), y_train)
        val = model.score(scaler.transform(x_val), y_val)
        if best is None or val > best[0]:
            best = (val, 100 * model.score(scaler.transform(x_test), y_test), l2)
    return best[1], best[2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", help="directory for the images, the run and the cache (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        data_root, output, cache = work / "digits", work / "run", work / "features"
        if not data_root.is_dir():
            write_digits(data_root)
        subprocess.run([sys.executable, "tools/transfer.py", "--task", "linear", "--weights", "none", "--data-root",
                        str(data_root), "--output", str(output), "PROBE.CACHE_DIR", str(cache), "INPUT.CROP_SIZE",
                        str(CROP), "INPUT.RESIZE", str(RESIZE)], cwd=REPO, check=True)
        ours = json.loads((output / "metrics.json").read_text())["linear"]["top1"]

        data = read_classification_data(data_root)  # the tool's seeds: SEED 0, the same val split
        _, meta = build_backbone("none")
        transform = eval_transform(meta, CROP, RESIZE)
        splits = []
        for split in ("train", "val", "test"):  # the features the run cached, found by the same key
            path = FeatureCache(cache).path(checkpoint_id("none"), data.fingerprint(), split, "pool", repr(transform))
            if not path.is_file():
                raise SystemExit(f"{path}: the run's {split} features are not in its cache")
            cached = torch.load(path, weights_only=True)
            splits.append((cached["features"].numpy(), cached["targets"].numpy()))
        theirs, l2 = sklearn_top1(splits)
        sizes = ", ".join(f"{name} {len(samples)}" for name, samples in data.splits.items())
        print(f"digits ({sizes}), random-init ResNet-50, {CROP} px: transferlab cached linear probe test top-1 "
              f"{ours:.2f}, scikit-learn LogisticRegression on the same features {theirs:.2f} (l2 {l2:g} on val)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
