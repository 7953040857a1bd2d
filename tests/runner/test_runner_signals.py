"""A termination signal raised inside an asyncio callback stops the cell instead of being swallowed."""

from __future__ import annotations

import asyncio
import time

import pytest

from benchflow.runner import _propagating_fatal


class Terminated(BaseException):
    """Stands for Prefect's TerminationSignal (a BaseException raised by its SIGTERM handler)."""


def test_base_exception_in_a_loop_callback_cancels_and_reraises():
    async def long_cell():
        loop = asyncio.get_running_loop()

        def callback():
            raise Terminated("SIGTERM")

        loop.call_soon(callback)
        await asyncio.sleep(30)
        return "finished"

    t0 = time.monotonic()
    with pytest.raises(Terminated):
        asyncio.run(_propagating_fatal(long_cell()))
    assert time.monotonic() - t0 < 5, "the cell stops at once, not after its 30 s"


def test_ordinary_callback_errors_are_only_logged(caplog):
    async def cell():
        asyncio.get_running_loop().call_soon(lambda: 1 / 0)
        await asyncio.sleep(0.05)
        return "finished"

    assert asyncio.run(_propagating_fatal(cell())) == "finished"
    assert "ZeroDivisionError" in caplog.text
