"""Progress a person can follow while a benchmark runs (servers loading, requests done), written through pytest's
terminal reporter past output capture, as pytest's live logging does; silent under ``-q``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import pytest

NON_TTY_STEPS = 10
"""Without a terminal to redraw, the request counter prints a line at every tenth of the way."""


class Terminal(Protocol):
    """The part of pytest's ``TerminalReporter`` that progress uses."""

    def write(self, content: str, *, flush: bool = False, **markup: bool) -> None: ...
    def write_line(self, line: str, **markup: bool) -> None: ...
    def rewrite(self, line: str, **markup: bool) -> None: ...
    def ensure_newline(self) -> None: ...


class Progress:
    """Lines (``say``, and ``detail`` under ``-v``) and one live request counter (``requests`` ... ``end``)."""

    def __init__(self, terminal: Terminal | None, capture: Any, verbosity: int, live: bool) -> None:
        self._terminal = terminal if verbosity >= 0 else None
        self._capture = capture
        self._verbosity = verbosity
        self._live = live  # a TTY: the counter is redrawn in place
        self._counter_open = False  # a live counter line without its newline yet
        self._last_step = -1

    @classmethod
    def from_config(cls, config: pytest.Config) -> Progress:
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        live = bool(terminal is not None and terminal.isatty())
        return cls(terminal, capture, config.get_verbosity(), live)

    def say(self, text: str) -> None:
        """A line, shown unless ``-q``."""
        if self._terminal is None:
            return
        with self._uncaptured():
            self._close_counter()
            self._terminal.write_line(text)

    def detail(self, text: str) -> None:
        """A line shown only under ``-v``."""
        if self._verbosity > 0:
            self.say(text)

    def requests(self, done: int, total: int, label: str) -> None:
        """``label: done/total requests``, redrawn on one line on a TTY, else a line every tenth of ``total``."""
        if self._terminal is None or total <= 0:
            return
        line = f"{label}: {done}/{total} requests"
        with self._uncaptured():
            if self._live:
                if not self._counter_open:
                    self._terminal.ensure_newline()
                self._terminal.rewrite(line, erase=True)
                self._counter_open = True
                return
            step = done * NON_TTY_STEPS // total
            if step != self._last_step:
                self._last_step = step
                self._terminal.write_line(line)

    def end(self) -> None:
        """Finish the counter: its line stays, and the next output starts on a line of its own."""
        if self._terminal is None:
            return
        with self._uncaptured():
            self._close_counter()
        self._last_step = -1

    def _close_counter(self) -> None:
        if self._counter_open and self._terminal is not None:
            self._terminal.write("\n", flush=True)
            self._counter_open = False

    @contextlib.contextmanager
    def _uncaptured(self) -> Iterator[None]:
        """Outside pytest's capture, which holds a test's output until the test ends."""
        if self._capture is None:
            yield
            return
        with self._capture.global_and_fixture_disabled():
            yield
