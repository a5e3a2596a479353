"""Structured logging for every ghgwatch service (structlog over the standard library)."""

from __future__ import annotations

import logging
import sys

import structlog

from core.settings import LogSettings

__all__ = ["configure_logging"]


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
