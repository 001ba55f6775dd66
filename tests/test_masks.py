"""Instance masks: polygon and bitmask targets as Detectron2 makes them, on the image shapes real datasets have."""
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
import torch.nn.functional as F
from matplotlib.path import Path as PolygonPath
from PIL import Image

from benchmarks.modeling.masks import BitMasks, PolygonMasks


def distance_to_boundary(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Euclidean distance of each (x, y) point to the closest edge of a closed polygon."""
    starts = polygon.reshape(-1, 2)
    edges = np.roll(starts, -1, 0) - starts
    offsets = points[:, None] - starts[None]
    t = np.clip((offsets * edges).sum(-1) / (edges * edges).sum(-1), 0, 1)
    return np.linalg.norm(offsets - t[..., None] * edges, axis=-1).min(1)


def cell_centres(box, mask_size: int) -> np.ndarray:
    """Image coordinates of the centres of the mask_size x mask_size cells of ``box``, row-major."""
    x0, y0, x1, y1 = box
    rows, cols = np.mgrid[0:mask_size, 0:mask_size] + 0.5
    return np.stack([x0 + cols.ravel() * (x1 - x0) / mask_size, y0 + rows.ravel() * (y1 - y0) / mask_size], 1)


def rasterize(polygon: np.ndarray, height: int, width: int) -> np.ndarray:
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects([polygon], height, width))).astype(bool)


RECTANGLE = np.array([120.3, 80.6, 311.7, 80.6, 311.7, 250.2, 120.3, 250.2])
TRIANGLE = np.array([400.5, 30.25, 610.0, 190.75, 350.2, 400.9])
SMALL_TRIANGLE = np.array([10.5, 5.25, 19.5, 7.0, 12.0, 12.75])  # cells smaller than a pixel: half-pixel errors show
# (polygon, proposal box): the rectangle's own box, a box overlapping it, a box inside it; triangles' boxes
CASES = [
    (RECTANGLE, (120.3, 80.6, 311.7, 250.2)),
    (RECTANGLE, (200.0, 150.0, 420.5, 333.3)),
    (RECTANGLE, (150.0, 100.0, 260.0, 200.0)),
    (TRIANGLE, (350.2, 30.25, 610.0, 400.9)),
    (TRIANGLE, (380.0, 10.0, 520.0, 300.0)),
    (SMALL_TRIANGLE, (10.0, 5.0, 20.0, 13.0)),
    (SMALL_TRIANGLE, (12.0, 4.0, 17.0, 10.0)),
]


@pytest.mark.parametrize("polygon, box", CASES)
@pytest.mark.parametrize("mask_size", [14, 28])
def test_polygon_targets_are_the_cells_whose_centre_is_inside(polygon, box, mask_size):
    """Reference: a cell is foreground iff its centre is inside the polygon (matplotlib's point-in-polygon test).

    pycocotools rasterises at 5x and rounds, so the two may disagree only on cells whose centre lies within
    1/5 cell of the polygon's outline (in cell units); measured worst case on 300 random polygons: 0.13.
    """
    masks = PolygonMasks([[np.zeros(6) + [0, 0, 1, 0, 0, 1]], [polygon]], image_size=(427, 640))
    target = masks.crop_and_resize(torch.tensor([box], dtype=torch.float32), torch.tensor([1]), mask_size)
    assert target.shape == (1, mask_size, mask_size) and target.dtype == torch.bool

    box = np.array(torch.tensor(box, dtype=torch.float32).tolist())  # the float32 box the targets were made for
    centres = cell_centres(box, mask_size)
    expected = PolygonPath(polygon.reshape(-1, 2)).contains_points(centres)
    disagree = target[0].numpy().ravel() != expected
    cell_units = np.array([mask_size / (box[2] - box[0]), mask_size / (box[3] - box[1])])
    polygon_in_cells = ((polygon.reshape(-1, 2) - box[:2]) * cell_units).ravel()
    distances = distance_to_boundary((centres[disagree] - box[:2]) * cell_units, polygon_in_cells)
    assert np.all(distances < 0.2), distances
    assert expected.sum() > 10  # the case is not trivially empty


def test_polygon_target_of_a_box_outside_is_empty_and_of_a_box_inside_is_full():
    masks = PolygonMasks([[RECTANGLE]], image_size=(427, 640))
    boxes = torch.tensor([[0.0, 300.0, 100.0, 420.0], [150.0, 100.0, 260.0, 200.0]])
    targets = masks.crop_and_resize(boxes, torch.tensor([0, 0]), 14)
    assert not targets[0].any() and targets[1].all()


@pytest.mark.parametrize("image_size", [(427, 640), (640, 427), (333, 501)])
def test_polygon_and_bitmask_targets_of_one_object_agree_up_to_boundary_cells(image_size):
    """The same objects as polygons and as full-image bitmasks give the same targets away from the outline.

    A cell can differ only if the region its RoIAlign samples cover (half a bin diagonal around its centre) comes
    within the bitmask's own quantisation (half a pixel diagonal, 0.71 px) of the outline.
    """
    height, width = image_size
    rng = np.random.default_rng(0)
    polygons, boxes, indices = [], [], []
    for index in range(6):
        angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
        radii = rng.uniform(15, 0.3 * min(height, width), 7)
        cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
        polygon = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).ravel()
        polygons.append(polygon)
        x0, y0, x1, y1 = polygon[0::2].min(), polygon[1::2].min(), polygon[0::2].max(), polygon[1::2].max()
        for _ in range(4):  # proposals: the object's box, shifted and scaled by up to 30 %
            jitter = rng.uniform(-0.3, 0.3, 4) * [x1 - x0, y1 - y0, x1 - x0, y1 - y0]
            boxes.append([x0 + jitter[0], y0 + jitter[1], x1 + jitter[2], y1 + jitter[3]])
            indices.append(index)
    boxes, indices = torch.tensor(boxes, dtype=torch.float32), torch.tensor(indices)
    as_polygons = PolygonMasks([[p] for p in polygons], image_size)
    as_bitmasks = BitMasks(torch.from_numpy(np.stack([rasterize(p, height, width) for p in polygons])))
    for mask_size in (14, 28):
        a = as_polygons.crop_and_resize(boxes, indices, mask_size)
        b = as_bitmasks.crop_and_resize(boxes, indices, mask_size)
        assert a.shape == b.shape == (len(boxes), mask_size, mask_size)
        assert (a != b).float().mean() < 0.05
        for box, index, differs in zip(boxes.double().numpy(), indices.tolist(), (a != b).numpy()):
            bin_w, bin_h = (box[2] - box[0]) / mask_size, (box[3] - box[1]) / mask_size
            distances = distance_to_boundary(cell_centres(box, mask_size)[differs.ravel()], polygons[index])
            assert np.all(distances < 0.5 * np.hypot(bin_w, bin_h) + 0.71)


def test_bitmask_target_is_the_thresholded_aligned_crop():
    """Pixel k covers [k, k + 1): a box x 3..5 at 2 cells has cell 0 on pixel 3 and cell 1 on pixel 4.

    Aligned RoIAlign samples the cell centres 3.5 and 4.5, i.e. exactly pixels 3 and 4; the unaligned one would
    sample half-way between pixels 3 and 4 for cell 0 and get 0.5, which the threshold calls foreground.
    """
    mask = torch.zeros(1, 10, 16, dtype=torch.bool)
    mask[0, :, 4:] = True  # columns 4..15
    target = BitMasks(mask).crop_and_resize(torch.tensor([[3.0, 0.0, 5.0, 10.0]]), torch.tensor([0]), 2)
    assert target[0].tolist() == [[False, True]] * 2
    # a wider box: cell 0 covers x 2..4 (background), cells 1..3 cover x 4..10 (foreground)
    target = BitMasks(mask).crop_and_resize(torch.tensor([[2.0, 0.0, 10.0, 10.0]]), torch.tensor([0]), 4)
    assert target[0].tolist() == [[False, True, True, True]] * 4


@pytest.mark.parametrize("size, new_size", [
    ((480, 640), (800, 1067)),  # 480 -> 800 rows: torch's nearest-exact picks other rows here
    ((427, 640), (800, 1199)),
    ((640, 427), (1199, 800)),
    ((333, 501), (800, 1204)),
    ((256, 256), (224, 224)),  # and here
    ((97, 131), (53, 71)),
])
def test_bitmask_resize_is_pil_nearest(size, new_size):
    """Detectron2 resizes masks with PIL's NEAREST; the result must be the same pixels."""
    mask = np.random.default_rng(1).random(size) > 0.5
    expected = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(new_size[::-1], Image.NEAREST)).astype(bool)
    resized = BitMasks(torch.from_numpy(mask)[None]).resize(*new_size)
    assert resized.image_size == new_size
    np.testing.assert_array_equal(resized.tensor[0].numpy(), expected)


def test_torch_nearest_exact_is_not_pil_nearest():
    """Why BitMasks.resize builds PIL's index table instead of calling interpolate(mode='nearest-exact')."""
    mask = np.random.default_rng(1).random((480, 640)) > 0.5
    expected = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((1067, 800), Image.NEAREST))
    exact = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=(800, 1067), mode="nearest-exact")
    assert (exact[0, 0].numpy() != expected).any()


