#!/usr/bin/env python
"""Detectron2's VOC AP on a small fixture: the expected numbers of tests/test_voc_evaluation.py.

  /path/to/venv-with-detectron2/bin/python benchmarks/perf/voc_eval_reference.py [--seed 0]

Needs Detectron2 importable in the running Python (never a dependency of transferlab) and says so plainly when it
is absent. Writes ``tests/fixtures/voc_eval/`` in VOC's layout, deterministically from the seed: ``Annotations/*.xml``
and ``ImageSets/Main/test.txt`` for 30 images and 5 classes, and ``detections.json`` (result records as
``benchmarks.detection.voc_evaluation`` takes them). The fixture holds difficult objects, images without objects,
a class with objects but no detections (person) and one with detections but no objects (boat), duplicates, scores
that differ only in the 4th decimal, boxes touching at the +1 pixel boundary, IoUs exactly on thresholds (some only
after the 1-decimal rounding of the det files), and a class (dog) with 10 objects, where 3 found sit below
Detectron2's 11-point recall point 0.30000000000000004.

It then does what PascalVOCDetectionEvaluator does (per-class det-file lines
``id score xmin+1 ymin+1 xmax ymax`` formatted ``.3f``/``.1f``, an empty file for a class without detections) and
runs Detectron2's ``voc_eval`` for every class, IoU threshold 0.50:0.95 and both metrics, writing per-class AP and
the evaluator's AP/AP50/AP75 (percent; NaN as null) to ``expected.json``. Ties are ordered by Detectron2's
unstable ``np.argsort``, so the script also reruns every class with its det-file lines reversed and shuffled and
exits non-zero if any AP moves: the expected numbers must not depend on the numpy build's tie order.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np

try:
    import detectron2
    from detectron2.evaluation import pascal_voc_evaluation
except ImportError:
    sys.exit("voc_eval_reference.py: Detectron2 is not installed in this Python, so no expected numbers were "
             "written. Build it from its source into a separate venv (pip install --no-build-isolation . in a "
             "checkout of facebookresearch/detectron2) and run this script with that venv.")

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "voc_eval"
D2_SOURCE = Path("/work/d2src")
CLASS_NAMES = ("cat", "dog", "car", "person", "boat")
CAT, DOG, CAR, PERSON, BOAT = range(5)
NUM_IMAGES, WIDTH, HEIGHT = 30, 500, 375
THRESHOLDS = range(50, 100, 5)
PLACED_LEVELS = {300, 600, 800, 805, 850, 860, 870, 880, 890, 900, 920, 930, 940, 950}


class Fixture:
    """Objects per image and result records, with each score on its own 3-decimal level unless a tie is meant."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.image_ids = [f"{k:06d}" for k in range(1, NUM_IMAGES + 1)]
        self.objects = {image_id: [] for image_id in self.image_ids}
        self.detections = []
        # score levels in thousandths: the hand-placed ones below, and the rest drawn without repeats
        self.free_levels = [int(v) for v in self.rng.permutation(np.arange(50, 1000)) if v not in PLACED_LEVELS]

    def add_object(self, image: int, cls: int, box, difficult=False):
        self.objects[self.image_ids[image]].append((CLASS_NAMES[cls], [int(v) for v in box], bool(difficult)))

    def level(self) -> int:
        """A score level no other detection has."""
        return self.free_levels.pop()

    def add_detection(self, image: int, cls: int, xywh, level: int):
        """A detection whose score rounds to ``level`` / 1000 but differs from it in the 4th decimal."""
        score = level / 1000 + float(self.rng.uniform(-0.00045, 0.00045))
        self.detections.append({"image_id": self.image_ids[image], "category_id": cls + 1, "score": round(score, 6),
                                "bbox": [round(float(v), 3) for v in xywh]})

    def add_voc_detection(self, image: int, cls: int, box, level: int):
        """A detection given as the 1-based box Detectron2's det file holds."""
        xmin, ymin, xmax, ymax = box
        self.add_detection(image, cls, [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1], level)


