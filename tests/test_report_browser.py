"""The report page in a real headless browser: Debian's chromium (``make test`` installs it), driven by
playwright, with no sandbox and background networking off. The page must load with no console error and no
failed request, every chart must be shown at its real pixel size, the answer above the evidence, and the
rarely needed columns only when their checkbox is ticked. A screenshot is kept in the test's folder."""

from __future__ import annotations

import functools
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from plugin.report import build_report
from plugin.results.store import RESULTS_FILE
from tests.test_report import RUN_ID, stored, write_power_run, write_run, write_serving_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The reports folder over HTTP on localhost (as a user would open it, and as a file:// page behaves too)."""
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("kind", ["no-power", "power", "serving"])
def test_report_page_loads_cleanly_with_charts_at_their_real_size(tmp_path: Path, served: str, kind: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    extra = 0
    if kind == "power":
        folder, results = write_power_run(tmp_path)
    elif kind == "serving":  # two phase benchmarks, ten serving ones over two datasets: one curve chart each,
        folder, _ = write_serving_run(tmp_path)  # and ShareGPT's two topologies compared in three charts
        results, extra = json.loads((folder / RESULTS_FILE).read_text()), 2 + 3
    else:
        results = stored()
        folder = write_run(tmp_path, results)
    build_report(folder)
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
        for url in (f"{served}/index.html", f"{served}/{RUN_ID}/index.html"):
            response = page.goto(url, wait_until="load")
            assert response is not None and response.ok, url
        answer_top = page.locator("section.answer h2").first.bounding_box()
        evidence_top = page.locator("h2", has_text="Benchmarks").bounding_box()
        more = page.locator("th.more").first  # the benchmarks table's rare columns: hidden until asked for
        hidden_before = not more.is_visible()
        page.locator("#more-columns").check()
        shown_after = more.is_visible()
        sizes = page.eval_on_selector_all(
            "img",
            "images => images.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight,"
            " i.getBoundingClientRect().width, i.getBoundingClientRect().height])",
        )
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert problems == []
    assert answer_top is not None and evidence_top is not None and answer_top["y"] < evidence_top["y"]
    assert hidden_before and shown_after
    assert len(sizes) == 3 + extra + len(results["benchmarks"])
    for src, complete, natural_width, natural_height, width, height in sizes:
        assert complete and natural_width > 0, f"{src} did not load"
        assert (width, height) == (natural_width, natural_height), f"{src} is not shown at its real size"
    assert (tmp_path / "report.png").stat().st_size > 10_000
