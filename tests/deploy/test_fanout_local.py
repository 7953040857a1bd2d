"""``placement: pool`` on the embedded default (``benchflow run``: no deployments, no workers): the
campaign runs its backends in this flow run, one after another, and says so in a warning."""

from __future__ import annotations

import logging

import pytest

from benchflow.store.results import Results
from tests.flows.conftest import home, sim_backend, write_spec  # noqa: F401 - the fixture: a fresh embedded default

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_pool_placement_without_a_pool_runs_locally_with_a_warning(tmp_path, home):  # noqa: F811
    from flows.campaign import campaign
    from flows.states import summary_of

    path = write_spec(tmp_path, [sim_backend("sim-a"), sim_backend("sim-b")], repetitions=1, name="pool-local",
                      placement="pool", parallel=2)
    seen = _Lines()
    run_logger = logging.getLogger("prefect.flow_runs")  # Prefect's run loggers do not propagate to the root
    run_logger.addHandler(seen)
    try:
        state = campaign(spec=str(path), return_state=True)
    finally:
        run_logger.removeHandler(seen)
    assert state.is_completed(), state.message
    cid = summary_of(state)["campaign_id"]
    cells = Results.from_env().store.cells(cid)
    assert sorted(c["backend_name"] for c in cells) == ["sim-a", "sim-b"]
    assert all(c["status"] == "completed" for c in cells)
    assert any("placement: pool needs the campaign-backend/backend deployment" in line for line in seen.lines), \
        seen.lines
