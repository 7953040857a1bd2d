"""A termination signal that lands anywhere in a cell's event loop stops the cell and is raised
from :func:`benchflow.asyncrun.run_sync`, instead of being dropped by asyncio (which made
``benchflow run`` finish its campaign and exit 0 after SIGTERM on a loaded machine)."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from benchflow.asyncrun import run_sync


class Terminated(BaseException):
    """Stands for Prefect's TerminationSignal (a BaseException raised by its SIGTERM handler)."""


def _stops_early(coro, bound_s: float = 20.0) -> None:
    """``coro`` would run for 60 s; the run must raise :class:`Terminated` well before."""
    t0 = time.monotonic()
    with pytest.raises(Terminated):
        run_sync(coro)
    assert time.monotonic() - t0 < bound_s, "the cell stops when the signal lands, not after its 60 s"


def test_a_signal_in_a_loop_callback_cancels_the_cell_and_is_raised():
    async def cell():
        def callback():
            raise Terminated("SIGTERM")

        asyncio.get_running_loop().call_soon(callback)
        await asyncio.sleep(60)
        return "finished"

    _stops_early(cell())


def test_a_signal_in_a_task_nobody_awaits_cancels_the_cell_and_is_raised():
    """A metrics sampler that has ended, or a load that was cancelled: nobody asks for its result."""
    async def cell():
        async def sampler():
            raise Terminated("SIGTERM")

        kept = asyncio.get_running_loop().create_task(sampler())  # held, as a sampler holds its task
        await asyncio.sleep(60)
        return kept

    _stops_early(cell())


def test_a_real_signal_handled_inside_another_task_s_step_is_raised():
    """The signal itself, delivered while a task other than the awaited one runs (the handler runs
    in that task's step, as Prefect's does under load)."""
    def handler(signum, frame):
        raise Terminated(signal.Signals(signum).name)

    async def cell():
        async def busy_request():
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(1_000_000):  # the handler runs between these bytecodes, in this task
                pass

        kept = asyncio.ensure_future(busy_request())  # held, as the load holds its requests
        await asyncio.sleep(60)
        return kept

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        _stops_early(cell())
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_signal_while_asyncio_run_cancels_the_leftover_tasks_is_raised():
    async def cell():
        async def sampler():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                raise Terminated("SIGTERM") from None

        asyncio.ensure_future(sampler())
        await asyncio.sleep(0)
        return "finished"

    with pytest.raises(Terminated):
        run_sync(cell())


def test_ordinary_errors_in_callbacks_and_tasks_are_only_logged(caplog):
    async def cell():
        asyncio.get_running_loop().call_soon(lambda: 1 / 0)

        async def failing():
            raise ValueError("an ordinary bug in a background task")

        task = asyncio.ensure_future(failing())
        await asyncio.sleep(0.05)
        assert isinstance(task.exception(), ValueError)
        return "finished"

    assert run_sync(cell()) == "finished"
    assert "ZeroDivisionError" in caplog.text


def test_an_ordinary_error_in_a_task_nobody_awaits_is_still_reported(caplog):
    async def cell():
        async def failing():
            raise ValueError("an ordinary bug in a dropped task")

        asyncio.ensure_future(failing())  # not kept: asyncio reports it when the task is collected
        await asyncio.sleep(0.05)
        return "finished"

    assert run_sync(cell()) == "finished"
    assert "Task exception was never retrieved" in caplog.text and "an ordinary bug" in caplog.text


def test_inside_a_running_loop_it_runs_in_a_thread_and_still_raises():
    async def outer():
        async def cell():
            asyncio.get_running_loop().create_task(_raise())
            await asyncio.sleep(60)

        async def _raise():
            raise Terminated("SIGTERM")

        return run_sync(cell())

    with pytest.raises(Terminated):
        asyncio.run(outer())
