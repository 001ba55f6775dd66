"""Hoiem-style false-positive analysis on hand-built cases where the type of every detection is known."""
import json

import numpy as np
import pycocotools.mask as mask_util
import pytest

from benchmarks.diagnosis.hoiem import analyze_false_positives, resolve_similar

# truck is no VOC class, so the supercategories (not VOC's groups) say which classes are similar
CATEGORIES = [
    {"id": 1, "name": "cat", "supercategory": "animal"},
    {"id": 2, "name": "dog", "supercategory": "animal"},
    {"id": 3, "name": "truck", "supercategory": "vehicle"},
]
CAT, DOG, TRUCK = 1, 2, 3
BOX = [10, 10, 40, 40]


def ground_truth(annotations, categories=CATEGORIES, num_images=4):
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 100, "width": 100} for i in range(1, num_images + 1)]
    annotations = [{"id": k + 1, "area": a["bbox"][2] * a["bbox"][3], "iscrowd": 0, **a}
                   for k, a in enumerate(annotations)]
    return {"images": images, "annotations": annotations, "categories": categories}


def gt_box(image_id, category_id, bbox, **extra):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


def det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


# image 1: a cat; image 2: a dog and a truck; image 3: a cat nobody finds
GT = ground_truth([gt_box(1, CAT, BOX), gt_box(2, DOG, BOX), gt_box(2, TRUCK, [60, 60, 30, 30]), gt_box(3, CAT, BOX)])
DETS = [
    det(1, CAT, BOX, 0.9),               # correct
    det(1, CAT, [11, 10, 40, 40], 0.8),  # duplicate of the same cat -> Loc
    det(1, CAT, [30, 10, 40, 40], 0.7),  # IoU 1/3 with the cat -> Loc
    det(2, CAT, BOX, 0.6),               # on the dog, a similar class -> Sim
    det(2, CAT, [60, 60, 30, 30], 0.5),  # on the truck -> Oth
    det(2, CAT, [0, 60, 20, 20], 0.4),   # on nothing -> BG
    det(3, CAT, [45, 10, 40, 40], 0.3),  # IoU 1/15 with the cat: too little for Loc -> BG
]
NO_FP = {"Loc": 0, "Sim": 0, "Oth": 0, "BG": 0}


def test_every_false_positive_type_on_a_known_case():
    result = analyze_false_positives(GT, DETS, fp_points=(2, 4, 25))
    cat = result["per_class"]["cat"]
    assert cat["num_gt"] == 2 and cat["num_dets"] == 7 and cat["num_fp"] == 6
    # the top N = 2 detections: the hit and its duplicate
    assert cat["top_n"] == {"n": 2, "Cor": 1, "Loc": 1, "Sim": 0, "Oth": 0, "BG": 0}
    # the top K false positives, by score
    assert [(p["top"], p["n_fp"]) for p in cat["curve"]] == [(2, 2), (4, 4), (25, 6)]
    assert {t: cat["curve"][0][t] for t in NO_FP} == {**NO_FP, "Loc": 2}
    assert {t: cat["curve"][1][t] for t in NO_FP} == {"Loc": 2, "Sim": 1, "Oth": 1, "BG": 0}
    assert {t: cat["curve"][2][t] for t in NO_FP} == {"Loc": 2, "Sim": 1, "Oth": 1, "BG": 2}
    assert result["similar"] == {"source": "supercategory", "groups": {"animal": ["cat", "dog"], "vehicle": ["truck"]}}
    # groups and the whole set add up the top N of their classes and pool the false positives
    animal, overall = result["per_group"]["animal"], result["overall"]
    assert animal["num_gt"] == 3 and overall["num_gt"] == 4
    assert animal["top_n"] == overall["top_n"] == cat["top_n"]
    assert overall["curve"] == cat["curve"]
    assert result["per_class"]["dog"]["top_n"] == {"n": 0, "Cor": 0, **NO_FP}


