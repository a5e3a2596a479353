"""Orange and red warnings to the alert service, as detections on the detections topic.

Services do not import each other, so the report speaks the contract every service shares:
a :class:`~wire.events.DetectionRecord` of the catalogue's ``quarterly_warning`` detector,
whose default rule pages (one alert per source, quarter and level: group by device, and
the record's ``device_id`` is ``quarterly/<quarter>/<source type>/<source id>/<level>``,
its metric ``warning_level_orange`` or ``warning_level_red``).

- The detection id is stable per source, quarter, level and the revision that changed the
  source to that level (:func:`reports.store.level_since`), so issuing the same level again
  publishes nothing new (and a redelivery is ignored by the alert service), while a return
  to an earlier level (orange -> red -> orange) is a new warning with a new id: the alert
  service drops ids it has seen, so reusing the first orange's id would raise nothing.
- A revision that changes the level publishes the new level's OPEN record (a new alert if
  it is orange or red) and the old level's CLEARED record, with the id it was published
  under (its alert resolves).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from datetime import datetime

from adapters.kafka import ensure_topics, kafka_errors, make_producer, started_client
from core.settings import Settings
from reports.model import LEVEL_ORDER, Quarter, SourceWarning
from reports.store import PublishedAlert
from wire.events import DetectionRecord, DetectionState, Severity
from wire.events import detection_id as stable_id

__all__ = [
    "ALERT_LEVELS",
    "QUARTERLY_DETECTOR",
    "plan_alerts",
    "publish_records",
    "warning_id",
    "warning_record",
]

QUARTERLY_DETECTOR = "quarterly_warning"
ALERT_LEVELS = frozenset({"orange", "red"})
PRODUCE_TIMEOUT_S = 30.0
_KIND = {
    "unit": "cems", "plant": "cems", "region": "cems", "city": "city", "mine": "mine",
    "leak_site": "leak", "device": "generic",
}  # fmt: skip


def _device(quarter: Quarter, source_type: str, source_id: str, level: str) -> str:
    return f"quarterly/{quarter}/{source_type}/{source_id}/{level}"


def warning_id(
    quarter: Quarter, tz: str, source_type: str, source_id: str, level: str, since: int
) -> str:
    """The detection id of one source's warning: its quarter, level and ``since``, the
    revision that changed the source to this level (a later return to it is a new id)."""
    device = _device(quarter, source_type, source_id, level)
    return stable_id(
        f"{device}@r{since}", f"warning_level_{level}", QUARTERLY_DETECTOR, quarter.end(tz)
    )


def warning_record(
    quarter: Quarter,
    tz: str,
    source_type: str,
    source_id: str,
    level: str,
    detection_id: str,
    *,
    state: DetectionState = DetectionState.OPEN,
    figures: dict[str, float | None] | None = None,
    cleared_at: datetime | None = None,
) -> DetectionRecord:
    """The detection record of one source's warning level in one quarter, under
    ``detection_id`` (:func:`warning_id` when it is opened, the published id when cleared)."""
    network, _, site = source_id.partition("/")
    device = _device(quarter, source_type, source_id, level)
    started = quarter.end(tz)
    metric = f"warning_level_{level}"  # a rule can tell red (e.g. critical) from orange
    evidence = {
        k: float(v) for k, v in (figures or {}).items() if v is not None and math.isfinite(v)
    }
    return DetectionRecord(
        detection_id=detection_id,
        state=state,
        device_id=device,
        kind=_KIND.get(source_type, "generic"),
        network=network,
        site=site.split("/")[0] if site else network,
        metric=metric,
        detector=QUARTERLY_DETECTOR,
        severity=Severity.WARNING,
        started_at=started,
        ended_at=cleared_at,
        score=float(LEVEL_ORDER[level]),  # type: ignore[index]
        value=float(LEVEL_ORDER[level]),  # type: ignore[index]
        evidence=evidence,
    )


def plan_alerts(
    quarter: Quarter,
    tz: str,
    warnings: list[SourceWarning],
    since: Mapping[tuple[str, str], int],
    active: list[PublishedAlert],
    now: datetime,
) -> tuple[list[tuple[PublishedAlert, DetectionRecord]], list[tuple[str, DetectionRecord]]]:
    """What to publish for a report's warnings given the alerts already raised.

    Args:
        quarter: the report's quarter.
        tz: the report's time zone.
        warnings: the newest revision's warnings.
        since: ``(source type, source id) -> revision`` the source's level has held since
            (:func:`reports.store.level_since`); it goes into the detection id.
        active: the published warnings not cleared yet.
        now: when clearing.

    Returns:
        ``(opens, clears)``: new OPEN records for orange and red levels not raised yet, and
        CLEARED records (under their published ids) for raised levels the report no longer
        has. A level still held is raised already, whichever revision raised it.
    """
    current: dict[tuple[str, str], SourceWarning] = {
        (w.source_type, w.source_id): w for w in warnings
    }
    raised = {(a.source_type, a.source_id, a.level) for a in active}
    opens = []
    for (st, sid), w in sorted(current.items()):
        if w.level in ALERT_LEVELS and (st, sid, w.level) not in raised:
            det_id = warning_id(quarter, tz, st, sid, w.level, since[(st, sid)])
            rec = warning_record(quarter, tz, st, sid, w.level, det_id, figures=w.figures)
            opens.append((PublishedAlert(det_id, st, sid, w.level), rec))
    clears = []
    for a in active:
        now_w = current.get((a.source_type, a.source_id))
        if now_w is None or now_w.level != a.level:
            rec = warning_record(
                quarter, tz, a.source_type, a.source_id, a.level, a.detection_id,
                state=DetectionState.CLEARED, cleared_at=now,
            )  # fmt: skip
            clears.append((a.detection_id, rec))
    return opens, clears


async def publish_records(settings: Settings, records: list[DetectionRecord]) -> None:
    """Produce ``records`` to ``kafka.detections_topic`` and wait until Kafka has them all.

    Raises:
        BrokerUnavailable: Kafka could not be reached or did not confirm in time.
    """
    if not records:
        return
    kafka = settings.kafka
    bootstrap = settings.kafka_bootstrap()
    await ensure_topics(kafka, bootstrap, [kafka.detections_topic])
    producer = make_producer(kafka, bootstrap)
    async with started_client(
        producer, "producer", start_timeout_s=PRODUCE_TIMEOUT_S, stop_timeout_s=PRODUCE_TIMEOUT_S
    ):
        with kafka_errors("produce quarterly warnings"):
            async with asyncio.timeout(PRODUCE_TIMEOUT_S):
                futures = [
                    await producer.send(
                        kafka.detections_topic,
                        value=r.model_dump_json().encode(),
                        key=r.device_id.encode(),
                    )
                    for r in records
                ]
                await asyncio.gather(*futures)
