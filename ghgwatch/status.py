"""``ghgwatch status``: what the pipeline holds and how far behind it is, as data or tables.

Where it looks: the configured service URLs; for any left unset, the ``endpoints.json`` that a
running ``ghgwatch up`` wrote in ``settings.data_dir``; failing that, the standard local
addresses. It reads the ``devices`` and ``dead_letters`` tables and the processor group's
committed offsets on the readings topic; it never writes anything.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.table import Table

from adapters import client_options
from core.errors import GhgwatchError, TransientError
from core.settings import Settings
from ghgwatch.probes import DbSnapshot, PartitionOffsets, fetch_db_snapshot, fetch_group_offsets
from ghgwatch.stack import resolve

__all__ = [
    "DEVICE_LIMIT",
    "DeadLetterSummary",
    "DeviceSeen",
    "KindSummary",
    "PartitionLag",
    "ServicesUnreachable",
    "StatusReport",
    "collect_status",
    "render_status",
]

DEVICE_LIMIT = 50
_DETAIL_CHARS = 160


class ServicesUnreachable(TransientError):
    """The database or Kafka could not be reached, so no status can be shown."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KindSummary(_Model):
    """Devices and stored readings of one source kind."""

    kind: str
    devices: int
    readings: int
    last_seen: datetime | None


class DeviceSeen(_Model):
    """When a device's newest reading was stored, and how many it has."""

    device_id: str
    kind: str
    last_seen: datetime | None
    readings: int


class DeadLetterSummary(_Model):
    """Rejected messages with one reason: how many, the latest, and one example."""

    reason: str
    count: int = Field(description="Distinct rejected messages")
    occurrences: int = Field(description="Deliveries of them (repeats and redeliveries)")
    last_at: datetime | None
    example_device: str | None
    example_detail: str


class PartitionLag(_Model):
    """How far the processor's consumer group is behind on one partition."""

    topic: str
    partition: int
    end_offset: int
    committed: int | None = Field(description="None: the group has committed nothing here")
    lag: int


class StatusReport(_Model):
    """Everything ``ghgwatch status`` shows."""

    generated_at: datetime
    endpoints_source: str = Field(description="config, endpoints.json or local defaults")
    db: str
    kafka_bootstrap: str
    readings_topic: str
    group_id: str
    readings_total: int
    newest_reading: datetime | None
    kinds: list[KindSummary]
    devices_total: int
    devices: list[DeviceSeen]
    dead_letters_total: int
    dead_letters: list[DeadLetterSummary]
    lag_total: int
    lag: list[PartitionLag]


def _host_of(url: str) -> str:
    """``host:port/db`` of a database URL, without user or password."""
    return url.split("://", 1)[-1].rpartition("@")[2].split("?", 1)[0]


def _build(
    settings: Settings, source: str, snap: DbSnapshot, offsets: list[PartitionOffsets]
) -> StatusReport:
    lag = [
        PartitionLag(
            topic=o.topic,
            partition=o.partition,
            end_offset=o.end_offset,
            committed=o.committed,
            lag=max(0, o.end_offset - (o.committed or 0)),
        )
        for o in offsets
    ]
    dead = [
        DeadLetterSummary(
            reason=str(r["reason"]),
            count=int(r["count"]),
            occurrences=int(r["occurrences"]),
            last_at=r["last_at"],
            example_device=r["example_device"],
            example_detail=str(r["example_detail"] or "")[:_DETAIL_CHARS],
        )
        for r in snap.dead_letters
    ]
    return StatusReport(
        generated_at=datetime.now(UTC),
        endpoints_source=source,
        db=_host_of(settings.db_url()),
        kafka_bootstrap=settings.kafka_bootstrap(),
        readings_topic=settings.kafka.readings_topic,
        group_id=settings.processor.group_id,
        readings_total=snap.readings_total,
        newest_reading=snap.newest_reading,
        kinds=[
            KindSummary(
                kind=str(r["kind"]),
                devices=int(r["devices"]),
                readings=int(r["readings"]),
                last_seen=r["last_seen"],
            )
            for r in snap.kinds
        ],
        devices_total=snap.devices_total,
        devices=[
            DeviceSeen(
                device_id=str(r["device_id"]),
                kind=str(r["kind"]),
                last_seen=r["last_seen"],
                readings=int(r["readings"] or 0),
            )
            for r in snap.devices
        ],
        dead_letters_total=sum(d.count for d in dead),
        dead_letters=dead,
        lag_total=sum(p.lag for p in lag),
        lag=lag,
    )


