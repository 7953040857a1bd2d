"""Campaign progress on the terminal, fed by events (no Prefect here).

The flow's progress step calls :func:`emit` (a process-local bus); ``benchflow run`` registers a
:class:`TerminalProgress` with :func:`add_listener`. Under a worker nobody listens and nothing is
printed. A TTY gets a live rich bar (cells done / total, current cell, elapsed, estimated time
left); anything else gets one plain line per event.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Callable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressEvent:
    """``kind``: ``start`` (done/total known), ``cell`` (a cell begins: ``note`` names it) or
    ``advance`` (a cell is done: ``note`` says which and how it ended)."""

    kind: str
    campaign_id: str
    done: int
    total: int
    note: str = ""


Listener = Callable[[ProgressEvent], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def add_listener(fn: Listener) -> None:
    with _lock:
        _listeners.append(fn)


def remove_listener(fn: Listener) -> None:
    with _lock:
        if fn in _listeners:
            _listeners.remove(fn)


def emit(event: ProgressEvent) -> None:
    """Tells every listener; a listener that fails never fails the campaign."""
    with _lock:
        listeners = list(_listeners)
    for fn in listeners:
        try:
            fn(event)
        except Exception as e:  # noqa: BLE001 - the terminal view is never worth a failed run
            logger.debug("progress listener failed: %s", e)


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TerminalProgress:
    """A listener that shows the campaign's progress on ``stream`` (stdout by default).

    ``rich``: a live bar (None: when ``stream`` is a TTY). Use as a context manager, or call
    :meth:`close` at the end.
    """

    def __init__(self, stream: IO[str] | None = None, rich: bool | None = None,
                 clock: Callable[[], float] = time.monotonic):
        import sys

        self.stream = stream if stream is not None else sys.stdout
        self.rich = self._isatty() if rich is None else rich
        self.clock = clock
        self.started_at: float | None = None
        self.first_done = 0
        self.done = 0
        self.total = 0
        self.current = ""
        self._bar = None
        self._task = None

    def _isatty(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    # ---- the numbers -------------------------------------------------------------------------
    def elapsed(self) -> float:
        return 0.0 if self.started_at is None else self.clock() - self.started_at

    def eta(self) -> float | None:
        """Seconds left, from the pace of the cells done in this run (resumed ones do not count)."""
        measured = self.done - self.first_done
        if measured <= 0:
            return None
        return self.elapsed() / measured * max(self.total - self.done, 0)

    def line(self) -> str:
        cur = f" | {self.current}" if self.current else ""
        return (f"progress: {self.done}/{self.total} cells{cur} | elapsed {format_duration(self.elapsed())}"
                f" | eta {format_duration(self.eta())}")

    # ---- events ------------------------------------------------------------------------------
    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == "start" or self.started_at is None:
            self.started_at = self.clock()
            self.first_done = event.done
        self.done, self.total = event.done, event.total
        if event.kind in ("cell", "advance"):
            self.current = event.note
        if self.rich:
            self._show_rich(event)
        elif event.kind != "cell":  # plain lines (a log, a pipe): one when it starts and per cell done
            self._write(self.line())

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def _show_rich(self, event: ProgressEvent) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
        )

        if self._bar is None:
            console = Console(file=self.stream, force_terminal=True)
            self._bar = Progress(TextColumn("[bold]cells"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 TextColumn("{task.description}"), console=console, auto_refresh=False,
                                 transient=False, redirect_stdout=False, redirect_stderr=False)
            self._bar.start()
            self._task = self._bar.add_task("", total=self.total, completed=self.done)
        self._bar.update(self._task, total=self.total, completed=self.done, description=self.current)
        self._bar.refresh()

    def print_above(self, text: str) -> bool:
        """Prints ``text`` above the live bar; False when no bar is live (the caller prints it)."""
        if self._bar is None:
            return False
        try:
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        except Exception:  # noqa: BLE001 - a closed terminal
            return False
        return True

    def route_logs(self, handlers: list[logging.Handler]) -> None:
        """While the bar is live, the console log lines of ``handlers`` are printed above it
        (not through it): the bar stays one clean line at the bottom."""
        for handler in handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.addFilter(_AboveBar(self, handler))

    def close(self) -> None:
        self._bar = _stop_bar(self._bar)

    def __enter__(self) -> "TerminalProgress":
        add_listener(self)
        return self

    def __exit__(self, *exc: object) -> None:
        remove_listener(self)
        self.close()


def _stop_bar(bar: Any) -> None:
    """Stops a rich progress bar (a closed terminal is fine); returns None for the caller's slot."""
    if bar is not None:
        try:
            bar.stop()
        except Exception:  # noqa: BLE001 - a closed terminal
            pass
    return None


class _AboveBar(logging.Filter):
    def __init__(self, view: TerminalProgress, handler: logging.Handler):
        super().__init__()
        self.view, self.handler = view, handler

    def filter(self, record: logging.LogRecord) -> bool:
        if self.view._bar is None:
            return True
        return not self.view.print_above(self.handler.format(record))


class RequestProgress:
    """``benchflow bench``'s live bar: requests ended out of the total (warm-up included), failed
    ones, elapsed and estimated time left. Only on a TTY (``rich=None``); otherwise it prints
    nothing. Feed it each request's record (``loadgen.run_load(on_request=...)``)."""

    def __init__(self, total: int | None, stream: IO[str] | None = None, rich: bool | None = None):
        import sys

        self.stream = stream if stream is not None else sys.stdout
        if rich is None:
            try:
                rich = bool(self.stream.isatty())
            except (AttributeError, ValueError):
                rich = False
        self.rich = rich
        self.total = total
        self.done = 0
        self.failed = 0
        self._bar = None
        self._task = None

    def __call__(self, record: object) -> None:
        self.done += 1
        if getattr(record, "error_class", None) is not None:
            self.failed += 1
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done,
                             description=f"{self.failed} failed" if self.failed else "")

    def __enter__(self) -> "RequestProgress":
        if self.rich:
            from rich.console import Console
            from rich.progress import (
                BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("[bold]requests"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                 TextColumn("{task.description}"),
                                 console=Console(file=self.stream, force_terminal=True), transient=True,
                                 redirect_stdout=False, redirect_stderr=False)
            self._bar.start()
            self._task = self._bar.add_task("", total=self.total)
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar = _stop_bar(self._bar)