def build_fixture(seed: int) -> Fixture:
    f = Fixture(seed)
    # images 0-5: a 100x100 cat (xml 11..110) and a detection covering k% of it, so IoU = k/100 exactly:
    # on thresholds 0.5, 0.75 (0.7504 before the det file's rounding), 0.95, and just above 0.55 and 0.85
    for image, height in enumerate([50, 55.5, 75.04, 85.5, 95, 100]):
        f.add_object(image, CAT, [11, 21, 110, 120])
        f.add_detection(image, CAT, [10, 20, 100, height], f.level())
    f.add_detection(5, CAT, [10, 20, 100, 100], f.level())  # an exact duplicate: one of the two is a false positive
    # image 6: a 3x3 cat and a detection on 2 of its rows (IoU 6/9 with the +1 convention, 2/4 without); a
    # difficult cat; a car with detections just off its right edge (no overlap) and one column on it
    f.add_object(6, CAT, [10, 10, 12, 12])
    f.add_voc_detection(6, CAT, [10, 10, 12, 11], f.level())
    f.add_object(6, CAT, [200, 200, 260, 260], difficult=True)
    # a detection on a difficult object tied with a true positive (a second, exact one on image 0): the order
    # inside the tie cannot matter
    f.add_voc_detection(6, CAT, [201, 200, 260, 261], 880)
    f.add_voc_detection(0, CAT, [11, 21, 110, 120], 880)
    f.add_object(6, CAR, [50, 50, 80, 80])
    f.add_voc_detection(6, CAR, [81, 50, 110, 80], f.level())
    f.add_voc_detection(6, CAR, [80, 50, 109, 80], f.level())
    # images 7-9: no objects; background detections, two of them tied false positives
    f.add_voc_detection(7, CAT, [30, 30, 90, 90], 805)
    f.add_voc_detection(8, CAT, [100, 100, 180, 150], 805)
    for image in (7, 8, 9):
        f.add_voc_detection(image, BOAT, [20 + 10 * image, 40, 200, 160], f.level())
    # images 10-19: one dog each, all found exactly except the last, plus two difficult dogs. Ranked:
    # TP TP TP FP {dup FP, TP} {difficult, TP} TP TP TP TP ... : the ties cannot move the envelope, as the later
    # 9/11 beats the 4/5 a TP-first order would add
    for image in range(10, 20):
        f.add_object(image, DOG, [40 + 5 * image, 60, 160 + 5 * image, 200])
    f.add_object(10, DOG, [300, 100, 400, 250], difficult=True)
    f.add_object(11, DOG, [320, 50, 480, 300], difficult=True)

    def dog(k):
        return [40 + 5 * (10 + k), 60, 160 + 5 * (10 + k), 200]

    for k, level in enumerate([950, 940, 930]):
        f.add_voc_detection(10 + k, DOG, dog(k), level)
    f.add_voc_detection(13, DOG, [300, 250, 400, 350], 920)
    f.add_voc_detection(10, DOG, dog(0), 900)
    f.add_voc_detection(13, DOG, dog(3), 900)
    f.add_voc_detection(10, DOG, [300, 100, 400, 250], 890)
    f.add_voc_detection(14, DOG, dog(4), 890)
    for k, level in zip(range(5, 9), [880, 870, 860, 850]):
        f.add_voc_detection(10 + k, DOG, dog(k), level)
    f.add_voc_detection(7, DOG, [10, 10, 100, 100], 800)  # tied false positives on images without objects
    f.add_voc_detection(9, DOG, [10, 10, 100, 100], 800)
    f.add_voc_detection(11, DOG, [320, 50, 480, 300], 600)  # an exact duplicate pair on a difficult dog
    f.add_voc_detection(11, DOG, [320, 50, 480, 300], 600)
    f.add_voc_detection(19, DOG, [100, 150, 200, 250], 300)  # misses the last dog
    # images 10-29: random cats, cars and persons (some difficult); cats and cars get jittered detections
    # (0, 1 or 2 per object) and some background ones, each on its own score level
    for image in range(10, NUM_IMAGES):
        for _ in range(f.rng.integers(0 if image < 20 else 1, 4)):
            cls = int(f.rng.choice([CAT, CAR, PERSON]))
            w, h = f.rng.integers(16, 160, size=2)
            x0, y0 = f.rng.integers(1, WIDTH - w), f.rng.integers(1, HEIGHT - h)
            f.add_object(image, cls, [x0, y0, x0 + w - 1, y0 + h - 1], difficult=f.rng.random() < 0.2)
            if cls == PERSON:
                continue
            for _ in range(f.rng.choice(3, p=[0.2, 0.5, 0.3])):
                jitter = f.rng.normal(0, 0.08, size=4) * [w, h, w, h]
                f.add_detection(image, cls, [x0 - 1 + jitter[0], y0 - 1 + jitter[1], w + jitter[2], h + jitter[3]],
                                f.level())
        for _ in range(f.rng.integers(0, 3)):
            w, h = f.rng.uniform(16, 120, size=2)
            f.add_detection(image, int(f.rng.choice([CAT, CAR])),
                            [f.rng.uniform(0, WIDTH - w), f.rng.uniform(0, HEIGHT - h), w, h], f.level())
    # Detectron2's evaluator sees detections image by image, in inference order
    order = {image_id: k for k, image_id in enumerate(f.image_ids)}
    f.detections.sort(key=lambda r: order[r["image_id"]])
    return f


