"""Trace replay (Mooncake-style JSONL) and ShareGPT-style conversation JSONL.

**Mooncake trace** (one request per line, as published with Mooncake (FAST '25) and read by AIPerf
and Dynamo)::

    {"timestamp": 0, "input_length": 6755, "output_length": 500, "hash_ids": [0, 1, 2, ...]}

``timestamp`` is the arrival in milliseconds since the first request; ``hash_ids`` name the
prompt's blocks of :data:`BLOCK_SIZE` (512) tokens: two requests whose ``hash_ids`` start with the
same ids share that token prefix. :func:`trace_prompts` builds the prompts accordingly: block ``h``
is always the same :data:`BLOCK_SIZE` words (seeded by ``h`` and the seed), the prompt is its
blocks in order cut to ``input_length`` words (words beyond the named blocks are unique to the
request), so equal ``hash_ids`` prefixes give equal token prefixes (the prefix cache sees them).
:class:`benchflow.trace_replay.TraceLoad` is an open-loop load point whose send times are the recorded timestamps
times ``time_scale`` (0.5 replays twice as fast); the load generator sends request *i* at its
offset, and ``record.start_ns - record.scheduled_ns`` is its send-time error
(:func:`benchflow.trace_replay.send_errors_ms`).

**ShareGPT** (one conversation per line, or a JSON array of them)::

    {"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}, ...]}

Each conversation gives one request: the turns up to the last human turn as chat messages, asking
for as many tokens as the answer that followed it had words (``max_tokens`` when none followed).

In a spec: ``dataset: {jsonl: PATH, format: mooncake|sharegpt, ...}`` (:class:`benchflow.spec.JsonlSource`);
on the command line ``benchflow bench --dataset sharegpt:PATH`` or ``--trace PATH [--time-scale X]``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from benchflow.errors import SpecError
from benchflow.records import Prompt, shuffled_cycles

logger = logging.getLogger(__name__)

#: Tokens per ``hash_ids`` block, as in the Mooncake traces.
BLOCK_SIZE = 512
#: Bad lines listed in one error before the rest are counted.
MAX_PROBLEMS = 10
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
          "bing": "assistant", "bard": "assistant", "system": "system"}


@dataclass(frozen=True)
class TraceRequest:
    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...] = ()


def _int(obj: dict, key: str, minimum: int) -> int:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{key!r} must be an integer >= {minimum}, got {v!r}")
    return v


def _trace_request(obj: Any) -> TraceRequest:
    if not isinstance(obj, dict):
        raise ValueError("each line must be a JSON object")
    unknown = set(obj) - {"timestamp", "input_length", "output_length", "hash_ids"}
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; allowed: timestamp, input_length, output_length, "
                         "hash_ids")
    ts = obj.get("timestamp")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not ts >= 0 or ts == float("inf"):
        raise ValueError(f"'timestamp' must be milliseconds >= 0, got {ts!r}")
    ids = obj.get("hash_ids", [])
    if not isinstance(ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in ids):
        raise ValueError("'hash_ids' must be a list of integers")
    return TraceRequest(float(ts), _int(obj, "input_length", 1), _int(obj, "output_length", 1), tuple(ids))


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError([f"cannot read {path}: {getattr(e, 'strerror', None) or e}"]) from None
    return [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _raise(problems: list[str], path: Path) -> None:
    if len(problems) > MAX_PROBLEMS:
        problems = problems[:MAX_PROBLEMS] + [f"... and {len(problems) - MAX_PROBLEMS} more bad lines"]
    raise SpecError(problems, source=str(path))


def read_trace(path: str | Path) -> list[TraceRequest]:
    """A Mooncake-style trace, sorted by timestamp (stable). Raises :class:`SpecError` listing
    every bad line."""
    out, problems = [], []
    for n, line in _lines(Path(path)):
        try:
            out.append(_trace_request(json.loads(line)))
        except (json.JSONDecodeError, ValueError) as e:
            problems.append(f"line {n}: {e}")
    if not out and not problems:
        problems.append(f"{path} holds no requests")
    if problems:
        _raise(problems, Path(path))
    return sorted(out, key=lambda r: r.timestamp_ms)


def read_trace_strict(path: str | Path) -> list[TraceRequest]:
    """A trace to replay at its recorded times, in file order: like :func:`read_trace`, but a
    timestamp below the previous line's is a problem too (a replay never reorders). Raises
    :class:`SpecError` listing every bad line (with its number)."""
    out, problems = [], []
    prev: tuple[int, float] | None = None
    for n, line in _lines(Path(path)):
        try:
            r = _trace_request(json.loads(line))
        except (json.JSONDecodeError, ValueError) as e:
            problems.append(f"line {n}: {e}")
            continue
        if prev is not None and r.timestamp_ms < prev[1]:
            problems.append(f"line {n}: timestamp {r.timestamp_ms:g} ms is before line {prev[0]}'s "
                            f"{prev[1]:g} ms (a replayed trace must be in time order)")
        prev = (n, r.timestamp_ms)
        out.append(r)
    if not out and not problems:
        problems.append(f"{path} holds no requests")
    if problems:
        _raise(problems, Path(path))
    return out


def _block(words: np.ndarray, seed: int, key: int, size: int) -> list[str]:
    rng = np.random.default_rng([seed, key & 0xFFFFFFFF, key >> 32 & 0xFFFFFFFF])
    return list(words[rng.integers(0, len(words), size=size)])


def trace_prompts(requests: list[TraceRequest], words: np.ndarray, *, seed: int = 0,
                  block_size: int = BLOCK_SIZE) -> list[Prompt]:
    """One prompt per request: its ``hash_ids`` blocks (each the same ``words`` wherever it
    appears, drawn from the vocabulary ``words``: :data:`benchflow.workload._WORDS`) cut to
    ``input_length`` words, then words unique to the request when it is longer."""
    vocab = np.asarray(words)
    if block_size < 1:
        raise SpecError([f"block_size must be >= 1, got {block_size}"])
    cache: dict[int, list[str]] = {}
    out = []
    for i, r in enumerate(requests):
        toks: list[str] = []
        for h in r.hash_ids:
            if len(toks) >= r.input_length:
                break
            if h not in cache:
                cache[h] = _block(vocab, seed, 2 * h if h >= 0 else -2 * h - 1, block_size)
            toks.extend(cache[h])
        if len(toks) < r.input_length:  # beyond the named blocks: unique to this request
            rng = np.random.default_rng([seed, 1 << 31, i])
            toks.extend(vocab[rng.integers(0, len(vocab), size=r.input_length - len(toks))])
        out.append(Prompt(text=" ".join(toks[:r.input_length]), input_tokens=r.input_length,
                          max_tokens=r.output_length))
    return out


# ---- ShareGPT ------------------------------------------------------------------------------------

def _sharegpt_prompt(obj: Any, max_tokens: int) -> Prompt | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("conversations"), list):
        raise ValueError("expected an object with a 'conversations' list")
    turns = []
    for t in obj["conversations"]:
        if not isinstance(t, dict) or not isinstance(t.get("value"), str):
            raise ValueError("each turn must be {from, value} with a string value")
        role = _ROLES.get(str(t.get("from", "")).lower())
        if role is None:
            raise ValueError(f"unknown speaker {t.get('from')!r}; expected human/user, gpt/assistant or system")
        turns.append({"role": role, "content": t["value"]})
    last_user = max((k for k, t in enumerate(turns) if t["role"] == "user" and t["content"].strip()), default=None)
    if last_user is None:
        return None  # nothing to ask: skipped, as other tools do
    messages = tuple(turns[:last_user + 1])
    answer = turns[last_user + 1]["content"] if last_user + 1 < len(turns) else ""
    out = len(answer.split()) or max_tokens
    text = "\n".join(m["content"] for m in messages)
    return Prompt(text=text, input_tokens=len(text.split()), max_tokens=out, messages=messages)


def read_sharegpt(path: str | Path, max_tokens: int = 256) -> list[Prompt]:
    """One prompt per conversation with a user turn (JSONL, or one JSON array). Raises
    :class:`SpecError` listing every bad line."""
    path = Path(path)
    lines = _lines(path)
    if lines and lines[0][1].lstrip().startswith("["):
        try:
            items = [(k + 1, o) for k, o in enumerate(json.loads("\n".join(line for _, line in lines)))]
        except json.JSONDecodeError as e:
            raise SpecError([f"{path}: not valid JSON: {e}"]) from None
    else:
        items, problems = [], []
        for n, line in lines:
            try:
                items.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                problems.append(f"line {n}: {e}")
        if problems:
            _raise(problems, path)
    prompts, problems = [], []
    for n, obj in items:
        try:
            p = _sharegpt_prompt(obj, max_tokens)
        except ValueError as e:
            problems.append(f"line {n}: {e}")
            continue
        if p is not None:
            prompts.append(p)
    if not prompts and not problems:
        problems.append(f"{path} holds no conversation with a user turn")
    if problems:
        _raise(problems, path)
    return prompts


# ---- datasets (the workload hook) ----------------------------------------------------------------

@dataclass(frozen=True)
class FileDataset:
    """A ``mooncake`` trace's or a ``sharegpt`` file's prompts. A trace keeps its recorded order
    (request *i* is line *i*, as its send time is); ShareGPT is shuffled like a JSONL dataset."""

    path: Path
    format: str
    #: The vocabulary of trace prompts (:data:`benchflow.workload._WORDS`).
    words: tuple[str, ...] = ()
    max_tokens: int = 256
    block_size: int = BLOCK_SIZE

    def prompts(self, seed: int) -> list[Prompt]:
        if self.format == "mooncake":
            return trace_prompts(read_trace(self.path), np.asarray(self.words or ("word",)), seed=seed,
                                 block_size=self.block_size)
        if self.format == "sharegpt":
            return read_sharegpt(self.path, self.max_tokens)
        raise SpecError([f"unknown dataset format {self.format!r}; expected mooncake or sharegpt"])

    def generate(self, n: int, seed: int) -> list[Prompt]:
        prompts = self.prompts(seed)
        if self.format == "mooncake":
            return [prompts[k % len(prompts)] for k in range(n)]
        return shuffled_cycles(prompts, n, seed)

    def __str__(self) -> str:
        return f"{self.format}:{self.path}"


def dataset_of(text: str, words: Any = ()) -> FileDataset | None:
    """``mooncake:PATH`` or ``sharegpt:PATH`` as a dataset (checked now), else None."""
    fmt, _, rest = text.strip().partition(":")
    if fmt not in ("mooncake", "sharegpt") or not rest:
        return None
    ds = FileDataset(Path(rest).expanduser(), fmt, tuple(words))
    ds.prompts(0)  # fail early, with every bad line
    return ds
