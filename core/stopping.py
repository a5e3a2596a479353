"""How every ghgwatch service stops: SIGINT or SIGTERM asks for a clean stop, and a stop that
overruns its grace ends the process with the stuck tasks' stacks in the log.

Every step of a service's shutdown is meant to be bounded; a step that is not (a bridge kept
reconnecting for 50 minutes after SIGTERM under the fuzz load, once, not reproduced) would
otherwise hold the process until something outside kills it, with nothing said about where it
waited. The watchdog is a thread, so it fires even when the event loop itself is stuck, and it
stays armed through ``asyncio.run``'s own clean-up (cancelling leftover tasks, joining the
default executor). A second signal exits at once, as operators expect of a second Ctrl-C.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

__all__ = ["EXIT_STUCK", "STOP_GRACE_S", "run_until_stopped"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

STOP_GRACE_S = 60.0
"""Longest clean stop: above the sum of a service's own bounded stop steps (the bridge's
drain, flush, task cancellation, MQTT disconnect and producer stop: 30 s), below what
deploy/compose.yaml gives a container before SIGKILL (70 s)."""
EXIT_STUCK = 3
"""Exit status of a process whose stop overran its grace, or that got a second signal."""
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_STACK_FRAMES = 4


class _Watchdog:
    def __init__(self, grace_s: float) -> None:
        self._grace_s = grace_s
        self._timer: threading.Timer | None = None

    def requested(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event, sig: int) -> None:
        """The signal handler (on the loop): first signal stops cleanly, a second exits."""
        name = signal.Signals(sig).name
        if stop.is_set():
            log.warning("second stop signal; exiting now", signal=name)
            _dump_and_exit(loop)
        log.info("stop requested", signal=name, grace_s=self._grace_s)
        stop.set()
        timer = threading.Timer(self._grace_s, self._overdue, args=(loop,))
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _overdue(self, loop: asyncio.AbstractEventLoop) -> None:
        log.error("stop overdue; exiting with the stuck tasks' stacks", grace_s=self._grace_s)
        _dump_and_exit(loop)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _task_stacks(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Name and innermost frames of each task of ``loop`` (read from another thread: best
    effort, retried when the set changes underneath)."""
    for _attempt in range(3):
        try:
            tasks = list(asyncio.all_tasks(loop))
        except RuntimeError:
            continue
        lines = []
        for task in tasks:
            frames = task.get_stack(limit=_STACK_FRAMES)
            where = " <- ".join(
                f"{f.f_code.co_name} ({f.f_code.co_filename}:{f.f_lineno})" for f in frames
            )
            lines.append(f"{task.get_name()}: {where or 'not started'}")
        return sorted(lines)
    return []


def _dump_and_exit(loop: asyncio.AbstractEventLoop) -> None:
    for line in _task_stacks(loop):
        log.error("stuck task", task=line)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(EXIT_STUCK)


def run_until_stopped(
    main: Callable[[asyncio.Event], Awaitable[T]], *, grace_s: float = STOP_GRACE_S
) -> T:
    """Run ``main(stop)`` in a new event loop; SIGINT/SIGTERM set ``stop``.

    Args:
        main: the service; it returns once ``stop`` is set and its shutdown is done.
        grace_s: how long a stop may take before the process exits with :data:`EXIT_STUCK`,
            logging every task's stack.

    Returns:
        What ``main`` returned.
    """
    watchdog = _Watchdog(grace_s)

    async def runner() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            loop.add_signal_handler(sig, watchdog.requested, loop, stop, sig)
        try:
            return await main(stop)
        finally:
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(runner())
    finally:
        watchdog.disarm()