def test_localization_comes_before_confusion_and_the_most_overlapped_class_decides():
    gt = ground_truth([gt_box(1, CAT, BOX), gt_box(1, DOG, [30, 10, 40, 40]), gt_box(2, DOG, BOX),
                       gt_box(2, TRUCK, [12, 10, 40, 40])])
    dets = [det(1, CAT, [30, 10, 40, 40], 0.9),  # IoU 1/3 with the cat, 1 with the dog: still Loc
            det(2, CAT, [12, 10, 40, 40], 0.8)]  # overlaps the dog (0.9) but the truck more (1.0): Oth
    cat = analyze_false_positives(gt, dets)["per_class"]["cat"]
    assert {t: cat["curve"][0][t] for t in NO_FP} == {"Loc": 1, "Sim": 0, "Oth": 1, "BG": 0}
    assert cat["top_n"]["n"] == 1 and cat["confused_with"] == {}  # the Oth one is outside the top N = 1


def test_confused_with_names_the_classes_in_the_top_n():
    gt = ground_truth([gt_box(i, DOG, BOX) for i in (1, 2, 3)] + [gt_box(i, CAT, [60, 60, 30, 30]) for i in (1, 2)])
    dets = [det(1, CAT, BOX, 0.9), det(2, CAT, BOX, 0.8), det(3, CAT, [60, 60, 30, 30], 0.7)]
    cat = analyze_false_positives(gt, dets)["per_class"]["cat"]
    assert cat["top_n"] == {"n": 2, "Cor": 0, "Loc": 0, "Sim": 2, "Oth": 0, "BG": 0}
    assert cat["confused_with"] == {"dog": 2}


def test_crowd_regions_and_ignored_objects_are_not_false_positives():
    gt = ground_truth([gt_box(1, CAT, [0, 0, 100, 100], iscrowd=1), gt_box(2, CAT, BOX, ignore=1),
                       gt_box(3, CAT, BOX)])
    dets = [det(1, CAT, [10, 10, 20, 20], 0.9),  # inside the crowd of cats
            det(2, CAT, BOX, 0.8),               # on the ignored cat
            det(3, CAT, BOX, 0.7),               # correct
            det(1, DOG, [10, 10, 20, 20], 0.6)]  # a dog in the crowd of cats: a confusion, not ignored
    result = analyze_false_positives(gt, dets)
    cat = result["per_class"]["cat"]
    assert cat["num_gt"] == 1 and cat["num_ignored"] == 2 and cat["num_dets"] == 1 and cat["num_fp"] == 0
    assert cat["top_n"] == {"n": 1, "Cor": 1, **NO_FP}
    assert result["per_class"]["dog"]["curve"][0]["Sim"] == 1


def test_missing_supercategory_warns_and_means_no_similar_classes():
    categories = [dict(CATEGORIES[0]), {"id": 2, "name": "dog"}, dict(CATEGORIES[2])]
    with pytest.warns(UserWarning, match="without a supercategory.*dog"):
        result = analyze_false_positives(ground_truth(GT["annotations"], categories), DETS)
    assert result["similar"]["groups"] == {"animal": ["cat"], "vehicle": ["truck"]}
    cat_curve = result["per_class"]["cat"]["curve"][0]
    assert (cat_curve["Sim"], cat_curve["Oth"]) == (0, 2)  # the cat-on-dog detection became Oth


@pytest.mark.parametrize("suffix, text", [
    (".json", json.dumps({"pets": ["cat", "truck", "unicorn"]})),
    (".yaml", "pets:\n  - cat\n  - truck\n  - unicorn\n"),
])
def test_user_mapping_file(tmp_path, suffix, text):
    path = tmp_path / f"similar{suffix}"
    path.write_text(text)
    with pytest.warns(UserWarning, match="unicorn"):
        result = analyze_false_positives(GT, DETS, similar=str(path))
    assert result["similar"] == {"source": str(path), "groups": {"pets": ["cat", "truck"]}}
    assert set(result["per_group"]) == {"pets"}
    cat_curve = result["per_class"]["cat"]["curve"][0]
    assert (cat_curve["Sim"], cat_curve["Oth"]) == (1, 1)  # now the truck is similar and the dog is not


