"""The README's pictures, made from a running demo: the map page and a notice PDF's first page.

    make demo                                   # leaves the service up on 127.0.0.1:8000
    .venv/bin/pip install 'dustpatrol[docs]'    # pypdfium2, to render the PDF page
    .venv/bin/python docs/screenshots.py [--url http://127.0.0.1:8000] [--demo var/demo]

Needs Chromium at /usr/bin/chromium (Debian: apt-get install chromium). Writes
docs/map.png and docs/notice.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parent


def map_screenshot(url: str, username: str, password: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.goto(f"{url}/map")
            page.fill("input[name=username]", username)
            page.fill("input[name=password]", password)
            page.click("#login-form button[type=submit]")
            page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
            page.locator("label", has_text="航片 imagery").locator("input").check()
            page.wait_for_function(
                "[...document.querySelectorAll('img.imagery')].some(i => i.naturalWidth > 0)",
                timeout=30_000,
            )
            page.locator("label", has_text="footprints").locator("input").uncheck()
            # zoom in on the site with the largest finding, and open its popup
            largest = max(
                page.locator("path.finding").all(),
                key=lambda p: (lambda b: b["width"] * b["height"] if b else 0)(p.bounding_box()),
            )
            box = largest.bounding_box()
            assert box is not None
            centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            for _ in range(2):  # two zoom levels, about the finding
                page.mouse.dblclick(*centre)
                page.wait_for_timeout(800)
                page.keyboard.press("Escape")  # a popup the double click may have opened
            page.wait_for_timeout(2000)  # imagery of the new view
            largest.click(force=True)
            page.wait_for_selector(".leaflet-popup img.evidence", timeout=15_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(out))
        finally:
            browser.close()


def pdf_first_page(pdf: Path, out: Path, width_px: int = 900) -> None:
    try:
        import pypdfium2
    except ImportError:
        sys.exit("rendering the PDF page needs pypdfium2: pip install 'dustpatrol[docs]'")
    document = pypdfium2.PdfDocument(str(pdf))
    page = document[0]
    scale = width_px / page.get_width()
    page.render(scale=scale).to_pil().convert("RGB").save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--demo", type=Path, default=Path("var/demo"))
    parser.add_argument("--username", default="analyst")
    parser.add_argument("--password", default="demo-analyst-2026")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"Chromium is not installed at {CHROMIUM} (Debian: apt-get install chromium)")
    pdfs = sorted(args.demo.glob("notices/*.pdf"))
    if not pdfs:
        sys.exit(f"no notice PDFs under {args.demo}/notices: run `make demo` first")
    map_screenshot(args.url, args.username, args.password, DOCS / "map.png")
    pdf_first_page(pdfs[0], DOCS / "notice.png")
    print(f"wrote {DOCS / 'map.png'} and {DOCS / 'notice.png'} (notice {pdfs[0].name})")


if __name__ == "__main__":
    main()
