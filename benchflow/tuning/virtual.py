"""Virtual-time trials: the measurement under a tuning trial, without processes, HTTP or sleeps.

:func:`virtual_steps` is a ``steps_for(campaign_spec, campaign_id) -> BackendSteps`` factory, the
same seam :func:`benchflow.tuning.local.local_steps` fills for real trials. So a virtual study runs
the very same code as a real one (:func:`benchflow.tuning.study.run_study`: sampling, flag
constraints, :func:`~benchflow.tuning.study.measure` through the campaign engine's
``run_backend``, the SLO constraints and objective values of ``_evaluate``) and the cell summary is
made by the same :func:`benchflow.runner.summarize_cell` from raw request records. Only what lies
underneath is virtual:

* ``deploy`` builds the simulator's engine from the backend's ``engine_args`` exactly as
  ``python -m benchflow.sim`` does (:func:`~benchflow.sim.config.load_sim_config`,
  :func:`~benchflow.sim.config.build_engine_config`); a configuration the simulator refuses to start
  with (vLLM's out-of-memory message) raises the same :class:`BackendStartError`.
* ``run_cell`` drives the engine in virtual time the way the load generator drives the server: a
  warm-up phase, then the load point (closed loop: ``concurrency`` clients; open loop: the seeded
  send schedule), ``max_requests``, ``max_duration_s`` (requests in flight at the end are
  incomplete), ``request_timeout_s`` (the request fails with ``timeout`` and is aborted), the
  server's 400 answers (a prompt longer than the token budget without chunked prefill, or longer
  than ``max-model-len``). Each output token is one SSE message at the virtual time its step ends.

What it leaves out: the HTTP and event-loop latency of a real run (a few ms per request on a
quiet machine), ``/metrics`` samples (no active window), faults (crash/stall/error-rate knobs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from benchflow.engine import BackendSteps
from benchflow.errors import BackendStartError, SpecError
from benchflow.records import LoadRun, RequestRecord
from benchflow.runner import CellOutcome, prompt_count, summarize_cell
from benchflow.sim.config import EngineConfig, build_engine_config, load_sim_config
from benchflow.sim.engine import Engine
from benchflow.sim.engine import Sequence as EngineSequence

log = logging.getLogger(__name__)

__all__ = ["VirtualBackend", "virtual_steps", "virtual_engine", "virtual_cell", "virtual_summary"]

_NS = 1_000_000_000


@dataclass
class VirtualBackend:
    """The 'launcher' of a virtual backend: its engine config and a log, like a real launcher's."""

    name: str
    config: EngineConfig
    text: str = ""
    url: str = "virtual://sim"

    def logs(self) -> str:
        return self.text

    def alive(self) -> str | None:
        return None

    def stop(self, grace_s: float = 0.0) -> None:
        return None


def virtual_engine(backend: Any, model: str) -> EngineConfig:
    """The simulator's engine for ``backend`` (a campaign ``sim`` backend); BackendStartError
    carries the simulator's own start-up failure (vLLM's out-of-memory message)."""
    if backend.kind != "sim":
        raise BackendStartError(f"backend {backend.name}: only sim backends can be measured in virtual time")
    try:
        config = load_sim_config({"model": model}, backend.effective_engine_args())
    except SpecError as e:
        raise BackendStartError(f"backend {backend.name}: the simulator rejects its flags: {'; '.join(e.problems)}",
                                "\n".join(e.problems)) from e
    try:
        return build_engine_config(config)
    except BackendStartError as e:  # the message the simulator prints before it exits 1
        raise BackendStartError(f"backend {backend.name} exited during start-up (exit code 1)", str(e)) from e


def _refusal(config: EngineConfig, prompt_tokens: int, max_tokens: int) -> str | None:
    """The 400 the simulator's server answers before a request reaches the engine (protocol.py,
    server.py ``_parse``), or None."""
    if prompt_tokens + max_tokens > config.max_model_len:
        return (f"This model's maximum context length is {config.max_model_len} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens")
    if not config.enable_chunked_prefill and prompt_tokens > config.max_num_batched_tokens:
        return (f"Input prompt ({prompt_tokens} tokens) is too long and exceeds the limit of "
                f"max_num_batched_tokens={config.max_num_batched_tokens} (chunked prefill is disabled)")
    return None


