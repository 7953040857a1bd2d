"""The tuning spec: which engine flags to search, under which SLOs, for which objective.

Validated as strictly as a campaign spec (unknown keys are errors, every problem is reported with
its path, units are required) and built from the same models: ``backend`` is a campaign backend,
``workload`` a campaign workload, ``slo`` a campaign SLO block. :meth:`TuningSpec.trial_campaign`
turns one sampled configuration into a one-backend campaign spec, which the campaign engine runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator

from benchflow.errors import SpecError
from benchflow.metric_key import check_summary_metric
from benchflow.spec import Backend, CampaignSpec, ModelSpec, WorkloadSpec, load_spec
from benchflow.spec.backends import FlagName
from benchflow.spec.types import Seconds, SloSeconds, StrictModel
from benchflow.tuning.constraints import Constraint, ConstraintSyntaxError, parse_constraint
from benchflow.tuning.presets import PRESETS, preset_problems
from benchflow.tuning.spec_rules import (
    CAPACITY_OBJECTIVE, QUANT_PREFIX, capacity_objective_problems, quantization_space_problems,
)

__all__ = ["TuningSpec", "load_tuning_spec", "is_tuning_spec", "IntRange", "FloatRange", "Categorical", "Bool",
           "PRESETS", "CAPACITY_OBJECTIVE"]

SAMPLERS = ("grid", "random", "tpe", "gp", "nsga2")

#: The default sampler, for one objective and for several: TPE. Chosen by the tuning benchmark
#: (bench/tuning.py, `make bench`; tables in bench/results/tuning.md and the README). On its
#: 800-configuration simulator space TPE with TPE_OPTIONS needs a median of 20 trials (5 seeds; 21.5
#: over 20) to come within 3% of the exhaustive optimum, random 45 (47), NSGA-II 45 (47), QMC 41
#: (39.5); with two objectives it reaches 0.93 of the exhaustive front's hypervolume after 40 trials,
#: NSGA-II 0.72 (its first generation of 50 is random sampling).
DEFAULT_SAMPLER = "tpe"
#: TPE's settings (``optuna.samplers.TPESampler``), tuned on the same benchmark: joint (multivariate)
#: sampling, 5 random start-up trials instead of 10 and 64 candidates per suggestion instead of 24
#: (median 21.5 trials over 20 seeds; multivariate with Optuna's other defaults: 38.5).
TPE_OPTIONS: dict[str, Any] = {"multivariate": True, "n_startup_trials": 5, "n_ei_candidates": 64}


class IntRange(StrictModel):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("a log-scaled int range needs low >= 1 and no step")
        return self

    def values(self) -> list[Any]:
        return list(range(self.low, self.high + 1, self.step))

    def refuses(self, v: Any) -> str | None:
        if not isinstance(v, int) or isinstance(v, bool):
            return f"{v!r} is not an integer"
        if not self.low <= v <= self.high or (v - self.low) % self.step:
            return f"{v!r} is outside the range {self.low}..{self.high}" + (f" step {self.step}" if self.step != 1 else "")
        return None


class FloatRange(StrictModel):
    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> FloatRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("a log-scaled float range needs low > 0 and no step")
        return self

    def refuses(self, v: Any) -> str | None:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return f"{v!r} is not a number"
        off_step = self.step is not None and abs((v - self.low) / self.step - round((v - self.low) / self.step)) > 1e-9
        if not self.low <= v <= self.high or off_step:
            return f"{v!r} is outside the range {self.low:g}..{self.high:g}" + (f" step {self.step:g}" if self.step else "")
        return None

    def values(self) -> list[Any]:
        if self.step is None:
            raise ValueError("a float range without a step has no grid; give it a step")
        n = int(round((self.high - self.low) / self.step))
        return [round(self.low + i * self.step, 12) for i in range(n + 1)]


class Categorical(StrictModel):
    type: Literal["categorical"]
    choices: list[Union[bool, int, float, str]] = Field(..., min_length=1)

    def values(self) -> list[Any]:
        return list(self.choices)

    def refuses(self, v: Any) -> str | None:
        same = [c for c in self.choices if c == v and isinstance(c, bool) == isinstance(v, bool)]
        return None if same else f"{v!r} is not one of the choices {self.choices}"


class Bool(StrictModel):
    type: Literal["bool"]

    def values(self) -> list[Any]:
        return [False, True]

    def refuses(self, v: Any) -> str | None:
        return None if isinstance(v, bool) else f"{v!r} is not true or false"


Param = Annotated[Union[IntRange, FloatRange, Categorical, Bool], Field(discriminator="type")]


def _check_metric(key: str) -> str:
    """A summary metric, checked like a campaign spec's (benchflow.metric_key), or ``slo_capacity``."""
    if key == CAPACITY_OBJECTIVE:
        return key
    try:
        return check_summary_metric(key)
    except ValueError as exc:
        raise ValueError(f"{exc}, or {CAPACITY_OBJECTIVE} (at an slo_capacity load point)") from None


