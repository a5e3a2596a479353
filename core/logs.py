"""Structured logging for every ghgwatch service (structlog over the standard library)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import structlog

from core.settings import LogSettings

__all__ = ["RepeatLimiter", "configure_logging"]


def configure_logging(cfg: LogSettings) -> None:
    """Route structlog and stdlib logging to stderr as console or JSON lines.

    Args:
        cfg: the ``log`` section of the settings.
    """
    level = getattr(logging, cfg.level)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if cfg.format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Driver chatter (aiokafka's per-connection INFO lines) stays out of operators' way.
    for noisy in ("aiokafka", "kafka", "asyncio", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


class RepeatLimiter:
    """One log line per subject and kind per interval, so a device that repeats the same
    mistake (or a broker that stays down) cannot flood the log; counters keep the totals.

    Args:
        interval_s: how long a (subject, kind) stays quiet after its line.
        max_keys: subjects remembered; past it all are forgotten at once (bounded memory
            under a flood of distinct devices).
        clock: monotonic seconds (injected by tests).
    """

    def __init__(
        self,
        interval_s: float = 60.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval_s = interval_s
        self._max_keys = max_keys
        self._clock = clock
        self._last: dict[tuple[str, str], float] = {}

    def allow(self, subject: str, kind: str) -> bool:
        """Whether this (subject, kind) may log now; if so, it is quiet for the interval."""
        now = self._clock()
        key = (subject, kind)
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            return False
        if len(self._last) >= self._max_keys:
            self._last.clear()
        self._last[key] = now
        return True