class _Load:
    """The load generator's phases against one engine, in virtual nanoseconds."""

    def __init__(self, config: EngineConfig, prompts: list[Any], warmup: int, timeout_s: float):
        self.config = config
        self.engine = Engine(config)
        self.prompts = prompts
        self.warmup = warmup
        self.timeout_ns = int(timeout_s * _NS)
        self.now_ns = 0
        self.records: list[RequestRecord] = []
        self.live: dict[str, RequestRecord] = {}

    def send(self, idx: int, at_ns: int, scheduled_ns: int | None = None) -> bool:
        """Sends request ``idx``; False when the server answered it at once (a 400)."""
        p = self.prompts[idx % len(self.prompts)]
        rec = RequestRecord(request_id=idx, warmup=idx < self.warmup, start_ns=at_ns, scheduled_ns=scheduled_ns,
                            input_tokens=p.input_tokens)
        self.records.append(rec)
        refusal = _refusal(self.config, p.input_tokens, p.max_tokens)
        if refusal:
            rec.status, rec.error_class, rec.error_message, rec.end_ns = 400, "http_4xx", refusal, at_ns
            return False
        rec.status = 200
        self.live[str(idx)] = rec
        self.engine.add(EngineSequence(str(idx), p.input_tokens, p.max_tokens))
        return True

    def step(self, stop_ns: int | None) -> list[RequestRecord]:
        """One engine step; returns the records that ended in it (finished or timed out). A step
        that would end after ``stop_ns`` is not taken (the run stops first)."""
        result = self.engine.step()
        if result is None:
            return []
        end_ns = self.now_ns + int(round(result.duration_s * _NS))
        ended: list[RequestRecord] = []
        for rec in list(self.live.values()):  # a client gives up at its timeout, even mid-step
            if rec.start_ns + self.timeout_ns < min(end_ns, stop_ns if stop_ns is not None else end_ns):
                self._time_out(rec, rec.start_ns + self.timeout_ns)
                ended.append(rec)
        if stop_ns is not None and end_ns > stop_ns:
            self.now_ns = stop_ns
            return ended
        self.now_ns = end_ns
        for out in result.outputs:
            rec = self.live.get(out.request_id)
            if rec is None:
                continue
            rec.chunks.append((end_ns, None))
            if out.finished:
                rec.end_ns, rec.completion_tokens = end_ns, len(rec.chunks)
                del self.live[out.request_id]
                ended.append(rec)
        return ended

    def _time_out(self, rec: RequestRecord, at_ns: int) -> None:
        rec.error_class, rec.error_message, rec.end_ns = "timeout", f"no complete response within " \
            f"{self.timeout_ns / _NS:g} s", at_ns
        self.live.pop(str(rec.request_id), None)
        self.engine.abort(str(rec.request_id))

    def stop(self) -> None:
        """The end of the run: requests in flight are cancelled (``incomplete``)."""
        for rec in self.live.values():
            rec.incomplete, rec.end_ns = True, self.now_ns
        self.live.clear()

    def closed(self, concurrency: int, first: int, total: int | None, stop_ns: int | None) -> bool:
        """Clients that each send their next request when the previous ends; True when it ran to
        the end (False: stopped by ``stop_ns``)."""
        nxt = first

        def send_next(at_ns: int) -> None:
            nonlocal nxt
            refused = 0  # an answered-at-once request frees its client at once
            while (total is None or nxt < total) and refused <= len(self.prompts):
                idx, nxt = nxt, nxt + 1
                if self.send(idx, at_ns):
                    return
                refused += 1

        for _ in range(concurrency):
            send_next(self.now_ns)
        while self.live:
            if stop_ns is not None and self.now_ns >= stop_ns:
                return False
            for _ in self.step(stop_ns):
                send_next(self.now_ns)
            if not self.live and (total is None or nxt < total) and (stop_ns is None or self.now_ns < stop_ns):
                send_next(self.now_ns)
        return True

    def open(self, offsets_ns: list[int], first: int, stop_ns: int | None) -> bool:
        t0 = self.now_ns
        queue = [(t0 + off, first + i) for i, off in enumerate(offsets_ns)][::-1]
        while queue or self.live:
            if stop_ns is not None and self.now_ns >= stop_ns:
                return False
            if not self.live and queue:
                self.now_ns = max(self.now_ns, queue[-1][0])
            while queue and queue[-1][0] <= self.now_ns:
                at, idx = queue.pop()
                if stop_ns is not None and at > stop_ns:
                    queue.clear()
                    break
                self.send(idx, at, scheduled_ns=at)
            if self.live:
                self.step(stop_ns)
        return True


