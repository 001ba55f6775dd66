"""Instance masks of one image as Detectron2 keeps them: polygons (its default) or full-image bitmasks.

Both classes have one interface, used by the training transforms and by the mask loss: ``len``, indexing by
a bool mask or a long index tensor, ``to(device)``, ``resize(new_h, new_w)``, ``hflip()``, ``nonempty()`` and
``crop_and_resize(boxes, indices, mask_size)``, which makes the M x M mask targets of the proposals. The
two differ in how targets are made, as in Detectron2: polygons are rasterised inside each box at M x M
(``rasterize_polygons_within_box``), bitmasks are cropped by aligned RoIAlign and thresholded at 0.5.
"""
from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
import torch
from torchvision.ops import roi_align

__all__ = ["BitMasks", "PolygonMasks", "polygons_to_bitmask"]


def polygons_to_bitmask(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Union of polygons as a bool height x width mask, with pycocotools (Detectron2's polygons_to_bitmask)."""
    if not polygons:  # pycocotools cannot merge an empty list
        return np.zeros((height, width), dtype=bool)
    return mask_util.decode(mask_util.merge(mask_util.frPyObjects(polygons, height, width))).astype(bool)


def _map_points(polygons: list[np.ndarray], transform) -> list[np.ndarray]:
    """New polygons with ``transform(xs, ys) -> (xs, ys)`` applied to their points."""
    mapped = []
    for polygon in polygons:
        new = np.empty_like(polygon)
        new[0::2], new[1::2] = transform(polygon[0::2], polygon[1::2])
        mapped.append(new)
    return mapped


def _check_crop_arguments(boxes: torch.Tensor, indices: torch.Tensor, num_masks: int) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4 or indices.shape != (len(boxes),):
        raise ValueError(f"crop_and_resize needs R x 4 boxes and R mask indices, got boxes of shape "
                         f"{tuple(boxes.shape)} and indices of shape {tuple(indices.shape)}")
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= num_masks):
        raise IndexError(f"crop_and_resize: mask indices must be in [0, {num_masks}), got "
                         f"{int(indices.min())}..{int(indices.max())}")


def _index_list(index: torch.Tensor, length: int) -> list[int]:
    """A bool mask or an integer index tensor as a list of positions (polygons live in Python lists)."""
    if not torch.is_tensor(index):
        raise TypeError(f"masks are indexed with a bool or integer tensor, got {type(index).__name__}")
    if index.dtype == torch.bool:
        if index.shape != (length,):
            raise IndexError(f"bool index of shape {tuple(index.shape)} for {length} masks")
        return index.nonzero().flatten().tolist()
    if index.is_floating_point() or index.is_complex():
        raise TypeError(f"masks are indexed with a bool or integer tensor, got {index.dtype}")
    return index.flatten().tolist()


def _pil_nearest_indices(size: int, new_size: int) -> torch.Tensor:
    """Source pixel of each output pixel of PIL's NEAREST resize, which Detectron2 uses for masks.

    PIL starts half a step into the source and adds the step ``size / new_size`` once per output pixel, then
    truncates. The accumulated float rounding makes it differ from torch's ``nearest-exact``
    (``floor((i + 0.5) * step)``) at some sizes (480 -> 800 rows, 256 -> 224), so the sum is accumulated the same
    way here: ``np.add.accumulate`` adds sequentially, as PIL's loop does.
    """
    step = size / new_size
    increments = np.full(new_size, step)
    increments[0] = step * 0.5
    return torch.from_numpy(np.add.accumulate(increments).astype(np.int64))


class PolygonMasks:
    """Per instance a list of polygons, each a flat float64 array ``[x0, y0, x1, y1, ...]`` in image pixels.

    Coordinates are continuous: pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``, as in COCO.
    """

    def __init__(self, polygons: list[list[np.ndarray]], image_size: tuple[int, int]):
        self.polygons = [[np.asarray(p, dtype=np.float64) for p in instance] for instance in polygons]
        for instance in self.polygons:
            for polygon in instance:
                if polygon.ndim != 1 or len(polygon) < 6 or len(polygon) % 2:
                    raise ValueError(f"a polygon needs a flat array of at least 3 (x, y) points, got shape "
                                     f"{polygon.shape}")
        self.image_size = (int(image_size[0]), int(image_size[1]))

    def __len__(self) -> int:
        return len(self.polygons)

    def __getitem__(self, index: torch.Tensor) -> PolygonMasks:
        return PolygonMasks([self.polygons[i] for i in _index_list(index, len(self))], self.image_size)

    def __repr__(self) -> str:
        return f"PolygonMasks(num_instances={len(self)}, image_size={self.image_size})"

    def to(self, device) -> PolygonMasks:
        """Polygons stay on the CPU (many tiny arrays; rasterisation is a CPU library), as in Detectron2."""
        return self

    def resize(self, new_h: int, new_w: int) -> PolygonMasks:
        """Scale the coordinates with the image (Detectron2's ResizeTransform.apply_coords)."""
        height, width = self.image_size
        scale_x, scale_y = new_w / width, new_h / height
        scaled = [_map_points(instance, lambda xs, ys: (xs * scale_x, ys * scale_y)) for instance in self.polygons]
        return PolygonMasks(scaled, (new_h, new_w))

    def hflip(self) -> PolygonMasks:
        """Mirror in the image width: x -> width - x (Detectron2's HFlipTransform.apply_coords)."""
        width = self.image_size[1]
        mirrored = [_map_points(instance, lambda xs, ys: (width - xs, ys)) for instance in self.polygons]
        return PolygonMasks(mirrored, self.image_size)

    def nonempty(self) -> torch.Tensor:
        """Instances with at least one polygon."""
        return torch.tensor([len(instance) > 0 for instance in self.polygons], dtype=torch.bool)

    def crop_and_resize(self, boxes: torch.Tensor, indices: torch.Tensor, mask_size: int) -> torch.Tensor:
        """``R x mask_size x mask_size`` bool targets on ``boxes.device``: mask ``indices[r]`` inside ``boxes[r]``.

        Detectron2's ``rasterize_polygons_within_box``: the polygons are moved to the box corner, scaled by
        ``mask_size / max(box side, 0.1)`` and rasterised by pycocotools at ``mask_size x mask_size`` (in float64;
        Detectron2 computes the scale in the boxes' float32).
        """
        _check_crop_arguments(boxes, indices, len(self))
        results = []
        for (x0, y0, x1, y1), index in zip(boxes.detach().to("cpu", torch.float64).tolist(), indices.tolist()):
            scale_x, scale_y = mask_size / max(x1 - x0, 0.1), mask_size / max(y1 - y0, 0.1)
            moved = _map_points(self.polygons[index], lambda xs, ys: ((xs - x0) * scale_x, (ys - y0) * scale_y))
            results.append(torch.from_numpy(polygons_to_bitmask(moved, mask_size, mask_size)))
        if not results:
            return torch.zeros((0, mask_size, mask_size), dtype=torch.bool, device=boxes.device)
        return torch.stack(results).to(boxes.device)


class BitMasks:
    """Full-image masks, a bool ``N x H x W`` tensor (uint8 is converted)."""

    def __init__(self, tensor: torch.Tensor):
        if not torch.is_tensor(tensor) or tensor.dim() != 3:
            raise ValueError(f"BitMasks needs an N x H x W tensor, got {getattr(tensor, 'shape', type(tensor))}")
        self.tensor = tensor.to(torch.bool)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.tensor.shape[1:])

    def __len__(self) -> int:
        return len(self.tensor)

    def __getitem__(self, index: torch.Tensor) -> BitMasks:
        if not torch.is_tensor(index) or index.is_floating_point() or index.dim() != 1:
            raise TypeError(f"masks are indexed with a 1-D bool or integer tensor, got {index!r:.60}")
        return BitMasks(self.tensor[index.to(self.tensor.device)])

    def __repr__(self) -> str:
        return f"BitMasks(num_instances={len(self)}, image_size={self.image_size})"

    def to(self, device) -> BitMasks:
        return BitMasks(self.tensor.to(device))

    def resize(self, new_h: int, new_w: int) -> BitMasks:
        """Nearest-neighbour resize exactly as PIL's NEAREST, which Detectron2's apply_segmentation uses."""
        height, width = self.image_size
        rows = _pil_nearest_indices(height, new_h).to(self.tensor.device)
        cols = _pil_nearest_indices(width, new_w).to(self.tensor.device)
        return BitMasks(self.tensor[:, rows[:, None], cols[None, :]])

    def hflip(self) -> BitMasks:
        return BitMasks(self.tensor.flip(-1))

    def nonempty(self) -> torch.Tensor:
        """Masks with at least one pixel set (Detectron2 drops the others from training targets)."""
        return self.tensor.flatten(1).any(1)

    def crop_and_resize(self, boxes: torch.Tensor, indices: torch.Tensor, mask_size: int) -> torch.Tensor:
        """``R x mask_size x mask_size`` bool targets on ``boxes.device``: mask ``indices[r]`` inside ``boxes[r]``.

        Detectron2's ``BitMasks.crop_and_resize``: aligned RoIAlign (adaptive sampling, scale 1) of the 0/1 mask,
        thresholded at 0.5. Computed on the masks' device.
        """
        _check_crop_arguments(boxes, indices, len(self))
        if not len(boxes):
            return torch.zeros((0, mask_size, mask_size), dtype=torch.bool, device=boxes.device)
        device = self.tensor.device
        rois = torch.cat([indices.to(device, torch.float32)[:, None], boxes.detach().to(device, torch.float32)], 1)
        crops = roi_align(self.tensor[:, None].to(torch.float32), rois, (mask_size, mask_size), spatial_scale=1.0,
                          sampling_ratio=0, aligned=True)
        return (crops[:, 0] >= 0.5).to(boxes.device)
