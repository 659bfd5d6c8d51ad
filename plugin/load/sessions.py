"""Multi-turn conversations replayed as sessions (``--dataset sessions:PATH``), so the prefix cache meets the reuse
of a real chat: every turn's prompt is the conversation so far plus the new user turn.

Two file formats, told apart by their first character:

- ShareGPT JSON (``[...]``): every conversation is a session, its turns the human turns each followed by a reply
  (``gpt``/``assistant``), up to the first turn that is not such a pair.
- JSONL of sessions: one ``{"session_id": ID, "turns": [{"prompt": TEXT or [token ids], "output_len": N,
  "reply": TEXT or [token ids]}, ...]}`` a line; a turn needs a prompt and one of ``output_len`` or ``reply``.

The history holds the recorded replies (random tokens of ``output_len`` where the file has none), not what the
server generated: every topology, and a control run, then send the same prompts, and the cache can reuse the
history up to the previous user turn. ``max_tokens`` is the reply's length. Sessions arrive open-loop at the
serving rate (sessions/s); a turn is sent ``--think-time-s`` after the previous answer ended.

Each session starts with ``prefix`` random token ids of its own, drawn per round: sessions and rounds share no
prefix, while a session's turns share theirs (the random-prefix guard of the other datasets, kept per session).
An empty session, or turns longer than ``--max-model-len`` (the session is cut before them), are dropped and
counted by reason, never changed; an entry that cannot be read is skipped and counted (``datasets.Skipped``).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from plugin.errors import BenchError
from plugin.load.datasets import (
    SHAREGPT_SHAPE,
    Skipped,
    Tokenizer,
    json_line,
    read_text,
    sharegpt_entries,
    sharegpt_turns,
)

HUMAN_ROLES = ("human", "user")
REPLY_ROLES = ("gpt", "assistant")
EMPTY_SESSION = "empty_session"
TURNS_TOO_LONG = "turns_too_long_for_model"
SESSIONS_TOO_LONG = "sessions_too_long_for_model"

Text = str | list[int]


@dataclass(frozen=True, slots=True)
class FileTurn:
    """A turn as the file has it: the user's text (or token ids), the reply's, and its length if given."""

    prompt: Text
    reply: Text | None
    output_len: int | None


@dataclass(frozen=True, slots=True)
class SessionFile:
    """The sessions of a file (empty ones left out and counted, as are entries that cannot be read)."""

    sessions: tuple[tuple[FileTurn, ...], ...]
    empty: int
    skipped: Skipped = Skipped()


@dataclass(frozen=True, slots=True)
class Session:
    """A session's turns as token ids: (user turn, reply) each; the reply's length is the turn's ``max_tokens``."""

    turns: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]


@dataclass(frozen=True, slots=True)
class SessionRequests:
    """Sessions laid out for the client: every turn's (prompt, max_tokens), the turn it follows (``None``: the
    first of its session), and its session's arrival or its think time after the turn it follows."""

    requests: tuple[tuple[list[int], int], ...]
    follows: tuple[int | None, ...]
    due_offsets_s: tuple[float, ...]


def read_sessions(path: Path) -> SessionFile:
    """The file's sessions, checked (``BenchError`` naming the entry or line of the first problem)."""
    text = read_text(path, "sessions file")
    if text.lstrip().startswith("["):
        return _read_sharegpt(path, text)
    return _read_jsonl(path, text)


def tokenize(
    file: SessionFile, tokenizer: Tokenizer | None, rng: random.Random, vocab: tuple[int, int], path: Path
) -> list[Session]:
    """Token ids of every turn: text through ``tokenizer``, a missing reply as ``output_len`` random ids."""
    low, high = vocab

    def ids(value: Text) -> tuple[int, ...]:
        if isinstance(value, list):
            return tuple(value)
        if tokenizer is None:
            raise BenchError(f"{path} holds text: tokenizing it needs the model's tokenizer")
        return tuple(tokenizer.encode(value))

    sessions = []
    for turns in file.sessions:
        tokenized = []
        for turn in turns:
            if turn.reply is not None:
                reply = ids(turn.reply)
            else:
                reply = tuple(rng.randrange(low, high) for _ in range(turn.output_len or 0))
            tokenized.append((ids(turn.prompt), reply))
        sessions.append(Session(tuple(tokenized)))
    return sessions


