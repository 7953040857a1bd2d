"""``workload.driver`` validation and the pure parts of :mod:`benchflow.driver`: the line watcher
(progress, stuck, retry storm), the summary's rates inside the active window, and the status."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchflow.driver import DriverRun, DriverWatch, driver_status, driver_summary, error_key
from benchflow.errors import SpecError
from benchflow.spec import load_spec
from benchflow.spec.driver import DriverSpec

S = 1_000_000_000
TAU2 = {"task_done": r"^FINISHED SIMULATION:", "step_done": r"\[PROFILE\].*type=step_complete",
        "error": r"BadRequestError"}


def _driver(**kw) -> DriverSpec:
    return DriverSpec(**{"command": "run_oss.py --url {url} --max-concurrency {concurrency}", **TAU2, **kw})


def _spec(workload: dict, driver: dict | None = None):
    driver = {"command": ["run_oss.py", "{url}", "{concurrency}"], "task_done": "FINISHED", **(driver or {})}
    return load_spec({"name": "x", "model": "m", "backends": [{"name": "e", "kind": "openai", "url": "http://h:1"}],
                      "workload": {"load_points": [{"concurrency": 4}], "max_duration_s": "1h", **workload,
                                   "driver": driver}})


def _problems(workload: dict, driver: dict | None = None) -> list[str]:
    with pytest.raises(SpecError) as e:
        _spec(workload, driver)
    return list(e.value.problems)


# ---- the spec ------------------------------------------------------------------------------------

def test_a_driver_workload_needs_no_dataset_and_passes_the_concurrency():
    spec = _spec({"load_points": [{"concurrency": 32}, {"concurrency": 64}]},
                 {"command": "python run_oss.py --url {url} --model {model} --max-concurrency {concurrency} "
                             "--out {output_dir}", "stuck_after_s": "10m", "retry_storm": {"repeats": 20,
                                                                                             "within_s": "1m"},
                  "error": "context length"})
    d = spec.workload.driver
    assert d.stuck_after_s == 600.0 and d.retry_storm.within_s == 60.0
    assert d.argv(url="http://h:1", model="m", concurrency=32, output_dir="/o") == [
        "python", "run_oss.py", "--url", "http://h:1", "--model", "m", "--max-concurrency", "32", "--out", "/o"]
    assert [c.load_point.concurrency for c in spec.cells()] == [32, 64]
    # a driver cell has no TTFT: unless the spec says otherwise, the campaign compares its task rates
    assert list(spec.compare.metrics) == ["active_tasks_per_min", "active_steps_per_s", "tasks_per_min", "steps_per_s"]


def test_a_rate_load_point_is_a_clear_error_with_its_path():
    problems = _problems({"load_points": [{"concurrency": 4}, {"rate": 2, "arrival": "poisson"}]})
    assert any(p.startswith("workload: load_points[1] (r2-poisson): a driver workload takes concurrency load "
                            "points only") for p in problems), problems


@pytest.mark.parametrize("command, missing", [(["run", "{url}"], "{concurrency}"),
                                              ("run --max-concurrency {concurrency}", "{url}")])
def test_a_missing_placeholder_is_a_clear_error(command, missing):
    problems = _problems({}, {"command": command})
    assert any(p.startswith("workload.driver.command: missing placeholder(s)") and missing in p
               for p in problems), problems


def test_unknown_placeholders_bad_regexes_and_durations_without_units_are_named():
    problems = _problems({"max_duration_s": None},
                         {"command": ["run", "{url}", "{concurrency}", "{port}"], "task_done": "FINISHED(",
                          "stuck_after_s": "ten minutes", "retry_storm": {"repeats": 3}, "speed": 1})
    text = "\n".join(problems)
    for needle in ("workload.driver.command: unknown placeholder(s) {port}", "workload.driver.task_done: not a "
                   "regular expression", "workload.driver.stuck_after_s", "workload.driver.retry_storm.within_s",
                   "workload.driver.speed"):
        assert needle in text, text


def test_a_retry_storm_needs_an_error_regex_and_a_driver_needs_max_duration():
    assert any("retry_storm needs an error regex" in p
               for p in _problems({}, {"retry_storm": {"repeats": 3, "within_s": "10s"}}))
    assert any("max_duration_s: a driver workload needs one" in p for p in _problems({"max_duration_s": None,
                                                                                       "max_requests": 10}))


# ---- the watcher ---------------------------------------------------------------------------------

def test_task_and_step_lines_are_progress_and_errors_are_counted():
    w = DriverWatch(_driver(), start_ns=0)
    for i, line in enumerate(["[PROFILE] task=1 type=step_complete", "noise", "FINISHED SIMULATION: 1",
                              "ERROR litellm.BadRequestError: too long (4100 > 4096)"]):
        w.feed(line, (i + 1) * S)
    assert (len(w.task_ns), len(w.step_ns), w.error_lines, w.last_progress_ns) == (1, 1, 1, 3 * S)
    assert w.dominant_error() == {"line": "ERROR litellm.BadRequestError: too long (4100 > 4096)", "count": 1}


def test_no_progress_for_stuck_after_s_is_stuck():
    w = DriverWatch(_driver(stuck_after_s=10), start_ns=0)
    assert w.verdict(9 * S) is None  # nothing yet, but not for 10 s
    w.feed("[PROFILE] type=step_complete", 5 * S)
    w.feed("an unrelated line", 14 * S)  # only task and step lines are progress
    assert w.verdict(14 * S) is None
    reason, detail = w.verdict(15 * S)
    assert reason == "stuck" and detail["seconds_without_progress"] == 10.0 and detail["last_progress_s"] == 5.0


def test_the_same_error_repeating_within_the_window_is_a_storm_quoting_the_line():
    w = DriverWatch(_driver(retry_storm={"repeats": 3, "within_s": 10}), start_ns=0)
    line = "ERROR BadRequestError: maximum context length is {n} tokens (request {i})"
    for i, t in enumerate([0, 11, 22]):  # three, but never three within 10 s
        w.feed(line.format(n=4096, i=i), t * S)
    assert w.verdict(22 * S) is None
    w.feed("ERROR BadRequestError: rate limited", 23 * S)  # another error does not count towards it
    w.feed(line.format(n=4096, i=7), 25 * S)
    w.feed(line.format(n=4096, i=8), 26 * S)
    reason, detail = w.verdict(26 * S)
    assert reason == "retry_storm" and detail["line"] == line.format(n=4096, i=8)
    assert detail["seen_in_s"] == 4.0 and detail["total"] == 5
    assert error_key("a 12 b 3.5") == "a # b #.#"


# ---- the summary and the status ------------------------------------------------------------------

def _run(watch: DriverWatch, end_ns: int, reason: str = "exited", detail: dict | None = None,
         exit_code: int | None = 0) -> DriverRun:
    return DriverRun(["d"], Path("/nonexistent"), "/o", 0, end_ns, watch, exit_code, reason, detail or {})


def test_rates_over_the_run_and_inside_the_active_window():
    w = DriverWatch(_driver(expected_tasks=4), start_ns=0)
    for t in (1, 3, 5, 7, 9, 11):
        w.feed("[PROFILE] type=step_complete", t * S)
    for t in (5, 9, 11, 12):
        w.feed("FINISHED SIMULATION: x", t * S)
    s = driver_summary(_run(w, 12 * S), window=(4 * S, 10 * S))
    assert (s["tasks_done"], s["steps_done"], s["tasks_unfinished"]) == (4, 6, 0)
    assert s["tasks_per_min"] == pytest.approx(4 / 12 * 60) and s["steps_per_s"] == pytest.approx(0.5)
    assert s["active_tasks_per_min"] == pytest.approx(2 / 6 * 60)  # tasks at 5 and 9 s
    assert s["active_steps_per_s"] == pytest.approx(3 / 6)  # steps at 5, 7 and 9 s
    assert s["tasks_outside_active_fraction"] == 0.5 and s["steps_outside_active_fraction"] == 0.5
    assert s["invalid"] is None and driver_status(_run(w, 12 * S), s) == ("completed", None)
    none = driver_summary(_run(w, 12 * S), window=None)
    assert none["active_tasks_per_min"] is None and none["tasks_outside_active_fraction"] is None


def test_unfinished_tasks_a_failed_exit_and_no_task_make_the_cell_invalid():
    w = DriverWatch(_driver(expected_tasks=5), start_ns=0)
    w.feed("FINISHED SIMULATION: 1", S)
    s = driver_summary(_run(w, 2 * S, exit_code=3), window=None)
    assert s["invalid"] == "the driver exited with code 3; 4 of 5 expected tasks never finished"
    empty = driver_summary(_run(DriverWatch(_driver(), start_ns=0), S), window=None)
    assert empty["invalid"] == "the driver finished no task" and empty["tasks_per_min"] == 0.0


def test_stuck_and_storm_statuses_name_the_evidence_and_are_invalid():
    w = DriverWatch(_driver(expected_tasks=3, stuck_after_s=5), start_ns=0)
    w.feed("FINISHED SIMULATION: 1", S)
    detail = w.verdict(6 * S)[1]
    s = driver_summary(_run(w, 6 * S, "stuck", detail, exit_code=-15), window=None)
    status, error = driver_status(_run(w, 6 * S, "stuck", detail), s)
    assert status == "stuck" and s["stuck"]["tasks_unfinished"] == 2
    assert error == ("stuck: the driver printed no task or step line for 5 s (driver.stuck_after_s = 5); "
                     "1 tasks done; 2 of 3 expected tasks never finished")
    assert s["invalid"] == error
