"""The README's screenshot of the explorer: the flagship run, its blast radius and the probes of one
grid cell, rendered by headless Chromium.

    python scripts/explorer_screenshot.py                 # writes docs/figures/explorer.png
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from editscope.explorer import RunCatalog, create_app, start_in_thread

ROOT = Path(__file__).resolve().parents[1]
FLAGSHIP = ROOT / "docs" / "studies" / "runs" / "two-plus-two.sqlite.xz"
OUT = ROOT / "docs" / "figures" / "explorer.png"


def main() -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        sys.exit("needs Chromium (apt-get install chromium)")
    catalog = RunCatalog([FLAGSHIP])
    catalog.load_all()
    srv = start_in_thread(create_app(catalog, None))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(srv.url + "/#run=two-plus-two")
            page.wait_for_selector("#table-main")
            page.evaluate("document.querySelector('#summary-box').open = false")
            page.select_option("#grid-method", "rome")
            page.wait_for_selector("canvas.grid[data-method='rome'][data-op='+']")
            page.select_option("#grid-vs", "alphaedit")
            page.wait_for_selector("canvas.grid[data-method='alphaedit'][data-op='*']")
            box = page.locator("canvas.grid[data-method='rome'][data-op='+']").bounding_box()
            n = 100
            page.mouse.click(box["x"] + 2.5 / n * box["width"], box["y"] + (1 - 3.5 / n) * box["height"])
            page.wait_for_function("document.querySelector('#cell-text').textContent === '3+2='")
            page.select_option("#probe-form select[name=vs]", "alphaedit")
            page.wait_for_function("document.querySelector('#page-info').textContent.includes('compared with')")
            page.locator("#grid-box summary").scroll_into_view_if_needed()
            page.screenshot(path=str(OUT), clip={"x": 0, "y": 0, "width": 1400, "height": 1100}, full_page=True)
            browser.close()
    finally:
        srv.stop()
        catalog.close()
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
