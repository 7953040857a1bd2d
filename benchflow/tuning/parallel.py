"""Parallel and distributed tuning: ``parallel: N`` trials at once, one per GPU lane.

A *lane* is a place for one trial at a time. The dispatcher (:func:`dispatch`) keeps at most N
trials in flight, each on its own lane ``0..N-1``; a trial on lane ``k`` uses the GPUs of lane
``k`` (:func:`place_on_lane`): a backend on ``w`` GPUs (its ``gpu_slots``, a ``gpus`` count or
index list) is moved to GPUs ``k*w .. k*w+w-1`` (modulo the host's GPU count when it is known), so
on one host with several GPUs the trials run one per GPU, and the GPU slots (held around each
trial's backend, :mod:`tasks.concurrency`) keep two trials off one GPU wherever they land.

Two placements, one loop:

- ``local``: the N trials are threads of this process (:func:`run_local_parallel`), each running
  :func:`benchflow.tuning.study.run_trial` on the shared study.
- ``pool``: each trial is a run of the ``tune-trial`` deployment on the GPU work pool
  (``flows/tune.py`` submits them with ``run_deployment``); the run opens the study in Postgres
  and runs exactly one trial (:func:`run_one_trial`). Sampling happens in the worker, through
  ``study.optimize(n_trials=1)`` (not ask/tell in the dispatcher), so the trial's RUNNING state and
  its heartbeat belong to the process that measures it: when that worker dies, its heartbeat
  stops, and the next trial that starts anywhere marks it FAIL.

Heartbeat: the study storage of a parallel study is an ``RDBStorage`` with
``heartbeat_interval``/``grace_period`` and Optuna's ``RetryHeartbeatStaleTrialCallback`` (the
current name of ``RetryFailedTrialCallback``): a trial whose heartbeat is older than the grace
period is marked FAIL, and its configuration is enqueued once more (``max_retry`` 1) as a WAITING
trial, which the next trial to start takes, on whichever worker. A configuration that kills its
worker twice is not retried again (it would keep taking workers down). Trial numbers come from
Optuna's storage, which numbers trials under a row lock, so they never repeat.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.trial import TrialState

from benchflow.errors import BenchflowError

log = logging.getLogger(__name__)

HEARTBEAT_ENV = "BENCHFLOW_TUNE_HEARTBEAT_S"
GRACE_ENV = "BENCHFLOW_TUNE_GRACE_S"
DEFAULT_HEARTBEAT_S = 30
DEFAULT_GRACE_S = 120
#: How often a configuration whose worker died is measured again.
MAX_RETRY = 1


class TuneSettingsError(BenchflowError):
    """A tuning setting from the environment is not usable."""


def heartbeat_settings(env: dict[str, str] | None = None) -> tuple[int, int]:
    """(heartbeat_interval, grace_period) in whole seconds, from the environment."""
    env = dict(os.environ if env is None else env)
    try:
        interval = int(float(env.get(HEARTBEAT_ENV) or DEFAULT_HEARTBEAT_S))
        grace = int(float(env.get(GRACE_ENV) or max(DEFAULT_GRACE_S, 4 * interval)))
    except ValueError as e:
        raise TuneSettingsError(f"{HEARTBEAT_ENV}/{GRACE_ENV}: expected seconds, {e}") from e
    if interval < 1 or grace <= interval:
        raise TuneSettingsError(f"{HEARTBEAT_ENV}/{GRACE_ENV}: need heartbeat >= 1s and a grace period above it, "
                              f"got {interval}s/{grace}s")
    return interval, grace


def heartbeat_storage(url: str, *, heartbeat_s: int | None = None, grace_s: int | None = None,
                      max_retry: int = MAX_RETRY) -> optuna.storages.RDBStorage:
    """The study storage for trials that run in parallel: with Optuna's heartbeat and the retry
    of a trial whose worker died."""
    import warnings

    interval, grace = heartbeat_settings()
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}  # threads of one process share the file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s or interval,
            grace_period=grace_s or grace,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry))


# -- lanes ---------------------------------------------------------------------------------------


def lane_gpus(backend: Any, lane: int, device_count: int | None = None) -> tuple[str, list[int]] | None:
    """(field, indices): the GPUs of ``lane`` for ``backend`` (``gpu_slots`` or ``gpus``), or None
    when the backend cannot be moved (no GPU, GPUs given by UUID, or every GPU of the host)."""
    slots, gpus = getattr(backend, "gpu_slots", None), getattr(backend, "gpus", None)
    if slots:
        field, width = "gpu_slots", len(slots)
    elif isinstance(gpus, int) and not isinstance(gpus, bool) and gpus > 0:
        field, width = "gpus", gpus
    elif isinstance(gpus, list) and gpus and all(isinstance(g, int) or str(g).isdigit() for g in gpus):
        field, width = "gpus", len(gpus)
    else:
        return None
    first = lane * width
    if device_count and width <= device_count:
        first %= (device_count // width) * width
    return field, list(range(first, first + width))


def place_on_lane(cspec: Any, lane: int, device_count: int | None = None) -> Any:
    """The trial's campaign spec with its backend moved to the GPUs of ``lane``."""
    backend = cspec.backends[0]
    placed = lane_gpus(backend, lane, device_count)
    if placed is None:
        if getattr(backend, "needs_gpu", False):
            log.warning("backend %s uses every GPU (or GPUs by UUID): parallel trials wait for each other's "
                        "GPU slots; give it a gpus count to run one trial per GPU", backend.name)
        return cspec
    field, indices = placed
    moved = backend.model_copy(update={field: indices})
    return cspec.model_copy(update={"backends": [moved, *cspec.backends[1:]]})


