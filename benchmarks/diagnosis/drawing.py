"""A minimal vector canvas written as PNG (Pillow) and as SVG (text), for charts of many small panels.

The Hoiem charts have a panel per class, 86 on COCO, each with a title and labels: drawn with matplotlib (one Axes
per panel, constrained layout, every text laid out twice for PNG and SVG) they took ~10 s, most of a diagnosis.
Their shapes are simple (polygons, pie wedges, lines, text), so they are recorded here once, in inches with y
pointing down, and written by Pillow (shapes drawn at twice the resolution and averaged down, which antialiases
them; text in matplotlib's DejaVu Sans) and as plain SVG whose text stays text; PNG encoding is most of the cost.
"""
from __future__ import annotations

import importlib.util
import io
import math
from functools import cache
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image, ImageDraw, ImageFont

_SUPERSAMPLE = 2
_LINE_SPACING = 1.2
_ARC_STEP = 3.0  # degrees per polygon edge of a wedge's arc in the PNG


@cache
def _font(size_px: int, bold: bool) -> ImageFont.FreeTypeFont:
    """matplotlib's default font, from its package data (matplotlib is a dependency; nothing is imported)."""
    root = Path(importlib.util.find_spec("matplotlib").submodule_search_locations[0])
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(root / "mpl-data" / "fonts" / "ttf" / name), size_px)


def _wedge_points(center, radius, start, end) -> list:
    steps = max(2, math.ceil(abs(end - start) / _ARC_STEP))
    arc = [math.radians(start + (end - start) * k / steps) for k in range(steps + 1)]
    return [center] + [(center[0] + radius * math.cos(a), center[1] + radius * math.sin(a)) for a in arc]


def _svg_points(points) -> str:
    return "L".join(f"{x * 72:.2f} {y * 72:.2f}" for x, y in points)