Metric = Annotated[str, AfterValidator(_check_metric)]


class Objective(StrictModel):
    """One or more summary metrics, each with a direction, measured at one named load point."""

    load_point: str = Field(..., min_length=1, description="label of a workload load point, e.g. c16 or r4")
    metrics: dict[Metric, Literal["maximize", "minimize"]] = Field(..., min_length=1)


class SamplerSpec(StrictModel):
    name: Literal["grid", "random", "tpe", "gp", "nsga2"] | None = Field(
        None, description="default: tpe, for one objective and for several (see bench/tuning.py)")
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _gp_needs_torch(self) -> SamplerSpec:
        if self.name == "gp" and importlib.util.find_spec("torch") is None:
            raise ValueError("sampler gp needs PyTorch, which is not installed (Optuna's GPSampler uses it): "
                             "`pip install torch`, or use tpe (the default; see bench/tuning.py)")
        return self


class TrialBudget(StrictModel):
    count: int | None = Field(None, gt=0, description="trials to run (in total, counting resumed ones)")
    timeout_s: Seconds | None = Field(None, gt=0, description="stop starting trials after this long")

    @model_validator(mode="after")
    def _some(self) -> TrialBudget:
        if self.count is None and self.timeout_s is None:
            raise ValueError("give a count, a timeout_s, or both")
        return self


class ConfirmSpec(StrictModel):
    top_k: int = Field(2, ge=1, description="configurations re-measured at the end")
    repetitions: int = Field(3, ge=2, description="repetitions of each re-measured configuration")


