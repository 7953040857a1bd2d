"""Plain steps for tuning trials: a scripted 'backend' whose throughput and TTFT follow its flags."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from benchflow.engine import BackendSteps
from benchflow.errors import BackendStartError
from benchflow.runner import CellOutcome
from tests.engine.fakes import FakeLauncher


class TuneFakes:
    """``model(flags) -> summary`` gives each cell's summary; flags in ``fail_start(flags)`` never start."""

    def __init__(self, model=None, fail_start=None, dies=None):
        self.dies = dies or (lambda f: False)
        self.model = model or (lambda f: {"output_throughput": float(f.get("max-num-seqs", 1)),
                                          "ttft_ms": {"p99": 10.0 * f.get("max-num-seqs", 1)}})
        self.fail_start = fail_start or (lambda f: False)
        self.deploys: list[dict] = []
        self.cells = 0
        self.campaigns: list[tuple[str, str]] = []

    def steps_for(self, cspec: Any, cid: str) -> BackendSteps:
        flags = dict(cspec.backends[0].engine_args)

        def deploy(backend):
            self.deploys.append(flags)
            if self.fail_start(flags):
                raise BackendStartError("backend exited during start-up (exit code 1)", "CUDA out of memory")
            return FakeLauncher(backend.name, len(self.deploys))

        def run_cell(backend, cell, launcher, should_stop):
            self.cells += 1
            now = datetime.now(UTC)
            if self.dies(flags):
                launcher.text += "RuntimeError: CUDA error: an illegal memory access was encountered\n"
                launcher.dead = "exit code 1"
                return CellOutcome(cell_id=cell.id, backend=cell.backend, load_label=cell.load_point.label,
                                   repetition=cell.repetition, started_at=now, finished_at=now, status="failed",
                                   error="backend died during the cell (exit code 1)")
            return CellOutcome(cell_id=cell.id, backend=cell.backend, load_label=cell.load_point.label,
                               repetition=cell.repetition, started_at=now, finished_at=now, status="completed",
                               summary={"completed": 2, **self.model(flags)})

        def teardown(launcher, grace):
            launcher.stop()
            return launcher.text

        return BackendSteps(deploy=deploy, teardown=teardown, run_cell=run_cell,
                            persist_cell=lambda c, row, s, a: None,
                            persist_backend_log=lambda name, text: None, sleep=lambda s: None)

    def on_campaign(self, cid: str, cspec: Any, status: str) -> None:
        self.campaigns.append((cid, status))
