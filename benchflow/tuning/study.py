"""A tuning study: Optuna asks for flags, the campaign engine measures them, Optuna is told.

Each trial is a one-backend campaign (id ``<study>-t<number>``) run by
:func:`benchflow.engine.run_backend` through the :class:`~benchflow.engine.BackendSteps` that
``steps_for(campaign_spec, campaign_id)`` builds: the CLI passes plain steps
(:mod:`benchflow.tuning.local`), ``flows/tune.py`` passes Prefect tasks. Nothing here deploys,
measures or tears down by itself.

Infeasible trials are kept and learned from, never given penalty scores: every trial sets the same
named Optuna constraints (``trial.set_constraint``, Optuna 5's form of ``constraints_func``),
``<= 0`` meaning satisfied: one per flag constraint, one per SLO (measured/limit - 1) and
``deployed`` (1 when the backend never started or died). A trial that was never measured (a broken
flag constraint, a failed start) has no objective values of its own; it is told the worst value
measured so far (0 before any), which only the GP sampler's model reads (TPE and NSGA-II rank
infeasible trials by their violation alone), and carries ``measured: false``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from benchflow.campaign import slug
from benchflow.engine import BackendSteps, run_backend
from benchflow.launch.base import tail
from benchflow.tuning.capacity import CAPACITY_CONSTRAINT, capacity_outcome, capacity_per_repetition
from benchflow.tuning.spec import CAPACITY_OBJECTIVE, TPE_OPTIONS, Bool, Categorical, FloatRange, IntRange, TuningSpec

log = logging.getLogger(__name__)

StepsFactory = Callable[[Any, str], BackendSteps]
#: ``on_campaign(campaign_id, campaign_spec, status)``: "running" before a trial's cells, then its end status.
CampaignHook = Callable[[str, Any, str], None]
#: ``place(campaign_spec) -> campaign_spec``: moves a trial's backend to its GPUs (parallel trials).
Placer = Callable[[Any], Any]

INTERRUPTED = ("interrupted: the process running this trial stopped before it finished; marked FAIL on "
               "resume, and its configuration is enqueued to be measured again")


@dataclass
class Measurement:
    """What one trial's (or one confirmation's) cells gave, per load point label."""

    campaign_id: str
    summaries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    backend_log: str = ""
    cell_ids: list[str] = field(default_factory=list)
    started: bool = True
    #: SLO capacities found (the aggregate rows of ``engine.dynamic``), by load point label.
    capacities: dict[str, dict[str, Any]] = field(default_factory=dict)

    def reason(self) -> str:
        first = next((e for e in self.errors if e), "no completed cell at the objective load point")
        head = first.split("\n")[0]
        log_tail = tail(self.backend_log, 12).strip()
        return f"{head}\n--- last lines of the backend log ---\n{log_tail}" if log_tail else first


#: Postgres schema of Optuna's tables: both Optuna and benchflow keep an ``alembic_version`` table,
#: so they cannot share one namespace.
OPTUNA_SCHEMA = "optuna"


def storage_url(database_url: str) -> str:
    """Optuna's storage URL for a results database URL.

    Both benchflow and Optuna version their tables with an ``alembic_version`` table, so the study
    cannot live in the same namespace: on SQLite it is a file beside the results database
    (``benchflow.db`` -> ``benchflow-optuna.db``); on Postgres it is the same database, schema
    ``optuna`` (``?options=-csearch_path=optuna``), made by :func:`prepare_storage`. The URL is the
    one ``optuna-dashboard`` opens.
    """
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return database_url
        path = Path(url.database)
        return url.set(database=str(path.with_name(f"{path.stem}-optuna{path.suffix or '.db'}"))) \
            .render_as_string(hide_password=False)
    if url.get_backend_name() == "postgresql":
        return url.update_query_dict({"options": f"-csearch_path={OPTUNA_SCHEMA}"}) \
            .render_as_string(hide_password=False)
    return database_url


def prepare_storage(database_url: str) -> str:
    """Creates what the study storage needs (the Postgres schema) and returns :func:`storage_url`."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if make_url(database_url).get_backend_name() == "postgresql":
        engine = create_engine(database_url)
        try:
            with engine.begin() as conn:
                conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
        finally:
            engine.dispose()
    url = storage_url(database_url)
    _create_tables(url)
    return url


