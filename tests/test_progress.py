"""Progress reaches the terminal while pytest captures a test's output, honours -q and -v, and keeps the live
request counter on one line on a terminal (inner pytest runs, and a recording terminal for the TTY case)."""

from __future__ import annotations

from typing import Any

import pytest

from plugin.progress import Progress

SAYS = """
from plugin.progress import Progress

def test_loading(request):
    progress = Progress.from_config(request.config)
    print("captured, not shown")
    progress.say("starting server, log: reports/run/server.log")
    progress.detail("warm-up request done")
"""


@pytest.mark.parametrize(
    ("argument", "shown", "hidden"),
    [
        ("-rN", ["starting server, log: reports/run/server.log"], ["warm-up request done"]),
        ("-v", ["starting server, log: reports/run/server.log", "warm-up request done"], []),
        ("-q", [], ["starting server", "warm-up request done"]),
    ],
)
def test_lines_pass_output_capture_and_follow_verbosity(
    pytester: pytest.Pytester, argument: str, shown: list[str], hidden: list[str]
) -> None:
    pytester.makepyfile(SAYS)
    result = pytester.runpytest(argument)
    result.assert_outcomes(passed=1)
    text = result.stdout.str()
    result.stdout.fnmatch_lines(shown)
    for line in [*hidden, "captured, not shown"]:
        assert line not in text


COUNTS = """
from plugin.progress import Progress

def test_counting(request):
    progress = Progress.from_config(request.config)
    for done in range(21):
        progress.requests(done, 20, "test_prefill[traditional-in256-out1-c4]")
    progress.end()
    progress.say("after the counter")
"""


def test_without_a_terminal_the_counter_prints_a_line_every_tenth(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(COUNTS)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    counted = [line for line in result.stdout.lines if line.startswith("test_prefill[traditional")]
    assert counted == [f"test_prefill[traditional-in256-out1-c4]: {done}/20 requests" for done in range(0, 21, 2)]
    result.stdout.fnmatch_lines(["*20/20 requests", "after the counter"])


class RecordingTerminal:
    """What a terminal would be sent: the calls, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def write(self, content: str, *, flush: bool = False, **markup: bool) -> None:
        self.calls.append(("write", content))

    def write_line(self, line: str, **markup: bool) -> None:
        self.calls.append(("write_line", line))

    def rewrite(self, line: str, **markup: bool) -> None:
        self.calls.append(("rewrite", (line, markup)))

    def ensure_newline(self) -> None:
        self.calls.append(("ensure_newline", None))


def test_on_a_terminal_the_counter_is_redrawn_in_place_and_ended_with_a_newline() -> None:
    terminal = RecordingTerminal()
    progress = Progress(terminal, None, verbosity=0, live=True)
    progress.requests(1, 3, "decode")
    progress.requests(2, 3, "decode")
    progress.say("a line of its own")
    progress.requests(3, 3, "e2e")
    progress.end()
    progress.end()  # a second end adds nothing
    assert terminal.calls == [
        ("ensure_newline", None),
        ("rewrite", ("decode: 1/3 requests", {"erase": True})),
        ("rewrite", ("decode: 2/3 requests", {"erase": True})),
        ("write", "\n"),
        ("write_line", "a line of its own"),
        ("ensure_newline", None),
        ("rewrite", ("e2e: 3/3 requests", {"erase": True})),
        ("write", "\n"),
    ]


def test_quiet_progress_writes_nothing() -> None:
    terminal = RecordingTerminal()
    progress = Progress(terminal, None, verbosity=-1, live=True)
    progress.say("x")
    progress.requests(1, 2, "x")
    progress.end()
    assert terminal.calls == []
