"""The Cityscapes reader on hand-made layouts, and the street-scene generator that writes the Cityscapes layout."""

import re

import numpy as np
import pytest
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.csHelpers import getCoreImageFileName
from cityscapesscripts.helpers.labels import id2label
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image

from benchmarks.data import StreetSpec, render_street, scene_rng, write_cityscapes
from benchmarks.data.streets import STREET_CLASSES
from benchmarks.segmentation.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_PALETTE,
    LABEL_ID_TO_TRAIN_ID,
    NUM_CLASSES,
    TRAIN_ID_TO_LABEL_ID,
    CityscapesSemSeg,
    parse_cityscapes_name,
    resolve_cityscapes_dataset,
)
from benchmarks.segmentation.evaluation import SemSegConfusion, frequency_baseline

# The 19 classes of the Cityscapes pixel-level benchmark in trainId order and their labelIds, as the benchmark page
# and cityscapesscripts' README list them (written out here, not read from the table under test).
BENCHMARK_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                     "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                     "bicycle")
BENCHMARK_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
SMALL = StreetSpec(height=64, width=128)


def test_class_table_is_the_benchmarks():
    assert CITYSCAPES_CLASSES == BENCHMARK_CLASSES and NUM_CLASSES == 19
    assert tuple(TRAIN_ID_TO_LABEL_ID) == BENCHMARK_LABEL_IDS
    assert CITYSCAPES_PALETTE[0] == (128, 64, 128) and CITYSCAPES_PALETTE[13] == (0, 0, 142)  # road, car
    for train_id, label_id in enumerate(BENCHMARK_LABEL_IDS):
        assert LABEL_ID_TO_TRAIN_ID[label_id] == train_id
    ignored = set(range(34)) - set(BENCHMARK_LABEL_IDS)  # unlabeled, ego vehicle, ..., parking, caravan, trailer
    assert all(LABEL_ID_TO_TRAIN_ID[i] == 255 for i in ignored)


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path


# labelIds of a 2x4 label and the trainIds they must become: road, sidewalk, unlabeled, car / bicycle, parking
# (trainId 255), ego vehicle (255), sky
LABEL_IDS = [[7, 8, 0, 26], [33, 9, 1, 23]]
TRAIN_IDS = [[0, 1, 255, 13], [18, 255, 255, 10]]


def _tiny_layout(root, split="val", stems=("aachen_000000_000019", "aachen_000001_000019"), label_ids=LABEL_IDS):
    for stem in stems:
        city = stem.split("_")[0]
        _png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", np.full((2, 4, 3), 90))
        _png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_ids)
    return root / "leftImg8bit" / split, root / "gtFine" / split


def test_reader_converts_label_ids_to_train_ids(tmp_path):
    dataset = CityscapesSemSeg(*_tiny_layout(tmp_path))
    assert len(dataset) == 2
    image, label, info = dataset[1]
    assert image.shape == (3, 2, 4) and str(image.dtype) == "torch.uint8" and int(image[0, 0, 0]) == 90
    assert str(label.dtype) == "torch.int64" and label.tolist() == TRAIN_IDS
    assert info["stem"] == "aachen_000001_000019" and info["city"] == "aachen" and info["frame"] == "000019"
    assert info["label_file"].endswith("aachen_000001_000019_gtFine_labelIds.png")