def _create_tables(url: str, attempts: int = 5) -> None:
    """Creates Optuna's tables once; two processes doing it at the same moment collide on
    ``alembic_version`` (IntegrityError), and the loser only has to look again."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            optuna.storages.RDBStorage(url).remove_session()
            return
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def new_study_id(spec: TuningSpec, now: datetime | None = None) -> str:
    import secrets

    now = now or datetime.now(UTC)
    return f"{slug(spec.name)}-tune-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def make_sampler(spec: TuningSpec) -> optuna.samplers.BaseSampler:
    name, seed = spec.sampler_name, spec.sampler.seed
    if name == "grid":
        return optuna.samplers.GridSampler({f: p.values() for f, p in spec.search_space.items()}, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, **TPE_OPTIONS)


def open_study(spec: TuningSpec, storage: str | optuna.storages.BaseStorage, study_id: str) -> optuna.Study:
    """Creates the study, or loads it to resume; trials left RUNNING by a crash are marked FAIL and
    their configuration enqueued again (it was never told, so it is measured again)."""
    study = optuna.create_study(study_name=study_id, storage=storage, sampler=make_sampler(spec),
                                directions=["maximize" if d == "maximize" else "minimize" for d in spec.directions],
                                load_if_exists=True)
    study.set_user_attr("spec", spec.model_dump(mode="json"))
    study.set_user_attr("objectives", list(spec.objective.metrics))
    _enqueue_preset(study, spec)
    if _heartbeat_enabled(study):  # parallel: a RUNNING trial may be measured right now elsewhere
        _fail_stale(study)
        return study
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "failed_reason", INTERRUPTED)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        log.warning("study %s: trial %d was left running by a crash: marked FAIL; its configuration is measured "
                    "again", study_id, t.number)
    return study


def _enqueue_preset(study: optuna.Study, spec: TuningSpec) -> None:
    """Enqueues the preset's configuration as the study's first trial, once: a resumed study (one
    with trials, or whose preset was enqueued before) does not get it again."""
    flags = spec.preset_flags()
    if not flags or study.user_attrs.get("preset_enqueued") or study.get_trials(deepcopy=False):
        return
    name = spec.preset if isinstance(spec.preset, str) else "inline"
    study.enqueue_trial(flags, user_attrs={"preset": name})
    study.set_user_attr("preset_enqueued", name)
    log.info("study %s: preset %s enqueued as the first trial: %s", study.study_name, name, flags)


def _heartbeat_enabled(study: optuna.Study) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(study._storage)


def _fail_stale(study: optuna.Study) -> None:
    """Marks FAIL the trials whose heartbeat stopped (their worker died); the storage's callback
    enqueues their configuration again (:mod:`benchflow.tuning.parallel`)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def suggest(trial: optuna.Trial, spec: TuningSpec) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for name, p in spec.search_space.items():
        if isinstance(p, IntRange):
            flags[name] = trial.suggest_int(name, p.low, p.high, step=p.step, log=p.log)
        elif isinstance(p, FloatRange):
            value = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
            flags[name] = round(value, 10) if p.step is not None else value  # 0.30000000000000004 -> 0.3
        elif isinstance(p, Bool):
            flags[name] = trial.suggest_categorical(name, [False, True])
        elif isinstance(p, Categorical):
            flags[name] = trial.suggest_categorical(name, p.choices)
    return flags


