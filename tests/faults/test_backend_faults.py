"""Backend faults, as a user of ``benchflow run`` sees them (issue 11's matrix, the faults that pass).

One campaign (one ``benchflow run`` process, so one ephemeral Prefect server start on a busy
machine) holds a backend per fault, each a real simulator process that benchflow launches, plus a
healthy one and an OpenAI endpoint that answers every request with vLLM's context-length error:

- ``exits``: exits at start-up (vLLM's out-of-memory message, exit 1);
- ``crashy``: exits mid-campaign when its 9th request arrives (``crash-after``);
- ``slow``: answers ``503 loading`` for 4 s before it serves (``startup-delay-s``);
- ``bursty``: answers 40% of its requests with 500 (``error-rate``);
- ``tinyctx``: ``max-model-len`` 16 with 40-token requests: every request is a 400;
- ``overflow``: an ``openai`` endpoint (a server of this test) that answers every request 400,
  and counts them, so a retry loop would show;
- ``flaky``: an ``openai`` endpoint whose answers cycle through a good stream, a 429, a stream of
  messages that are not JSON and a stream cut mid-message;
- ``steady``: nothing wrong with it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import pytest

from tests.faults.conftest import (
    FaultServer,
    Home,
    fault_server,
    processes_with,
    sim_backend,
    wait_gone,
    write_spec,
)

pytestmark = pytest.mark.integration

CID = "faults-backends-1"
REPETITIONS = 2
MAX_REQUESTS = 6
WARMUP = 1


@dataclass
class Outcome:
    rc: int
    output: str
    home: Home
    seeds: dict[str, int]
    overflow: FaultServer
    flaky: FaultServer

    def cells(self, backend: str) -> list[dict]:
        return [c for c in self.home.cells(CID) if c["backend_name"] == backend]

    def summaries(self, backend: str) -> list[dict]:
        return self.home.rows("SELECT s.* FROM cell_summaries s JOIN cells c USING (campaign_id, cell_id) "
                              "WHERE c.campaign_id = ? AND c.backend_name = ?", CID, backend)

    def aggregated_backends(self) -> set[str]:
        return {r["backend_name"] for r in self.home.rows("SELECT backend_name FROM aggregates WHERE campaign_id = ?",
                                                          CID)}


#: ``bursty``'s share of 500s. The simulator draws them from its seed, one draw per completion request in
#: arrival order; with 6 measured requests a cell, a random seed gives a cell no error (then it is valid and
#: the test fails) about 5% of the time. So the seed is chosen.
BURSTY_RATE = 0.4


def _mixed_errors_seed(start: int, rate: float, draws: int = 16, window: int = MAX_REQUESTS) -> int:
    """The first seed from ``start`` whose first ``draws`` error draws (``benchflow.sim.faults.FaultPlan``)
    hold between 1 and ``window - 1`` errors in every run of ``window`` consecutive requests: every cell of
    ``bursty`` then has some errors and some successes, wherever its requests fall in the sequence."""
    seed = start
    while True:
        rng = random.Random(seed)
        errors = [rng.random() < rate for _ in range(draws)]
        if all(1 <= sum(errors[i:i + window]) <= window - 1 for i in range(draws - window + 1)):
            return seed
        seed += 1


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    base = tmp_path_factory.mktemp("backend-faults")
    home = Home(base / "home")
    home.path.mkdir()
    # unique seeds tell this run's simulator processes apart from anyone else's
    first = random.randrange(10**6, 9 * 10**6)
    names = ("exits", "crashy", "slow", "bursty", "tinyctx", "steady")
    seeds = {name: first + i for i, name in enumerate(names)}
    seeds["bursty"] = _mixed_errors_seed(first + 1000, BURSTY_RATE)
    knobs = {"exits": {"gpu-memory-utilization": 0.05}, "crashy": {"crash-after": 9},
             "slow": {"startup-delay-s": 4}, "bursty": {"error-rate": BURSTY_RATE}, "tinyctx": {"max-model-len": 16},
             "steady": {}}
    with fault_server("context_overflow") as overflow, fault_server("ok", "http_429", "malformed", "cut") as flaky:
        backends = [sim_backend(name, seed=seeds[name], **knobs[name]) for name in names]
        backends[5:5] = [{"name": "overflow", "kind": "openai", "url": overflow.url},
                         {"name": "flaky", "kind": "openai", "url": flaky.url}]
        spec = write_spec(base / "faults.yaml", backends, name="faults-backends", repetitions=REPETITIONS,
                          max_requests=MAX_REQUESTS, dataset="D(32,8)")
        rc, output = home.benchflow("run", str(spec), "--campaign-id", CID)
    return Outcome(rc=rc, output=output, home=home, seeds=seeds, overflow=overflow, flaky=flaky)


def test_the_campaign_ends_failed_with_a_summary_not_a_traceback(outcome: Outcome):
    assert outcome.rc != 0, outcome.output[-3000:]
    assert "Traceback" not in outcome.output, outcome.output[-3000:]
    assert outcome.home.campaign(CID)["status"] == "failed"
    assert len(outcome.home.cells(CID)) == 8 * REPETITIONS, "every cell has its row"


def test_a_backend_that_exits_at_start_up_fails_its_cells_with_the_log_tail(outcome: Outcome):
    cells = outcome.cells("exits")
    assert len(cells) == REPETITIONS and {c["status"] for c in cells} == {"failed"}
    for cell in cells:
        assert "never became ready" in cell["error"] and "exit code 1" in cell["error"]
        assert "No available memory for the cache blocks" in cell["error"], "the log tail names the cause"
    log = outcome.home.artifacts / "campaigns" / CID / "backend-exits.log"
    assert "No available memory for the cache blocks" in log.read_text(), "the whole backend log is kept"
    assert "exits c2 rep 0" in outcome.output and "never became ready" in outcome.output


def test_a_backend_that_crashes_mid_cell_keeps_the_cells_before_and_names_the_death(outcome: Outcome):
    cells = outcome.cells("crashy")
    # 7 requests a cell (6 measured + 1 warm-up): the 9th request arrives during the second cell
    assert [c["status"] for c in sorted(cells, key=lambda c: c["repetition"])] == ["completed", "failed"]
    failed = next(c for c in cells if c["status"] == "failed")
    assert "backend died during the cell" in failed["error"] and "exit code 1" in failed["error"]
    # the requests' dominant error is named: refused once the process is gone, reset when it died with
    # requests in flight (which one dominates depends on timing)
    assert re.search(r"requests failed with ['\"](connection refused|connection reset by peer|server disconnected)",
                     failed["error"]), failed["error"]
    completed = next(c for c in cells if c["status"] == "completed")
    assert any(s["cell_id"] == completed["cell_id"] for s in outcome.summaries("crashy")), "its summary is stored"
    assert (outcome.home.artifacts / "campaigns" / CID / "cells" / failed["cell_id"] / "requests.parquet").exists(), \
        "what the dying cell measured is kept"


def test_a_slow_starting_backend_is_waited_for_and_measured_without_errors(outcome: Outcome):
    cells = outcome.cells("slow")
    assert {c["status"] for c in cells} == {"completed"} and len(cells) == REPETITIONS
    assert all(c["invalid_reason"] is None for c in cells), "no 503 'loading' answer was measured"
    assert [s["error_rate"] for s in outcome.summaries("slow")] == [0.0] * REPETITIONS
    assert "slow" in outcome.aggregated_backends()


def test_bursts_of_500s_make_the_cells_invalid_and_keep_them_out_of_the_aggregates(outcome: Outcome):
    cells = outcome.cells("bursty")
    assert len(cells) == REPETITIONS and {c["status"] for c in cells} == {"completed"}, "measured, not failed"
    for cell in cells:
        # the reason names the rate and the requests' dominant error
        assert re.fullmatch(r"error rate \d+\.\d% exceeds the limit 5\.0% \(mostly '.+' ×\d+\)",
                            cell["invalid_reason"] or ""), cell
    rates = [s["error_rate"] for s in outcome.summaries("bursty")]
    assert len(rates) == REPETITIONS and all(0 < r < 1 for r in rates), "some requests still succeeded"
    assert "bursty" not in outcome.aggregated_backends()


def test_context_overflow_fails_the_cells_with_vllms_message(outcome: Outcome):
    cells = outcome.cells("tinyctx")
    assert len(cells) == REPETITIONS and {c["status"] for c in cells} == {"failed"}
    for cell in cells:
        assert "no request succeeded" in cell["error"]
        assert "maximum context length is 16 tokens" in cell["error"], "the cause is in the cell's reason"
    assert "maximum context length is 16 tokens" in outcome.output, "and on the console"
    assert "tinyctx" not in outcome.aggregated_backends()


def test_context_overflow_is_not_retried(outcome: Outcome):
    cells = outcome.cells("overflow")
    assert len(cells) == REPETITIONS and {c["status"] for c in cells} == {"failed"}
    assert all("maximum context length" in c["error"] for c in cells)
    # every request went out once: no retry of a request, no re-run of a cell
    assert 0 < outcome.overflow.requests <= REPETITIONS * (MAX_REQUESTS + WARMUP), outcome.overflow.requests


def test_429s_malformed_and_cut_streams_make_the_cells_invalid_without_retries(outcome: Outcome):
    cells = outcome.cells("flaky")
    assert len(cells) == REPETITIONS and {c["status"] for c in cells} == {"completed"}, "measured, not failed"
    for cell in cells:
        # the reason names the rate and the requests' dominant error
        assert re.fullmatch(r"error rate \d+\.\d% exceeds the limit 5\.0% \(mostly '.+' ×\d+\)",
                            cell["invalid_reason"] or ""), cell
    rates = [s["error_rate"] for s in outcome.summaries("flaky")]
    assert len(rates) == REPETITIONS and all(0.5 <= r < 1 for r in rates), rates
    assert outcome.flaky.requests == REPETITIONS * (MAX_REQUESTS + WARMUP), "each request sent once, 429s too"
    assert "flaky" not in outcome.aggregated_backends()


def test_the_healthy_backend_is_unaffected(outcome: Outcome):
    cells = outcome.cells("steady")
    assert len(cells) == REPETITIONS and {c["status"] for c in cells} == {"completed"}
    assert all(c["invalid_reason"] is None for c in cells)
    assert "steady" in outcome.aggregated_backends()


def test_no_backend_process_is_left_behind(outcome: Outcome):
    leftovers = [p for seed in outcome.seeds.values() for p in processes_with(f"seed={seed}")]
    assert not wait_gone(leftovers, timeout_s=30), [p.cmdline() for p in leftovers]
