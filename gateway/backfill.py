"""What the gateway remembers per logger to backfill outages: last data time and open gaps.

For each MN: the newest ``DataTime`` of a live packet Kafka confirmed, and the gaps still to
fill. A live packet more than ``backfill_min_gap_s`` after the previous one opens a gap
(previous, this); a gap is closed when the logger reports the history request done (9012
with ExeRtn=1). Open gaps are asked for again on every connection until closed, so a logger
that drops during its backfill is asked again. The state is a small JSON file, written at
most once a second and at stop (a crash forgets at most the last second: a gap opened in it
is not asked for again).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import structlog

__all__ = ["BackfillState", "Gap"]

log = structlog.get_logger(__name__)
MAX_GAPS_PER_LOGGER = 32


@dataclass(frozen=True, slots=True)
class Gap:
    """An outage of one logger: data after ``begin`` and before ``end`` is missing."""

    begin: datetime
    end: datetime


@dataclass(slots=True)
class _Logger:
    last: datetime | None = None
    gaps: list[Gap] = field(default_factory=list)


class BackfillState:
    """Per-MN last data time and open gaps, kept in ``path`` (None: in memory only)."""

    def __init__(self, path: Path | None, *, min_gap: timedelta, max_age: timedelta) -> None:
        self._path = path
        self._min_gap = min_gap
        self._max_age = max_age
        self._loggers: dict[str, _Logger] = {}
        self.dirty = False
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("backfill state unreadable; starting empty", path=str(path), error=str(exc))
            return
        for mn, entry in raw.items():
            try:
                last = datetime.fromisoformat(entry["last"]) if entry.get("last") else None
                gaps = [
                    Gap(datetime.fromisoformat(b), datetime.fromisoformat(e))
                    for b, e in entry.get("gaps", [])
                ]
            except (KeyError, TypeError, ValueError):
                continue
            self._loggers[mn] = _Logger(last, gaps)

    def save(self) -> None:
        """Write the state (atomically) when it changed."""
        if self._path is None or not self.dirty:
            return
        data = {
            mn: {
                "last": s.last.isoformat() if s.last else None,
                "gaps": [[g.begin.isoformat(), g.end.isoformat()] for g in s.gaps],
            }
            for mn, s in self._loggers.items()
        }
        tmp = self._path.with_suffix(".tmp")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self._path)
        except OSError as exc:
            log.warning("backfill state not saved", path=str(self._path), error=str(exc))
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        self.dirty = False

    def last(self, mn: str) -> datetime | None:
        """The newest confirmed live data time of ``mn``."""
        entry = self._loggers.get(mn)
        return None if entry is None else entry.last

    def gaps(self, mn: str) -> list[Gap]:
        """The open gaps of ``mn``, oldest first."""
        entry = self._loggers.get(mn)
        return [] if entry is None else list(entry.gaps)

    def confirmed(
        self, mn: str, data_time: datetime, now: datetime, period: timedelta = timedelta(0)
    ) -> Gap | None:
        """A live packet of ``mn`` at ``data_time`` is in Kafka; returns the gap it opened.

        ``period``: how far apart the packets of its CN lie by nature (a minute for 2051, an
        hour for 2061, a day for 2031; 0 for real-time data, whose interval the logger sets):
        only a step beyond ``period`` plus the minimum gap is an outage.
        """
        entry = self._loggers.setdefault(mn, _Logger())
        previous = entry.last
        if previous is not None and data_time <= previous:
            return None
        entry.last = data_time
        self.dirty = True
        if previous is None or data_time - previous <= self._min_gap + period:
            return None
        begin = max(previous, now - self._max_age)
        if begin >= data_time:
            return None
        gap = Gap(begin, data_time)
        entry.gaps.append(gap)
        del entry.gaps[:-MAX_GAPS_PER_LOGGER]
        return gap

    def filled(self, mn: str, gap: Gap) -> None:
        """The logger sent the history of ``gap``."""
        entry = self._loggers.get(mn)
        if entry is not None and gap in entry.gaps:
            entry.gaps.remove(gap)
            self.dirty = True
