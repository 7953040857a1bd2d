"""The built-in agentic workload: N concurrent agents, each running multi-turn tasks.

``workload.agentic`` turns a cell's concurrency load point into that many *agents*. An agent
takes the next task (the next prompt of the workload's dataset: its text is the task's first
message and its ``max_tokens`` the output length of every turn), draws a number of turns, and
runs them one after the other: each turn re-sends the whole context so far (the previous
prompts, a stand-in for each assistant reply with as many words as the reply had tokens, and
``turn_tokens`` new words of tool output), then waits a think/tool time before the next turn.
Re-sending the growing context is what makes prefix caching matter.

A failed turn ends its task as ``failed`` and the agent moves on to its next task: never a
retry, so a context-length overflow (HTTP 400) cannot loop. Every request is a normal
:class:`~benchflow.records.RequestRecord`; per task and per step (turn) facts come on top,
and :func:`agentic_summary` derives tasks/min and steps/s, whole-run and in the active window.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import perf_counter_ns
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from benchflow.records import LoadRun, Prompt, RequestRecord
from benchflow.units import parse_duration_s

logger = logging.getLogger(__name__)

_DIST_RE = re.compile(r"^\s*([DUE])\s*\(\s*([^,()]+?)\s*(?:,\s*([^,()]+?)\s*)?\)\s*$", re.IGNORECASE)
_OVERFLOW_RE = re.compile(r"context length|too long|max_model_len", re.IGNORECASE)
#: Most turns one task may draw.
MAX_TURNS = 10_000


def parse_turns(value: Any) -> tuple[int, int]:
    """``5`` or ``"D(5)"`` (always 5), ``"U(3,8)"`` (uniform, both ends) -> ``(min, max)``."""
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    else:
        m = _DIST_RE.match(value) if isinstance(value, str) else None
        if m is None or m.group(1).upper() == "E" or (m.group(1).upper() == "U") != (m.group(3) is not None):
            raise ValueError(f"turns must be an integer, 'D(n)' or 'U(min,max)', got {value!r}")
        try:
            lo = int(m.group(2))
            hi = int(m.group(3)) if m.group(3) is not None else lo
        except ValueError:
            raise ValueError(f"turns must be whole numbers, got {value!r}") from None
    if not 1 <= lo <= hi <= MAX_TURNS:
        raise ValueError(f"turns must satisfy 1 <= min <= max <= {MAX_TURNS:,}, got {value!r}")
    return lo, hi


def parse_think_time(value: Any) -> tuple[str, float, float]:
    """``"2s"``/``"D(2s)"`` (constant), ``"U(100ms,2s)"`` (uniform), ``"E(1s)"`` (exponential,
    that mean) -> ``(kind, a, b)`` in seconds. Durations need a unit."""
    if isinstance(value, str) and (m := _DIST_RE.match(value)):
        kind = m.group(1).upper()
        if (kind == "U") != (m.group(3) is not None):
            raise ValueError(f"think_time: 'U(min,max)' takes two durations, 'D(d)' and 'E(mean)' one: {value!r}")
        a = parse_duration_s(m.group(2))
        b = parse_duration_s(m.group(3)) if m.group(3) is not None else a
        if a > b:
            raise ValueError(f"think_time: min must be <= max in {value!r}")
        return {"D": "constant", "U": "uniform", "E": "exponential"}[kind], a, b
    try:
        d = parse_duration_s(value)
    except ValueError as e:
        raise ValueError(f"think_time: {e}; or 'U(100ms,2s)', 'E(1s)'") from None
    return "constant", d, d


class AgenticSpec(BaseModel):
    """``workload.agentic``: concurrency load points become that many agents."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    turns: int | str = Field("U(3,8)", description="turns per task: N, 'D(N)' or 'U(min,max)'")
    think_time: str = Field("0s", description="wait between turns: '500ms', 'U(100ms,2s)' or 'E(1s)'")
    turn_tokens: int = Field(128, ge=0, le=2**20, description="new tool/user tokens added to the context each turn")
    tasks: int | None = Field(None, gt=0, le=10_000_000, description="tasks to run in all (default: until the "
                                                                     "cell's max_requests or max_duration_s)")

    @field_validator("turns")
    @classmethod
    def _turns(cls, v: Any) -> Any:
        parse_turns(v)
        return v

    @field_validator("think_time")
    @classmethod
    def _think(cls, v: Any) -> Any:
        parse_think_time(v)
        return v


@dataclass(slots=True)
class TaskRecord:
    """One agent task (conversation). ``status``: completed | failed | incomplete."""

    task_id: int
    agent: int
    turns_planned: int
    start_ns: int
    end_ns: int | None = None
    turns_done: int = 0
    status: str = "incomplete"
    #: Why it failed: "context_overflow" or the failed request's error class.
    failure: str | None = None


@dataclass(slots=True)
class StepRecord:
    """One turn of a task: its request and whether it succeeded."""

    task_id: int
    turn: int
    request_id: int
    start_ns: int
    end_ns: int
    ok: bool


@dataclass(slots=True)
class AgenticRun(LoadRun):
    tasks: list[TaskRecord] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)


