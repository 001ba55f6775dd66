"""Deterministic street scenes with exact Cityscapes labels, for the built-in semantic segmentation set.

A scene is painted back to front as polygons, one per annotated object, rasterised as Cityscapes' own
``json2labelImg`` rasterises its annotations (later polygons overwrite earlier ones), and every polygon writes its
class into the label map at the same pixels it colours, so the labels are exact and the polygons are a faithful
``_gtFine_polygons.json``. Classes differ by colour, texture and place the way they do in real street
images (sky on top, road at the bottom converging to a vanishing point, façades with windows, green noisy
crowns, thin grey poles carrying signs, cars and people scaled by their distance), so a segmentation network
learns them. Class names are cityscapesscripts' (``helpers/labels.py``); ids come from its table.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import name2label
from PIL import Image, ImageDraw

__all__ = ["STREET_CLASSES", "StreetSpec", "render_street"]

# The classes a scene can hold (cityscapesscripts names): 16 of the 19 train classes, and "ego vehicle", a void
# label (trainId 255) that real Cityscapes frames show at the bottom.
STREET_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                  "vegetation", "terrain", "sky", "person", "car", "truck", "bus", "bicycle", "ego vehicle")


@dataclass(frozen=True)
class StreetSpec:
    """Size and content knobs of a street scene; probabilities are per scene, sizes relative to the image."""

    height: int = 128
    width: int = 256  # Cityscapes' 1:2 aspect (1024 x 2048)
    max_cars: int = 6
    max_people: int = 6
    max_poles: int = 4
    truck_prob: float = 0.15  # chance a vehicle is a truck (bus: half of that), else a car
    fence_prob: float = 0.5
    wall_prob: float = 0.35
    terrain_prob: float = 0.6
    bicycle_prob: float = 0.3
    ego_vehicle_prob: float = 0.5  # the car's bonnet at the bottom, void in trainIds as in Cityscapes
    noise: float = 4.0  # sensor noise (grey levels, std) added after a light blur

    def __post_init__(self):
        if self.height < 32 or self.width < 64:
            raise ValueError(f"StreetSpec: images must be at least 32x64, got {self.height}x{self.width}")
        for name in ("truck_prob", "fence_prob", "wall_prob", "terrain_prob", "bicycle_prob", "ego_vehicle_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"StreetSpec: {name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("max_cars", "max_people", "max_poles"):
            if getattr(self, name) < 0:
                raise ValueError(f"StreetSpec: {name} must be >= 0, got {getattr(self, name)}")


class _Canvas:
    """The image (float RGB), its labelIds, Cityscapes instanceIds (labelId, or labelId * 1000 + k) and the
    annotation as Cityscapes ``_polygons.json`` objects, all painted together.

    Every annotated object is one polygon with integer corners, rasterised with PIL's ``ImageDraw.polygon`` in
    painting order as cityscapesscripts' ``preparation/json2labelImg.py`` ``createLabelImage`` and
    ``json2instanceImg.py`` ``createInstanceImage`` do (the k-th polygon of a class with instances is instance k),
    so those scripts turn the written json into exactly the written PNGs. Details inside an object (windows, wheels,
    a face) only colour the image.
    """

    def __init__(self, rng: np.random.Generator, spec: StreetSpec):
        self.rng, self.h, self.w = rng, spec.height, spec.width
        self.image = np.zeros((self.h, self.w, 3), np.float32)
        self.label = np.zeros((self.h, self.w), np.uint8)  # 0 = "unlabeled"
        self.instance = np.zeros((self.h, self.w), np.int32)
        self.objects = []
        self.instances_of = {}

    def _rasterize(self, polygon):
        """``(points, (y0, y1, x0, x1), mask)`` of a polygon inside the frame, or None if it misses the image. Drawn
        on the whole frame, as createLabelImage does, so clipping at the border rounds the same way."""
        points = np.round(np.asarray(polygon, np.float64)).astype(np.int64)
        x0, y0 = np.maximum(points.min(axis=0), 0)
        x1, y1 = np.minimum(points.max(axis=0) + 1, (self.w, self.h))
        if x0 >= x1 or y0 >= y1 or len(points) < 3:
            return None
        canvas = Image.new("L", (self.w, self.h), 0)
        ImageDraw.Draw(canvas).polygon([(int(x), int(y)) for x, y in points], fill=1)
        mask = np.asarray(canvas, bool)[y0:y1, x0:x1]
        return (points, (y0, y1, x0, x1), mask) if mask.any() else None

    def fill(self, name: str, polygon, color, texture: str = "flat", contrast: float = 20.0, period: float = 6.0):
        """Paint one object of class ``name``; ``color`` None keeps the image (the object is only annotated).
        Returns its region for ``detail``, or None when it misses the image (then it is not annotated either)."""
        raster = self._rasterize(polygon)
        if raster is None:
            return None
        points, (y0, y1, x0, x1), inside = raster
        label = name2label[name]
        value = label.id
        if label.hasInstances:
            value = label.id * 1000 + self.instances_of.get(name, 0)
            self.instances_of[name] = self.instances_of.get(name, 0) + 1
        if color is not None:
            self.image[y0:y1, x0:x1][inside] = self._texture(texture, color, y0, y1, x0, x1, contrast, period)[inside]
        self.label[y0:y1, x0:x1][inside] = label.id
        self.instance[y0:y1, x0:x1][inside] = value
        self.objects.append({"label": name, "polygon": points.tolist()})
        return (y0, y1, x0, x1), inside

    def detail(self, region, polygon, color, texture: str = "flat", contrast: float = 20.0, period: float = 6.0):
        """Colour the part of ``polygon`` inside an object's region (as ``fill`` returned it); labels stay."""
        raster = self._rasterize(polygon)
        if region is None or raster is None:
            return
        (ry0, ry1, rx0, rx1), owner = region
        _, (y0, y1, x0, x1), inside = raster
        y0, y1, x0, x1 = max(y0, ry0), min(y1, ry1), max(x0, rx0), min(x1, rx1)
        if y0 >= y1 or x0 >= x1:
            return
        full = raster[1]
        inside = inside[y0 - full[0]:y1 - full[0], x0 - full[2]:x1 - full[2]]
        inside = inside & owner[y0 - ry0:y1 - ry0, x0 - rx0:x1 - rx0]
        self.image[y0:y1, x0:x1][inside] = self._texture(texture, color, y0, y1, x0, x1, contrast, period)[inside]

    def _texture(self, kind, color, y0, y1, x0, x1, contrast, period):
        h, w = y1 - y0, x1 - x0
        base = np.broadcast_to(np.asarray(color, np.float32), (h, w, 3))
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        if kind == "flat":
            return base
        if kind == "grain":  # asphalt, per-pixel noise
            return base + self.rng.normal(0, contrast, (h, w, 1)).astype(np.float32)
        if kind == "foliage":  # coarse blotches of light and dark green
            coarse = self.rng.uniform(-1, 1, (h // 3 + 2, w // 3 + 2)).astype(np.float32)
            blotches = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
            return base + contrast * blotches + self.rng.normal(0, contrast / 3, (h, w, 1)).astype(np.float32)
        if kind == "tiles":  # paving: dark joints on a grid
            joints = ((yy % period) < 1) | ((xx % (2 * period)) < 1)
            return base - contrast * joints[..., None]
        if kind == "slats":  # vertical stripes
            return base - contrast * ((xx % period) < period / 2)[..., None]
        if kind == "vertical_gradient":  # sky: lighter towards the horizon
            t = (yy - y0) / max(h - 1, 1)
            return base + contrast * t[..., None]
        raise ValueError(f"unknown texture {kind!r}")


def _ellipse(cx, cy, ax, ay, angle=0.0):
    """An ellipse as a polygon (Cityscapes annotates everything as polygons)."""
    return cv2.ellipse2Poly((int(round(cx)), int(round(cy))), (max(1, int(round(ax))), max(1, int(round(ay)))),
                            int(round(angle)), 0, 360, 10)


def _box(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _jitter(rng, color, amount=18.0):
    return np.clip(np.asarray(color, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def _sky(c: _Canvas, horizon: float):
    rng = c.rng
    color = _jitter(rng, (95, 150, 215), 20) if rng.random() < 0.8 else _jitter(rng, (175, 180, 190), 10)  # overcast
    c.fill("sky", _box(0, 0, c.w, horizon + 1), color, "vertical_gradient", contrast=45)


def _buildings(c: _Canvas, horizon: float):
    rng = c.rng
    x = -rng.uniform(0, 0.1) * c.w
    while x < c.w:
        width = rng.uniform(0.1, 0.28) * c.w
        if rng.random() < 0.15:  # a gap shows the sky
            x += width * 0.6
            continue
        top = rng.uniform(0.03, 0.75) * horizon
        # façades reach the ground; the sidewalks and road are painted over their lower part
        wall = _jitter(rng, rng.choice([(150, 140, 130), (120, 115, 110), (175, 160, 140), (105, 95, 90)]), 20)
        region = c.fill("building", _box(x, top, x + width, c.h), wall, "grain", contrast=4)
        # window grid: darker, bluish panes
        pane = _jitter(rng, (55, 65, 80), 12)
        step_x, step_y = rng.uniform(0.025, 0.05) * c.w, rng.uniform(0.06, 0.1) * c.h
        for wy in np.arange(top + step_y * 0.5, horizon - step_y * 0.5, step_y):
            for wx in np.arange(x + step_x * 0.4, x + width - step_x * 0.6, step_x):
                c.detail(region, _box(wx, wy, wx + step_x * 0.55, wy + step_y * 0.55), pane)
        x += width


def _tree(c: _Canvas, x: float, ground: float, scale: float):
    rng = c.rng
    trunk_w, height = max(1.5, 0.012 * c.w * scale), rng.uniform(0.35, 0.6) * c.h * scale
    c.fill("vegetation", _box(x - trunk_w, ground - height * 0.6, x + trunk_w, ground), _jitter(rng, (85, 65, 45), 10))
    radius = height * rng.uniform(0.3, 0.45)
    crown = _ellipse(x, ground - height + radius * 0.8, radius * rng.uniform(0.9, 1.4), radius, rng.uniform(-20, 20))
    c.fill("vegetation", crown, _jitter(rng, (70, 115, 40), 18), "foliage", contrast=28)


def _edge(vanish_x: float, horizon: float, bottom_x: float, h: int, y: float) -> float:
    """x at row y of the line from the vanishing point (vanish_x, horizon) to (bottom_x, h)."""
    return vanish_x + (bottom_x - vanish_x) * (y - horizon) / (h - horizon)


def _pole(c: _Canvas, x: float, ground: float, scale: float):
    rng = c.rng
    height, half = rng.uniform(0.45, 0.7) * c.h * scale, max(1.0, 0.009 * c.w * scale)
    top = ground - height
    c.fill("pole", _box(x - half, top, x + half, ground), _jitter(rng, (125, 125, 130), 12))
    size = max(3.0, 0.07 * c.h * scale)
    if rng.random() < 0.65:  # a sign: red/blue/yellow/white disc, triangle or square
        color = _jitter(rng, [(200, 30, 30), (30, 70, 190), (235, 200, 20), (230, 230, 230)][rng.integers(4)], 15)
        shape = rng.integers(3)
        cx, cy = x, top + size
        if shape == 0:
            c.fill("traffic sign", _ellipse(cx, cy, size, size), color)
        elif shape == 1:
            c.fill("traffic sign", [(cx, cy - size), (cx + size, cy + size * 0.8), (cx - size, cy + size * 0.8)], color)
        else:
            c.fill("traffic sign", _box(cx - size, cy - size, cx + size, cy + size), color)
    else:  # a traffic light: dark box with one lit lamp
        box_w, box_h = size * 0.8, size * 2.2
        region = c.fill("traffic light", _box(x - box_w, top, x + box_w, top + box_h), _jitter(rng, (35, 35, 30), 8))
        lamp = [(240, 40, 30), (250, 180, 20), (40, 230, 80)][rng.integers(3)]
        c.detail(region, _ellipse(x, top + box_h * (0.2 + 0.3 * rng.integers(3)), box_w * 0.6, box_w * 0.6), lamp)


def _vehicle(c: _Canvas, kind: str, x: float, ground: float, scale: float):
    rng = c.rng
    paint = ([(200, 30, 35), (30, 50, 150), (230, 230, 230), (25, 25, 28), (160, 165, 170), (40, 110, 60),
              (230, 170, 30)][rng.integers(7)])
    paint = _jitter(rng, paint, 12)
    glass = _jitter(rng, (40, 55, 70), 8)
    if kind == "car":
        w, h = 0.3 * c.w * scale, 0.3 * c.w * scale * 0.5
        # the silhouette down to the ground; the underbody between the wheels is dark
        body = [(x - w / 2, ground), (x + w / 2, ground), (x + w / 2, ground - h * 0.6),
                (x + w * 0.3, ground - h * 0.62), (x + w * 0.18, ground - h), (x - w * 0.3, ground - h),
                (x - w * 0.42, ground - h * 0.6), (x - w / 2, ground - h * 0.58)]
        region = c.fill(kind, body, paint)
        c.detail(region, _box(x - w / 2, ground - h * 0.12, x + w / 2, ground + 1), (30, 30, 32))
        c.detail(region, [(x - w * 0.27, ground - h * 0.93), (x + w * 0.15, ground - h * 0.93),
                          (x + w * 0.25, ground - h * 0.64), (x - w * 0.37, ground - h * 0.64)], glass)
    else:
        tall = 1.6 if kind == "truck" else 1.3
        w = (0.42 if kind == "truck" else 0.6) * c.w * scale
        h = 0.3 * c.w * scale * 0.5 * tall * 1.4
        region = c.fill(kind, _box(x - w / 2, ground - h, x + w / 2, ground),
                        paint if kind == "bus" else _jitter(rng, (200, 200, 195), 25))
        c.detail(region, _box(x - w / 2, ground - h * 0.1, x + w / 2, ground + 1), (30, 30, 32))
        if kind == "truck":  # the cab, painted, with a windscreen
            c.detail(region, _box(x + w * 0.22, ground - h * 0.7, x + w / 2, ground - h * 0.1), paint)
            c.detail(region, _box(x + w * 0.3, ground - h * 0.65, x + w * 0.47, ground - h * 0.45), glass)
        else:  # a row of bus windows
            for k in range(6):
                wx = x - w / 2 + w * (0.05 + k * 0.155)
                c.detail(region, _box(wx, ground - h * 0.9, wx + w * 0.12, ground - h * 0.55), glass)
    wheel = max(1.0, 0.1 * w if kind == "car" else 0.07 * w)
    for wx in (x - w * 0.32, x + w * 0.32):
        c.detail(region, _ellipse(wx, ground - wheel, wheel, wheel), (20, 20, 20))


def _person(c: _Canvas, x: float, ground: float, scale: float):
    rng = c.rng
    height = rng.uniform(0.32, 0.4) * c.h * scale
    half = height * 0.13
    clothes = _jitter(rng, [(40, 40, 60), (150, 30, 40), (60, 90, 140), (90, 80, 60), (200, 190, 170)]
                      [rng.integers(5)], 15)
    legs = _jitter(rng, (35, 35, 45), 10)
    g, t = ground, height
    outline = [(x - half * 0.9, g), (x - half * 0.1, g), (x, g - t * 0.5), (x + half * 0.1, g), (x + half * 0.9, g),
               (x + half, g - t * 0.5), (x + half * 1.1, g - t * 0.82), (x + half * 0.4, g - t * 0.83),
               (x + half * 0.7, g - t * 0.9), (x + half * 0.4, g - t * 0.98), (x, g - t),
               (x - half * 0.4, g - t * 0.98), (x - half * 0.7, g - t * 0.9), (x - half * 0.4, g - t * 0.83),
               (x - half * 1.1, g - t * 0.82), (x - half, g - t * 0.5)]
    region = c.fill("person", outline, legs)
    c.detail(region, [(x - half, g - t * 0.48), (x + half, g - t * 0.48), (x + half * 1.1, g - t * 0.82),
                      (x - half * 1.1, g - t * 0.82)], clothes)
    c.detail(region, _box(x - half, g - t, x + half, g - t * 0.82), _jitter(rng, (215, 170, 140), 25))


def _bicycle(c: _Canvas, x: float, ground: float, scale: float):
    """Annotated as one polygon around wheels and frame, as Cityscapes' bicycles are: what shows through the
    wheels is bicycle too."""
    rng = c.rng
    radius = max(2.0, 0.045 * c.h * scale * 2)
    frame = _jitter(rng, (30, 30, 35), 10)
    wheels = [_ellipse(wx, ground - radius, radius, radius) for wx in (x - radius * 1.2, x + radius * 1.2)]
    bar = max(1.0, radius * 0.25)
    tube = [(x - radius * 1.2, ground - radius), (x, ground - radius * 2.2), (x + radius * 1.2, ground - radius),
            (x + radius * 1.2, ground - radius - bar), (x, ground - radius * 2.2 - bar),
            (x - radius * 1.2, ground - radius - bar)]
    hull = cv2.convexHull(np.concatenate([*wheels, np.round(tube).astype(np.int32)]).astype(np.int32))[:, 0]
    region = c.fill("bicycle", hull, None)
    for wheel, wx in zip(wheels, (x - radius * 1.2, x + radius * 1.2)):
        c.detail(region, wheel, frame)
        c.detail(region, _ellipse(wx, ground - radius, radius * 0.65, radius * 0.65), (110, 110, 110))  # spokes
    c.detail(region, tube, _jitter(rng, (170, 30, 30), 40))


def render_street(rng: np.random.Generator, spec: StreetSpec = StreetSpec()):
    """One scene: ``(image uint8 HxWx3 RGB, label_ids uint8 HxW, instance_ids int32 HxW, polygons)``.

    ``label_ids`` are Cityscapes labelIds (cityscapesscripts' table); ``instance_ids`` follow the gtFine
    ``_instanceIds.png`` convention: the labelId for stuff, ``labelId * 1000 + k`` for the k-th object of a class
    with instances (car, truck, bus, person, bicycle); ``polygons`` is the ``_gtFine_polygons.json`` content,
    ``{imgHeight, imgWidth, objects: [{label, polygon: [[x, y], ...]}]}`` in painting order, from which
    cityscapesscripts' json2labelImg / json2instanceImg draw exactly ``label_ids`` and ``instance_ids``.
    """
    c = _Canvas(rng, spec)
    h, w = c.h, c.w
    horizon = rng.uniform(0.36, 0.5) * h
    vanish_x = rng.uniform(0.35, 0.65) * w
    _sky(c, horizon)
    # far ground (seen through gaps between façades): grass
    c.fill("terrain", _box(0, horizon, w, h), _jitter(rng, (120, 160, 70), 20), "foliage", contrast=10)
    _buildings(c, horizon)
    for _ in range(rng.integers(1, 6)):  # trees in the distance, in front of the façades
        _tree(c, rng.uniform(0, w), horizon + 0.1 * (h - horizon), rng.uniform(0.4, 0.7))

    # ground: road between two edges through the vanishing point, sidewalks outside it, terrain/fences beyond
    road_left, road_right = vanish_x - rng.uniform(0.45, 0.8) * w, vanish_x + rng.uniform(0.45, 0.8) * w
    walk = rng.uniform(0.35, 0.7) * w
    walk_left, walk_right = road_left - walk, road_right + walk
    top = horizon + 0.02 * (h - horizon)
    near_vp = 0.015 * w

    def strip(bottom_a, bottom_b):
        return [(_edge(vanish_x, horizon, bottom_a, h, top) - near_vp * np.sign(vanish_x - bottom_a), top),
                (_edge(vanish_x, horizon, bottom_b, h, top) - near_vp * np.sign(vanish_x - bottom_b), top),
                (bottom_b, h), (bottom_a, h)]

    if rng.random() < spec.terrain_prob:  # grass verges beyond the sidewalks
        verge = rng.uniform(0.3, 0.9) * w
        grass = _jitter(rng, (120, 160, 70), 20)
        c.fill("terrain", strip(walk_left - verge, walk_left), grass, "foliage", contrast=10)
        c.fill("terrain", strip(walk_right, walk_right + verge), grass, "foliage", contrast=10)
    paving = _jitter(rng, rng.choice([(185, 175, 180), (160, 150, 160), (195, 180, 170)]), 12)
    period = max(3.0, rng.uniform(0.02, 0.035) * w)
    c.fill("sidewalk", strip(walk_left, road_left), paving, "tiles", contrast=35, period=period)
    c.fill("sidewalk", strip(road_right, walk_right), paving, "tiles", contrast=35, period=period)
    road = c.fill("road", strip(road_left, road_right), _jitter(rng, (85, 82, 88), 12), "grain", contrast=6)
    # dashed centre line: road markings are road
    mark = _jitter(rng, (225, 225, 215), 10)
    for t0 in np.arange(rng.uniform(0, 0.12), 1.0, 0.24):
        t1 = t0 + 0.12
        ya, yb = horizon + (h - horizon) * t0 ** 1.5, horizon + (h - horizon) * min(t1, 1.0) ** 1.5
        half_a, half_b = 0.004 * w + 0.008 * w * t0, 0.004 * w + 0.008 * w * t1
        xa, xb = _edge(vanish_x, horizon, vanish_x, h, ya), _edge(vanish_x, horizon, vanish_x, h, yb)
        c.detail(road, [(xa - half_a, ya), (xa + half_a, ya), (xb + half_b, yb), (xb - half_b, yb)], mark)

    def scale_at(y):  # apparent size of an object standing at row y, 1 at the bottom
        return (y - horizon) / (h - horizon)

    # fence or wall along one sidewalk's outer edge, between two rows
    for name, prob in (("fence", spec.fence_prob), ("wall", spec.wall_prob)):
        if rng.random() < prob:
            side_x = walk_left if rng.random() < 0.5 else walk_right
            y_far = horizon + rng.uniform(0.05, 0.2) * (h - horizon)
            y_near = horizon + rng.uniform(0.45, 0.9) * (h - horizon)
            x_far, x_near = _edge(vanish_x, horizon, side_x, h, y_far), _edge(vanish_x, horizon, side_x, h, y_near)
            tall_far, tall_near = 0.25 * h * scale_at(y_far), 0.25 * h * scale_at(y_near)
            quad = [(x_far, y_far), (x_near, y_near), (x_near, y_near - tall_near), (x_far, y_far - tall_far)]
            if name == "fence":
                c.fill("fence", quad, _jitter(rng, (175, 150, 120), 20), "slats", contrast=60,
                       period=max(3.0, 0.015 * w))
            else:
                c.fill("wall", quad, _jitter(rng, (140, 140, 160), 15), "grain", contrast=5)

    # things standing on the ground, far to near so nearer ones occlude
    things = []
    for _ in range(rng.integers(0, spec.max_poles + 1)):
        y = horizon + rng.uniform(0.1, 0.95) * (h - horizon)
        side = (walk_left + road_left) / 2 if rng.random() < 0.5 else (road_right + walk_right) / 2
        things.append((y, "pole", _edge(vanish_x, horizon, side, h, y)))
    for _ in range(rng.integers(0, 5)):
        y = horizon + rng.uniform(0.15, 0.9) * (h - horizon)
        side = walk_left - 0.1 * w if rng.random() < 0.5 else walk_right + 0.1 * w
        things.append((y, "tree", _edge(vanish_x, horizon, side, h, y)))
    for _ in range(rng.integers(0, spec.max_people + 1)):
        y = horizon + rng.uniform(0.1, 1.0) * (h - horizon)
        fraction = rng.uniform(0.15, 0.85)
        bottom = walk_left + fraction * (road_left - walk_left) if rng.random() < 0.5 else \
            road_right + fraction * (walk_right - road_right)
        things.append((y, "person", _edge(vanish_x, horizon, bottom, h, y)))
    if rng.random() < spec.bicycle_prob:
        y = horizon + rng.uniform(0.2, 0.9) * (h - horizon)
        inset = 0.08 * (road_right - road_left)
        bottom = road_left + inset if rng.random() < 0.5 else road_right - inset
        things.append((y, "bicycle", _edge(vanish_x, horizon, bottom, h, y)))
    for _ in range(rng.integers(0, spec.max_cars + 1)):
        y = horizon + rng.uniform(0.08, 0.8) * (h - horizon)  # nearer, a truck would fill the frame
        u = rng.random()
        kind = "truck" if u < spec.truck_prob else "bus" if u < 1.5 * spec.truck_prob else "car"
        bottom = road_left + rng.uniform(0.2, 0.8) * (road_right - road_left)
        things.append((y, kind, _edge(vanish_x, horizon, bottom, h, y)))
    for y, kind, x in sorted(things, key=lambda thing: thing[0]):
        s = scale_at(y)
        if kind == "pole":
            _pole(c, x, y, s)
        elif kind == "tree":
            _tree(c, x, y, s)
        elif kind == "person":
            _person(c, x, y, s)
        elif kind == "bicycle":
            _bicycle(c, x, y, s)
        else:
            _vehicle(c, kind, x, y, s)

    if rng.random() < spec.ego_vehicle_prob:  # the bonnet: a dark band bulging up from the bottom
        bulge = rng.uniform(0.06, 0.12) * h
        c.fill("ego vehicle", _ellipse(w / 2, h + bulge * 0.6, w * 0.75, bulge * 1.6), _jitter(rng, (30, 30, 35), 8))

    image = cv2.GaussianBlur(c.image, (0, 0), 0.6)
    image = image + rng.normal(0, spec.noise, image.shape).astype(np.float32)
    polygons = {"imgHeight": h, "imgWidth": w, "objects": c.objects}
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), c.label, c.instance, polygons