def virtual_load(config: EngineConfig, cspec: Any, cell: Any) -> LoadRun:
    """The load generator's run of ``cell`` (``benchflow.loadgen.run_load``), in virtual time."""
    from benchflow.schedule import send_offsets_ns
    from benchflow.workload import make_prompts

    wl, load = cspec.workload, cell.load_point
    prompts = make_prompts(wl, prompt_count(wl), cell.seed)
    warmup, max_requests = int(wl.warmup_requests), wl.max_requests
    total = warmup + max_requests if max_requests is not None else None
    if total is None and wl.max_duration_s is None:
        total = warmup + len(prompts)
    run = _Load(config, prompts[: len(prompts) if total is None else min(len(prompts), total)], warmup,
                float(wl.request_timeout_s))
    stop_ns = int(float(wl.max_duration_s) * _NS) if wl.max_duration_s is not None else None
    finished = True
    if warmup:
        cap = load.concurrency if load.mode == "closed" else (load.max_concurrency or warmup)
        finished = run.closed(min(cap, warmup), 0, warmup, stop_ns)
    if finished and load.mode == "closed":
        finished = run.closed(load.concurrency, warmup, total, stop_ns)
    elif finished:
        measured = None if total is None else total - warmup
        offsets = send_offsets_ns(load.rate, load.arrival, n=measured, duration_s=wl.max_duration_s,
                                  burstiness=load.burstiness, seed=cell.seed)
        finished = run.open(offsets, warmup, stop_ns)
    run.stop()
    stop_reason = ("max_requests" if max_requests is not None else
                   "max_duration" if wl.max_duration_s is not None else "prompts") if finished else "max_duration"
    return LoadRun(records=run.records, anchor_ns=0, anchor_at=datetime(2000, 1, 1, tzinfo=UTC), mode=load.mode,
                   concurrency=load.concurrency if load.mode == "closed" else load.max_concurrency,
                   target_rate=getattr(load, "rate", None), stop_reason=stop_reason)


def virtual_cell(config: EngineConfig, cspec: Any, cell: Any) -> CellOutcome:
    """One cell measured in virtual time, summarized by the runner's own :func:`summarize_cell`."""
    now = datetime.now(UTC)
    outcome = CellOutcome(cell_id=cell.id, backend=cell.backend, load_label=cell.load_point.label,
                          repetition=cell.repetition, status="completed", started_at=now, finished_at=now,
                          run=virtual_load(config, cspec, cell))
    outcome.summary = summarize_cell(cspec, outcome)
    if not outcome.summary.get("completed"):
        errors = outcome.summary.get("errors") or {}
        dominant = outcome.summary.get("dominant_error")
        cause = f": {dominant['message']!r} ×{dominant['count']}" if dominant else ""
        outcome.status = "failed"
        outcome.error = f"no request succeeded ({', '.join(f'{k}×{v}' for k, v in sorted(errors.items()))}){cause}"
    return outcome


def virtual_summary(cspec: Any, flags: dict[str, Any] | None = None, *, cell_index: int = 0) -> dict[str, Any] | None:
    """The summary of one cell of a one-backend campaign spec (its engine args, plus ``flags``),
    or None when the backend would not start or no request succeeded. A convenience for sweeps."""
    backend = cspec.backends[0]
    if flags:
        backend = backend.model_copy(update={"engine_args": {**(backend.engine_args or {}), **flags}})
    try:
        config = virtual_engine(backend, cspec.model.name)
    except BackendStartError:
        return None
    outcome = virtual_cell(config, cspec, cspec.cells()[cell_index])
    return outcome.summary if outcome.status == "completed" else None


