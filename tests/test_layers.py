"""The stage order, read from the code: every import of ``plugin/`` and ``proxy/`` (those inside functions too) goes
from a later stage to an earlier one or stays inside its stage, never the other way, and no import cycle joins two
modules or two stage packages. docs/architecture.md draws the same order.

Stages, earliest first (a stage may import its own modules and those of earlier stages only; stages of one rank
import none of each other):

0. foundation: errors, clock, option values and their parsers, Prometheus text parsing, and the plain records
   every stage shares (``plugin.records``: requests, workloads, GPU windows, topologies, typed results)
1. options: the options and ini keys, resolved into one frozen ``Settings``
2. serving, load, power: the three sides of a benchmark, each on its own
3. dvfs: sets the clocks that power measures (it loads NVML through the power stage)
4. measurement: the runner and the ``Measurement`` it hands on
5. analysis
6. results: the store, merging and checking stored runs
7. report: pages from stored results
8. pytest glue (hooks, fixtures, terminal, the run's session, reanalyse): may import everything

``proxy/`` is a program of its own (``python -m proxy``): it imports no plugin module and none imports it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STAGES: tuple[tuple[str, int, tuple[str, ...]], ...] = (
    (
        "foundation",
        0,
        (
            "plugin.errors",
            "plugin.clock",
            "plugin.option_values",
            "plugin.prometheus_text",
            "plugin.records",
        ),
    ),
    ("options", 1, ("plugin.options",)),
    ("serving", 2, ("plugin.serving",)),
    ("load", 2, ("plugin.load",)),
    ("power", 2, ("plugin.power",)),
    ("dvfs", 3, ("plugin.dvfs",)),
    ("measurement", 4, ("plugin.measurement", "plugin.runner")),
    ("analysis", 5, ("plugin.analysis",)),
    ("results", 6, ("plugin.results",)),
    ("report", 7, ("plugin.report",)),
    (
        "pytest glue",
        8,
        (
            "plugin",  # the package's __init__
            "plugin.plugin",
            "plugin.hookspec",
            "plugin.fixtures",
            "plugin.power_sources",
            "plugin.gpu_roles",
            "plugin.idle_baselines",
            "plugin.benchmark_load",
            "plugin.deploy_settings",
            "plugin.outcome",
            "plugin.capacity_run",
            "plugin.session",
            "plugin.progress",
            "plugin.terminal",
            "plugin.terminal_cost",
            "plugin.reanalyse",
        ),
    ),
    ("proxy", 2, ("proxy",)),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {
    module_name(path): path for package in ("plugin", "proxy") for path in sorted((ROOT / package).rglob("*.py"))
}


def imports_of(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every module of ours that ``name`` imports, with the line, at module level or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            # ``from plugin.serving import prometheus`` imports a module; ``from plugin.power import Sampler`` its
            # package's __init__
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # ``import plugin.power.nvml``: the deepest module of ours
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node.lineno


IMPORTS: dict[tuple[str, str], int] = {
    (name, target): line for name, path in MODULES.items() for target, line in imports_of(name, path)
}
"""(importer, imported) -> the line of the import."""


def stage_of(module: str) -> tuple[str, int]:
    """The stage whose longest prefix names the module."""
    found = [
        (len(prefix), stage, rank)
        for stage, rank, prefixes in STAGES
        for prefix in prefixes
        if module == prefix or (prefix != "plugin" and module.startswith(prefix + "."))  # "plugin": its __init__
    ]
    if not found:
        raise LookupError(module)
    _, stage, rank = max(found)
    return stage, rank


def where(importer: str, imported: str) -> str:
    return f"{MODULES[importer].relative_to(ROOT)}:{IMPORTS[importer, imported]} imports {imported}"


def a_cycle(edges: Iterable[tuple[str, str]]) -> list[str]:
    """One cycle of the graph, as its nodes with the first repeated at the end; empty when there is none."""
    graph: dict[str, set[str]] = {}
    for importer, imported in edges:
        graph.setdefault(importer, set()).add(imported)
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as error:
        return list(reversed(error.args[1]))  # graphlib lists it against the edges' direction
    return []


def test_every_module_has_a_stage() -> None:
    unplaced = [module for module in MODULES if not _placed(module)]
    assert not unplaced, f"add these modules to a stage of STAGES in tests/test_layers.py: {unplaced}"


def _placed(module: str) -> bool:
    try:
        stage_of(module)
    except LookupError:
        return False
    return True


def test_imports_go_to_earlier_stages_only() -> None:
    wrong = []
    for importer, imported in IMPORTS:
        (stage, rank), (other, other_rank) = stage_of(importer), stage_of(imported)
        if stage != other and ("proxy" in (stage, other) or rank <= other_rank):
            wrong.append(f"{where(importer, imported)}: stage {stage} ({rank}) may not import {other} ({other_rank})")
    assert not wrong, "imports against the stage order:\n" + "\n".join(wrong)


def test_no_module_import_cycle() -> None:
    cycle = a_cycle(IMPORTS)
    steps = [where(a, b) for a, b in zip(cycle, cycle[1:], strict=False)]
    assert not cycle, "modules that import each other:\n" + "\n".join(steps)


def stage_package(module: str) -> str:
    """``plugin.analysis.stats`` -> ``plugin.analysis``; a module at the top of plugin/ is a package of its own."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (ROOT / Path(*parts)).is_dir() else module


def test_no_stage_package_cycle() -> None:
    via: dict[tuple[str, str], str] = {}
    for importer, imported in IMPORTS:
        a, b = stage_package(importer), stage_package(imported)
        if a != b:
            via.setdefault((a, b), where(importer, imported))
    cycle = a_cycle(via)
    steps = [via[a, b] for a, b in zip(cycle, cycle[1:], strict=False)]
    assert not cycle, "stage packages that import each other:\n" + "\n".join(steps)
