"""Multi-turn sessions: files read and checked, every turn's prompt the history plus the new turn, turns sent after
the previous answer plus the think time, and the server's cached prompt tokens kept per request."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from plugin.errors import BenchError
from plugin.load.client import run_schedule
from plugin.load.replay_plan import session_schedules
from plugin.load.schedule import Arrivals
from plugin.load.sessions import (
    EMPTY_SESSION,
    SESSIONS_TOO_LONG,
    TURNS_TOO_LONG,
    Session,
    fitting,
    read_sessions,
    session_requests,
    tokenize,
)
from plugin.option_values import DatasetSpec
from plugin.options import SHIPPED_SHAREGPT
from plugin.records.requests import RequestRecord
from tests.test_client import serving, sse, streaming, token_chunk

VOCAB = (2, 1000)


class WordTokenizer:
    """One token per word: lengths a test can count."""

    def encode(self, text: str) -> list[int]:
        return [len(word) + 10 for word in text.split()]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_sharegpt_conversations_become_sessions_of_their_human_reply_pairs(tmp_path: Path) -> None:
    conversations = [
        {"conversations": [{"from": "human", "value": "a b"}, {"from": "gpt", "value": "c"},
                           {"from": "human", "value": "d e f"}, {"from": "gpt", "value": "g h"},
                           {"from": "human", "value": "unanswered"}]},
        {"conversations": [{"from": "gpt", "value": "a reply first"}]},
    ]  # fmt: skip
    file = read_sessions(write(tmp_path, "chat.json", json.dumps(conversations)))
    assert file.empty == 1
    (session,) = tokenize(file, WordTokenizer(), random.Random(0), VOCAB, tmp_path)
    assert [(len(user), len(reply)) for user, reply in session.turns] == [(2, 1), (3, 2)]


def test_jsonl_sessions_take_a_reply_or_random_tokens_of_output_len(tmp_path: Path) -> None:
    lines = [
        {"session_id": "a", "turns": [{"prompt": "one two", "reply": "three"}, {"prompt": [5, 6], "output_len": 4}]},
        {"session_id": "b", "turns": []},
    ]
    path = write(tmp_path, "s.jsonl", "\n".join(json.dumps(line) for line in lines))
    file = read_sessions(path)
    assert file.empty == 1
    (session,) = tokenize(file, WordTokenizer(), random.Random(0), VOCAB, path)
    (user_1, reply_1), (user_2, reply_2) = session.turns
    assert (len(user_1), len(reply_1), user_2, len(reply_2)) == (2, 1, (5, 6), 4)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"turns": [{"prompt": "x"}]}', "line 1, turn 0: give one of 'output_len' or 'reply'"),
        ('{"turns": [{"prompt": "x", "output_len": 2, "reply": "y"}]}', "give one of"),
        ('{"turns": [{"prompt": "", "output_len": 2}]}', "turn 0: 'prompt' is missing or empty"),
        ('{"turns": [{"prompt": "x", "output_len": 0}]}', "'output_len' is a positive whole number"),
        ('{"session_id": 1}', "line 1: no 'turns' list"),
        ("{", "line 1: not valid JSON"),
    ],
)
def test_a_bad_session_line_is_an_error_naming_it(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(BenchError, match=message):
        read_sessions(write(tmp_path, "s.jsonl", line + "\n"))


def test_bad_session_entries_among_good_ones_are_skipped_and_counted(tmp_path: Path) -> None:
    good = '{"turns": [{"prompt": "x", "output_len": 2}]}'
    file = read_sessions(write(tmp_path, "s.jsonl", "\n".join(["{", good, '{"session_id": 1}']) + "\n"))
    assert len(file.sessions) == 1 and file.skipped.count == 2 and "line 1: not valid JSON" in str(file.skipped.first)
    chats = [{"turns": []}, {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}]
    file = read_sessions(write(tmp_path, "chat.json", json.dumps(chats)))
    assert len(file.sessions) == 1 and file.skipped.count == 1


def test_sessions_are_cut_before_the_first_turn_that_does_not_fit_and_counted() -> None:
    fits = Session((((1,) * 10, (2,) * 5), ((3,) * 10, (4,) * 5), ((5,) * 10, (6,) * 5)))
    never = Session((((1,) * 60, (2,) * 5),))
    kept, dropped = fitting([fits, never], prefix=4, max_model_len=40)  # 4 + 15 + 15 fit, + 15 does not
    assert [len(session.turns) for session in kept] == [2]
    assert dropped == {TURNS_TOO_LONG: 1, SESSIONS_TOO_LONG: 1}


def test_each_turn_sends_the_history_and_the_new_user_turn() -> None:
    session = Session((((10, 11), (20,)), ((12,), (21, 22)), ((13, 14), (23,))))
    laid = session_requests([session], [0.5, 2.0], 0.3, random.Random(0), VOCAB, prefix=2)
    prompts = [prompt for prompt, _ in laid.requests]
    assert [max_tokens for _, max_tokens in laid.requests] == [1, 2, 1] * 2
    assert laid.follows == (None, 0, 1, None, 3, 4)
    assert laid.due_offsets_s == (0.5, 0.3, 0.3, 2.0, 0.3, 0.3)
    prefix = prompts[0][:2]
    assert prompts[:3] == [prefix + [10, 11], prefix + [10, 11, 20, 12], prefix + [10, 11, 20, 12, 21, 22, 13, 14]]
    assert prompts[3][:2] != prefix  # the second session has a prefix of its own
    assert prompts[3][2:] == [10, 11]


def test_shipped_sessions_plan_rounds_of_sessions_with_their_drops_recorded(tmp_path: Path) -> None:
    path = SHIPPED_SHAREGPT.with_name("sessions-tiny.jsonl")
    arrivals = Arrivals(2.0, None, None, 0.0, 0.0)
    warmup, rounds, entry = session_schedules(
        DatasetSpec("sessions", path), arrivals, 2, 4, 1.0, 0.5, random.Random(0), WordTokenizer(), VOCAB, 2048, 4, 1
    )
    assert len(rounds) == 2 and len(warmup.requests) == 1
    for schedule in rounds:
        assert schedule.follows is not None
        heads = [i for i, previous in enumerate(schedule.follows) if previous is None]
        assert len(heads) == 4  # four sessions a round
        assert [schedule.due_offsets_s[i] for i in heads] == sorted(schedule.due_offsets_s[i] for i in heads)
    assert rounds[0].requests != rounds[1].requests  # the next sessions, and fresh prefixes
    assert entry["sessions_in_file"] == 6 and entry["dropped"] == {}
    assert 0.3 < entry["history_reuse"] < 1.0


def test_an_empty_session_is_counted_and_a_file_with_none_that_fits_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "s.jsonl", '{"turns": []}\n{"turns": [{"prompt": "a b c", "output_len": 50}]}\n')
    spec = DatasetSpec("sessions", path)
    arrivals = Arrivals(None, None, None, 0.0, 0.0)
    with pytest.raises(BenchError, match=r"no session of .* fits the model's max_model_len 20 \(1 sessions too long"):
        session_schedules(spec, arrivals, 1, 1, 1.0, 0.0, random.Random(0), WordTokenizer(), VOCAB, 20, 4, 1)
    _, _, entry = session_schedules(spec, arrivals, 1, 1, 1.0, 0.0, random.Random(0), WordTokenizer(), VOCAB, 99, 4, 1)
    assert entry["dropped"] == {EMPTY_SESSION: 1}


# --- the client: turns after answers, cached tokens -------------------------------------------------------------


def usage_with_cache(cached: int) -> dict[str, object]:
    usage = {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}
    usage["prompt_tokens_details"] = {"cached_tokens": cached}  # vLLM's, with --enable-prompt-tokens-details
    return {"id": "c", "object": "text_completion", "created": 1, "model": "m", "choices": [], "usage": usage}


def test_a_turn_leaves_its_think_time_after_the_previous_answer_and_sessions_overlap() -> None:
    events = [sse(token_chunk("x", [5])) for _ in range(5)] + [sse(usage_with_cache(16)), b"data: [DONE]\n\n"]
    requests = [([1, 2], 5), ([1, 2, 3], 5), ([4], 5), ([4, 5], 5)]
    follows = [None, 0, None, 2]
    offsets = [0.0, 0.1, 0.02, 0.1]  # sessions at 0 and 0.02 s; turns 0.1 s after the answer before

    async def main() -> list[RequestRecord]:
        async with serving(streaming(events)) as url:
            return await run_schedule(url, "m", requests, offsets, None, 5.0, follows=follows)

    first, second, other, other_second = asyncio.run(main())
    assert all(record.ok for record in (first, second, other, other_second))
    assert [(r.session, r.turn) for r in (first, second, other, other_second)] == [(0, 0), (0, 1), (2, 0), (2, 1)]
    assert second.due_s == pytest.approx(first.end_s + 0.1)
    assert second.send_s >= second.due_s
    assert other.send_s < first.end_s  # the second session did not wait for the first
    assert first.cached_tokens == 16


def test_follows_must_point_to_an_earlier_request_once() -> None:
    with pytest.raises(ValueError, match="each follows an earlier one"):
        asyncio.run(run_schedule("http://127.0.0.1:9", "m", [([1], 1)] * 2, [0.0, 0.0], None, 1.0, follows=[1, None]))
