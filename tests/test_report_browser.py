"""The report pages in a real headless browser: Debian's chromium (``make test`` installs it), driven by
playwright, with no sandbox and background networking off, opened from disk (``file://``) as a user opens them.
Every request the page makes is logged, and any other than ``file://`` is refused and fails the test: the charts
must work with the network off. A page must load with no console error, every PNG chart shown at its real pixel
size and every interactive chart drawn, the answer above the evidence, the rarely needed columns only
when their checkbox is ticked; hovering a chart's point shows its values, and a timeline shows its
power windows' edges. A screenshot is kept in the test's folder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plugin.report import build_report
from plugin.report.timeline import WINDOW_EDGES
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
LOCAL = ("file://", "data:")
"""What a page may load: its own files and inline data."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: `make test` installs it (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


class Visit:
    """One page open in the browser, with every console error, page error and request kept as it happens; a
    request off this machine is aborted (and kept, so the test fails)."""

    def __init__(self, browser: Any) -> None:
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1300, "height": 900})
        self.page.on("console", lambda message: self.problems.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.problems.append(str(error)))
        self.page.on("requestfailed", lambda request: self.problems.append(f"failed: {request.url}"))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.route(
            "**/*", lambda route: route.continue_() if route.request.url.startswith(LOCAL) else route.abort()
        )

    def open(self, page: Path) -> None:
        response = self.page.goto(page.resolve().as_uri(), wait_until="load")
        assert response is not None and response.ok, page

    def draw(self, chart_id: str) -> Any:
        """Scroll the chart into view (the page draws it then) and wait until it is drawn; its locator."""
        chart = self.page.locator(f"#{chart_id}")
        chart.scroll_into_view_if_needed()
        self.page.wait_for_selector(f"#{chart_id}[data-drawn] .main-svg", state="attached", timeout=10_000)
        return chart

    def draw_every_chart(self) -> list[str]:
        ids: list[str] = self.page.eval_on_selector_all("div.chart", "divs => divs.map(d => d.id)")
        for chart_id in ids:
            self.draw(chart_id)
        return ids

    def hover_first_point(self, chart_id: str) -> str:
        """Move the mouse onto the chart's first point (plotly hovers on moves, not on a jump) and return the text
        of the tooltip that appears."""
        point = self.draw(chart_id).locator(".scatterlayer .trace .points path").first
        point.scroll_into_view_if_needed()
        box = point.bounding_box()
        assert box is not None, f"{chart_id} has no point to hover"
        self.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)
        tooltip = self.page.locator(f"#{chart_id} .hoverlayer .hovertext").first
        tooltip.wait_for(state="visible", timeout=5_000)
        return str(tooltip.text_content() or "")

    def offsite(self) -> list[str]:
        return [url for url in self.requests if not url.startswith(LOCAL)]


@pytest.mark.parametrize("kind", ["no-power", "power", "serving"])
def test_report_page_loads_offline_cleanly_with_every_chart(tmp_path: Path, browser: Any, kind: str) -> None:
    if kind == "power":
        folder, results = write_power_run(tmp_path)
    elif kind == "serving":  # two phase benchmarks, ten serving ones over two datasets
        folder, _ = write_serving_run(tmp_path)
        results = json.loads((folder / RESULTS_FILE).read_text())
    else:
        results = stored()
        folder = write_run(tmp_path, results)
    build_report(folder)
    visit = Visit(browser)
    visit.open(tmp_path / "index.html")
    visit.open(tmp_path / RUN_ID / "index.html")
    answer_top = visit.page.locator("section.answer h2").first.bounding_box()
    evidence_top = visit.page.locator("h2", has_text="Benchmarks").bounding_box()
    more = visit.page.locator("th.more").first  # the benchmarks table's rare columns: hidden until asked for
    hidden_before = not more.is_visible()
    visit.page.locator("#more-columns").check()
    shown_after = more.is_visible()
    drawn = visit.draw_every_chart()
    sizes = visit.page.eval_on_selector_all(
        "img",
        "images => images.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight,"
        " i.getBoundingClientRect().width, i.getBoundingClientRect().height])",
    )
    cloud = visit.page.locator('.modebar-btn[data-title="Share chart..."]').count()  # it would upload the chart
    visit.page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    visit.page.close()
    assert visit.problems == [] and visit.offsite() == [] and cloud == 0
    assert any(url.endswith("/plotly.min.js") for url in visit.requests)  # the copy beside the page
    assert {f"timeline-{index}" for index in range(len(results["benchmarks"]))} <= set(drawn)
    assert kind != "serving" or {"rate-curves-0", "rate-curves-1"} <= set(drawn)
    assert len(sizes) == 3  # the overview's PNGs
    assert answer_top is not None and evidence_top is not None and answer_top["y"] < evidence_top["y"]
    assert hidden_before and shown_after
    for src, complete, natural_width, natural_height, width, height in sizes:
        assert complete and natural_width > 0, f"{src} did not load"
        assert (width, height) == (natural_width, natural_height), f"{src} is not shown at its real size"
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_hovering_a_point_shows_its_values(tmp_path: Path, browser: Any) -> None:
    folder, benchmarks = write_serving_run(tmp_path)
    visit = Visit(browser)
    visit.open(build_report(folder))
    text = visit.hover_first_point("rate-curves-0")
    visit.page.close()
    assert "req/s" in text and any(benchmark.name in text for benchmark in benchmarks), text
    assert visit.problems == [] and visit.offsite() == []


def test_the_timeline_shows_the_power_windows_edges(tmp_path: Path, browser: Any) -> None:
    folder, results = write_power_run(tmp_path)
    visit = Visit(browser)
    visit.open(build_report(folder))
    timeline = visit.draw("timeline-0")
    edges = timeline.locator(".shapelayer path").count()
    labels = timeline.locator(".shapelayer text, .shapelayer tspan").all_text_contents()
    legend = timeline.locator(".legend").text_content() or ""
    visit.page.close()
    rounds = [window["round"] for window in results["benchmarks"][0]["power"]["windows"]]
    assert edges == 2 * len(rounds)
    assert {f"round {number} {edge}" for number in rounds for edge in ("start", "end")} <= set(labels)
    assert WINDOW_EDGES in legend and "requests in prefill" in legend and "requests in decode" in legend
    assert visit.problems == [] and visit.offsite() == []
