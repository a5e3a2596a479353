"""The quarterly report's schedule, run inside the alert service process.

Every ``reports.check_interval_s`` (the first time ``reports.start_delay_s`` after start):

1. the last closed quarter is the one before the quarter containing
   ``now - reports.issue_delay_h`` (the delay leaves time for late data);
2. for it and the ``reports.revise_quarters`` quarters before it: no report yet -> issue
   revision 1; a report exists -> rebuild it and issue a new revision only when a source's
   level changed (late data), and raise the orange and red warnings not raised yet.

Any past quarter can also be issued on demand (``ghgwatch report quarterly``). The clock is
injected so tests can move time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from core.errors import GhgwatchError
from core.settings import Settings
from reports.issue import IssueResult, issue_quarterly
from reports.model import Quarter

__all__ = ["ReportScheduler", "closed_quarter"]

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
Issuer = Callable[..., Coroutine[Any, Any, IssueResult]]


def closed_quarter(now: datetime, tz: str, delay_h: float) -> Quarter:
    """The last quarter that closed at least ``delay_h`` hours before ``now``."""
    local = (now - timedelta(hours=delay_h)).astimezone(ZoneInfo(tz))
    return Quarter(local.year, (local.month - 1) // 3 + 1).previous()


class ReportScheduler:
    """Issues each closed quarter's report, and revisions when late data changes a level."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        issuer: Issuer = issue_quarterly,
    ) -> None:
        self._settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))
        self._issue = issuer

    async def tick(self) -> list[IssueResult]:
        """One check: issue or revise the due quarters. Returns what each issue did."""
        cfg = self._settings.reports
        last = closed_quarter(self._clock(), cfg.timezone, cfg.issue_delay_h)
        quarters = [last]
        for _ in range(cfg.revise_quarters):
            quarters.append(quarters[-1].previous())
        results = []
        for q in quarters:
            # In a worker thread with its own event loop: building, plotting and printing the
            # PDF must not hold up the alert service's loop this runs beside.
            result: IssueResult = await asyncio.to_thread(
                asyncio.run,
                self._issue(
                    self._settings,
                    q,
                    trigger="schedule",
                    publish=cfg.publish_alerts,
                    only_if_changed=True,
                ),
            )
            if result.issued is not None:
                log.info("scheduled quarterly report issued", quarter=str(q),
                         revision=result.issued.revision)  # fmt: skip
            results.append(result)
        return results

    async def run(self, stop: asyncio.Event) -> None:
        """Check after ``start_delay_s``, then every ``check_interval_s`` until ``stop``; a
        failed check is logged
        and retried at the next one, never ends the alert service. Each issue runs in a
        worker thread with its own event loop."""
        with contextlib.suppress(TimeoutError):
            # the service it runs beside starts first
            await asyncio.wait_for(stop.wait(), self._settings.reports.start_delay_s)
        while not stop.is_set():
            try:
                await self.tick()
            except (GhgwatchError, OSError) as exc:
                log.warning("quarterly report check failed; retrying later", error=str(exc))
            except Exception:  # a report bug must never stop paging
                # This task shares the alert service's process and task group: anything it
                # raised would cancel the service. Logged with its traceback, retried later.
                log.exception("quarterly report check crashed; retrying later")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.reports.check_interval_s)
