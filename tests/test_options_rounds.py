"""``--rounds``' default: 1 for phase benchmarks, 3 for serving benchmarks when the run names several topologies (a
verdict between them needs 3 to name a winner); an explicit ``--rounds`` (or its ini key) wins for both."""

from __future__ import annotations

import pytest

SHOW_ROUNDS = (
    "from plugin.session import SESSION_KEY\n"
    "def pytest_collection_finish(session):\n"
    "    settings = session.config.stash[SESSION_KEY].settings\n"
    "    print('rounds', settings.rounds, 'serving', settings.serving_rounds)\n"
)


@pytest.mark.parametrize(
    ("arguments", "shown"),
    [
        ((), "rounds 1 serving 3"),  # the default pair: traditional and disaggregated
        (("--topologies=traditional,disaggregated",), "rounds 1 serving 3"),
        (("--topologies=traditional",), "rounds 1 serving 1"),  # nothing to compare
        (("--rounds=1",), "rounds 1 serving 1"),
        (("--rounds=5", "--topologies=traditional"), "rounds 5 serving 5"),
    ],
)
def test_serving_benchmarks_of_several_topologies_default_to_3_rounds(
    pytester: pytest.Pytester, arguments: tuple[str, ...], shown: str
) -> None:
    pytester.makeconftest(SHOW_ROUNDS)
    pytester.runpytest("-s", "--collect-only", *arguments).stdout.fnmatch_lines([shown])


def test_the_ini_key_is_an_explicit_rounds_too(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(SHOW_ROUNDS)
    pytester.makeini("[pytest]\nrounds = 2\n")
    pytester.runpytest("-s", "--collect-only").stdout.fnmatch_lines(["rounds 2 serving 2"])