def test_polygon_resize_and_flip_move_coordinates_with_the_image():
    masks = PolygonMasks([[np.array([10.0, 20.0, 30.0, 20.0, 30.0, 40.0])]], image_size=(427, 640))
    resized = masks.resize(800, 1199)
    assert resized.image_size == (800, 1199)
    np.testing.assert_allclose(resized.polygons[0][0], [10 * 1199 / 640, 20 * 800 / 427, 30 * 1199 / 640,
                                                         20 * 800 / 427, 30 * 1199 / 640, 40 * 800 / 427])
    np.testing.assert_array_equal(masks.hflip().polygons[0][0], [630.0, 20.0, 610.0, 20.0, 610.0, 40.0])
    np.testing.assert_array_equal(masks.polygons[0][0], [10.0, 20.0, 30.0, 20.0, 30.0, 40.0])  # not modified


def test_bitmask_flip():
    tensor = torch.zeros(1, 3, 5, dtype=torch.bool)
    tensor[0, 1, 0] = True
    assert BitMasks(tensor).hflip().tensor[0, 1].tolist() == [False, False, False, False, True]


@pytest.mark.parametrize("kind", ["polygon", "bitmask"])
def test_indexing_keeps_the_type_and_the_instances(kind):
    polygons = [np.array([i, 0.0, i + 1, 0.0, i, 1.0]) for i in range(4)]
    tensor = torch.zeros(4, 5, 6, dtype=torch.bool)
    for i in range(4):
        tensor[i, 0, i] = True
    masks = PolygonMasks([[p] for p in polygons], (5, 6)) if kind == "polygon" else BitMasks(tensor)
    for index, expected in ((torch.tensor([False, True, False, True]), [1, 3]), (torch.tensor([2, 0, 2]), [2, 0, 2])):
        picked = masks[index]
        assert type(picked) is type(masks) and len(picked) == len(expected)
        boxes = torch.tensor([[0.0, 0.0, 6.0, 5.0]] * len(expected))
        np.testing.assert_array_equal(picked.crop_and_resize(boxes, torch.arange(len(expected)), 6),
                                      masks.crop_and_resize(boxes, torch.tensor(expected), 6))
    assert masks.to("cpu").image_size == (5, 6)
    assert masks.nonempty().tolist() == [True] * 4


