"""RoIAlign that is fast to train on CPUs, with torchvision's exact semantics.

torchvision's CPU ``roi_align`` backward is a scalar loop: in the C4 detector on 2 CPU cores it took a
quarter of every training step. RoIAlign is linear in the features, so for one image it is a matrix
product ``out = F @ M.T`` with an interpolation matrix ``M`` (RoI bins x feature cells) that holds the
same bilinear weights, clamping rules and adaptive sampling counts as torchvision. Both passes are then
BLAS matrix products. ``M`` is dense, so this path is taken only while it stays small (small images,
as on CPUs); CUDA and large maps use torchvision's kernel.
"""
import torch
from torch import nn
from torchvision.ops import roi_align

MAX_DENSE_ENTRIES = 32 * 1024 * 1024  # 128 MB of float32 interpolation weights per image


def _corners(coord: torch.Tensor, size: int):
    """torchvision's bilinear_interpolate neighbours and weights along one axis (coords already in range)."""
    coord = coord.clamp(min=0)
    low = coord.floor().long()
    at_end = low >= size - 1
    low = torch.where(at_end, torch.full_like(low, size - 1), low)
    high = torch.where(at_end, low, low + 1)
    coord = torch.where(at_end, low.to(coord.dtype), coord)
    frac = coord - low
    return low, high, 1 - frac, frac


def interpolation_matrix(boxes: torch.Tensor, height: int, width: int, output_size: int, spatial_scale: float,
                         sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """Dense ``(R * output_size**2, height * width)`` matrix of one image's RoIAlign weights."""
    num_rois, out = boxes.shape[0], output_size
    dtype, device = torch.float32, boxes.device
    boxes = boxes.to(dtype) * spatial_scale - (0.5 if aligned else 0.0)
    x1, y1, x2, y2 = boxes.unbind(1)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / out, roi_w / out
    if sampling_ratio > 0:
        samples_h = samples_w = torch.full((num_rois,), float(sampling_ratio), dtype=dtype, device=device)
    else:
        samples_h, samples_w = torch.ceil(roi_h / out), torch.ceil(roi_w / out)  # 0 for an empty aligned box
    max_h = max(int(samples_h.max().item()), 1) if num_rois else 1
    max_w = max(int(samples_w.max().item()), 1) if num_rois else 1
    bins = torch.arange(out, device=device, dtype=dtype)

    def sample_coords(start, bin_size, samples, max_samples, limit):
        steps = torch.arange(max_samples, device=device, dtype=dtype)
        coords = (start[:, None, None] + bins[None, :, None] * bin_size[:, None, None]
                  + (steps[None, None, :] + 0.5) * bin_size[:, None, None] / samples.clamp(min=1)[:, None, None])
        valid = (steps[None, None, :] < samples[:, None, None]) & (coords >= -1.0) & (coords <= limit)
        return coords, valid  # [R, out, max_samples]

    ys, valid_y = sample_coords(y1, bin_h, samples_h, max_h, height)
    xs, valid_x = sample_coords(x1, bin_w, samples_w, max_w, width)
    y_low, y_high, wy_low, wy_high = _corners(ys, height)
    x_low, x_high, wx_low, wx_high = _corners(xs, width)
    # every (RoI, bin row, sample row, bin column, sample column), averaged over the RoI's sample count
    scale = ((valid_y[:, :, :, None, None] & valid_x[:, None, None, :, :]).to(dtype)
             / (samples_h * samples_w).clamp(min=1)[:, None, None, None, None])
    rois = torch.arange(num_rois, device=device)[:, None, None, None, None]
    rows = (rois * out * out + bins.long()[None, :, None, None, None] * out
            + bins.long()[None, None, None, :, None]).expand_as(scale)
    matrix = torch.zeros(num_rois * out * out, height * width, dtype=dtype, device=device)
    for y_idx, wy in ((y_low, wy_low), (y_high, wy_high)):
        for x_idx, wx in ((x_low, wx_low), (x_high, wx_high)):
            cols = (y_idx[:, :, :, None, None] * width + x_idx[:, None, None, :, :]).expand_as(scale)
            weights = wy[:, :, :, None, None] * wx[:, None, None, :, :] * scale
            matrix.index_put_((rows.reshape(-1), cols.reshape(-1)), weights.reshape(-1), accumulate=True)
    return matrix


class RoIAlign(nn.Module):
    """``torchvision.ops.RoIAlign`` on a list of per-image boxes, computed as matrix products on CPUs."""

    def __init__(self, output_size: int, spatial_scale: float, sampling_ratio: int, aligned: bool):
        super().__init__()
        self.output_size, self.spatial_scale = output_size, spatial_scale
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def _use_matrix(self, features: torch.Tensor, boxes: list) -> bool:
        height, width = features.shape[-2:]
        largest = max((len(b) for b in boxes), default=0) * self.output_size ** 2 * height * width
        return features.device.type == "cpu" and largest <= MAX_DENSE_ENTRIES

    def forward(self, features: torch.Tensor, boxes: list) -> torch.Tensor:
        if not self._use_matrix(features, boxes):
            return roi_align(features, [b.to(features.dtype) for b in boxes], self.output_size,
                             self.spatial_scale, self.sampling_ratio, self.aligned)
        channels, height, width = features.shape[1:]
        out = self.output_size
        pooled = []
        with torch.autocast("cpu", enabled=False):  # float32, as autocast runs torchvision's roi_align
            for image_features, image_boxes in zip(features.float(), boxes):
                matrix = interpolation_matrix(image_boxes.detach(), height, width, out, self.spatial_scale,
                                              self.sampling_ratio, self.aligned)
                values = image_features.reshape(channels, height * width) @ matrix.T
                pooled.append(values.reshape(channels, len(image_boxes), out, out).transpose(0, 1))
        return torch.cat(pooled)
