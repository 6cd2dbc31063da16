"""The README's picture of the web app: `fetalbrainseg serve` on the CC0 sample stack, segmented
in headless Chromium (Debian's /usr/bin/chromium), then the largest-brain slice shown.

    python scripts/web_app_screenshot.py [-o docs/results/web_app.png]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT.parent / "shared" / "data" / "samples" / "f0832s1_fetus_03.nii.gz"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=REPO_ROOT / "docs" / "results" / "web_app.png")
    parser.add_argument("--stack", type=Path, default=SAMPLE)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out_dir = Path("/tmp") / f"fetalbrainseg-screenshot-{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "FetalBrainSegLib",
            "serve",
            str(args.stack),
            "-o",
            str(out_dir),
            "--port",
            str(port),
            "--device",
            "cpu",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
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
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