class _Agents:
    def __init__(self, pool: Any, model: str, prompts: Sequence[Prompt], spec: AgenticSpec, *,
                 api: str, temperature: float, ignore_eos: bool, request_timeout_s: float,
                 max_requests: int | None, seed: int):
        self.pool, self.model, self.prompts, self.spec = pool, model, prompts, spec
        self.api, self.temperature, self.ignore_eos = api, temperature, ignore_eos
        self.timeout_s = request_timeout_s
        self.max_requests = max_requests
        self.rng = np.random.default_rng(seed)
        self.turns = parse_turns(spec.turns)
        self.think = parse_think_time(spec.think_time)
        self.records: list[RequestRecord] = []
        self.tasks: list[TaskRecord] = []
        self.steps: list[StepRecord] = []
        self.stop_reason = ""

    def _think_s(self) -> float:
        kind, a, b = self.think
        if kind == "uniform":
            return float(self.rng.uniform(a, b))
        return float(self.rng.exponential(a)) if kind == "exponential" and a > 0 else a

    def _next_task(self, agent: int) -> tuple[TaskRecord, Prompt] | None:
        n = len(self.tasks)
        if self.spec.tasks is not None and n >= self.spec.tasks:
            return None
        turns = int(self.rng.integers(self.turns[0], self.turns[1], endpoint=True))
        task = TaskRecord(n, agent, turns, perf_counter_ns())
        self.tasks.append(task)
        return task, self.prompts[n % len(self.prompts)]

    async def agent(self, agent: int) -> None:
        while not self.stop_reason and (nxt := self._next_task(agent)) is not None:
            task, prompt = nxt
            try:
                await self._run_task(task, prompt)
            finally:
                task.end_ns = task.end_ns or perf_counter_ns()

    async def _run_task(self, task: TaskRecord, prompt: Prompt) -> None:
        from benchflow.workload import _WORDS

        messages: list[dict[str, str]] = [{"role": "user", "content": prompt.text}]
        text, words = prompt.text, prompt.input_tokens
        for turn in range(task.turns_planned):
            if self.max_requests is not None and len(self.records) >= self.max_requests:
                self.stop_reason = self.stop_reason or "max_requests"
                return
            body = self._body(text, messages, prompt.max_tokens)
            rec = await self._send(body, words)
            ok = rec.succeeded
            self.steps.append(StepRecord(task.task_id, turn, rec.request_id, rec.start_ns, rec.end_ns or 0, ok))
            if not ok:
                if not rec.incomplete:
                    task.status, task.end_ns = "failed", rec.end_ns
                    overflow = rec.status == 400 and _OVERFLOW_RE.search(rec.error_message or "")
                    task.failure = "context_overflow" if overflow else (rec.error_class or "error")
                return
            task.turns_done += 1
            if turn == task.turns_planned - 1:
                task.status, task.end_ns = "completed", rec.end_ns
                return
            n_out = rec.completion_tokens or len(rec.chunks)
            reply = " ".join(_WORDS[self.rng.integers(0, len(_WORDS), size=n_out)])
            tool = " ".join(_WORDS[self.rng.integers(0, len(_WORDS), size=self.spec.turn_tokens)])
            messages += [{"role": "assistant", "content": reply}, {"role": "user", "content": tool}]
            text = " ".join(s for s in (text, reply, tool) if s)
            words += n_out + self.spec.turn_tokens
            think = self._think_s()
            if think > 0:
                await asyncio.sleep(think)

    def _body(self, text: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        """Like :func:`benchflow.loadgen.build_body` (not imported: the spec imports this module)."""
        body: dict[str, Any] = {"model": self.model}
        if self.api == "chat":
            body["messages"] = list(messages)
        else:
            body["prompt"] = text
        body.update(max_tokens=max_tokens, temperature=self.temperature, stream=True,
                    stream_options={"include_usage": True})
        if self.ignore_eos:
            body.update(ignore_eos=True, min_tokens=max_tokens)
        return body

    async def _send(self, body: dict[str, Any], input_tokens: int) -> RequestRecord:
        from benchflow.exchange import exchange_into

        rec = RequestRecord(request_id=len(self.records), warmup=False, start_ns=perf_counter_ns(),
                            input_tokens=input_tokens)
        self.records.append(rec)
        request = self.pool.request(json.dumps(body, separators=(",", ":")).encode())
        await exchange_into(self.pool, request, rec, body.get("max_tokens"), self.timeout_s)
        return rec


async def run_agents(
    base_url: str, model: str, prompts: Sequence[Prompt], concurrency: int, spec: AgenticSpec, *,
    api: str = "completions", max_requests: int | None = None, max_duration_s: float | None = None,
    request_timeout_s: float = 60.0, temperature: float = 0.0, ignore_eos: bool = True, seed: int = 0,
    should_stop: Callable[[], str | None] | None = None,
) -> AgenticRun:
    """Runs ``concurrency`` agents until the tasks, ``max_requests`` or ``max_duration_s`` run
    out (or ``should_stop`` gives a reason); requests in flight then are recorded incomplete."""
    from benchflow.exchange import api_root, open_pool
    from benchflow.send_timing import _QuietGc

    if not prompts:
        raise ValueError("agentic workload: no prompts")
    if spec.tasks is None and max_requests is None and max_duration_s is None:
        raise ValueError("agentic workload: set agentic.tasks, max_requests or max_duration_s")
    path = "/v1/chat/completions" if api == "chat" else "/v1/completions"
    anchor_ns, anchor_at = perf_counter_ns(), datetime.now(UTC)
    with _QuietGc(young=True):  # a closed loop (as loadgen._phases)
        async with open_pool(api_root(base_url) + path) as pool:
            agents = _Agents(pool, model, prompts, spec, api=api, temperature=temperature,
                             ignore_eos=ignore_eos, request_timeout_s=request_timeout_s, max_requests=max_requests,
                             seed=seed)
            work = asyncio.gather(*(agents.agent(i) for i in range(concurrency)))
            deadline = time.monotonic() + max_duration_s if max_duration_s is not None else None
            reason: str | None = None
            while not work.done():
                await asyncio.wait([work], timeout=0.1)
                if work.done():
                    break
                reason = await asyncio.to_thread(should_stop) if should_stop is not None else None
                if reason or (deadline is not None and time.monotonic() >= deadline):
                    agents.stop_reason = "cancelled" if reason else "max_duration"
                    work.cancel()
                    await asyncio.gather(work, return_exceptions=True)
                    break
            error = None if work.cancelled() else work.exception()
            if error is not None and not isinstance(error, asyncio.CancelledError):
                raise error
    detail = {"reason": reason} if agents.stop_reason == "cancelled" else {}
    return AgenticRun(records=agents.records, anchor_ns=anchor_ns, anchor_at=anchor_at, mode="closed",
                      concurrency=concurrency, stop_reason=agents.stop_reason or "tasks", stop_detail=detail,
                      tasks=agents.tasks, steps=agents.steps)


async def run_agentic_load(base_url: str, model: str, prompts: Sequence[Prompt], load: Any, *, spec: AgenticSpec,
                           warmup_requests: int = 0, **kwargs: Any) -> tuple[AgenticRun, dict[str, Any]]:
    """:func:`benchflow.clients.run_cell_load`'s shape for the runner (one process, no warm-up)."""
    for unused in ("clients", "stall_after_s", "saturation"):
        kwargs.pop(unused, None)
    concurrency = getattr(load, "concurrency", None)
    if not isinstance(concurrency, int):
        raise ValueError("agentic workload: load points must be {concurrency: N} (the number of agents)")
    from benchflow.client_health import LoopMonitor, judge

    monitor = LoopMonitor()
    monitor.start()
    try:
        run = await run_agents(base_url, model, prompts, concurrency, spec, **kwargs)
    finally:
        monitor.stop()
    return run, judge([{"index": 0, **monitor.evidence()}], 1)


def agentic_summary(run: LoadRun, active: tuple[int | None, int | None] = (None, None)) -> dict[str, Any]:
    """Task and step counts and rates; ``*_active`` inside the active window ``(start, end)`` ns."""
    if not isinstance(run, AgenticRun):
        return {}
    done = [t for t in run.tasks if t.status == "completed"]
    steps = [s for s in run.steps if s.ok]
    ends = [s.end_ns for s in run.steps] or [run.anchor_ns]
    starts = [s.start_ns for s in run.steps] or [run.anchor_ns]
    span_s = (max(ends) - min(starts)) / 1e9
    out: dict[str, Any] = {
        "tasks_started": len(run.tasks), "tasks_done": len(done),
        "tasks_failed": sum(t.status == "failed" for t in run.tasks),
        "tasks_incomplete": sum(t.status == "incomplete" for t in run.tasks),
        "context_overflows": sum(t.failure == "context_overflow" for t in run.tasks),
        "steps_done": len(steps),
        "tasks_per_min": len(done) / span_s * 60 if span_s > 0 else None,
        "steps_per_s": len(steps) / span_s if span_s > 0 else None,
        "active_tasks_per_min": None, "active_steps_per_s": None, "steps_outside_active_fraction": None,
    }
    start, end = active
    if start is not None and end is not None and end > start:
        win_s = (end - start) / 1e9
        steps_in = sum(start <= s.end_ns <= end for s in steps)
        out["active_tasks_per_min"] = sum(start <= (t.end_ns or 0) <= end for t in done) / win_s * 60
        out["active_steps_per_s"] = steps_in / win_s
        out["steps_outside_active_fraction"] = (len(steps) - steps_in) / len(steps) if steps else None
    return out


def tasks_frame(run: LoadRun) -> Any:
    """The per-task table (``tasks.parquet``); None for a non-agentic run."""
    if not isinstance(run, AgenticRun):
        return None
    import pandas as pd

    cols = ["task_id", "agent", "turns_planned", "start_ns", "end_ns", "turns_done", "status", "failure"]
    return pd.DataFrame([{c: getattr(t, c) for c in cols} for t in run.tasks], columns=cols)