def test_empty_and_bad_arguments():
    polygons = PolygonMasks([[RECTANGLE]], (427, 640))
    bitmasks = BitMasks(torch.zeros(1, 427, 640, dtype=torch.uint8))
    for masks in (polygons, bitmasks):
        empty = masks.crop_and_resize(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 14)
        assert empty.shape == (0, 14, 14) and empty.dtype == torch.bool
        with pytest.raises(IndexError, match=r"in \[0, 1\)"):
            masks.crop_and_resize(torch.tensor([[0.0, 0.0, 5.0, 5.0]]), torch.tensor([1]), 14)
        with pytest.raises(ValueError, match="R x 4 boxes and R mask indices"):
            masks.crop_and_resize(torch.tensor([[0.0, 0.0, 5.0, 5.0]]), torch.tensor([0, 0]), 14)
    assert PolygonMasks([], (427, 640)).resize(800, 1199).hflip().image_size == (800, 1199)
    assert len(BitMasks(torch.zeros(0, 427, 640)).resize(800, 1199)) == 0
    with pytest.raises(ValueError, match="at least 3"):
        PolygonMasks([[np.array([1.0, 2.0, 3.0, 4.0])]], (10, 10))
    with pytest.raises(ValueError, match="N x H x W"):
        BitMasks(torch.zeros(427, 640))
