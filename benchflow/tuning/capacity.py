"""The ``slo_capacity`` objective: a trial's value is the SLO capacity (req/s) that the campaign's
own search (:mod:`benchflow.engine.dynamic`, :mod:`benchflow.stats.capacity`) found for its
configuration at the objective's ``slo_capacity`` load point. The SLO is inside the capacity's
definition, so such a trial has one SLO constraint, :data:`CAPACITY_CONSTRAINT`: 1 when no rate
sustains it (the search ended ``below_min``), and the trial is infeasible with that reason.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from benchflow.tuning.spec import CAPACITY_OBJECTIVE, TuningSpec

if TYPE_CHECKING:
    import optuna

    from benchflow.tuning.study import Measurement

log = logging.getLogger(__name__)

__all__ = ["CAPACITY_CONSTRAINT", "capacity_value", "capacity_outcome", "capacity_per_repetition"]


def capacity_per_repetition(m: Measurement, spec: TuningSpec) -> list[float]:
    """Each repetition's own search result (its final bracket's geometric midpoint)."""
    row = m.capacities.get(spec.objective.load_point) or {}
    return [float(v) for v in row.get("values") or [] if isinstance(v, (int, float))]


#: The constraint of an ``slo_capacity`` objective: 1 when no rate sustains the SLO (or none was found).
CAPACITY_CONSTRAINT = "slo: sustainable rate"


def capacity_value(m: Measurement, spec: TuningSpec) -> tuple[float | None, str | None]:
    """The objective value of an ``slo_capacity`` trial (req/s) and a note, or ``(None, reason)``
    when the configuration sustains no rate under the SLO (it is infeasible).

    ``found``: the search's capacity (what ``capacity-<backend>-<label>.json`` stores).
    ``above_max``: even ``max_rate`` meets the SLO: counted at ``max_rate`` (censored; a note says so).
    ``bracket_only`` (``max_probes``/``max_search_s`` cut the search short): counted at the lower
    end of its bracket, the lowest rate a repetition met (a note says so). ``below_min``: infeasible.
    """
    row = m.capacities.get(spec.objective.load_point)
    if row is None:
        return None, "the SLO-capacity search did not finish (" + m.reason().split("\n")[0] + ")"
    status, message = row.get("status"), row.get("message") or ""
    settings = spec.objective_load_point().slo_capacity
    if status == "found" and isinstance(row.get("mean"), (int, float)):
        return float(row["mean"]), None
    if status == "above_max":
        return float(settings.max_rate), (f"capacity above max_rate {settings.max_rate:g} req/s: counted at max_rate "
                                          "(raise max_rate to tell such configurations apart)")
    bracket = row.get("bracket")
    if status == "bracket_only" and bracket and bracket[0]:
        return float(bracket[0]), (f"search cut short ({message.split(';')[0]}): counted at {bracket[0]:.4g} req/s, "
                                   "the lowest rate a repetition met")
    return None, f"no sustainable rate under the SLO: {message or status}"


def capacity_outcome(trial: optuna.Trial, m: Measurement, spec: TuningSpec, cons: dict[str, float]) -> list[float] | None:
    """Sets the trial's capacity attrs and constraint; its objective values, or None (infeasible)."""
    value, note = capacity_value(m, spec)
    row = m.capacities.get(spec.objective.load_point) or {}
    trial.set_user_attr("capacity", {k: row.get(k) for k in ("mean", "ci_low", "ci_high", "status", "bracket",
                                                              "message", "target_attainment")}
                        | {"probes": len(row.get("probes") or [])})
    if value is None:
        cons[CAPACITY_CONSTRAINT] = 1.0
        trial.set_user_attr("infeasible", note)
        log.warning("trial %d: infeasible: %s", trial.number, note)
        return None
    if note:
        trial.set_user_attr("capacity_note", note)
    trial.set_user_attr("per_repetition", {CAPACITY_OBJECTIVE: capacity_per_repetition(m, spec)})
    return [value]