def write_xml(path: Path, image_id: str, objects: list):
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(root, "size")
    for key, value in (("width", WIDTH), ("height", HEIGHT), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    for name, box, difficult in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(difficult))
        bndbox = ET.SubElement(obj, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ET.SubElement(bndbox, key).text = str(value)
    ET.indent(root)
    ET.ElementTree(root).write(path)


def write_fixture(f: Fixture):
    (FIXTURE / "Annotations").mkdir(parents=True, exist_ok=True)
    (FIXTURE / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for stale in (FIXTURE / "Annotations").glob("*.xml"):
        stale.unlink()
    for image_id, objects in f.objects.items():
        write_xml(FIXTURE / "Annotations" / f"{image_id}.xml", image_id, objects)
    (FIXTURE / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in f.image_ids))
    (FIXTURE / "detections.json").write_text("[\n" + ",\n".join(map(json.dumps, f.detections)) + "\n]\n")


def det_file_lines(detections: list) -> dict:
    """PascalVOCDetectionEvaluator.process's lines per class index, from 0-based xywh result records."""
    lines = {}
    for r in detections:
        x, y, w, h = r["bbox"]
        xmin, ymin, xmax, ymax = x + 1, y + 1, x + w, y + h
        lines.setdefault(r["category_id"] - 1, []).append(
            f"{r['image_id']} {r['score']:.3f} {xmin:.1f} {ymin:.1f} {xmax:.1f} {ymax:.1f}")
    return lines


def detectron2_aps(lines: dict, use_07_metric: bool, workdir: Path) -> np.ndarray:
    """Per-class AP (percent), [threshold, class], by Detectron2's voc_eval on det files as its evaluator writes."""
    template = str(workdir / "{}.txt")
    aps = np.zeros((len(THRESHOLDS), len(CLASS_NAMES)))
    for c, name in enumerate(CLASS_NAMES):
        Path(template.format(name)).write_text("\n".join(lines.get(c, [""])))
        for k, thresh in enumerate(THRESHOLDS):
            _, _, ap = pascal_voc_evaluation.voc_eval(template, str(FIXTURE / "Annotations" / "{}.xml"),
                                                      str(FIXTURE / "ImageSets" / "Main" / "test.txt"), name,
                                                      ovthresh=thresh / 100.0, use_07_metric=use_07_metric)
            aps[k, c] = ap * 100
    return aps


def summary(aps: np.ndarray) -> dict:
    """The evaluator's AP, AP50, AP75 from per-class APs."""
    per_threshold = {thresh: np.mean(row) for thresh, row in zip(THRESHOLDS, aps)}
    return {"AP": np.mean(list(per_threshold.values())), "AP50": per_threshold[50], "AP75": per_threshold[75]}


def as_json(value: float):
    return None if np.isnan(value) else float(value)


def provenance() -> dict:
    source = Path(pascal_voc_evaluation.__file__)
    try:
        commit = subprocess.run(["git", "-C", str(D2_SOURCE), "log", "-1", "--format=%H"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"version": detectron2.__version__, "commit": commit,
            "commit_note": None if commit else f"{D2_SOURCE} is not a git checkout; the file's sha256 identifies it",
            "pascal_voc_evaluation_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
            "numpy": np.__version__}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    fixture = build_fixture(args.seed)
    write_fixture(fixture)
    lines = det_file_lines(fixture.detections)
    expected = {"detectron2": provenance(), "seed": args.seed, "class_names": list(CLASS_NAMES),
                "iou_thresholds": [t / 100.0 for t in THRESHOLDS]}
    rng = np.random.default_rng(args.seed)
    order_dependent = []
    with tempfile.TemporaryDirectory(prefix="pascal_voc_eval_") as workdir:
        for metric, use_07_metric in (("voc07", True), ("area", False)):
            aps = detectron2_aps(lines, use_07_metric, Path(workdir))
            for permuted in ({c: ls[::-1] for c, ls in lines.items()},
                             *({c: list(rng.permutation(ls)) for c, ls in lines.items()} for _ in range(4))):
                moved = ~np.isclose(detectron2_aps(permuted, use_07_metric, Path(workdir)), aps, rtol=0, atol=1e-12,
                                    equal_nan=True)
                order_dependent += [(metric, CLASS_NAMES[c]) for c in np.flatnonzero(moved.any(axis=0))]
            expected[metric] = {
                "per_class": {name: [as_json(v) for v in aps[:, c]] for c, name in enumerate(CLASS_NAMES)},
                **{key: as_json(value) for key, value in summary(aps).items()},
            }
    if order_dependent:
        sys.exit(f"voc_eval_reference.py: Detectron2's AP depends on the order of tied detections for "
                 f"{sorted(set(order_dependent))}; change the fixture (expected.json not written)")
    (FIXTURE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {FIXTURE}: {len(fixture.detections)} detections, "
          f"{sum(map(len, fixture.objects.values()))} objects")
    for metric in ("voc07", "area"):
        print(metric, {key: expected[metric][key] for key in ("AP", "AP50", "AP75")})


if __name__ == "__main__":
    main()
