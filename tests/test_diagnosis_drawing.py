"""The canvas the diagnosis charts are drawn on: PNG pixels where the shapes are, SVG that parses and keeps text."""
import io
from xml.etree import ElementTree

import pytest
from PIL import Image

from benchmarks.diagnosis.charts import _tick_labels, _ticks
from benchmarks.diagnosis.drawing import Canvas

SVG = "{http://www.w3.org/2000/svg}"


def drawing() -> Canvas:
    canvas = Canvas(2.0, 1.0)
    canvas.polygon([(0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9)], "#D55E00", "#333333", 0.8)
    canvas.wedge((1.5, 0.5), 0.4, -90.0, 0.0, "#0072B2", "#ffffff", 1.0)  # the quarter from 12 to 3 o'clock
    canvas.wedge((1.5, 0.5), 0.1, 0.0, 360.0, "#009E73")
    canvas.line([(0.0, 0.99), (2.0, 0.99)], "#000000")
    canvas.text(0.5, 0.5, "a < b & c\nsecond line", size=8)
    canvas.text(1.9, 0.5, "rotated", size=8, rotation=90)
    return canvas


def test_png_has_the_shapes_where_they_were_drawn():
    with Image.open(io.BytesIO(drawing().png(dpi=100))) as image:
        assert image.size == (200, 100)
        pixel = image.convert("RGB").getpixel
        assert pixel((15, 15)) == (0xD5, 0x5E, 0x00)  # inside the rectangle, away from the text
        assert pixel((165, 25)) == (0x00, 0x72, 0xB2)  # in the quarter wedge, up and right of its centre
        assert pixel((135, 75)) == (255, 255, 255)  # the other quarters stay empty
        assert pixel((150, 50)) == (0x00, 0x9E, 0x73)  # the whole small circle


def test_svg_parses_and_keeps_text_as_text():
    root = ElementTree.fromstring(drawing().svg())
    assert root.get("width") == "144.00pt" and root.get("viewBox") == "0 0 144.00 72.00"
    assert [t.text for t in root.iter(f"{SVG}tspan")] == ["a < b & c", "second line", "rotated"]
    assert len(root.findall(f".//{SVG}path")) == 3 and len(root.findall(f".//{SVG}circle")) == 1
    arc = root.findall(f".//{SVG}path")[1].get("d")
    assert arc.startswith("M108.00 36.00L108.00 7.20A28.80 28.80 0 0 1 136.80 36.00")


@pytest.mark.parametrize("limit, labels", [
    (5, ["0", "1", "2", "3", "4", "5"]),
    (15, ["0", "2", "4", "6", "8", "10", "12", "14"]),
    (20, ["0.0", "2.5", "5.0", "7.5", "10.0", "12.5", "15.0", "17.5", "20.0"]),
    (100, ["0", "20", "40", "60", "80", "100"]),
])
def test_axis_ticks_are_matplotlibs(limit, labels):
    assert _tick_labels(_ticks(limit)) == labels
