"""The sparse-matrix RoIAlign against torchvision's kernel: same values and same gradients."""
import pytest
import torch
from torchvision.ops import roi_align

from benchmarks.modeling import roi_align as fast


def random_boxes(generator, count, size):
    xy = torch.rand(count, 2, generator=generator) * size * 0.8
    wh = torch.rand(count, 2, generator=generator) * size * 0.6 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    boxes[0] = torch.tensor([-30.0, -12.0, size + 40.0, size + 9.0])  # beyond the image on every side
    boxes[1] = torch.tensor([5.0, 5.0, 5.0, 5.0])  # degenerate
    return boxes


@pytest.mark.parametrize("aligned, sampling_ratio", [(True, 0), (True, 2), (False, 0), (False, 1)])
def test_matches_torchvision_values_and_gradients(aligned, sampling_ratio):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 8, 11, 13, generator=generator, requires_grad=True)
    boxes = [random_boxes(generator, 7, 11 * 16), random_boxes(generator, 5, 11 * 16)]
    pooler = fast.RoIAlign(7, 1 / 16, sampling_ratio, aligned)
    ours = pooler(features, boxes)
    reference = roi_align(features, boxes, 7, 1 / 16, sampling_ratio, aligned)
    # float32 sums in another order: agreement to a few ulps of the O(1) values
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    upstream = torch.randn(reference.shape, generator=generator)
    (grad_ours,) = torch.autograd.grad((ours * upstream).sum(), features)
    (grad_reference,) = torch.autograd.grad((reference * upstream).sum(), features)
    torch.testing.assert_close(grad_ours, grad_reference, rtol=1e-5, atol=1e-5)


def test_images_without_boxes_and_channels_last_features():
    features = torch.randn(2, 4, 6, 6)
    boxes = [torch.zeros(0, 4), torch.tensor([[0.0, 0.0, 40.0, 40.0]])]
    pooler = fast.RoIAlign(3, 1 / 8, 0, True)
    reference = roi_align(features, boxes, 3, 1 / 8, 0, True)
    torch.testing.assert_close(pooler(features, boxes), reference)
    pooled = pooler(features.contiguous(memory_format=torch.channels_last), boxes)
    torch.testing.assert_close(pooled, reference)
    assert pooled.is_contiguous(memory_format=torch.channels_last)


def test_coinciding_corners_add_up_as_in_torchvision():
    """A box beyond the map clamps several samples onto the same cell; their weights must be summed."""
    features = torch.arange(16.0).view(1, 1, 4, 4)
    boxes = [torch.tensor([[-20.0, -20.0, 2.0, 2.0], [30.0, 30.0, 90.0, 90.0]])]
    torch.testing.assert_close(fast.RoIAlign(2, 1 / 8, 2, True)(features, boxes),
                               roi_align(features, boxes, 2, 1 / 8, 2, True))


def test_float32_under_bf16_autocast():
    features = torch.randn(1, 4, 6, 6).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = fast.RoIAlign(3, 1 / 8, 0, True)(features, [torch.tensor([[0.0, 0.0, 30.0, 30.0]])])
    assert pooled.dtype == torch.float32
