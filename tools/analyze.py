#!/usr/bin/env python
"""Measure representations: SL-MLP's feature measures of one or more backbones, HPT's similarity of two.

  python tools/analyze.py --weights work/demo/pretrain/last.pth --weights none --measure phi
  python tools/analyze.py --weights a.pth --weights b.pth --measure rv2 --data-root /data/resisc45

Measures (benchmarks/classification/analysis.py has the equations):
  phi         SL-MLP eq. 4, discriminative ratio (inter- over intra-class distance), per backbone
  mixture     SL-MLP eq. 2, feature mixture of two label sets (--eval-classes against the rest), per backbone
  redundancy  SL-MLP eq. 3, mean absolute correlation of feature channels, per backbone
  rv2         HPT appendix C.7, modified RV coefficient of two backbones' features on the same images
  error_iou   HPT appendix C.7, IoU of the images two backbones' linear probes misclassify

Features are the globally pooled --stage of a single centre crop of each image of --split. error_iou fits
HPT's linear probe (SGD on the train features, lr chosen on val) for each backbone and compares their
predictions on --split. Without --data-root the built-in generated classification set is used. Prints a
table and writes analysis.json into --output.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch.utils.data import DataLoader  # noqa: E402

from benchmarks.classification import analysis  # noqa: E402
from benchmarks.classification.data import ImageSampleDataset, data_directory, read_classification_data  # noqa: E402
from benchmarks.classification.features import (  # noqa: E402
    STAGES,
    FeatureCache,
    build_backbone,
    checkpoint_id,
    eval_transform,
)
from benchmarks.classification.linear import evaluate_sweep, fit_sgd  # noqa: E402
from benchmarks.data.builtin import cache_root  # noqa: E402
from benchmarks.engine.cli import input_directory, output_directory, run_tool  # noqa: E402
from benchmarks.engine.distributed import current_device  # noqa: E402
from converters.io import atomic_write_text  # noqa: E402

PER_MODEL = ("phi", "mixture", "redundancy")
PAIRWISE = ("rv2", "error_iou")
NEEDS_LABELS = ("phi", "mixture", "error_iou")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, action="append",
                        help="backbone: any checkpoint converters.load_backbone reads, or 'none' (random init); "
                        "repeat for more backbones (rv2 and error_iou compare exactly two)")
    parser.add_argument("--measure", required=True, choices=PER_MODEL + PAIRWISE)
    parser.add_argument("--data-root", help="classification data (image folders or a multi-label CSV); absent: the "
                        "built-in generated set")
    parser.add_argument("--output", help="output directory (default: work/analysis/<measure>)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="images to measure on")
    parser.add_argument("--stage", default="pool", choices=STAGES, help="the pooled feature to measure")
    parser.add_argument("--eval-classes", help="mixture: comma-separated class names of the eval set (default: "
                        "the second half of the sorted classes)")
    parser.add_argument("--k", type=int, help="mixture: neighbours per class (default: 10, at most half "
                        "the other classes)")
    parser.add_argument("--center", action="store_true", help="redundancy and rv2: subtract the channel means "
                        "first (redundancy: the Pearson coefficient the text names, eq. 3 as printed does not "
                        "centre; rv2: Smilde et al.'s definition, HPT's Algorithm 2 does not centre)")
    parser.add_argument("--arch", default="resnet50", help="architecture of 'none' backbones")
    parser.add_argument("--image-size", type=int, default=224, help="centre-crop size")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--cache-dir", type=Path, help="feature cache, shared with the probe tasks (default: "
                        "$TRANSFERLAB_CACHE/features)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random-init backbones and of missing splits")
    return parser.parse_args(argv)


def model_names(weights: list) -> list:
    """File stems ('scratch' for none), numbered where they repeat."""
    names = ["scratch" if w == "none" else Path(w).stem for w in weights]
    return [f"{name}#{i + 1}" if names.count(name) > 1 else name for i, name in enumerate(names)]


def check_args(args) -> None:
    for weights in args.weights:
        if weights != "none" and not Path(weights).is_file():
            raise FileNotFoundError(f"--weights {weights}: no such file")
    if args.measure in PAIRWISE and len(args.weights) != 2:
        raise ValueError(f"--measure {args.measure} compares two backbones: give --weights exactly twice "
                         f"(got {len(args.weights)})")
    measure_options = {"--center": (args.center, ("redundancy", "rv2")),
                       "--eval-classes": (args.eval_classes, ("mixture",)),
                       "--k": (args.k is not None, ("mixture",))}
    for option, (given, measures) in measure_options.items():
        if given and args.measure not in measures:
            raise ValueError(f"{option} applies to --measure {' and '.join(measures)}, not {args.measure}")
    if args.data_root:
        input_directory(args.data_root, "--data-root")
    for option, value in (("--image-size", args.image_size), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{option} {value}: must be positive")


class Features:
    """Pooled features of each backbone on each split, through the probes' on-disk cache (the same keys, so a
    backbone already probed on the same data and transform is not extracted again)."""

    def __init__(self, data, args, device):
        self.data, self.args, self.device = data, args, device
        self.store = FeatureCache(args.cache_dir or cache_root() / "features")
        self.fingerprint = data.fingerprint()  # stats every image: once, not per backbone and split
        self.backbones, self.loaded = {}, {}

    def __call__(self, weights: str, split: str):
        args = self.args
        if weights not in self.backbones:
            backbone, meta = build_backbone(weights, args.arch, args.seed)
            self.backbones[weights] = backbone.to(self.device), eval_transform(meta, args.image_size)
        if (weights, split) not in self.loaded:
            backbone, transform = self.backbones[weights]
            dataset = ImageSampleDataset(self.data.splits[split], transform, len(self.data.classes))
            loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers)
            features, targets = self.store.features(
                backbone, loader, self.device, backbone=checkpoint_id(weights, args.seed),
                data=self.fingerprint, split=split, transform=repr(transform), stages=(args.stage,))
            self.loaded[weights, split] = features[args.stage], targets
        return self.loaded[weights, split]


def eval_class_indices(data, names) -> list:
    if not names:
        return list(range(len(data.classes) // 2, len(data.classes)))
    unknown = [name for name in names.split(",") if name not in data.classes]
    if unknown:
        raise ValueError(f"--eval-classes {unknown} are not classes of the data ({', '.join(data.classes)})")
    return [data.classes.index(name) for name in names.split(",")]


def probe_predictions(features: Features, weights: str, split: str, num_classes: int):
    """HPT's linear probe on ``weights``' train features, lr chosen on val: its predictions on ``split``."""
    heads, params = fit_sgd(*features(weights, "train"), num_classes, standardize=True)  # as the linear task
    chosen = evaluate_sweep(heads, params, features(weights, "val"), features(weights, "test")).best
    split_features, labels = features(weights, split)
    return heads.scores(split_features)[chosen].argmax(dim=1), labels, params[chosen]


def per_model_value(args, data, features: Features, weights: str) -> dict:
    values, labels = features(weights, args.split)
    if args.measure == "phi":
        return {"phi": analysis.discriminative_ratio(values, labels)}
    if args.measure == "redundancy":
        return {"redundancy": analysis.channel_redundancy(values, center=args.center), "center": args.center}
    eval_classes = eval_class_indices(data, args.eval_classes)
    # with k = C - 1 every class sees every other one and Pi no longer depends on the features
    k = args.k if args.k is not None else min(10, max(1, (len(data.classes) - 1) // 2))
    return {"mixture": analysis.feature_mixture(values, labels, eval_classes, k), "k": k,
            "eval_classes": [data.classes[i] for i in eval_classes]}


def pairwise_value(args, data, features: Features) -> dict:
    first, second = args.weights
    if args.measure == "rv2":
        return {"rv2": analysis.rv2(features(first, args.split)[0], features(second, args.split)[0],
                                    center=args.center), "center": args.center}
    predictions_a, labels, params_a = probe_predictions(features, first, args.split, len(data.classes))
    predictions_b, _, params_b = probe_predictions(features, second, args.split, len(data.classes))
    return {"error_iou": analysis.error_iou(labels, predictions_a, predictions_b),
            "errors_a": int((predictions_a != labels).sum()), "errors_b": int((predictions_b != labels).sum()),
            "probe_a": params_a, "probe_b": params_b, "images": len(labels)}


def results_table(rows: list) -> str:
    """The rows' numbers and names as a markdown table (analysis.json has everything)."""
    columns = [key for key, value in rows[0].items() if key != "weights" and isinstance(value, (str, int, float))]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(args):
    check_args(args)
    output = output_directory(args.output or Path("work") / "analysis" / args.measure, "--output")
    root = data_directory(args.data_root)
    data = read_classification_data(root, seed=args.seed)
    if data.multilabel and args.measure in NEEDS_LABELS:
        raise ValueError(f"--measure {args.measure} needs one label per image; {root} is a multi-label set "
                         "(rv2 and redundancy need no labels)")
    features = Features(data, args, current_device())
    names = model_names(args.weights)
    if args.measure in PER_MODEL:
        rows = [{"model": name, "weights": weights, **per_model_value(args, data, features, weights)}
                for name, weights in zip(names, args.weights)]
    else:
        rows = [{"model_a": names[0], "model_b": names[1], **pairwise_value(args, data, features)}]
    report = {"measure": args.measure, "data": str(root), "split": args.split, "stage": args.stage,
              "weights": dict(zip(names, args.weights)), "notes": data.notes, "rows": rows}
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "analysis.json", json.dumps(report, indent=2))
    print(f"{args.measure} on {root} ({args.split}, {args.stage} features):\n{results_table(rows)}")
    print(f"\nWritten: {output / 'analysis.json'}")


if __name__ == "__main__":
    sys.exit(run_tool("analyze.py", main, parse_args()))
