"""Interactive charts on the report pages: Plotly figures (hover for values, zoom, click the legend to toggle a
series) drawn by plotly.js from a copy in the run folder, so a page works with no network. Plotly is a well-kept
library whose Python package ships its own offline bundle; the page draws each chart only when it scrolls into view,
so a run of many benchmarks opens quickly. A chart with nothing to draw is one line saying why."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from markupsafe import Markup

PLOTLY_JS = "plotly.min.js"
"""plotly.js, written next to the run's page (``write_plotly_js``) and loaded by a relative ``<script src>``."""
PLOT_CONFIG = {
    "displaylogo": False,
    "showSendToCloud": False,
    "modeBarButtonsToRemove": ["select2d", "lasso2d"],
    "responsive": True,
}
"""No link or button to plotly's cloud (the page stays offline), no selection tools (nothing uses a selection),
and the chart follows the page's width."""
PANEL_TEXT_CHARS = 50
"""Where the line saying why a panel is empty wraps, so it stays inside a panel half the chart's width."""
TEMPLATE = "plotly_white"
"""The look of every chart; the page carries it once (``template_json``), not once per chart."""


@dataclass(frozen=True)
class Chart:
    """One chart of a page: its figure, or why it has none (``missing``: one line, shown instead)."""

    id: str
    """The page element's id: unique on the page, used by the browser tests."""
    title: str
    figure: go.Figure | None = None
    missing: str | None = None

    @property
    def height_px(self) -> int:
        return int(self.figure.layout.height or 450) if self.figure is not None else 0

    @property
    def spec(self) -> Markup:
        """The figure without its template (``template_json``) as JSON for a ``<script type="application/json">``."""
        assert self.figure is not None, "a chart without a figure has no spec"
        spec = json.loads(self.figure.to_json(validate=False))
        spec["layout"].pop("template", None)
        return script_json(spec)


def template_json() -> Markup:
    """The charts' shared template, which the page's loader puts into each figure's layout."""
    return script_json(pio.templates[TEMPLATE].to_plotly_json())


def script_json(value: Any) -> Markup:
    """JSON to sit in a ``<script>`` element: ``<``, ``>`` and ``&`` escaped so a run's strings (benchmark names)
    cannot close the element."""
    text = json.dumps(value, separators=(",", ":"))
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def figure(title: str, height_px: int) -> go.Figure:
    """An empty figure in the house look: white, the legend on the right, hover for every series at the cursor's x."""
    fig = go.Figure()
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 15}},
        template=TEMPLATE,
        height=height_px,
        width=None,
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        hoverlabel={"namelength": -1},
    )
    return fig


def say_why(fig: go.Figure, why: str, xref: str = "x", yref: str = "y") -> None:
    """A panel with nothing to draw says why in its middle, and shows no axis that would suggest a zero."""
    x_axis, y_axis = xref.replace("x", "xaxis"), yref.replace("y", "yaxis")
    middle = [sum(fig.layout[axis].domain or (0.0, 1.0)) / 2 for axis in (x_axis, y_axis)]
    text = "<br>".join(textwrap.wrap(why, PANEL_TEXT_CHARS))
    fig.add_annotation(  # in the paper's coordinates: plotly.js places none on an axis that draws no trace
        text=text, xref="paper", yref="paper", x=middle[0], y=middle[1], showarrow=False,
        font={"color": "dimgray", "size": 13},
    )  # fmt: skip
    fig.update_layout({x_axis: {"visible": False}, y_axis: {"visible": False}})


def write_plotly_js(folder: Path) -> Path:
    """plotly.js from the installed plotly package, once per run folder (kept when it is already that version)."""
    from plotly.offline import get_plotlyjs

    path = folder / PLOTLY_JS
    script = get_plotlyjs()
    if not path.is_file() or path.stat().st_size != len(script.encode()):
        path.write_text(script, encoding="utf-8")
    return path