def measure(spec: TuningSpec, flags: dict[str, Any], campaign_id: str, steps_for: StepsFactory, *,
            repetitions: int | None = None, on_campaign: CampaignHook | None = None,
            place: Placer | None = None) -> Measurement:
    """Runs the trial's cells (every load point x repetitions) through the campaign engine."""
    cspec = spec.trial_campaign(flags, name=f"{spec.name}-{campaign_id.rsplit('-', 1)[-1]}", repetitions=repetitions)
    if place is not None:
        cspec = place(cspec)
    backend, cells = cspec.backends[0], cspec.cells()
    # a dynamic load point's placeholder is never stored: its derived cells (probes) are, as they run
    m = Measurement(campaign_id, cell_ids=[c.id for c in cells if not getattr(c.load_point, "dynamic", False)])
    steps = steps_for(cspec, campaign_id)
    persist_cell, persist_log = steps.persist_cell, steps.persist_backend_log

    def capture_cell(cell: Any, row: dict[str, Any], summary: dict[str, Any] | None, artifacts: dict) -> None:
        persist_cell(cell, row, summary, artifacts)
        if cell.id not in m.cell_ids:
            m.cell_ids.append(cell.id)
        if row.get("status") == "completed" and summary:
            m.summaries.setdefault(cell.load_point.label, []).append(summary)
        elif row.get("error"):
            m.errors.append(str(row["error"]))

    def capture_log(name: str, text: str) -> None:
        persist_log(name, text)
        m.backend_log = text

    steps.persist_cell, steps.persist_backend_log = capture_cell, capture_log
    if on_campaign:
        on_campaign(campaign_id, cspec, "running")
    # A configuration whose backend dies is infeasible: no redeploy (the rest of its cells fail).
    result = run_backend(steps, cspec, backend, cells, max_redeploys=0)
    m.capacities = {row["load_label"]: row for row in result.capacities}
    # a failed probe of an SLO-capacity search is a rate that misses the SLO, not a broken configuration
    m.started = not (result.never_ready or result.gave_up or (result.failed and not spec.capacity_objective))
    if on_campaign:
        on_campaign(campaign_id, cspec, "failed" if result.failed else "completed")
    return m


def metric_of(summary: dict[str, Any], key: str) -> float | None:
    dist, _, stat = key.partition(".")
    value = (summary.get(dist) or {}).get(stat) if stat else summary.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def per_repetition(m: Measurement, spec: TuningSpec, key: str) -> list[float]:
    if key == CAPACITY_OBJECTIVE:
        return capacity_per_repetition(m, spec)
    vals = [metric_of(s, key) for s in m.summaries.get(spec.objective.load_point, [])]
    return [v for v in vals if v is not None]


def constraint_keys(spec: TuningSpec) -> list[str]:
    if spec.capacity_objective:  # the SLO is inside the capacity's definition
        return [f"flags: {c}" for c in spec.constraints] + [CAPACITY_CONSTRAINT, "deployed"]
    return [f"flags: {c}" for c in spec.constraints] + [f"slo: {k}" for k in spec.slo_limits_ms()] + ["deployed"]


def _worst(study: optuna.Study, spec: TuningSpec) -> list[float]:
    measured = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get("measured")]
    out = []
    for i, d in enumerate(spec.directions):
        vals = [t.values[i] for t in measured]
        out.append((min(vals) if d == "maximize" else max(vals)) if vals else 0.0)
    return out


def run_trial(study: optuna.Study, spec: TuningSpec, steps_for: StepsFactory, *,
              on_campaign: CampaignHook | None = None, place: Placer | None = None) -> optuna.trial.FrozenTrial:
    """One trial through ``study.optimize(n_trials=1)`` (the grid sampler stops the study from
    inside the optimize loop when its grid is done, which ask/tell would not allow)."""
    numbers: list[int] = []

    def objective(trial: optuna.Trial) -> list[float]:
        numbers.append(trial.number)
        return _evaluate(study, trial, spec, steps_for, on_campaign, place=place)

    study.optimize(objective, n_trials=1, catch=(), gc_after_trial=False, show_progress_bar=False)
    return study.trials[numbers[0]]


