"""The README's picture of the web app: `fetalbrainseg serve` on the CC0 sample stack, segmented
in headless Chromium (Debian's /usr/bin/chromium), then the largest-brain slice shown.

    python -m experiments.web_app_screenshot [-o docs/results/web_app.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from experiments.web_server import launch_chromium, running_server

REPO_ROOT = Path(__file__).resolve().parents[1]

SAMPLE = REPO_ROOT.parent / "shared" / "data" / "samples" / "f0832s1_fetus_03.nii.gz"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=REPO_ROOT / "docs" / "results" / "web_app.png")
    parser.add_argument("--stack", type=Path, default=SAMPLE)
    args = parser.parse_args()
    out_dir = Path(tempfile.mkdtemp(prefix="fetalbrainseg-screenshot-"))
    with running_server([args.stack], out_dir, log_path=out_dir / "serve.log") as (url, _), sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.wait_for_selector("#fbs-stack", timeout=60_000)
        page.locator("#fbs-stack").locator("xpath=ancestor::div[contains(@class, 'v-field ')][1]").click()
        page.get_by_text(args.stack.name).last.click()
        page.wait_for_function("document.querySelector('#fbs-status').textContent.includes('loaded')")
        page.click("#fbs-segment")
        page.wait_for_function(
            "document.querySelector('#fbs-status').textContent.trim().startsWith('Done')", timeout=300_000
        )
        areas = [float(row.split("\t")[1]) for row in page.locator("#fbs-slices tbody tr").all_inner_texts()]
        page.locator("#fbs-slices tbody tr").nth(areas.index(max(areas))).click()
        time.sleep(2)  # the view's image arrives over the websocket
        args.output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.output))
        browser.close()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
