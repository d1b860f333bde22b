"""The HTML report in a real browser: Debian's Chromium, headless, driven by Playwright. The page must load without
JavaScript errors, draw every figure it declares, and its screenshot must show plots, not a blank page.

`make test` installs Chromium when it is missing. Without it the test skips, except under CI (the ``CI`` variable
set), where a missing browser means the test setup is broken: it fails."""

import os
import shutil
import time

import matplotlib.image
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import sync_playwright

from adamlab.reports import write_report

CHROMIUM = shutil.which("chromium")  # Debian puts it in /usr/bin
# No first-run work, no background traffic: the page is a file and must need nothing else.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ALL_PLOTS_DRAWN = """() => {
    const plots = [...document.querySelectorAll('.js-plotly-plot')];
    return plots.length === Number(document.body.dataset.figures) && plots.every(plot =>
        plot.querySelector('.main-svg') !== null && plot.data.length > 0
        && plot.querySelectorAll('.trace').length >= plot.data.length);
}"""
PLOT_BOXES = """[...document.querySelectorAll('.js-plotly-plot')].map(plot => {
    const box = plot.getBoundingClientRect();
    return [box.left + scrollX, box.top + scrollY, box.width, box.height];
})"""


@pytest.fixture
def chromium():
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing under CI: the test setup (make test) must install Debian's chromium")
        pytest.skip("Chromium is not installed (apt-get install chromium, or run make test)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_the_report_renders_in_chromium(study_dir, chromium, tmp_path):
    report = write_report(study_dir)
    started = time.perf_counter()
    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda message: errors.append(f"console: {message.text}") if message.type == "error" else None)
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report.html.as_uri(), wait_until="load")
    try:
        page.wait_for_function(ALL_PLOTS_DRAWN, timeout=20_000)
    except PlaywrightTimeoutError:
        pytest.fail(f"the plots were not all drawn; JavaScript errors: {errors}")
    declared = int(page.evaluate("document.body.dataset.figures"))
    boxes = page.evaluate(PLOT_BOXES)
    screenshot = tmp_path / "report.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"report rendered and captured in {time.perf_counter() - started:.1f}s")

    assert errors == []
    assert requests == [report.html.as_uri()], "the page fetched nothing but itself"
    assert declared == len(boxes) == 7
    pixels = matplotlib.image.imread(screenshot)[..., :3]
    assert pixels.shape[1] == 1400 and pixels.shape[0] > 2000  # the whole page: header, table, seven figures
    assert (pixels < 0.9).any(axis=-1).mean() > 0.03, "the screenshot is nearly blank"
    # Text, axes and grid lines are grey; traces are coloured. Each plot's part of the screenshot must hold some.
    coloured = pixels.max(axis=-1) - pixels.min(axis=-1) > 0.3
    for left, top, width, height in boxes:
        assert width > 300 and height > 300
        assert coloured[round(top):round(top + height), round(left):round(left + width)].sum() > 100, \
            f"the plot at ({left:.0f}, {top:.0f}) shows no traces"