def _model_shorthand(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class TuningSpec(StrictModel):
    name: str = Field(..., min_length=1)
    description: str = ""
    model: Annotated[ModelSpec, BeforeValidator(_model_shorthand)]
    allow_simulated: bool = False
    backend: Backend
    search_space: dict[FlagName, Param] = Field(..., min_length=1)
    constraints: list[str] = Field(default_factory=list)
    workload: WorkloadSpec
    objective: Objective
    slo: dict[Literal["ttft", "tpot", "itl", "e2e"], dict[Literal["mean", "p50", "p90", "p95", "p99"], SloSeconds]] = (
        Field(default_factory=dict))
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    trials: TrialBudget
    repetitions: int = Field(1, ge=1)
    confirm: ConfirmSpec | None = None
    parallel: int = Field(1, ge=1, le=64, description="trials at once; each on its own GPU lane (slot)")
    preset: Union[str, dict[FlagName, Union[bool, int, float, str]]] | None = Field(
        None, description="a named starting point (see PRESETS: throughput, latency) or a mapping of flag values; "
        "its flags that are in search_space are measured first (the study's first trial)")
    placement: Literal["local", "pool"] = Field(
        "local", description="local: the trials run in this process; pool: each is a run of the tune-trial "
        "deployment on the GPU work pool (the Prefect flow only)")

    @property
    def capacity_objective(self) -> bool:
        """The objective is the SLO capacity of an ``slo_capacity`` load point."""
        return CAPACITY_OBJECTIVE in self.objective.metrics

    def objective_load_point(self) -> Any:
        return next(lp for lp in self.workload.load_points if lp.label == self.objective.load_point)

    def preset_flags(self) -> dict[str, Any]:
        """The preset's values of the searched flags (``{}`` without a preset)."""
        if self.preset is None:
            return {}
        values = PRESETS[self.backend.kind][self.preset] if isinstance(self.preset, str) else self.preset
        return {k: v for k, v in values.items() if k in self.search_space}

    @property
    def directions(self) -> list[str]:
        return list(self.objective.metrics.values())

    @property
    def sampler_name(self) -> str:
        return self.sampler.name or DEFAULT_SAMPLER

    def parsed_constraints(self) -> list[Constraint]:
        return [parse_constraint(c) for c in self.constraints]

    def slo_limits_ms(self) -> dict[str, float]:
        """``{"ttft_ms.p99": 500.0, ...}``: each SLO as a summary key and its limit in ms."""
        return {f"{m}_ms.{stat}": s * 1000.0 for m, stats in self.slo.items() for stat, s in stats.items()}

    def trial_campaign(self, flags: dict[str, Any], *, name: str | None = None,
                       repetitions: int | None = None) -> CampaignSpec:
        """A one-backend campaign spec: the base backend with ``flags`` added to its engine args."""
        return load_spec(self._campaign_dict(self.trial_backend(flags), name or self.name,
                                             repetitions or self.repetitions))

    def trial_backend(self, flags: dict[str, Any]) -> dict[str, Any]:
        """The base backend (a mapping) with ``flags``: engine flags go to its engine args, the
        searched ``quantization.<field>`` values to its ``quantization``."""
        backend = self.backend.model_dump(mode="json", exclude_unset=True)
        quant = {k[len(QUANT_PREFIX):]: v for k, v in flags.items() if k.startswith(QUANT_PREFIX)}
        backend["engine_args"] = {**(self.backend.engine_args or {}),
                                  **{k: v for k, v in flags.items() if not k.startswith(QUANT_PREFIX)}}
        if quant:
            backend["quantization"] = {**(backend.get("quantization") or {}), **quant}
        return backend

    def _campaign_dict(self, backend: dict[str, Any], name: str, repetitions: int) -> dict[str, Any]:
        return {"name": name, "model": self.model.model_dump(mode="json", exclude_defaults=True),
                "allow_simulated": self.allow_simulated, "backends": [backend],
                "workload": self.workload.model_dump(mode="json", exclude_defaults=True),
                "slo": {m: {k: f"{v * 1000:g}ms" for k, v in s.items()} for m, s in self.slo.items()},
                "repetitions": repetitions, "compare": {"metrics": ["output_throughput"]},
                "labels": {"kind": "tuning-trial"}}


def is_tuning_spec(data: Any) -> bool:
    return isinstance(data, dict) and "search_space" in data


def _raw_campaign_problems(data: dict[str, Any], base_dir: Path) -> list[str]:
    """The campaign rules (backend kind rules, allow_simulated, engine args, workload) on the base
    backend, with ``backends[0]`` written back as ``backend``."""
    raw = {k: data[k] for k in ("model", "allow_simulated", "workload", "slo", "repetitions") if k in data}
    raw.update(name=data.get("name") or "x", backends=[data.get("backend")] if "backend" in data else [])
    if "backend" not in data:
        return []
    from benchflow.spec import check  # schema and cross-field rules of the campaign, as problem lines

    problems = check(raw, base_dir=base_dir)
    return [p.replace("backends[0]", "backend") for p in problems]


def _kindless(problem: str) -> str:
    """``backend.sim.bogus`` (pydantic names the union member) -> ``backend.bogus``."""
    for kind in ("vllm", "sglang", "sim", "openai"):
        problem = problem.replace(f"backend.{kind}.", "backend.")
    return problem


def _cross_problems(data: dict[str, Any]) -> list[str]:
    """Rules across fields, on the raw mapping (defensive about types, which the schema reports)."""
    problems: list[str] = []
    space = data.get("search_space") if isinstance(data.get("search_space"), dict) else {}
    backend = data.get("backend") if isinstance(data.get("backend"), dict) else {}
    fixed = backend.get("engine_args") if isinstance(backend.get("engine_args"), dict) else {}
    for flag in space:
        if flag in fixed:
            problems.append(f"search_space.{flag}: also fixed in backend.engine_args; keep it in one place")
    problems += quantization_space_problems(space, backend)
    constraints = data.get("constraints") if isinstance(data.get("constraints"), list) else []
    for i, text in enumerate(constraints):
        try:
            c = parse_constraint(text)
        except ConstraintSyntaxError as e:
            problems.append(f"constraints[{i}]: {e}")
            continue
        problems += [f"constraints[{i}]: {flag!r} is not in search_space" for flag in c.flags if flag not in space]
    problems += _objective_problems(data)
    problems += preset_problems(data, space, Param)
    if backend.get("kind") == "sim":
        problems += _sim_value_problems(space, fixed)
    return problems


def _objective_problems(data: dict[str, Any]) -> list[str]:
    objective = data.get("objective") if isinstance(data.get("objective"), dict) else {}
    problems: list[str] = []
    try:
        points = {lp.label: lp for lp in WorkloadSpec.model_validate(data.get("workload"),
                                                                     context={"base_dir": Path.cwd()}).load_points}
    except (ValidationError, ValueError, TypeError):
        points = None
    point = objective.get("load_point")
    if points is not None and isinstance(point, str) and point not in points:
        problems.append(f"objective.load_point: {point!r} is not a workload load point (have: {', '.join(points)})")
    metrics = objective.get("metrics") if isinstance(objective.get("metrics"), dict) else {}
    if points is not None and isinstance(point, str) and point in points:
        problems += capacity_objective_problems(points[point], metrics)
    for key in metrics:
        if key in ("goodput", "slo_attainment") and not data.get("slo"):
            problems.append(f"objective.metrics.{key}: needs an slo section")
    sampler = data.get("sampler") if isinstance(data.get("sampler"), dict) else {}
    if sampler.get("name") == "grid":
        for flag, p in (data.get("search_space") or {}).items():
            if isinstance(p, dict) and p.get("type") == "float" and p.get("step") is None:
                problems.append(f"search_space.{flag}: the grid sampler needs a step on float ranges")
    return problems


def _sim_value_problems(space: dict[str, Any], fixed: dict[str, Any]) -> list[str]:
    """Every bound and choice of the search space is a value the simulator accepts."""
    from benchflow.sim.config import engine_arg_problems

    problems: list[str] = []
    for flag, p in space.items():
        if not isinstance(p, dict) or flag.startswith(QUANT_PREFIX):
            continue
        probes = {"int": [p.get("low"), p.get("high")], "float": [p.get("low"), p.get("high")],
                  "bool": [False, True]}.get(p.get("type"), p.get("choices"))
        for v in probes if isinstance(probes, list) else []:
            if v is None:
                continue
            found = engine_arg_problems({**fixed, flag: v}, prefix="search_space")
            problems += [f"{line} (value {v!r})" for line in found if line.startswith(f"search_space.{flag}")]
    return sorted(set(problems), key=problems.index)


def load_tuning_spec(source: str | Path | dict[str, Any]) -> TuningSpec:
    """Reads and validates a tuning spec; raises :class:`SpecError` with every problem and its path."""
    from benchflow.spec.errors import format_validation_error
    from benchflow.spec.reader import read_spec_file

    if isinstance(source, dict):
        data, base_dir, label = source, Path.cwd(), None
    else:
        path = Path(source)
        data, base_dir, label = read_spec_file(path), path.resolve().parent, str(path)
    if not isinstance(data, dict):
        raise SpecError([f"(top level): expected a mapping of keys, got {type(data).__name__}"], source=label)
    problems: list[str] = []
    spec = None
    try:
        spec = TuningSpec.model_validate(data, context={"base_dir": base_dir, "defer_cross_checks": True})
    except ValidationError as e:
        problems += format_validation_error(e)
    problems = [_kindless(p) for p in problems]
    problems += [p for p in _raw_campaign_problems(data, base_dir) if p not in problems]
    problems += [p for p in _cross_problems(data) if p not in problems]
    if problems or spec is None:
        raise SpecError(problems, source=label)
    return spec