def _evaluate(study: optuna.Study, trial: optuna.Trial, spec: TuningSpec, steps_for: StepsFactory,
              on_campaign: CampaignHook | None, *, place: Placer | None = None) -> list[float]:
    flags = suggest(trial, spec)
    trial.set_user_attr("flags", flags)
    cons = dict.fromkeys(constraint_keys(spec), 0.0)
    broken = [(c, c.violation(flags)) for c in spec.parsed_constraints() if not c.holds(flags)]
    values: list[float] | None = None
    if broken:
        for c, v in broken:
            cons[f"flags: {c.text}"] = float(v)
        trial.set_user_attr("infeasible", "flag constraint broken: " + "; ".join(c.text for c, _ in broken))
        log.info("trial %d %s: infeasible by constraint, not deployed", trial.number, flags)
    else:
        cid = f"{study.study_name}-t{trial.number}"
        trial.set_user_attr("campaign_id", cid)
        m = measure(spec, flags, cid, steps_for, on_campaign=on_campaign, place=place)
        trial.set_user_attr("cell_ids", m.cell_ids)
        per_metric = [per_repetition(m, spec, key) for key in spec.objective.metrics]
        if spec.capacity_objective and m.started:
            values = capacity_outcome(trial, m, spec, cons)
        elif not m.started or not all(per_metric):
            cons["deployed"] = 1.0
            trial.set_user_attr("infeasible", m.reason())
            log.warning("trial %d %s: infeasible: %s", trial.number, flags, m.reason().splitlines()[0])
        else:
            values = [sum(v) / len(v) for v in per_metric]
            trial.set_user_attr("measured", True)
            trial.set_user_attr("per_repetition", {k: v for k, v in zip(spec.objective.metrics, per_metric)})
            for key, limit in spec.slo_limits_ms().items():
                got = per_repetition(m, spec, key)
                if got:
                    cons[f"slo: {key}"] = max(got) / limit - 1.0
                    trial.set_user_attr(f"slo {key}", max(got))
                else:
                    cons[f"slo: {key}"] = 1.0
            over = [k for k, v in cons.items() if k.startswith("slo") and v > 0]
            if over:
                trial.set_user_attr("infeasible", "SLO violated: " + ", ".join(
                    f"{k[5:]} {trial.user_attrs.get(f'slo {k[5:]}', float('nan')):.1f} ms > "
                    f"{spec.slo_limits_ms()[k[5:]]:g} ms" for k in over))
    if values is None:
        trial.set_user_attr("measured", False)
        values = _worst(study, spec)
    elif spec.capacity_objective:
        trial.set_user_attr("measured", True)
    for key, v in cons.items():
        trial.set_constraint(key, v)
    return values


@dataclass
class StudyOutcome:
    study_id: str
    ran: int
    finished: int
    stopped_by: str


def run_study(spec: TuningSpec, storage: Any, steps_for: StepsFactory, *, study_id: str | None = None,
              on_campaign: CampaignHook | None = None, progress: Callable[[str], None] | None = None,
              clock: Callable[[], float] = time.monotonic) -> StudyOutcome:
    """Runs trials until ``trials.count`` are finished in the study (resumed ones count) or
    ``trials.timeout_s`` has passed (this run), or the grid is exhausted."""
    study_id = study_id or new_study_id(spec)
    study = open_study(spec, storage, study_id)
    start, ran = clock(), 0
    stopped_by = "count"
    while True:
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if spec.trials.count is not None and done >= spec.trials.count:
            break
        if spec.trials.timeout_s is not None and clock() - start >= spec.trials.timeout_s:
            stopped_by = "time budget"
            break
        if spec.sampler_name == "grid" and done >= grid_size(spec):
            stopped_by = "grid exhausted"
            break
        t = run_trial(study, spec, steps_for, on_campaign=on_campaign)
        ran += 1
        if progress:
            progress(progress_note(study, spec, t))
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return StudyOutcome(study_id, ran, finished, stopped_by)


def grid_size(spec: TuningSpec) -> int:
    n = 1
    for p in spec.search_space.values():
        n *= len(p.values())
    return n


def progress_note(study: optuna.Study, spec: TuningSpec, t: optuna.trial.FrozenTrial) -> str:
    total = spec.trials.count or "?"
    what = "feasible" if t.user_attrs.get("measured") and not t.user_attrs.get("infeasible") else "infeasible"
    best = feasible_best(study)
    best_note = f"; best so far: trial {best[0].number} {[round(v, 4) for v in best[0].values]}" if best else ""
    values = [round(v, 4) for v in t.values] if t.values and t.user_attrs.get("measured") else "not measured"
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    flags = t.user_attrs.get("flags", t.params)
    return f"trial {t.number} ({done} of {total} finished): {what} {flags} -> {values}{best_note}"


def feasible_best(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The best feasible, measured trial (one objective) or the Pareto front (several)."""
    try:
        best = study.best_trials
    except ValueError:
        return []
    return [t for t in best if t.user_attrs.get("measured") and not t.user_attrs.get("infeasible")]
