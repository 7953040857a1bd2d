"""The SLO-capacity search against the simulator in virtual time, and its ground truth.

Used by the capacity tests and ``bench/capacity.py``. One workload seed gives one arrival
pattern (unit-rate Poisson gaps, prompt and output lengths); a rate divides the gaps, so the
cells of one seed at different rates share their random numbers (as the search's repetition
``r`` does: seed ``(base, r)``). A cell's attainment is :func:`attainment_of` over request
records built from the virtual run, so the real per-request SLO check is exercised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from benchflow.records import RequestRecord
from benchflow.sim.config import SimConfig, build_engine_config
from benchflow.sim.engine import EngineConfig
from benchflow.sim.virtual import VirtualRequest, VirtualRun, run_open_loop
from benchflow.stats.capacity import ProbeOutcome, attainment_of
from benchflow.stats.slo import Slo

#: The default scenario: an 8B model on an H100 profile, at most 16 sequences a step.
DEFAULT_SLO: Slo = {"ttft": {"p99": 0.5}, "tpot": {"p99": 0.05}}


def workload(rate: float, seed: int | Sequence[int], n: int, prompt: tuple[int, int] = (128, 1024),
             output: tuple[int, int] = (32, 128)) -> list[VirtualRequest]:
    """``n`` Poisson arrivals at ``rate`` req/s with uniform prompt/output lengths."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0, n)
    prompts = rng.integers(prompt[0], prompt[1], n)
    outputs = rng.integers(output[0], output[1], n)
    arrivals = np.cumsum(gaps) / rate
    return [VirtualRequest(int(p), int(o), float(t)) for p, o, t in zip(prompts, outputs, arrivals)]


def run_to_records(run: VirtualRun) -> list[RequestRecord]:
    """Request records (one token per message, usage sent) of a virtual run."""
    out = []
    for i, t in enumerate(run.requests):
        chunks = [(int(round(x * 1e9)), 1) for x in t.token_times_s]
        start = int(round(t.arrival_s * 1e9))
        out.append(RequestRecord(request_id=i, warmup=False, start_ns=start, scheduled_ns=start,
                                 end_ns=chunks[-1][0], chunks=chunks, status=200,
                                 completion_tokens=len(chunks)))
    return out


@dataclass
class VirtualScenario:
    """A backend + workload + SLO in virtual time."""

    slo: Slo = field(default_factory=lambda: dict(DEFAULT_SLO))
    n_requests: int = 150
    max_num_seqs: int = 16
    profile: str | None = None

    @cached_property
    def engine_config(self) -> EngineConfig:
        options = {"max_num_seqs": self.max_num_seqs}
        if self.profile:
            options["profile"] = self.profile
        return build_engine_config(SimConfig(**options))

    def attainment(self, rate: float, seed: int | Sequence[int]) -> float | None:
        run = run_open_loop(self.engine_config, workload(rate, seed, self.n_requests))
        return attainment_of(run_to_records(run), self.slo)

    def probe(self, base_seed: int):
        """``probe(rate, repetition)`` for :func:`search_capacity`: repetition r uses seed (base, r)."""
        def _probe(rate: float, repetition: int) -> ProbeOutcome:
            return ProbeOutcome(self.attainment(rate, (base_seed, repetition)), self.n_requests,
                                cell_id=f"virtual-{base_seed}-{repetition}-{rate:.6g}")
        return _probe

    def grid_capacity(self, seed: int | Sequence[int], rates: Sequence[float], target: float) -> float | None:
        """The ground truth of one seed on the fine grid ``rates`` (ascending; every rate is
        evaluated): the geometric midpoint between the highest rate whose attainment reaches
        ``target`` and the next grid rate, the grid's counterpart of the search's final bracket.
        ``None`` when no rate or the last rate meets it (the capacity is off the grid)."""
        met = [i for i, r in enumerate(rates) if (a := self.attainment(r, seed)) is not None and a >= target]
        if not met or met[-1] == len(rates) - 1:
            return None
        return float(np.sqrt(rates[met[-1]] * rates[met[-1] + 1]))


def geometric_grid(low: float, high: float, step: float) -> list[float]:
    """Rates from ``low`` to ``high`` (inclusive) with relative spacing ``step`` (0.01: 1 %)."""
    n = int(np.ceil(np.log(high / low) / np.log1p(step)))
    return [float(low * (1 + step) ** i) for i in range(n + 1)]
