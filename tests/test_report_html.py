"""The HTML report as a reader sees it: rendered by headless Chromium (Debian's chromium and chromium-driver, which
`make test` and .ci/run install), checked for the table cells, decoded images, working links and no network use.

The screenshot of the rendered page is kept at $TMPDIR/transferlab-report-screenshot.png (its path is printed),
the page itself beside it (.html), for a person to look at."""
import shutil
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.diagnosis.charts import plot_tide
from benchmarks.diagnosis.tide import MAIN_ERRORS, SPECIAL_ERRORS
from tests.report_store import make_store
from tools.report import main as report_main

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOT = Path(tempfile.gettempdir()) / "transferlab-report-screenshot.png"


@pytest.fixture(scope="module")
def browser():
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: the HTML report test needs Debian's browser, "
                    "`sudo apt-get install chromium chromium-driver` (make test does it when run as root)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: install the test extra, pip install -e '.[test]'")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--host-resolver-rules=MAP * ~NOTFOUND"):  # no name resolves
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("html_report")
    db = make_store(root / "results.db", run_root=root / "runs")
    run = root / "runs" / "voc_mocov2_s2"
    plot_tide({run.name: {"AP50": 83.0, "AP": 57.0, "main": {t: 1.0 + i for i, t in enumerate(MAIN_ERRORS)},
                          "special": {t: 3.0 for t in SPECIAL_ERRORS}}}, run / "tide_bbox")
    Image.new("RGB", (320, 200), "#56B4E9").save(run / "hoiem_pies_bbox.png")
    out = root / "report" / "report.html"
    out.parent.mkdir()
    assert report_main(["--db", str(db), "--html", str(out), "--baseline", "sup/last"]) == 0
    return out


def _cells(driver, table_id):
    rows = driver.find_elements("xpath", f"//h3[@id='{table_id}']/following-sibling::div[1]//tbody/tr")
    return {row.find_element("css selector", "td.row").text: row.find_elements("css selector", "td")[1:]
            for row in rows}


def test_report_renders_in_chromium(browser, report, capsys):
    html = report.read_text()
    assert "<script" not in html and "<link" not in html and 'src="http' not in html
    browser.get(report.as_uri())
    assert browser.title == "transferlab report"

    moco2 = _cells(browser, "moco_table2")
    assert list(moco2) == ["scratch", "sup/last", "mocov2/last"]
    ap50 = moco2["mocov2/last"][0]
    assert ap50.text.replace("\n", "").startswith("83.0 ± 1.0(+1.8)3")
    delta = ap50.find_element("css selector", ".delta")
    assert delta.text == "(+1.8)" and delta.value_of_css_property("color") == "rgba(26, 127, 55, 1)"
    assert moco2["scratch"][0].find_element("css selector", ".delta").value_of_css_property("color") == \
        "rgba(198, 40, 40, 1)"
    assert moco2["sup/last"][0].text.replace("\n", "") == "81.2 ± 1.33"
    moco5 = _cells(browser, "moco_table5")
    assert [cell.text for cell in moco5["sup/last"][:6]] == ["–"] * 6  # no R50-FPN run: missing, not filled

    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.src.slice(0, 22)])")
    alts = [alt for alt, *_ in images]
    assert "tide_bbox of voc_mocov2_s2" in alts and "hoiem_pies_bbox of voc_mocov2_s2" in alts
    assert "label-budget and utility curves finetune" in alts and any(alt.startswith("comparison") for alt in alts)
    broken = [alt for alt, complete, width, _ in images if not (complete and width > 0)]
    assert not broken, f"images that did not decode: {broken}"
    assert {src for *_, src in images} == {"data:image/png;base64,"}
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'))")
    assert resources == []  # nothing fetched: the page is self-contained

    links = browser.execute_script("return Array.from(document.querySelectorAll('a[href$=\"config.yaml\"]'))"
                                   ".map(a => a.href)")
    assert len(links) == 9 and all(link.startswith("file:///") for link in links)
    assert all(Path(link[len("file://"):]).read_text() == "TASK: voc_fasterrcnn\n" for link in links)
    utility_rows = browser.find_elements("css selector", "table.utility tbody tr")
    assert [row.text.split()[-1] for row in utility_rows] == ["2.16", "2.16", "0.00"]

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, height)
    browser.save_screenshot(str(SCREENSHOT))
    with Image.open(SCREENSHOT) as shot:
        assert shot.size[0] == 1280 and shot.size[1] > 2000
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    assert browser.execute_script("return getComputedStyle(document.querySelector('nav')).display") == "none"
    with capsys.disabled():
        print(f"\nHTML report screenshot: {SCREENSHOT}")
    shutil.copy(report, SCREENSHOT.with_suffix(".html"))