def local_device_count() -> int | None:
    """This host's GPU count ($BENCHFLOW_GPU_COUNT, else NVML or $BENCHFLOW_FAKE_NVML), or None."""
    from benchflow.errors import BenchflowError
    from benchflow.gpu_slots import LocalGpus
    from benchflow.metrics.nvml_env import nvml_from_env

    try:
        return LocalGpus(nvml_from_env()).device_count() or None
    except (BenchflowError, OSError, ImportError):
        return None


# -- slot records --------------------------------------------------------------------------------


@contextmanager
def recorded_slots(inner: Any, backend: Any, record: Callable[[dict[str, Any]], None]) -> Iterator[Any]:
    """``inner(backend)`` (the GPU-slot context), recording which slots were held from when to when."""
    with inner(backend) as names:
        held = {"slots": list(names or []), "host": _host(), "acquired": _now()}
        try:
            yield names
        finally:
            held["released"] = _now()
            record(held)


def _host() -> str:
    from benchflow.gpu_slots import host_name

    return host_name()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def recording_steps(study: optuna.Study, steps_for: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    """``steps_for`` whose GPU slots are written to the trial (user attr ``gpu_slots``) when released,
    while the trial still runs: the evidence that no slot was ever held twice."""

    def wrapped(cspec: Any, cid: str) -> Any:
        steps = steps_for(cspec, cid)
        inner = steps.gpu_slots
        number = int(cid.rsplit("-t", 1)[-1]) if "-t" in cid else None

        def record(held: dict[str, Any]) -> None:
            if number is None:
                return
            trial = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                          if t.number == number), None)
            if trial is not None:
                study._storage.set_trial_user_attr(trial._trial_id, "gpu_slots", held)

        steps.gpu_slots = lambda backend: recorded_slots(inner, backend, record)
        return steps

    return wrapped


# -- one trial, on a lane ------------------------------------------------------------------------


def run_one_trial(spec: Any, storage: Any, study_id: str, steps_for: Callable[[Any, str], Any], *, lane: int = 0,
                  on_campaign: Any = None, device_count: int | None = None) -> dict[str, Any]:
    """Opens the study and runs exactly one trial of it on ``lane`` (the ``tune-trial`` run)."""
    from benchflow.tuning.study import open_study, run_trial

    study = open_study(spec, storage, study_id)
    count = local_device_count() if device_count is None else device_count
    t = run_trial(study, spec, recording_steps(study, steps_for), on_campaign=on_campaign,
                  place=lambda cspec: place_on_lane(cspec, lane, count))
    return {"study_id": study_id, "trial": t.number, "lane": lane, "state": t.state.name,
            "measured": bool(t.user_attrs.get("measured")), "infeasible": t.user_attrs.get("infeasible"),
            "values": list(t.values) if t.values and t.user_attrs.get("measured") else None}


# -- the dispatcher ------------------------------------------------------------------------------


@dataclass
class Dispatched:
    ran: int
    stopped_by: str


