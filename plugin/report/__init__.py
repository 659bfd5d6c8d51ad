"""The report: charts and HTML pages made from a run folder's files only (``results.json``, the request JSONL
files and the power CSVs), so that a run copied from a GPU machine can be viewed anywhere.
``python -m plugin.report reports/<run-id>`` rebuilds it;
``python -m plugin.report compare RUN_A RUN_B [...]`` compares runs (``plugin.report.compare_runs``).

matplotlib, Plotly, pandas and Jinja2 are imported by the modules of this package, never by ``plugin.plugin`` at
import.
"""

from plugin.report.build import build_report

__all__ = ["build_report"]