def test_bad_mapping_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        resolve_similar(CATEGORIES, str(tmp_path / "nowhere.json"))
    malformed = tmp_path / "groups.json"
    malformed.write_text('{"pets": "cat"}')
    with pytest.raises(ValueError, match="groups.json: expected a mapping from group name to a list"):
        resolve_similar(CATEGORIES, str(malformed))


def test_voc_groups_are_the_default_on_voc_classes():
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(["aeroplane", "bird", "car", "dog", "person"])]
    aeroplane, bird, car, dog, person = range(1, 6)
    gt = ground_truth([gt_box(1, bird, BOX), gt_box(2, person, BOX), gt_box(3, car, BOX)], categories)
    dets = [det(1, aeroplane, BOX, 0.9), det(2, dog, BOX, 0.8), det(3, dog, BOX, 0.7)]
    result = analyze_false_positives(gt, dets)
    assert result["similar"]["source"] == "voc"
    assert result["similar"]["groups"] == {"animals": ["bird", "dog", "person"], "vehicles": ["aeroplane", "car"],
                                           "aeroplane-bird": ["aeroplane", "bird"]}
    assert result["per_class"]["aeroplane"]["curve"][0]["Sim"] == 1  # Hoiem: aeroplane and bird are similar
    dog_curve = result["per_class"]["dog"]["curve"][0]
    assert (dog_curve["Sim"], dog_curve["Oth"]) == (1, 1)  # person is an animal, car is not


def _rle(x0, y0, size):
    mask = np.zeros((100, 100), dtype=np.uint8)
    mask[y0:y0 + size, x0:x0 + size] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    return {"size": [100, 100], "counts": rle["counts"].decode("ascii")}


def test_segm_mode_uses_mask_overlaps():
    square = [10, 10, 50, 10, 50, 50, 10, 50]  # polygon of the 40x40 square at (10, 10)
    gt = ground_truth([gt_box(1, CAT, BOX, segmentation=[square])])
    # the boxes are all perfect, the masks are not: only mask overlaps can tell them apart
    dets = [{**det(1, CAT, BOX, 0.9), "segmentation": _rle(10, 10, 40)},
            {**det(1, CAT, BOX, 0.8), "segmentation": _rle(30, 10, 40)}]
    assert analyze_false_positives(gt, dets, mode="bbox")["per_class"]["cat"]["curve"][0]["Loc"] == 1  # duplicate
    masks = analyze_false_positives(gt, dets, mode="segm")["per_class"]["cat"]
    assert masks["top_n"]["Cor"] == 1 and masks["curve"][0]["Loc"] == 1
    with pytest.raises(ValueError, match="detection #0 has no RLE segmentation"):
        analyze_false_positives(gt, [det(1, CAT, BOX, 0.9)], mode="segm")


def test_max_dets_keeps_the_highest_scores_per_image():
    dets = [det(2, CAT, [0, 60, 20, 20], 0.1), *DETS]
    assert analyze_false_positives(GT, dets)["overall"]["num_dets"] == 8
    # images 1 and 2 keep their two best, image 3 its only one
    assert analyze_false_positives(GT, dets, max_dets=2)["overall"]["num_dets"] == 5


def test_no_detections_gives_defined_zeros():
    result = analyze_false_positives(GT, [])
    assert result["overall"]["num_dets"] == 0 and result["overall"]["num_gt"] == 4
    assert result["overall"]["top_n"] == {"n": 0, "Cor": 0, **NO_FP}
    assert all(point["n_fp"] == 0 for point in result["overall"]["curve"])


