"""Running the library's asyncio code from synchronous code, so that a stop signal is never lost.

Prefect turns SIGTERM into an exception (``TerminationSignal``, a ``BaseException``) raised in the
main thread wherever it happens to be. When that thread is running an asyncio loop, the exception
lands in one of three places, and asyncio only passes the first of them on:

- the step of the task being awaited at the top (``asyncio.run`` re-raises it);
- a callback of the loop itself (the loop logs and drops it);
- the step of some other task: a request, a metrics sampler, the load's watch. The task keeps the
  exception, and if nobody asks for its result (a sampler that already ended, a load that was
  cancelled after a stall) it is dropped.

A loaded machine spends more of its time inside task steps, and there a stop signal was dropped:
``benchflow run`` went on measuring and exited 0 after SIGTERM. :func:`run_sync` catches the other
two places: the first such exception cancels the main task and is raised from the run.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coro)``, in a thread of its own when this thread already runs a loop, with any
    ``BaseException`` that is not an ``Exception`` (a termination signal, KeyboardInterrupt) raised
    from the run wherever in the loop it landed."""
    if not _loop_running():  # called outside an except block: what the run raises is not chained to it
        return _run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = _run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    thread = threading.Thread(target=target, name="benchflow-asyncio")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run(coro: Coroutine[Any, Any, T]) -> T:
    fatal: list[BaseException] = []
    result = asyncio.run(_propagating_fatal(coro, fatal))
    if fatal:  # it landed while asyncio.run was cancelling the leftover tasks, after the main one ended
        raise fatal[0]
    return result


def _is_fatal(exc: BaseException | None) -> bool:
    return exc is not None and not isinstance(exc, (Exception, asyncio.CancelledError))


async def _propagating_fatal(coro: Coroutine[Any, Any, T], fatal: list[BaseException]) -> T:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None

    def stop(exc: BaseException) -> None:
        fatal.append(exc)
        main.cancel()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if _is_fatal(exc):
            stop(exc)
        else:
            loop.default_exception_handler(context)

    def watch(task: asyncio.Future) -> None:
        # peeks: task.exception() would mark an ordinary error as retrieved, and asyncio would no
        # longer log "Task exception was never retrieved" for a task nobody awaits
        exc = None if task.cancelled() else getattr(task, "_exception", None)
        if _is_fatal(exc):
            stop(task.exception())

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        task.add_done_callback(watch)
        return task

    loop.set_exception_handler(handler)
    loop.set_task_factory(factory)
    try:
        return await coro
    except asyncio.CancelledError:
        if fatal:
            raise fatal[0] from None
        raise