def test_reader_prefers_train_ids_when_present(tmp_path):
    image_dir, gt_dir = _tiny_layout(tmp_path)
    # deliberately unlike the conversion of the labelIds, so the test sees which file was read
    _png(gt_dir / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png", [[5, 5, 255, 18], [0, 0, 0, 0]])
    dataset = CityscapesSemSeg(image_dir, gt_dir)
    assert dataset[0][1].tolist() == [[5, 5, 255, 18], [0, 0, 0, 0]]
    assert dataset[0][2]["label_file"].endswith("_gtFine_labelTrainIds.png")
    assert dataset[1][1].tolist() == TRAIN_IDS  # the other image has labelIds only


def test_reader_errors_name_the_file(tmp_path):
    image_dir, gt_dir = _tiny_layout(tmp_path / "a")
    (gt_dir / "aachen" / "aachen_000001_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"aachen_000001_000019_leftImg8bit\.png: no label.*"
                                                r"aachen_000001_000019_gtFine_labelIds\.png"):
        CityscapesSemSeg(image_dir, gt_dir)

    image_dir, gt_dir = _tiny_layout(tmp_path / "b")
    _png(gt_dir / "aachen" / "aachen_000001_000019_gtFine_labelIds.png", np.full((3, 4), 7))
    with pytest.raises(ValueError, match=r"aachen_000001_000019_gtFine_labelIds\.png: label is 4x3 but its image "
                                         r".*aachen_000001_000019_leftImg8bit\.png is 4x2"):
        CityscapesSemSeg(image_dir, gt_dir)[1]

    image_dir, gt_dir = _tiny_layout(tmp_path / "c", label_ids=[[7, 40, 40, 7], [34, 7, 7, 7]])
    with pytest.raises(ValueError, match=r"aachen_000000_000019_gtFine_labelIds\.png: unknown Cityscapes label ids "
                                         r"\[34, 40\]"):
        CityscapesSemSeg(image_dir, gt_dir)[0]

    _png(gt_dir / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png", [[0, 19, 0, 0], [0, 0, 0, 0]])
    with pytest.raises(ValueError, match=r"aachen_000000_000019_gtFine_labelTrainIds\.png: unknown trainIds \[19\]"):
        CityscapesSemSeg(image_dir, gt_dir)[0]

    image_dir, gt_dir = _tiny_layout(tmp_path / "d")
    (gt_dir / "aachen" / "aachen_000000_000019_gtFine_labelIds.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"aachen_000000_000019_gtFine_labelIds\.png: unreadable label PNG"):
        CityscapesSemSeg(image_dir, gt_dir)[0]
    (image_dir / "aachen" / "aachen_000001_000019_leftImg8bit.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"aachen_000001_000019_leftImg8bit\.png: unreadable image PNG"):
        CityscapesSemSeg(image_dir, gt_dir)[1]
    with pytest.raises(ValueError, match=r"aachen_000000_000019_gtFine_labelIds\.png: unreadable"):
        CityscapesSemSeg(image_dir, gt_dir).verify()  # reads every item: the first broken one fails

    image_dir, gt_dir = _tiny_layout(tmp_path / "e")
    _png(gt_dir / "aachen" / "aachen_000000_000019_gtFine_labelIds.png", np.full((2, 4, 3), 7))  # a colour PNG
    with pytest.raises(ValueError, match=r"aachen_000000_000019_gtFine_labelIds\.png: a label PNG must be "
                                         r"single-channel 8-bit"):
        CityscapesSemSeg(image_dir, gt_dir)[0]

    (tmp_path / "f" / "leftImg8bit" / "val" / "aachen").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"f/leftImg8bit/val is empty"):
        CityscapesSemSeg(tmp_path / "f" / "leftImg8bit" / "val", tmp_path / "f" / "gtFine" / "val")

    image_dir, gt_dir = _tiny_layout(tmp_path / "g", stems=("bad_name_leftImg8bit",))
    with pytest.raises(ValueError, match=r"bad_name_leftImg8bit_leftImg8bit\.png: not a Cityscapes file name"):
        CityscapesSemSeg(image_dir, gt_dir)


def test_dataset_names_resolve_under_both_roots(tmp_path):
    _tiny_layout(tmp_path / "datasets" / "cityscapes", split="train")
    expected = (tmp_path / "datasets/cityscapes/leftImg8bit/train", tmp_path / "datasets/cityscapes/gtFine/train")
    assert resolve_cityscapes_dataset("cityscapes_fine_sem_seg_train", tmp_path / "datasets") == expected
    assert resolve_cityscapes_dataset("cityscapes_fine_sem_seg_train", tmp_path / "datasets/cityscapes") == expected
    with pytest.raises(FileNotFoundError, match=r"'cityscapes_fine_sem_seg_val': directory .*leftImg8bit/val"):
        resolve_cityscapes_dataset("cityscapes_fine_sem_seg_val", tmp_path / "datasets")
    with pytest.raises(ValueError, match="Unknown Cityscapes dataset 'cityscapes_val'"):
        resolve_cityscapes_dataset("cityscapes_val", tmp_path / "datasets")
    with pytest.raises(FileNotFoundError, match="No Cityscapes directory under"):
        resolve_cityscapes_dataset("cityscapes_fine_sem_seg_train", tmp_path)
    assert len(CityscapesSemSeg.from_name("cityscapes_fine_sem_seg_train", tmp_path / "datasets")) == 2


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated") / "cityscapes"
    return write_cityscapes(root, {"train": 16, "val": 6, "test": 1}, SMALL, seed=3)


def test_writer_layout_and_naming(generated):
    files = sorted(str(p.relative_to(generated)) for p in generated.rglob("*") if p.is_file())
    val_gt = [f"gtFine/val/synthdorf/synthdorf_00000{i}_000019_gtFine_{kind}"
              for i in range(6) for kind in ("color.png", "instanceIds.png", "labelIds.png", "labelTrainIds.png",
                                             "polygons.json")]
    val_images = [f"leftImg8bit/val/synthdorf/synthdorf_00000{i}_000019_leftImg8bit.png" for i in range(6)]
    assert [f for f in files if "/val/" in f] == sorted(val_gt + val_images)
    train_images = [f for f in files if f.startswith("leftImg8bit/train/")]
    assert train_images[:2] == ["leftImg8bit/train/synthburg/synthburg_000000_000019_leftImg8bit.png",
                                "leftImg8bit/train/synthburg/synthburg_000001_000019_leftImg8bit.png"]
    assert len(train_images) == 16 and sum("/synthtown/" in f for f in train_images) == 8
    assert "leftImg8bit/test/synthstadt/synthstadt_000000_000019_leftImg8bit.png" in files
    pattern = re.compile(r"^(leftImg8bit|gtFine)/(train|val|test)/(?P<city>[a-z]+)/(?P=city)_\d{6}_\d{6}_"
                         r"(leftImg8bit\.png|gtFine_(labelIds|labelTrainIds|instanceIds|color)\.png|"
                         r"gtFine_polygons\.json)$")
    assert all(pattern.match(f) for f in files), [f for f in files if not pattern.match(f)]
    for f in files:  # cityscapesscripts parses every name into the <city>_<seq>_<frame> we pair by
        assert getCoreImageFileName(f) == parse_cityscapes_name(f.replace(".json", ".png"))["stem"]

    gt = generated / "gtFine/val/synthdorf"
    stem = "synthdorf_000002_000019"
    image = Image.open(generated / f"leftImg8bit/val/synthdorf/{stem}_leftImg8bit.png")
    label_ids, train_ids, instance_ids, color = (Image.open(gt / f"{stem}_gtFine_{kind}.png")
                                                 for kind in ("labelIds", "labelTrainIds", "instanceIds", "color"))
    assert (image.mode, label_ids.mode, train_ids.mode, color.mode) == ("RGB", "L", "L", "RGBA")
    assert instance_ids.mode in ("I", "I;16")  # 16-bit grey, as the real instanceIds
    assert {im.size for im in (image, label_ids, train_ids, instance_ids, color)} == {(128, 64)}
    label_ids, train_ids, instance_ids = (np.array(im).astype(np.int64) for im in (label_ids, train_ids, instance_ids))
    assert (LABEL_ID_TO_TRAIN_ID[label_ids] == train_ids).all()
    objects = instance_ids >= 1000
    assert objects.any() and (instance_ids[objects] // 1000 == label_ids[objects]).all()
    assert (instance_ids[~objects] == label_ids[~objects]).all()
    car = label_ids == 26
    if car.any():
        assert (np.array(color)[car] == (0, 0, 142, 255)).all()


def test_writer_polygons_draw_the_label_pngs(generated):
    """cityscapesscripts' own rasterisation of every written _polygons.json gives back the written PNGs exactly, so
    tools that start from the json (Detectron2's from_json loaders, createTrainIdLabelImgs.py) see the same
    labels."""
    polygon_files = sorted(generated.glob("gtFine/*/*/*_gtFine_polygons.json"))
    assert len(polygon_files) == 16 + 6 + 1
    for polygon_file in polygon_files:
        annotation = Annotation()
        annotation.fromJsonFile(str(polygon_file))
        assert (annotation.imgHeight, annotation.imgWidth) == (64, 128)
        prefix = str(polygon_file)[: -len("polygons.json")]
        for image, kind in ((createLabelImage(annotation, "ids"), "labelIds"),
                            (createLabelImage(annotation, "trainIds"), "labelTrainIds"),
                            (createInstanceImage(annotation, "ids"), "instanceIds")):
            np.testing.assert_array_equal(np.array(image), np.array(Image.open(f"{prefix}{kind}.png")),
                                          err_msg=f"{polygon_file} -> {kind}")


def test_generated_set_holds_the_street_classes(generated):
    dataset = CityscapesSemSeg.from_name("cityscapes_fine_sem_seg_train", generated.parent)
    counts = np.zeros(256, np.int64)
    for index in range(len(dataset)):
        counts += np.bincount(dataset.read_label(index).ravel(), minlength=256)
    present = {CITYSCAPES_CLASSES[k] for k in np.flatnonzero(counts[:NUM_CLASSES])}
    assert {"road", "sidewalk", "building", "vegetation", "sky", "car", "person", "pole"} <= present
    assert len(present) >= 12, present
    assert 0 < counts[255] < 0.2 * counts.sum()  # ignored pixels (ego vehicle) exist, as in the real set
    drawn = set()
    for label_file in generated.glob("gtFine/train/*/*_gtFine_labelIds.png"):
        drawn |= {id2label[int(i)].name for i in np.unique(np.array(Image.open(label_file)))}
    assert drawn <= set(STREET_CLASSES)  # every pixel is labelled (no "unlabeled"), only with the documented classes


def test_render_is_deterministic():
    a = render_street(scene_rng(5, "cityscapes/val", 2), SMALL)
    b = render_street(scene_rng(5, "cityscapes/val", 2), SMALL)
    c = render_street(scene_rng(5, "cityscapes/val", 3), SMALL)
    for x, y in zip(a[:3], b[:3]):
        np.testing.assert_array_equal(x, y)
    assert a[3] == b[3]
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1]) and a[3] != c[3]


def test_generated_set_is_learnable_from_pixels(generated):
    """A per-pixel Gaussian classifier on colour and row beats the positional frequency baseline by far: the classes
    are told apart by how they look, not only by where they are. On this set it scores ~40 mIoU against ~15 for the
    baseline; the 15-point margin leaves room for the small sample."""
    train = CityscapesSemSeg.from_name("cityscapes_fine_sem_seg_train", generated.parent)
    val = CityscapesSemSeg.from_name("cityscapes_fine_sem_seg_val", generated.parent)

    def features(image):
        pixels = image.permute(1, 2, 0).numpy().astype(np.float64)
        rows = np.broadcast_to(np.linspace(0, 255, pixels.shape[0])[:, None, None], pixels.shape[:2] + (1,))
        return np.concatenate([pixels, rows], axis=-1).reshape(-1, 4)

    x, y = [], []
    for image, label, _ in train:
        valid = label.numpy().ravel() != 255
        x.append(features(image)[valid])
        y.append(label.numpy().ravel()[valid])
    x, y = np.concatenate(x), np.concatenate(y)
    classes = np.unique(y)
    mean = np.stack([x[y == k].mean(axis=0) for k in classes])
    var = np.stack([x[y == k].var(axis=0) + 25.0 for k in classes])
    log_prior = np.log(np.array([(y == k).mean() for k in classes]))
    evaluator = SemSegConfusion()
    for image, label, _ in val:
        f = features(image)[:, None, :]
        log_likelihood = -0.5 * ((f - mean) ** 2 / var + np.log(var)).sum(axis=-1) + log_prior
        evaluator.update(classes[log_likelihood.argmax(axis=1)].reshape(label.shape), label)
    pixel_classifier = evaluator.metrics()["sem_seg"]["mIoU"]
    baseline = frequency_baseline(train, val)["sem_seg"]["mIoU"]
    assert pixel_classifier > baseline + 15, (pixel_classifier, baseline)
