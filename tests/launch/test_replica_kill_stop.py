"""``runner.stop_when_dead``: behind a router the cell's stop check also asks the backend's
``alive()`` (at most once per interval), so a dead replica stops the load at once."""

from __future__ import annotations

from benchflow.runner import stop_when_dead


def test_a_dead_part_stops_the_load_with_its_reason():
    dead: list[str] = []
    asked: list[int] = []

    def alive() -> str | None:
        asked.append(1)
        return dead[0] if dead else None

    check = stop_when_dead(lambda: None, alive, every_s=0.0)
    assert check() is None and len(asked) == 1
    dead.append("replica 1 (b-r1, http://127.0.0.1:9): exit code -9 (killed by signal 9, SIGKILL)")
    assert check() == f"backend died during the cell ({dead[0]})"


def test_the_callers_reason_comes_first_and_alive_is_asked_at_most_once_per_interval():
    asked: list[int] = []

    def alive() -> str | None:
        asked.append(1)
        return None

    assert stop_when_dead(lambda: "cancelled by the user", alive)() == "cancelled by the user" and asked == []
    check = stop_when_dead(lambda: None, alive, every_s=3600.0)
    for _ in range(5):
        assert check() is None
    assert len(asked) == 1
