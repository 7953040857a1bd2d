"""Plain-function steps for the engine: a scripted launcher and runner that record what happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from benchflow.engine import BackendSteps, FinishSteps
from benchflow.errors import BackendStartError
from benchflow.results_types import CellRow, CellSummary
from benchflow.runner import CellOutcome
from benchflow.spec import load_spec


def make_spec(backends: list[dict] | None = None, *, repetitions: int = 2, load_points=None, **extra) -> Any:
    backends = backends or [{"name": "a", "kind": "sim"}]
    return load_spec({
        "name": "engine-test", "allow_simulated": True, "model": {"name": "m"}, "backends": backends,
        "workload": {"dataset": "D(8,4)", "seed": 1, "load_points": load_points or [{"concurrency": 1}],
                     "max_requests": 2},
        "repetitions": repetitions, **extra,
    })


class FakeLauncher:
    def __init__(self, name: str, n: int):
        self.name, self.n = name, n
        self.url = f"http://fake/{name}/{n}"
        self.text = f"[{name}#{n}] started\n"
        self.dead: str | None = None
        self.stopped = False

    def logs(self) -> str:
        return self.text

    def alive(self) -> str | None:
        return self.dead

    def stop(self, grace_s: float = 10.0) -> None:
        self.stopped = True


@dataclass
class Fakes:
    """Steps whose behaviour is scripted per cell: ``script[(backend, n-th cell run)]`` is one of
    ``ok``, ``die``, ``stall``, ``cancel`` (the runner sees should_stop) or ``raise``."""

    script: dict[tuple[str, int], str] = field(default_factory=dict)
    never_ready: set[str] = field(default_factory=set)
    unhealthy: set[str] = field(default_factory=set)
    cancel_after_cells: int | None = None
    persist_raises: Exception | None = None
    persist_raises_at: int = 0
    events: list[tuple] = field(default_factory=list)
    rows: dict[str, dict] = field(default_factory=dict)
    launchers: list[FakeLauncher] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    cells_run: int = 0

    # ---- backend steps
    def deploy(self, backend: Any) -> FakeLauncher:
        if backend.name in self.never_ready:
            self.events.append(("deploy-failed", backend.name))
            raise BackendStartError(f"backend {backend.name} exited during start-up (exit code 1)", "oom!")
        launcher = FakeLauncher(backend.name, len(self.launchers))
        self.launchers.append(launcher)
        self.events.append(("deploy", backend.name))
        return launcher

    def teardown(self, launcher: FakeLauncher, grace_s: float) -> str:
        launcher.stop(grace_s)
        self.events.append(("teardown", launcher.name))
        return launcher.text

    def run_cell(self, backend: Any, cell: Any, launcher: FakeLauncher, should_stop) -> CellOutcome:
        k = sum(1 for e in self.events if e[0] == "cell" and e[1] == backend.name)
        self.events.append(("cell", backend.name, cell.load_point.label, cell.repetition))
        self.cells_run += 1
        what = self.script.get((backend.name, k), "ok")
        now = datetime.now(UTC)
        base = dict(cell_id=cell.id, backend=cell.backend, load_label=cell.load_point.label,
                    repetition=cell.repetition, started_at=now, finished_at=now)
        launcher.text += f"cell {cell.id} served\n"
        if what == "raise":
            raise RuntimeError("the runner blew up")
        if what == "die":
            launcher.text += "simulated crash (--crash-after 3)\n"
            launcher.dead = "exit code 1"
            return CellOutcome(**base, status="failed", error="backend died during the cell (exit code 1)")
        if what == "stall":
            return CellOutcome(**base, status="stalled", error="no token from 4 in-flight requests for 30s")
        if what == "cancel":
            self.cancel_after_cells = 0  # a cancel request arrives while the cell runs
            reason = should_stop()
            assert reason, "the runner is handed the engine's cancel check"
            return CellOutcome(**base, status="cancelled", error=f"stopped: {reason}", summary={"completed": 1})
        return CellOutcome(**base, status="completed", summary={"completed": 2})

    def persist_cell(self, cell: Any, row: dict, summary: dict | None, artifacts: dict[str, bytes]) -> None:
        if self.persist_raises is not None and len(self.rows) >= self.persist_raises_at:
            raise self.persist_raises
        self.rows[cell.id] = {**row, "artifacts": artifacts}
        self.events.append(("persist", cell.backend, row["status"]))

    def cancel_requested(self) -> str | None:
        if self.cancel_after_cells is not None and self.cells_run >= self.cancel_after_cells:
            return "cancel requested from the Prefect UI"
        return None

    def health(self, backend: Any) -> dict:
        healthy = backend.name not in self.unhealthy
        return {"healthy": healthy, "reasons": [] if healthy else ["GPU 1: ECC errors"],
                "devices": [{"uuid": "GPU-1234"}]}

    def steps(self, **overrides) -> BackendSteps:
        kw = dict(deploy=self.deploy, teardown=self.teardown, run_cell=self.run_cell, persist_cell=self.persist_cell,
                  persist_backend_log=lambda name, text: self.events.append(("backend-log", name)),
                  health=self.health, persist_health=lambda report: self.events.append(("health", report["healthy"])),
                  progress=lambda note: self.events.append(("progress", note)),
                  cancel_requested=self.cancel_requested, sleep=lambda s: self.events.append(("sleep", s)))
        kw.update(overrides)
        return BackendSteps(**kw)

    # ---- finish steps
    def finish(self, **overrides) -> FinishSteps:
        def stored():
            cells = [CellRow.model_validate({k: v for k, v in r.items() if k != "artifacts"})
                     for r in self.rows.values()]
            return cells, {c.cell_id: CellSummary() for c in cells}

        kw = dict(replay_spool=lambda: None, stored=stored,
                  aggregate=lambda rows, metrics, seed: [], compare=lambda rows, metrics, base, tol, seed: [],
                  persist_analysis=lambda a, c: self.events.append(("analysis",)),
                  publish=lambda campaign, cells, a, c: "# report",
                  persist_report=lambda md: self.events.append(("report",)),
                  set_status=self.status.append)
        kw.update(overrides)
        return FinishSteps(**kw)