def test_bad_detections_name_the_file_and_record(tmp_path):
    with pytest.raises(ValueError, match="detection #1 refers to image_id 99"):
        analyze_false_positives(GT, [DETS[0], det(99, CAT, BOX, 0.5)])
    with pytest.raises(ValueError, match="category_id 7"):
        analyze_false_positives(GT, [det(1, 7, BOX, 0.5)])
    with pytest.raises(FileNotFoundError, match="missing.json"):
        analyze_false_positives(GT, str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image_id": 1,')
    with pytest.raises(ValueError, match="broken.json is not valid JSON"):
        analyze_false_positives(GT, str(broken))
    with pytest.raises(ValueError, match="mode must be one of bbox, segm"):
        analyze_false_positives(GT, DETS, mode="keypoints")


def test_score_ties_across_images_keep_the_order_images_first_appear_in():
    """The top N of a class cuts through tied scores as the detections come: image 2's first here."""
    gt = ground_truth([gt_box(1, CAT, BOX), gt_box(2, DOG, BOX)])
    dets = [det(2, CAT, [60, 60, 20, 20], 0.5), det(1, CAT, BOX, 0.5)]  # BG on image 2, then the cat on image 1
    cat = analyze_false_positives(gt, dets)["per_class"]["cat"]
    assert cat["top_n"] == {"n": 1, "Cor": 0, **NO_FP, "BG": 1}
    assert analyze_false_positives(gt, dets[::-1])["per_class"]["cat"]["top_n"] == {"n": 1, "Cor": 1, **NO_FP}


def test_a_crowd_region_of_another_class_is_what_a_false_positive_is_confused_with():
    """Other-class overlap counts crowd regions too, as the share of the detection inside them; a crowd region of
    the detection's own class makes it ignored instead."""
    truck_crowd = gt_box(1, TRUCK, [0, 0, 100, 100], iscrowd=1)
    gt = ground_truth([gt_box(1, CAT, [70, 70, 20, 20]), truck_crowd, gt_box(2, DOG, [0, 0, 30, 30])])
    dets = [det(1, CAT, [10, 10, 20, 20], 0.9),  # inside the truck crowd: IoU 1 with it -> Oth, confused with truck
            det(2, DOG, [40, 40, 30, 30], 0.8),  # on nothing
            det(1, TRUCK, [20, 20, 30, 30], 0.7)]  # inside its own class's crowd region: ignored
    result = analyze_false_positives(gt, dets)
    cat = result["per_class"]["cat"]
    assert cat["top_n"] == {"n": 1, "Cor": 0, **NO_FP, "Oth": 1} and cat["confused_with"] == {"truck": 1}
    assert result["per_class"]["dog"]["top_n"] == {"n": 1, "Cor": 0, **NO_FP, "BG": 1}
    assert result["per_class"]["truck"]["num_ignored"] == 1 and result["per_class"]["truck"]["num_dets"] == 0


def test_batches_of_images_give_the_per_image_answer():
    """Images are classified in padded batches of different widths; one image alone gives the same kinds."""
    rng = np.random.default_rng(0)
    annotations, dets = [], []
    for image in range(1, 31):
        for _ in range(rng.integers(0, 6)):
            box = [float(v) for v in np.round(rng.uniform([0, 0, 5, 5], [60, 60, 40, 40]), 1)]
            annotations.append(gt_box(image, int(rng.integers(1, 4)), box, iscrowd=int(rng.random() < 0.1)))
        for _ in range(rng.integers(0, 12)):
            box = [float(v) for v in np.round(rng.uniform([0, 0, 5, 5], [60, 60, 40, 40]), 1)]
            dets.append(det(image, int(rng.integers(1, 4)), box, float(np.round(rng.random(), 1))))
    gt = ground_truth(annotations, num_images=30)
    whole = analyze_false_positives(gt, dets)
    by_image = {}
    for image in range(1, 31):
        mine = [d for d in dets if d["image_id"] == image]
        for name, entry in analyze_false_positives(gt, mine)["per_class"].items():
            counts = by_image.setdefault(name, dict.fromkeys(("num_dets", "num_fp", "num_ignored"), 0))
            for key in counts:
                counts[key] += entry[key]
    assert {name: {key: entry[key] for key in ("num_dets", "num_fp", "num_ignored")}
            for name, entry in whole["per_class"].items()} == by_image