class Canvas:
    """Shapes and text in inches (origin top left, y down), written by :meth:`png` and :meth:`svg`.

    Colours are ``#rrggbb``; line widths and font sizes are in points, as in matplotlib.
    """

    def __init__(self, width: float, height: float):
        self.size = (width, height)
        self.items = []

    def polygon(self, points, fill=None, stroke=None, width: float = 0.0) -> None:
        self.items.append(("polygon", [tuple(map(float, p)) for p in points], fill, stroke, width))

    def wedge(self, center, radius: float, start: float, end: float, fill, stroke=None, width: float = 0.0) -> None:
        """A pie wedge from angle ``start`` to ``end`` (degrees, clockwise on the page since y points down)."""
        self.items.append(("wedge", (tuple(center), radius, start, end), fill, stroke, width))

    def line(self, points, color, width: float = 0.8) -> None:
        self.items.append(("line", [tuple(map(float, p)) for p in points], None, color, width))

    def text(self, x: float, y: float, text: str, size: float = 10, ha: str = "center", va: str = "center",
             color: str = "#000000", bold: bool = False, rotation: int = 0) -> None:
        """``ha``: left, center, right; ``va``: top, center, bottom (of the whole text, lines included);
        ``rotation``: 0, or 90 (counter-clockwise, centred on the point)."""
        self.items.append(("text", (x, y, text, size, ha, va, bold, rotation), None, color, 0.0))

    # -- PNG

    def png(self, dpi: int = 100, compress_level: int = 6) -> bytes:
        scale = dpi * _SUPERSAMPLE
        width, height = (max(1, round(v * dpi)) for v in self.size)
        image = Image.new("RGB", (width * _SUPERSAMPLE, height * _SUPERSAMPLE), "white")
        draw = ImageDraw.Draw(image)
        texts = []
        for kind, geometry, fill, stroke, line_width in self.items:
            stroke_px = max(1, round(line_width / 72 * scale)) if stroke and line_width else 0
            if kind == "text":
                texts.append((geometry, stroke))
                continue
            if kind == "wedge":
                (cx, cy), radius, start, end = geometry
                if end - start >= 360:  # a whole pie: no radius drawn
                    box = [(cx - radius) * scale, (cy - radius) * scale, (cx + radius) * scale, (cy + radius) * scale]
                    draw.ellipse(box, fill=fill, outline=stroke if stroke_px else None, width=stroke_px)
                    continue
                points = _wedge_points(*geometry)
            else:
                points = geometry
            points = [(x * scale, y * scale) for x, y in points]
            if kind == "line":
                draw.line(points, fill=stroke, width=stroke_px)
                continue
            draw.polygon(points, fill=fill)
            if stroke_px:
                draw.line(points + points[:1], fill=stroke, width=stroke_px, joint="curve")
        image = image.reduce(_SUPERSAMPLE)  # the average of each 2x2 block: antialiased edges
        draw = ImageDraw.Draw(image)
        for geometry, color in texts:  # text is antialiased by FreeType at the final resolution
            self._png_text(image, draw, dpi, color, *geometry)
        buffer = io.BytesIO()
        image.save(buffer, format="png", compress_level=compress_level)
        return buffer.getvalue()

    @staticmethod
    def _png_text(image, draw, dpi, color, x, y, text, size, ha, va, bold, rotation) -> None:
        font = _font(max(1, round(size / 72 * dpi)), bold)
        lines = text.split("\n")
        line_height = size / 72 * dpi * _LINE_SPACING
        total = line_height * len(lines)
        if rotation:
            # drawn upright on a transparent tile, then turned and pasted
            width = max(round(draw.textlength(line, font=font)) for line in lines) + 4
            tile = Image.new("L", (width, math.ceil(total) + 4), 0)
            tile_draw = ImageDraw.Draw(tile)
            for k, line in enumerate(lines):
                tile_draw.text((width / 2, 2 + line_height * (k + 0.5)), line, font=font, fill=255, anchor="mm")
            tile = tile.rotate(rotation, expand=True)
            left = {"left": 0, "center": tile.width / 2, "right": tile.width}[ha]
            top = {"top": 0, "center": tile.height / 2, "bottom": tile.height}[va]
            image.paste(Image.new("RGB", tile.size, color), (round(x * dpi - left), round(y * dpi - top)), tile)
            return
        top = y * dpi - {"top": 0.0, "center": total / 2, "bottom": total}[va]
        anchor = {"left": "lm", "center": "mm", "right": "rm"}[ha]
        for k, line in enumerate(lines):
            draw.text((x * dpi, top + line_height * (k + 0.5)), line, font=font, fill=color, anchor=anchor)

    # -- SVG

    def svg(self) -> str:
        """The drawing as SVG in points; text stays text (searchable, editable), and the file has no date."""
        width, height = (v * 72 for v in self.size)
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.2f}pt" height="{height:.2f}pt" '
               f'viewBox="0 0 {width:.2f} {height:.2f}" font-family="DejaVu Sans, Bitstream Vera Sans, Arial, '
               'sans-serif">', f'<rect width="{width:.2f}" height="{height:.2f}" fill="#ffffff"/>']
        for kind, geometry, fill, stroke, line_width in self.items:
            paint = f' fill="{fill or "none"}"'
            if stroke and line_width:
                paint += f' stroke="{stroke}" stroke-width="{line_width:g}" stroke-linejoin="round"'
            if kind == "text":
                out.append(self._svg_text(stroke, *geometry))
            elif kind == "wedge":
                (cx, cy), radius, start, end = geometry
                x0, y0 = cx + radius * math.cos(math.radians(start)), cy + radius * math.sin(math.radians(start))
                x1, y1 = cx + radius * math.cos(math.radians(end)), cy + radius * math.sin(math.radians(end))
                r, large = radius * 72, int(end - start > 180)
                if end - start >= 360:  # a full circle: SVG arcs need distinct end points
                    out.append(f'<circle cx="{cx * 72:.2f}" cy="{cy * 72:.2f}" r="{r:.2f}"{paint}/>')
                    continue
                out.append(f'<path d="M{cx * 72:.2f} {cy * 72:.2f}L{x0 * 72:.2f} {y0 * 72:.2f}A{r:.2f} {r:.2f} 0 '
                           f'{large} 1 {x1 * 72:.2f} {y1 * 72:.2f}Z"{paint}/>')
            elif kind == "polygon":
                out.append(f'<path d="M{_svg_points(geometry)}Z"{paint}/>')
            else:
                out.append(f'<path d="M{_svg_points(geometry)}" fill="none" stroke="{stroke}" '
                           f'stroke-width="{line_width:g}"/>')
        out.append("</svg>")
        return "\n".join(out) + "\n"

    @staticmethod
    def _svg_text(color, x, y, text, size, ha, va, bold, rotation) -> str:
        lines = text.split("\n")
        line_height = size * _LINE_SPACING
        total = line_height * len(lines)
        top = -{"top": 0.0, "center": total / 2, "bottom": total}[va]
        anchor = {"left": "start", "center": "middle", "right": "end"}[ha]
        weight = ' font-weight="bold"' if bold else ""
        transform = f' transform="rotate({-rotation})"' if rotation else ""
        spans = "".join(f'<tspan x="0" y="{top + line_height * (k + 0.5) + 0.35 * size:.2f}">{escape(line)}</tspan>'
                        for k, line in enumerate(lines))
        return (f'<g transform="translate({x * 72:.2f} {y * 72:.2f})"><text{transform} font-size="{size:g}" '
                f'fill="{color}" text-anchor="{anchor}"{weight}>{spans}</text></g>')
