"""The cancel watcher's decision, with a stand-in API client (no server)."""

from __future__ import annotations

from types import SimpleNamespace

from prefect.client.schemas.objects import StateType

from tasks.cancel import CancelWatcher, poll_interval_s


class _Client:
    def __init__(self, states: dict[str, StateType | None], fail: set[str] = frozenset()):
        self.states, self.fail = states, fail

    def read_flow_run(self, flow_run_id):
        if flow_run_id in self.fail:
            raise ConnectionError("API blip")
        t = self.states[flow_run_id]
        return SimpleNamespace(name=f"run-{flow_run_id}",
                               state=None if t is None else SimpleNamespace(type=t, name=t.value.title()))


def test_running_is_not_a_cancel_and_cancelling_is():
    watcher = CancelWatcher("a", interval_s=1)
    assert not watcher._check(_Client({"a": StateType.RUNNING})) and watcher() is None
    assert watcher._check(_Client({"a": StateType.CANCELLING}))
    assert watcher() == "flow run run-a was cancelled (state Cancelling)"


def test_a_cancel_of_the_root_run_counts_and_an_api_blip_does_not():
    watcher = CancelWatcher("child", interval_s=1, also=("root", None, "child"))
    assert watcher.watched == ["child", "root"]
    assert not watcher._check(_Client({"child": StateType.RUNNING, "root": None}, fail={"child"}))
    assert watcher._check(_Client({"child": StateType.RUNNING, "root": StateType.CANCELLED}))
    assert "run-root" in watcher()


def test_the_poll_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("BENCHFLOW_CANCEL_POLL_S", "0.5")
    assert poll_interval_s() == 0.5
    monkeypatch.setenv("BENCHFLOW_CANCEL_POLL_S", "soon")
    assert poll_interval_s() == 2.0