async def collect_status(settings: Settings, *, device_limit: int = DEVICE_LIMIT) -> StatusReport:
    """Query the database and Kafka for the pipeline's current state.

    Args:
        settings: the loaded settings; unset URLs come from a running ``ghgwatch up``.
        device_limit: list at most this many devices (most recently seen first).

    Returns:
        The report.

    Raises:
        ServicesUnreachable: the database or Kafka could not be reached (the message names
            each unreachable service and where it was looked for).
        ConfigurationError: ``kafka.sasl_mechanism`` is set without username and password.
    """

    found = resolve(settings)
    resolved, source = found.settings, found.source
    bootstrap = resolved.kafka_bootstrap()
    kafka_options = client_options(resolved.kafka, bootstrap)
    db_task = fetch_db_snapshot(resolved.db_url(), device_limit=device_limit)
    kafka_task = fetch_group_offsets(
        bootstrap, resolved.kafka.readings_topic, resolved.processor.group_id, kafka_options
    )
    snap, offsets = await asyncio.gather(db_task, kafka_task, return_exceptions=True)
    problems = [str(r) for r in (snap, offsets) if isinstance(r, GhgwatchError)]
    for r in (snap, offsets):
        if isinstance(r, BaseException) and not isinstance(r, GhgwatchError):
            raise r
    if problems:
        raise ServicesUnreachable(f"{'; '.join(problems)} (endpoints from {source})")
    assert isinstance(snap, DbSnapshot)
    assert isinstance(offsets, list)
    return _build(resolved, source, snap, offsets)


def _ts(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def render_status(report: StatusReport, console: Console | None = None) -> None:
    """Print the report as tables (readings per kind, devices, dead letters, consumer lag).

    Args:
        report: what :func:`collect_status` returned.
        console: where to print (default: a console on stdout).
    """
    out = console or Console()
    out.print(
        f"database [bold]{report.db}[/], kafka [bold]{report.kafka_bootstrap}[/]"
        f" (endpoints from {report.endpoints_source})"
    )

    kinds = Table(title=f"Readings per source kind ({report.readings_total} stored)")
    for col in ("kind", "devices", "readings", "last seen"):
        kinds.add_column(col, justify="right" if col in {"devices", "readings"} else "left")
    for k in report.kinds:
        kinds.add_row(k.kind, str(k.devices), str(k.readings), _ts(k.last_seen))
    out.print(kinds)

    shown = len(report.devices)
    devices = Table(title=f"Last seen per device ({shown} of {report.devices_total}, newest first)")
    for col in ("device", "kind", "last seen", "readings"):
        devices.add_column(col, justify="right" if col == "readings" else "left")
    for d in report.devices:
        devices.add_row(d.device_id, d.kind, _ts(d.last_seen), str(d.readings))
    out.print(devices)

    # The examples go below the table, one per line: as a column they were squeezed to a few
    # characters on an 80-column terminal.
    dead = Table(title=f"Dead letters by reason ({report.dead_letters_total} in all)")
    for col in ("reason", "count", "deliveries", "last"):
        right = col in {"count", "deliveries"}
        dead.add_column(col, justify="right" if right else "left", no_wrap=True)
    for r in report.dead_letters:
        dead.add_row(r.reason, str(r.count), str(r.occurrences), _ts(r.last_at))
    out.print(dead)
    for r in report.dead_letters:
        example = f"{r.example_device or '?'}: {r.example_detail}"
        out.print(f"  latest {r.reason}: {example}", soft_wrap=True, highlight=False, markup=False)

    lag = Table(
        title=f"Consumer lag of group {report.group_id} on {report.readings_topic}"
        f" ({report.lag_total} behind)"
    )
    for col in ("partition", "end offset", "committed", "lag"):
        lag.add_column(col, justify="right")
    for p in report.lag:
        committed = "-" if p.committed is None else str(p.committed)
        lag.add_row(str(p.partition), str(p.end_offset), committed, str(p.lag))
    if not report.lag:
        lag.caption = "topic not created yet"
    out.print(lag)