def dispatch(study: optuna.Study, spec: Any, start: Callable[[int], Any], done: Callable[[Any], bool], *,
             progress: Callable[[Any], None] | None = None, poll_s: float = 1.0,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
             max_failed_runs: int | None = None) -> Dispatched:
    """Keeps at most ``spec.parallel`` trials in flight, each on its own lane, until the budget
    (``trials.count`` finished trials, ``trials.timeout_s``, the grid) is reached; then waits for
    those in flight. ``start(lane)`` starts one trial and returns a handle; ``done(handle)`` says
    whether it ended. A run that ends without finishing a trial (its worker died) is counted;
    after ``max_failed_runs`` (default 3 x parallel) in a row the study stops."""
    from benchflow.tuning.study import grid_size

    n = spec.parallel
    max_failed_runs = max_failed_runs or 3 * n
    in_flight: dict[int, Any] = {}
    started_at, ran, failed_in_row = clock(), 0, 0
    stopped_by = "count"
    finished_before = _finished(study)
    from benchflow.tuning.study import _fail_stale, _heartbeat_enabled

    heartbeat = _heartbeat_enabled(study)
    while True:
        if heartbeat:  # a trial whose worker died: FAIL, and enqueued for the next trial to take
            _fail_stale(study)
        for lane, handle in list(in_flight.items()):
            if done(handle):
                del in_flight[lane]
                ran += 1
                now_finished = _finished(study)
                failed_in_row = 0 if now_finished > finished_before else failed_in_row + 1
                finished_before = now_finished
                if progress:
                    progress(handle)
        reason = _budget_reached(study, spec, clock() - started_at, len(in_flight), grid_size)
        if failed_in_row >= max_failed_runs:
            reason = "failures"
        if reason:
            stopped_by = reason
        free = [lane for lane in range(n) if lane not in in_flight]
        if not reason and free:
            lane = free[0]
            in_flight[lane] = start(lane)
            continue  # fill every free lane before waiting
        if reason and not in_flight:
            break
        sleep(poll_s)
    return Dispatched(ran, stopped_by)


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _budget_reached(study: optuna.Study, spec: Any, elapsed: float, in_flight: int,
                    grid_size: Callable[[Any], int]) -> str | None:
    done = _finished(study)
    if spec.trials.count is not None and done + in_flight >= spec.trials.count:
        return "count"
    if spec.trials.timeout_s is not None and elapsed >= spec.trials.timeout_s:
        return "time budget"
    if spec.sampler_name == "grid" and done + in_flight >= grid_size(spec):
        return "grid exhausted"
    return None


def run_local_parallel(spec: Any, storage_url: str, study_id: str, steps_for: Callable[[Any, str], Any], *,
                       on_campaign: Any = None, progress: Callable[[str], None] | None = None,
                       thread_context: Callable[[], Callable[..., Any]] | None = None,
                       device_count: int | None = None) -> Dispatched:
    """``parallel: N`` in this process: N threads, each running one trial at a time on its lane.
    ``thread_context()`` gives each trial a function that runs a callable in the right context
    (the Prefect flow passes ``contextvars.copy_context().run``)."""
    from benchflow.tuning.study import open_study, progress_note

    storage = heartbeat_storage(storage_url)
    study = open_study(spec, storage, study_id)
    count = local_device_count() if device_count is None else device_count
    errors: list[BaseException] = []

    def start(lane: int) -> threading.Thread:
        runner = thread_context() if thread_context else (lambda f, *a, **kw: f(*a, **kw))

        def body() -> None:
            try:
                out = runner(run_one_trial, spec, storage, study_id, steps_for, lane=lane,
                             on_campaign=on_campaign, device_count=count)
                if progress:
                    progress(progress_note(study, spec, study.trials[out["trial"]]))
            except BaseException as e:  # noqa: BLE001 - reported after the others end
                log.exception("trial on lane %d failed", lane)
                errors.append(e)

        thread = threading.Thread(target=body, name=f"tune-lane-{lane}", daemon=True)
        thread.start()
        return thread

    out = dispatch(study, spec, start, lambda th: not th.is_alive(), poll_s=0.2)
    if errors and out.ran == len(errors):
        raise errors[0]
    return out


def run_tuning(spec: Any, storage: Any, steps_for: Callable[[Any, str], Any], *, study_id: str | None = None,
               on_campaign: Any = None, progress: Callable[[str], None] | None = None,
               thread_context: Callable[[], Callable[..., Any]] | None = None) -> Any:
    """A study in this process: :func:`~benchflow.tuning.study.run_study` one trial at a time, or,
    with ``parallel: N`` (N > 1), :func:`run_local_parallel`. Returns a ``StudyOutcome``."""
    from benchflow.tuning.study import StudyOutcome, new_study_id, run_study

    study_id = study_id or new_study_id(spec)
    if spec.placement == "pool":
        log.warning("study %s: placement: pool needs the Prefect flow (the tune/adhoc deployment); here the "
                    "trials run in this process", study_id)
    if spec.parallel <= 1 or not isinstance(storage, str):
        return run_study(spec, storage, steps_for, study_id=study_id, on_campaign=on_campaign, progress=progress)
    out = run_local_parallel(spec, storage, study_id, steps_for, on_campaign=on_campaign, progress=progress,
                             thread_context=thread_context)
    study = optuna.load_study(study_name=study_id, storage=storage)
    return StudyOutcome(study_id, out.ran, _finished(study), out.stopped_by)
