"""Deterministic renderer of multi-object scenes with exact instance masks.

The built-in datasets are drawn from here so that every task runs without a download, and so that
the answers are known exactly: each object's mask is the set of pixels where it is visible after
all later objects have been painted over it.
"""

from __future__ import annotations

import colorsys
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["BACKGROUND_KINDS", "GENERATOR_VERSION", "CATEGORIES", "SceneSpec", "render_scene", "scene_rng"]

# Bump whenever the rendered pixels or annotations change, so cached datasets are regenerated.
GENERATOR_VERSION = 1

# COCO-style categories; supercategories group look-alike silhouettes for similar-class analysis.
CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "round"},
    {"id": 2, "name": "ring", "supercategory": "round"},
    {"id": 3, "name": "square", "supercategory": "polygon"},
    {"id": 4, "name": "triangle", "supercategory": "polygon"},
    {"id": 5, "name": "star", "supercategory": "spiky"},
    {"id": 6, "name": "cross", "supercategory": "spiky"},
]

# Background patterns; SceneSpec.background_kinds picks among them, the first three (the default) by the same draw
# as before the others existed, so default scenes are unchanged.
BACKGROUND_KINDS = ("gradient", "smooth_noise", "stripes", "checker", "grain")


@dataclass(frozen=True)
class SceneSpec:
    """Difficulty knobs of a scene; sizes are fractions of the image's short side."""

    height: int = 192
    width: int = 192
    min_objects: int = 1
    max_objects: int = 4
    min_object_size: float = 0.18  # diameter of the shape's circumscribed circle
    max_object_size: float = 0.45
    aspect_jitter: float = 0.15  # each axis is stretched by a factor in [1 - j, 1 + j]
    background_contrast: float = 0.2  # peak-to-peak background texture, as a fraction of 255
    min_color_distance: float = 110.0  # RGB distance between object colours and the background
    texture_prob: float = 0.3  # chance an object gets stripes / checker / noise instead of a solid fill
    max_occlusion: float = 0.6  # largest fraction of an object that later objects may hide
    min_visible_pixels: int = 48
    crowd_prob: float = 0.05  # chance a scene contains one iscrowd=1 cluster of small objects
    # Palette: None draws object colours uniformly from the RGB cube and background base colours near grey; a
    # ((hue_low, hue_high), (saturation_low, saturation_high), (value_low, value_high)) range draws them in HSV
    # (hue in degrees, may run past 360 or below 0 to wrap; saturation and value in [0, 1]).
    object_hsv: tuple | None = None
    background_hsv: tuple | None = None
    background_kinds: tuple = BACKGROUND_KINDS[:3]  # drawn with equal chance, see BACKGROUND_KINDS
    background_stripe_period: tuple = (6.0, 24.0)  # range of the stripes background's period, in pixels

    def __post_init__(self):
        if min(self.height, self.width) < 32:
            raise ValueError(f"SceneSpec: images must be at least 32x32, got {self.height}x{self.width}")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"SceneSpec: need 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if not 0 < self.min_object_size <= self.max_object_size <= 1:
            raise ValueError(
                "SceneSpec: need 0 < min_object_size <= max_object_size <= 1, "
                f"got {self.min_object_size}, {self.max_object_size}"
            )
        for name in ("aspect_jitter", "background_contrast", "texture_prob", "crowd_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"SceneSpec: {name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.max_occlusion < 1:
            raise ValueError(f"SceneSpec: max_occlusion must be in [0, 1), got {self.max_occlusion}")
        for name in ("object_hsv", "background_hsv"):
            ranges = getattr(self, name)
            if ranges is not None and not _valid_hsv_ranges(ranges):
                raise ValueError(
                    f"SceneSpec: {name} must be None or ((hue_low, hue_high), (s_low, s_high), (v_low, v_high)) "
                    f"with low <= high and saturation and value in [0, 1], got {ranges!r}"
                )
        low, high = self.background_stripe_period
        if not 2 <= low <= high:
            raise ValueError(
                f"SceneSpec: background_stripe_period must be (low, high) with 2 <= low <= high, "
                f"got {self.background_stripe_period!r}"
            )
        if not self.background_kinds or not set(self.background_kinds) <= set(BACKGROUND_KINDS):
            raise ValueError(
                f"SceneSpec: background_kinds must be a non-empty tuple of {BACKGROUND_KINDS}, "
                f"got {self.background_kinds!r}"
            )


def _valid_hsv_ranges(ranges) -> bool:
    try:
        (h0, h1), (s0, s1), (v0, v1) = ranges
    except (TypeError, ValueError):
        return False
    return h0 <= h1 and 0 <= s0 <= s1 <= 1 and 0 <= v0 <= v1 <= 1


def _hsv_color(rng: np.random.Generator, ranges) -> np.ndarray:
    """An RGB colour (float, 0-255) drawn uniformly from HSV ``ranges`` (see ``SceneSpec.object_hsv``)."""
    (h0, h1), (s0, s1), (v0, v1) = ranges
    hue, saturation, value = rng.uniform(h0, h1) % 360, rng.uniform(s0, s1), rng.uniform(v0, v1)
    return 255 * np.array(colorsys.hsv_to_rgb(hue / 360, saturation, value))


def scene_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """The generator of the ``index``-th scene of a named stream (e.g. a split).

    Every scene has its own generator, so a scene does not depend on how many were written before
    it and any image of a written dataset can be rendered again from (seed, stream, index).
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(stream.encode()), index)))


def _regular_polygon(num_vertices: int) -> np.ndarray:
    angles = np.pi / 2 + 2 * np.pi * np.arange(num_vertices) / num_vertices
    return np.stack([np.cos(angles), -np.sin(angles)], axis=1)


def _star(num_points: int, inner_radius: float) -> np.ndarray:
    outer = _regular_polygon(2 * num_points)
    outer[1::2] *= inner_radius
    return outer


def _cross(half_arm_width: float) -> np.ndarray:
    a = half_arm_width
    return np.array(
        [(a, 1), (a, a), (1, a), (1, -a), (a, -a), (a, -1), (-a, -1), (-a, -a), (-1, -a), (-1, a), (-a, a), (-a, 1)],
        dtype=np.float64,
    )


# Outline (filled) and hole (cleared) polygons of each category, inscribed in the unit circle.
_SHAPES = {
    "circle": ([_regular_polygon(64)], []),
    "ring": ([_regular_polygon(64)], [0.55 * _regular_polygon(64)]),
    "square": ([_regular_polygon(4)], []),
    "triangle": ([_regular_polygon(3)], []),
    "star": ([_star(5, 0.45)], []),
    "cross": ([_cross(0.3)], []),
}
_PLACEMENT_ATTEMPTS = 10
_CROWD_MEMBERS = (4, 8)  # inclusive range of small objects in a crowd cluster
_CROWD_OBJECT_SIZE = (0.05, 0.09)
_CROWD_SPREAD = (0.06, 0.12)


def _shape_mask(rng: np.random.Generator, name: str, center, diameter: float, spec: SceneSpec) -> np.ndarray:
    outlines, holes = _SHAPES[name]
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    stretch = diameter / 2 * rng.uniform(1 - spec.aspect_jitter, 1 + spec.aspect_jitter, size=2)

    def place(points):
        return np.round((points * stretch) @ rotation.T + center).astype(np.int32)

    canvas = np.zeros((spec.height, spec.width), np.uint8)
    cv2.fillPoly(canvas, [place(p) for p in outlines], 1, lineType=cv2.LINE_8)
    if holes:
        cv2.fillPoly(canvas, [place(p) for p in holes], 0, lineType=cv2.LINE_8)
    return canvas.astype(bool)


def _object_mask(rng: np.random.Generator, name: str, spec: SceneSpec) -> np.ndarray:
    short_side = min(spec.height, spec.width)
    diameter = rng.uniform(spec.min_object_size, spec.max_object_size) * short_side
    margin = diameter / 4  # up to about half of the shape may leave the image
    center = rng.uniform([margin, margin], [spec.width - margin, spec.height - margin])
    return _shape_mask(rng, name, center, diameter, spec)


def _crowd_masks(rng: np.random.Generator, name: str, spec: SceneSpec) -> list[np.ndarray]:
    short_side = min(spec.height, spec.width)
    cluster_center = rng.uniform([0.25 * spec.width, 0.25 * spec.height], [0.75 * spec.width, 0.75 * spec.height])
    spread = rng.uniform(*_CROWD_SPREAD) * short_side
    masks = []
    for _ in range(rng.integers(_CROWD_MEMBERS[0], _CROWD_MEMBERS[1] + 1)):
        diameter = rng.uniform(*_CROWD_OBJECT_SIZE) * short_side
        center = cluster_center + rng.normal(0, spread, size=2)
        masks.append(_shape_mask(rng, name, center, diameter, spec))
    return masks


def _contrasting_color(rng: np.random.Generator, reference: np.ndarray, spec: SceneSpec) -> np.ndarray:
    if spec.object_hsv is None:
        for _ in range(32):
            color = rng.uniform(0, 255, size=3)
            if np.linalg.norm(color - reference) >= spec.min_color_distance:
                return color
        return np.where(reference < 128, 255.0, 0.0)  # the farthest corner of the RGB cube
    best, best_distance = None, -1.0
    for _ in range(32):
        color = _hsv_color(rng, spec.object_hsv)
        distance = np.linalg.norm(color - reference)
        if distance >= spec.min_color_distance:
            return color
        if distance > best_distance:
            best, best_distance = color, distance
    return best  # the farthest one tried, so the colour stays in the palette


def _render_background(rng: np.random.Generator, spec: SceneSpec) -> tuple[np.ndarray, np.ndarray]:
    """A base colour (near grey, or from ``spec.background_hsv``) with one of ``spec.background_kinds`` on top."""
    h, w = spec.height, spec.width
    if spec.background_hsv is None:
        base = rng.uniform(60, 196) + rng.uniform(-16, 16, size=3)
    else:
        base = _hsv_color(rng, spec.background_hsv)
    amplitude = spec.background_contrast * 255 * rng.uniform(0.5, 1.0)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    along = xx * np.cos(angle) + yy * np.sin(angle)
    kind = spec.background_kinds[rng.integers(len(spec.background_kinds))]
    if kind == "gradient":
        pattern = (along - along.min()) / (along.max() - along.min()) - 0.5
    elif kind == "smooth_noise":
        coarse = rng.uniform(-0.5, 0.5, size=(h // 16 + 2, w // 16 + 2))
        pattern = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    elif kind == "stripes":
        pattern = 0.5 * np.sin(2 * np.pi * along / rng.uniform(*spec.background_stripe_period))
    elif kind == "checker":
        across = -xx * np.sin(angle) + yy * np.cos(angle)
        cell = rng.uniform(3, 8)
        pattern = ((np.floor(along / cell) + np.floor(across / cell)) % 2) - 0.5
    else:  # grain: independent noise per pixel
        pattern = rng.uniform(-0.5, 0.5, size=(h, w))
    image = base + amplitude * pattern[..., None]
    return base, np.clip(image, 0, 255).astype(np.uint8)


def _paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, background: np.ndarray, spec: SceneSpec):
    """Fill ``mask`` with a solid colour or a texture that contrasts with the background."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    color = _contrasting_color(rng, background, spec)
    if rng.random() < spec.texture_prob:
        kind = rng.integers(3)
        if kind == 2:
            pixels = color + rng.normal(0, 24, size=(y1 - y0, x1 - x0, 3))
        else:
            yy, xx = np.mgrid[y0:y1, x0:x1]
            if kind == 0:
                angle = rng.uniform(0, np.pi)
                on = np.floor((xx * np.cos(angle) + yy * np.sin(angle)) / rng.uniform(3, 8)) % 2 == 0
            else:
                cell = rng.integers(3, 9)
                on = (yy // cell + xx // cell) % 2 == 0
            second = _contrasting_color(rng, background, spec)
            pixels = np.where(on[..., None], color, second)
    else:
        pixels = np.broadcast_to(color, (y1 - y0, x1 - x0, 3))
    inside = mask[y0:y1, x0:x1]
    image[y0:y1, x0:x1][inside] = np.clip(pixels[inside], 0, 255).astype(np.uint8)


class _Occlusion:
    """Who owns each pixel, and a check that a new object hides no earlier one too much."""

    def __init__(self, spec: SceneSpec):
        self.spec = spec
        self.owner = np.full((spec.height, spec.width), -1, np.int32)
        self.visible = np.zeros(0, np.int64)  # visible pixels of each placed object
        self.placed = np.zeros(0, np.int64)  # pixels of each object when it was placed

    def fits(self, mask: np.ndarray) -> bool:
        area = int(mask.sum())
        if area < self.spec.min_visible_pixels:
            return False
        hidden = np.bincount(self.owner[mask] + 1, minlength=len(self.visible) + 1)[1:]
        remaining = self.visible - hidden
        return bool(
            np.all(remaining >= (1 - self.spec.max_occlusion) * self.placed)
            and np.all(remaining >= self.spec.min_visible_pixels)
        )

    def add(self, mask: np.ndarray):
        hidden = np.bincount(self.owner[mask] + 1, minlength=len(self.visible) + 1)[1:]
        area = int(mask.sum())
        self.visible = np.append(self.visible - hidden, area)
        self.placed = np.append(self.placed, area)
        self.owner[mask] = len(self.visible) - 1


def render_scene(rng: np.random.Generator, spec: SceneSpec = SceneSpec()) -> tuple[np.ndarray, list[dict]]:
    """Render one scene.

    Returns the RGB image (uint8, HxWx3) and its instances in painting order, each a dict with
    ``category_id``, ``mask`` (bool HxW, the visible pixels), ``bbox`` ([x, y, w, h] of the mask
    in COCO convention), ``area`` (mask pixel count) and ``iscrowd``. A placement that would hide
    more than ``spec.max_occlusion`` of an earlier object is re-sampled, so every painted object is
    annotated. With probability ``spec.crowd_prob`` the scene starts with a cluster of small
    same-class objects annotated as a single ``iscrowd=1`` instance.
    """
    background, image = _render_background(rng, spec)
    occlusion = _Occlusion(spec)
    categories, crowd_flags = [], []

    if rng.random() < spec.crowd_prob:
        category = CATEGORIES[rng.integers(len(CATEGORIES))]
        members = _crowd_masks(rng, category["name"], spec)
        union = np.logical_or.reduce(members)
        if occlusion.fits(union):
            for member in members:
                _paint(rng, image, member, background, spec)
            occlusion.add(union)
            categories.append(category["id"])
            crowd_flags.append(1)

    for _ in range(rng.integers(spec.min_objects, spec.max_objects + 1)):
        for _attempt in range(_PLACEMENT_ATTEMPTS):
            category = CATEGORIES[rng.integers(len(CATEGORIES))]
            mask = _object_mask(rng, category["name"], spec)
            if occlusion.fits(mask):
                _paint(rng, image, mask, background, spec)
                occlusion.add(mask)
                categories.append(category["id"])
                crowd_flags.append(0)
                break

    instances = []
    for index, (category_id, iscrowd) in enumerate(zip(categories, crowd_flags)):
        mask = occlusion.owner == index
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        x0, y0 = int(cols[0]), int(rows[0])
        bbox = [x0, y0, int(cols[-1]) + 1 - x0, int(rows[-1]) + 1 - y0]
        instances.append(
            {"category_id": category_id, "mask": mask, "bbox": bbox, "area": int(mask.sum()), "iscrowd": iscrowd}
        )
    return image, instances
