"""One interactive chart of a report page as a PNG, drawn by headless chromium from the page on disk (the docs'
screenshots), optionally with the tooltip of its first point showing.

    python tools/report_screenshot.py reports/<run-id>/index.html rate-curves-0 docs/report-cpu.png --hover
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tests.test_report_browser import CHROMIUM, CHROMIUM_ARGS, Visit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page", type=Path, help="a report page, e.g. reports/<run-id>/index.html")
    parser.add_argument("chart", help="the chart's element id: rate-curves-0, pareto-0, timeline-3, ...")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--hover", action="store_true", help="show the tooltip of the chart's first point")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        visit = Visit(browser)
        visit.open(args.page)
        chart = visit.draw(args.chart)
        if args.hover:
            visit.hover_first_point(args.chart)
        chart.screenshot(path=str(args.out))
        browser.close()


if __name__ == "__main__":
    main()
