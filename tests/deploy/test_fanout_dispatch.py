"""The fan-out's dispatcher (flows/campaign_backend.dispatch) on plain callables: at most ``parallel``
children in flight, a crashed child started once more, and the children in flight stopped on a cancel."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from benchflow.errors import CampaignCancelled
from flows.campaign_backend import dispatch


@dataclass
class _Type:
    value: str


@dataclass
class _State:
    kind: str
    message: str = ""

    @property
    def type(self) -> _Type:
        return _Type(self.kind)

    def is_final(self) -> bool:
        return self.kind in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


class _Pool:
    """Runs end after ``polls`` looks at them, with the outcome ``plan`` gives their backend."""

    def __init__(self, plan: dict[str, list[str]], polls: int = 2):
        self.plan = {k: list(v) for k, v in plan.items()}
        self.polls = polls
        self.runs: dict[int, list] = {}
        self.in_flight_max = 0
        self.stopped: list[int] = []

    def start(self, name: str) -> int:
        run_id = len(self.runs)
        self.runs[run_id] = [name, self.plan[name].pop(0), 0]
        self.in_flight_max = max(self.in_flight_max, self._in_flight())
        return run_id

    def _in_flight(self) -> int:
        return sum(1 for name, kind, n in self.runs.values() if n < self.polls)

    def state_of(self, run_id: int) -> _State:
        run = self.runs[run_id]
        run[2] += 1
        return _State(run[1], f"{run[0]} said {run[1]}") if run[2] >= self.polls else _State("RUNNING")


def _go(pool: _Pool, names, parallel, cancel=lambda: None):
    return dispatch(names, parallel, pool.start, pool.state_of, cancel, pool.stopped.extend,
                    logger=logging.getLogger("test"), sleep=lambda s: None)


def test_at_most_parallel_children_run_and_each_outcome_is_reported():
    pool = _Pool({"a": ["COMPLETED"], "b": ["FAILED"], "c": ["COMPLETED"], "d": ["COMPLETED"]})
    out = _go(pool, ["a", "b", "c", "d"], parallel=2)
    assert pool.in_flight_max == 2 and len(pool.runs) == 4
    assert out["b"] == ("FAILED", "b said FAILED") and out["a"][0] == out["c"][0] == out["d"][0] == "COMPLETED"


def test_a_crashed_child_is_started_once_more_and_a_second_crash_is_reported():
    pool = _Pool({"a": ["CRASHED", "COMPLETED"], "b": ["CRASHED", "CRASHED"]})
    out = _go(pool, ["a", "b"], parallel=2)
    assert out == {"a": ("COMPLETED", "a said COMPLETED"), "b": ("CRASHED", "b said CRASHED")}
    assert len(pool.runs) == 4


def test_a_cancel_stops_the_children_in_flight():
    pool = _Pool({"a": ["COMPLETED"], "b": ["COMPLETED"], "c": ["COMPLETED"]}, polls=100)
    looks = iter([None, None, "flow run x was cancelled"])
    with pytest.raises(CampaignCancelled):
        _go(pool, ["a", "b", "c"], parallel=2, cancel=lambda: next(looks))
    assert sorted(pool.stopped) == [0, 1], "the two in flight are cancelled; the third never started"
    assert len(pool.runs) == 2
