"""``parallel: N``: lanes, the dispatcher, and N trials at once in one process (plain steps)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import optuna
import pytest
from optuna.trial import TrialState

from benchflow.tuning.parallel import dispatch, lane_gpus, place_on_lane
from benchflow.tuning.spec import load_tuning_spec
from benchflow.tuning.parallel import run_tuning
from tests.tuning.fakes import TuneFakes
from tests.tuning.test_study import spec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _backend(**fields):
    return spec(backend={"name": "b", "kind": fields.pop("kind", "sim"), **fields}).backend


def test_a_lane_moves_the_backend_to_its_own_gpus():
    assert lane_gpus(_backend(gpu_slots=[0]), 1) == ("gpu_slots", [1])
    assert lane_gpus(_backend(kind="vllm", gpus=2), 1) == ("gpus", [2, 3])
    assert lane_gpus(_backend(kind="vllm", gpus=[5]), 2) == ("gpus", [2])
    assert lane_gpus(_backend(kind="vllm", gpus=2), 3, device_count=4) == ("gpus", [2, 3]), "wraps on the host"
    assert lane_gpus(_backend(), 1) is None, "a backend without GPUs holds no slot and is not moved"
    assert lane_gpus(_backend(kind="vllm", gpus="all"), 1) is None
    s = spec(backend={"name": "b", "kind": "sim", "gpu_slots": [0]}, parallel=2)
    cspec = s.trial_campaign({"max-num-seqs": 2, "max-num-batched-tokens": 4})
    assert place_on_lane(cspec, 1).backends[0].gpu_slots == [1]
    assert cspec.backends[0].gpu_slots == [0], "the spec is not changed in place"


def test_parallel_and_placement_are_validated():
    assert spec().parallel == 1 and spec().placement == "local"
    from benchflow.errors import SpecError

    with pytest.raises(SpecError) as e:
        spec(parallel=0, placement="cloud")
    assert "parallel" in str(e.value) and "placement" in str(e.value)


def test_the_dispatcher_keeps_at_most_n_in_flight_on_distinct_lanes_until_the_count():
    s = spec(parallel=3, trials={"count": 7})
    study = optuna.create_study(directions=["maximize"])
    in_flight: dict[int, int] = {}
    peak, started, ticks = [0], [], [0]

    def start(lane):
        assert lane not in in_flight, "a lane is never given twice"
        in_flight[lane] = ticks[0]
        started.append(lane)
        peak[0] = max(peak[0], len(in_flight))
        return lane

    def done(lane):  # a trial takes two polls
        if ticks[0] - in_flight[lane] < 2:
            return False
        del in_flight[lane]
        study.add_trial(optuna.create_trial(value=1.0))
        return True

    def sleep(_):
        ticks[0] += 1

    out = dispatch(study, s, start, done, sleep=sleep)
    assert peak[0] == 3 and len(started) == 7 and out.ran == 7 and out.stopped_by == "count"
    assert len(study.trials) == 7


def test_runs_that_never_finish_a_trial_stop_the_study_instead_of_looping():
    s = spec(parallel=2, trials={"count": 5})
    study = optuna.create_study(directions=["maximize"])
    out = dispatch(study, s, lambda lane: lane, lambda h: True, sleep=lambda _: None)
    assert out.stopped_by == "failures" and out.ran == 6


class SlowSlots:
    """GPU slots as a lock per name, and a fake trial that takes a while: records who held what."""

    def __init__(self):
        self.lock = threading.Lock()
        self.held: set[str] = set()
        self.twice: list[str] = []

    @contextmanager
    def slots(self, backend):
        names = [f"gpu-{i}" for i in backend.gpu_slots or []]
        with self.lock:
            self.twice += [n for n in names if n in self.held]
            self.held |= set(names)
        try:
            yield names
        finally:
            with self.lock:
                self.held -= set(names)


def test_n_trials_run_at_once_on_distinct_slots_with_unique_numbers(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    s = spec(backend={"name": "sim", "kind": "sim", "gpu_slots": [0]}, parallel=2, trials={"count": 4})
    fakes, slots = TuneFakes(), SlowSlots()
    base = fakes.steps_for

    def steps_for(cspec, cid):
        steps = base(cspec, cid)
        run_cell = steps.run_cell

        def slow_cell(*a):
            time.sleep(0.5)
            return run_cell(*a)

        steps.run_cell, steps.gpu_slots = slow_cell, slots.slots
        return steps

    out = run_tuning(s, storage, steps_for, study_id="par")
    study = optuna.load_study(study_name="par", storage=storage)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert out.finished == 4 and len(trials) == 4
    assert sorted(t.number for t in study.trials) == list(range(len(study.trials)))
    assert not slots.twice, f"slots held twice: {slots.twice}"
    held = [t.user_attrs["gpu_slots"] for t in trials]
    assert {h["slots"][0] for h in held} == {"gpu-0", "gpu-1"}, "both lanes were used"
    assert _overlapping_pairs(trials), "no two trials ran at the same time"
    for a in held:  # the slot records: one slot never in two overlapping holdings
        for b in held:
            if a is not b and a["slots"] == b["slots"]:
                assert a["released"] <= b["acquired"] or b["released"] <= a["acquired"]


def _overlapping_pairs(trials):
    spans = [(t.datetime_start, t.datetime_complete) for t in trials]
    return [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:] if a[0] < b[1] and b[0] < a[1]]


def test_the_spec_loads_from_yaml_with_parallel_fields(tmp_path):
    import yaml

    path = tmp_path / "t.yaml"
    data = spec(parallel=2, placement="pool").model_dump(mode="json")
    path.write_text(yaml.safe_dump(data))
    loaded = load_tuning_spec(path)
    assert loaded.parallel == 2 and loaded.placement == "pool"