def fitting(sessions: Sequence[Session], prefix: int, max_model_len: int) -> tuple[list[Session], dict[str, int]]:
    """Each session up to its first turn that does not fit ``max_model_len`` (history + turn + reply) or has an
    empty prompt or reply; counted: the turns so cut from sessions kept, and the sessions left with no turn."""
    kept: list[Session] = []
    dropped: Counter[str] = Counter()
    for session in sessions:
        history = prefix
        turns = []
        for user, reply in session.turns:
            if not user or not reply or history + len(user) + len(reply) > max_model_len:
                break
            turns.append((user, reply))
            history += len(user) + len(reply)
        if not turns:
            dropped[SESSIONS_TOO_LONG] += 1
            continue
        kept.append(Session(tuple(turns)))
        if len(turns) < len(session.turns):
            dropped[TURNS_TOO_LONG] += len(session.turns) - len(turns)
    return kept, dict(dropped)


def session_requests(
    sessions: Sequence[Session],
    arrivals_s: Sequence[float],
    think_time_s: float,
    rng: random.Random,
    vocab: tuple[int, int],
    prefix: int,
) -> SessionRequests:
    """One session per arrival (cycling through ``sessions``), each with its own random ``prefix`` token ids."""
    if not sessions:
        raise ValueError("no session to send")
    low, high = vocab
    requests: list[tuple[list[int], int]] = []
    follows: list[int | None] = []
    offsets: list[float] = []
    for number, arrival_s in enumerate(arrivals_s):
        history = [rng.randrange(low, high) for _ in range(prefix)]
        previous: int | None = None
        for user, reply in sessions[number % len(sessions)].turns:
            requests.append((history + list(user), len(reply)))
            follows.append(previous)
            offsets.append(arrival_s if previous is None else think_time_s)
            previous = len(requests) - 1
            history = history + list(user) + list(reply)
    return SessionRequests(tuple(requests), tuple(follows), tuple(offsets))


def _read_sharegpt(path: Path, text: str) -> SessionFile:
    sessions = []
    empty = 0
    skipped = Skipped()
    for number, entry in enumerate(sharegpt_entries(path, text)):
        try:
            turns = sharegpt_turns(path, number, entry, SHAREGPT_SHAPE)
        except BenchError as error:
            skipped = skipped.add(str(error))
            continue
        pairs = []
        for user, reply in zip(turns[::2], turns[1::2], strict=False):
            if user["from"] not in HUMAN_ROLES or reply["from"] not in REPLY_ROLES:
                break
            pairs.append(FileTurn(user["value"], reply["value"], None))
        if pairs:
            sessions.append(tuple(pairs))
        else:
            empty += 1
    if not sessions:
        problem = f"{path} has no conversation that starts with a human turn and its reply; {SHAREGPT_SHAPE}"
        raise skipped.none_left(path, problem)
    return SessionFile(tuple(sessions), empty, skipped)


def _read_jsonl(path: Path, text: str) -> SessionFile:
    shape = (
        'each line is {"session_id": ID, "turns": [{"prompt": TEXT or [token ids], "output_len": N}, ...]}; a turn '
        "may give its 'reply' (text or token ids) instead of output_len"
    )
    sessions = []
    empty = 0
    skipped = Skipped()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            turns = _session_line(path, number, line, shape)
        except BenchError as error:
            skipped = skipped.add(str(error))
            continue
        if turns:
            sessions.append(turns)
        else:
            empty += 1
    if not sessions:
        problem = f"{path} has no session with a turn; {shape}"
        raise skipped.none_left(path, problem)
    return SessionFile(tuple(sessions), empty, skipped)


def _session_line(path: Path, number: int, line: str, shape: str) -> tuple[FileTurn, ...]:
    item = json_line(line, f"{path}, line {number}", shape)
    turns = item.get("turns") if isinstance(item, dict) else None
    if not isinstance(turns, list):
        raise BenchError(f"{path}, line {number}: no 'turns' list; {shape}")
    return tuple(_file_turn(path, number, index, turn, shape) for index, turn in enumerate(turns))


def _file_turn(path: Path, line: int, index: int, turn: object, shape: str) -> FileTurn:
    where = f"{path}, line {line}, turn {index}"
    if not isinstance(turn, dict):
        raise BenchError(f"{where}: not a JSON object; {shape}")
    prompt, reply, output_len = turn.get("prompt"), turn.get("reply"), turn.get("output_len")
    if not _is_text(prompt):
        raise BenchError(f"{where}: 'prompt' is missing or empty; {shape}")
    if reply is not None and not _is_text(reply):
        raise BenchError(f"{where}: 'reply' is text or a list of token ids; {shape}")
    if output_len is not None and (isinstance(output_len, bool) or not isinstance(output_len, int) or output_len < 1):
        raise BenchError(f"{where}: 'output_len' is a positive whole number; {shape}")
    if (reply is None) == (output_len is None):
        raise BenchError(f"{where}: give one of 'output_len' or 'reply' (the reply's length is the output's); {shape}")
    return FileTurn(prompt, reply, output_len)  # type: ignore[arg-type]  # _is_text checked both


def _is_text(value: object) -> bool:
    if isinstance(value, str):
        return bool(value)
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)
    )