def virtual_steps(*, on_cell: Any = None) -> Any:
    """``steps_for(campaign_spec, campaign_id) -> BackendSteps`` measuring in virtual time (see the
    module docstring); pass it to :func:`benchflow.tuning.study.run_study` in place of
    :func:`benchflow.tuning.local.local_steps`. ``on_cell(campaign_id, row, summary)``: called for
    each stored cell (nothing is persisted otherwise)."""

    def steps_for(cspec: Any, cid: str) -> BackendSteps:
        def deploy(backend: Any) -> VirtualBackend:
            config = virtual_engine(backend, cspec.model.name)
            return VirtualBackend(backend.name, config, text=f"virtual sim {backend.name}: "
                                  f"{config.num_gpu_blocks} KV blocks of {config.block_size} tokens\n")

        def run_cell(backend: Any, cell: Any, launcher: VirtualBackend, should_stop: Any) -> CellOutcome:
            return virtual_cell(launcher.config, cspec, cell)

        def persist_cell(cell: Any, row: dict[str, Any], summary: Any, artifacts: dict) -> None:
            if on_cell is not None:
                on_cell(cid, row, summary)

        return BackendSteps(deploy=deploy, teardown=lambda launcher, grace: launcher.logs(), run_cell=run_cell,
                            persist_cell=persist_cell, sleep=lambda s: None)

    return steps_for


def cached_steps(steps_for: Any, cache: dict[Any, Any]) -> Any:
    """``steps_for`` whose deploys and cells are remembered by (engine args, load point,
    repetition, seed): a virtual measurement is deterministic, so a benchmark that asks for the
    same configuration again (another sampler, another seed) gets the same summary without
    measuring it again. Only for virtual steps. ``cache`` holds picklable values (a cell's outcome
    without its raw records), so a sweep can be saved and reused."""

    def wrapped(cspec: Any, cid: str) -> BackendSteps:
        steps = steps_for(cspec, cid)
        key = tuple(sorted((k, repr(v)) for k, v in cspec.backends[0].effective_engine_args().items()))
        deploy, run_cell = steps.deploy, steps.run_cell

        def cached_deploy(backend: Any) -> Any:
            hit = cache.get((key, "deploy"))
            if hit is None:
                try:
                    hit = deploy(backend)
                except BackendStartError as e:
                    hit = e
                cache[(key, "deploy")] = hit
            if isinstance(hit, BackendStartError):
                raise hit
            return hit

        def cached_cell(backend: Any, cell: Any, launcher: Any, should_stop: Any) -> Any:
            ckey = (key, cell.load_point.label, cell.repetition, cell.seed)
            if ckey not in cache:  # the summary is kept, the raw records are not (picklable, small)
                out = run_cell(backend, cell, launcher, should_stop)
                cache[ckey] = replace(out, run=None, server_samples=None, gpu_samples=None)
            return replace(cache[ckey], cell_id=cell.id, backend=cell.backend)

        steps.deploy, steps.run_cell = cached_deploy, cached_cell
        return steps

    return wrapped


@dataclass
class Evaluation:
    """One configuration through the study's own trial code: its objective values, whether every
    Optuna constraint holds (``<= 0``), the constraint values and the trial's user attrs."""

    flags: dict[str, Any]
    values: list[float]
    feasible: bool
    constraints: dict[str, float]
    attrs: dict[str, Any]


def evaluate_config(spec: Any, flags: dict[str, Any], steps_for: Any, *, number: int = 0) -> Evaluation:
    """Evaluates ``flags`` with exactly the code a study's trial runs (``benchflow.tuning.study``'s
    trial objective, on an :class:`optuna.trial.FixedTrial` in a throwaway in-memory study), so an
    exhaustive sweep and a study agree on every value and constraint. ``steps_for``: virtual or real."""
    import optuna

    from benchflow.tuning import study as study_mod

    study = optuna.create_study(directions=["maximize" if d == "maximize" else "minimize" for d in spec.directions],
                                study_name=f"{spec.name}-x{number}")
    trial = optuna.trial.FixedTrial(dict(flags), number=number)
    values = study_mod._evaluate(study, trial, spec, steps_for, None)
    constraints = dict(trial.constraints)
    attrs = dict(trial.user_attrs)
    feasible = bool(attrs.get("measured")) and not attrs.get("infeasible") and all(v <= 0 for v in constraints.values())
    return Evaluation(dict(flags), list(values), feasible, constraints, attrs)
