"""History import and export: files in, through the readings path; tables out, streamed.

Import (``ghgwatch import FILE``) takes a CSV in the wire contract's long form or an HJ 212
text dump (one frame a line) and sends every row through exactly what a live message goes
through: :func:`wire.validate.validate_messages` on the device's data topic, then the readings
topic keyed by device id, produced with ``acks=all``. Storage is keyed by (device, metric,
time), so importing a file twice stores it once. Rows that fail are reported with their line
number and reason and not produced.

With ``ingest.require_registration`` a row of a device that is not registered and enabled as
that kind is refused as ``unregistered``, as the bridge refuses it, checked against the same
cached :class:`registry.RegistryView`. HJ 212 dumps are resolved (MN -> device, PW checked)
by the directory ``ghgwatch hj212`` uses (:func:`gateway.registry_directory.open_directory`):
``gateway.loggers`` when it lists any logger, else the device registry.

CSV columns: ``ts`` (or ``time``; RFC 3339 with offset, or epoch seconds), ``device_id``
(``network/site/device``), ``metric``, ``value``, and optionally ``kind`` (else ``--kind``),
``flag`` and ``location``.

Export (``ghgwatch export``) writes readings, derived values or detections of a device set
and time range as CSV or Parquet, read through a server-side cursor in pages, so a year of
readings never sits in memory.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq

from adapters.kafka import OutgoingRecord, RecordProducer, ensure_topics, map_kafka_error
from core.errors import ConfigurationError
from core.settings import Settings
from gateway.directory import LoggerDirectory, LoggerRefusal
from gateway.mapping import CodeTable, Unmappable, frame_payload
from gateway.registry_directory import open_directory, open_registry_view, uses_registry
from registry import RegistryView
from wire.hj212 import Frame, parse_frame
from wire.schemas import RejectReason, SourceKind
from wire.topics import DeviceRef, parse_data_topic
from wire.validate import AcceptedMessage, RejectedMessage, validate_messages

__all__ = [
    "EXPORT_TABLES",
    "ImportReport",
    "RowProblem",
    "export_table",
    "import_file",
]

VALIDATE_CHUNK = 2000
EXPORT_PAGE = 5000
PRODUCE_TIMEOUT_S = 60.0

ExportTable = Literal["readings", "derived", "detections"]
EXPORT_TABLES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # table: (time column, order, columns)
    "readings": ("ts", "device_id, metric, ts",
                 ("ts", "device_id", "metric", "value", "flag", "received_at")),
    "derived": ("ts", "device_id, series, ts", ("ts", "device_id", "series", "value", "valid")),
    "detections": ("started_at", "device_id, started_at",
                   ("detection_id", "device_id", "kind", "metric", "detector", "severity",
                    "state", "started_at", "ended_at", "score", "value", "threshold")),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row that was not imported: its line in the file and why."""

    line: int
    reason: str
    detail: str


@dataclass(slots=True)
class ImportReport:
    """What an import did."""

    rows: int = 0
    produced: int = 0
    problems: list[RowProblem] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Row:
    line: int
    topic: str
    payload: bytes


def _csv_rows(path: Path, kind: SourceKind | None, root: str) -> Iterator[_Row | RowProblem]:
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        time_col = "ts" if "ts" in header else "time"
        missing = [c for c in (time_col, "device_id", "metric", "value") if c not in header]
        if missing:
            raise ConfigurationError(f"{path}: missing columns {', '.join(missing)}; got {header}")
        if kind is None and "kind" not in header:
            raise ConfigurationError(f"{path}: no kind column; give --kind")
        for row in reader:
            line = reader.line_num
            try:
                row_kind = SourceKind(row.get("kind") or (kind.value if kind else ""))
            except ValueError:
                yield RowProblem(line, "bad_topic", f"kind {row.get('kind')!r} is not a kind")
                continue
            parts = (row.get("device_id") or "").split("/")
            if len(parts) != 3:
                yield RowProblem(line, "bad_topic", "device_id must be network/site/device")
                continue
            try:
                value: object = float(row.get("value") or "")
            except ValueError:
                yield RowProblem(line, "schema", f"value {row.get('value')!r} is not a number")
                continue
            ts_text = row.get(time_col) or ""
            ts: object = float(ts_text) if ts_text.replace(".", "", 1).isdigit() else ts_text
            body: dict[str, object] = {"ts": ts, "metric": row.get("metric"), "value": value}
            if row.get("flag"):
                body["flag"] = row["flag"]
            if row.get("location"):
                body["location"] = row["location"]
            ref = DeviceRef(row_kind, *parts)
            yield _Row(line, ref.data_topic(root), json.dumps(body).encode())


async def _hj212_rows(
    path: Path, settings: Settings, cns: Sequence[str], directory: LoggerDirectory
) -> list[_Row | RowProblem]:
    codes = CodeTable(settings.gateway.codes)
    tz = ZoneInfo(settings.gateway.timezone)
    out: list[_Row | RowProblem] = []
    with path.open("rb") as fh:
        for line, raw in enumerate(fh, start=1):
            text = raw.rstrip(b"\r\n")
            if not text.strip():
                continue
            frame = parse_frame(text + b"\r\n")
            if not isinstance(frame, Frame):
                out.append(RowProblem(line, frame.problem.value, frame.detail))
                continue
            if frame.cn not in cns:
                continue
            who = await directory.resolve(frame.mn, frame.pw)
            if isinstance(who, LoggerRefusal):
                detail = f"MN {frame.mn[:40]!r}" + (f": {who.detail}" if who.detail else "")
                out.append(RowProblem(line, who.reason.value, detail))
                continue
            mapped = frame_payload(frame, who.kind, who.location, codes, tz)
            if isinstance(mapped, Unmappable):
                out.append(RowProblem(line, "schema", mapped.detail))
                continue
            if mapped.readings:
                out.append(_Row(line, who.ref.data_topic(settings.mqtt.topic_root), mapped.payload))
    return out


def _is_hj212(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"##"


def _unregistered(view: RegistryView, topic: str, root: str) -> str | None:
    """Why the bridge would refuse this data topic's device as ``unregistered``, or None."""
    device = parse_data_topic(topic, root)
    return None if device is None else view.refusal(device.device_id, device.kind)


async def import_file(
    path: Path,
    settings: Settings,
    *,
    kind: SourceKind | None = None,
    cns: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Validate and produce the readings of a CSV or HJ 212 dump (see the module text).

    Raises:
        ConfigurationError: the CSV lacks required columns.
        FatalError: the device registry is needed and could not be read.
        BrokerUnavailable: Kafka did not take the readings (importing again is safe).
    """
    hj212 = _is_hj212(path)
    async with contextlib.AsyncExitStack() as stack:
        view: RegistryView | None = None
        if settings.ingest.require_registration or (hj212 and uses_registry(settings)):
            # the registry read once, as the bridge and the gateway hold it
            view = await stack.enter_async_context(
                open_registry_view(settings, settings.ingest.registry_start_timeout_s)
            )
        rows: Iterator[_Row | RowProblem]
        if hj212:
            directory = await stack.enter_async_context(
                open_directory(
                    settings, start_timeout_s=settings.ingest.registry_start_timeout_s, view=view
                )
            )
            wanted = cns or (*settings.gateway.live_cns, settings.gateway.backfill_cn)
            rows = iter(await _hj212_rows(path, settings, wanted, directory))
        else:
            rows = _csv_rows(path, kind, settings.mqtt.topic_root)
        registered = view if settings.ingest.require_registration else None
        return await _import_rows(rows, settings, registered, progress)


async def _import_rows(
    rows: Iterator[_Row | RowProblem],
    settings: Settings,
    registered: RegistryView | None,
    progress: Callable[[int], None] | None,
) -> ImportReport:
    root = settings.mqtt.topic_root
    report = ImportReport()
    kafka, bootstrap = settings.kafka, settings.kafka_bootstrap()
    topic = kafka.readings_topic
    await ensure_topics(kafka, bootstrap, [topic, kafka.deadletter_topic])
    producer = RecordProducer(kafka, bootstrap)
    await producer.start()
    try:
        chunk: list[_Row] = []

        async def flush() -> None:
            received = datetime.now(UTC)
            verdicts = validate_messages([(r.topic, r.payload, received) for r in chunk], root=root)
            records: list[OutgoingRecord] = []
            for row, verdict in zip(chunk, verdicts, strict=True):
                if isinstance(verdict, AcceptedMessage):
                    why = None if registered is None else _unregistered(registered, row.topic, root)
                    if why is not None:
                        report.problems.append(
                            RowProblem(row.line, RejectReason.UNREGISTERED.value, why)
                        )
                        continue
                    records.append((topic, verdict.device_id.encode(), verdict.value))
                elif isinstance(verdict, RejectedMessage):
                    rec = verdict.record
                    report.problems.append(RowProblem(row.line, rec.reason.value, rec.detail))
                else:  # a device event (last will) is not history
                    report.problems.append(RowProblem(row.line, "schema", "not a reading"))
            await _produce(producer, records)
            report.produced += len(records)
            if progress is not None:
                progress(len(chunk))
            chunk.clear()

        for item in rows:
            report.rows += 1
            if isinstance(item, RowProblem):
                report.problems.append(item)
                continue
            chunk.append(item)
            if len(chunk) >= VALIDATE_CHUNK:
                await flush()
        if chunk:
            await flush()
        await producer.flush(PRODUCE_TIMEOUT_S)
    finally:
        await producer.stop(10.0)
    report.problems.sort(key=lambda p: p.line)
    return report


async def _produce(producer: RecordProducer, records: list[OutgoingRecord]) -> None:
    if not records:
        return
    sent, error = await producer.send_grouped(records)
    if error is not None:
        raise error
    for future, _members in sent:
        try:
            await future
        except Exception as exc:
            raise map_kafka_error(exc, "produce") from exc


# -- export --------------------------------------------------------------------------------------


_TIME_COLUMNS = frozenset({"ts", "received_at", "started_at", "ended_at"})
_FLOAT_COLUMNS = frozenset({"value", "score", "threshold"})


def _arrow_type(column: str) -> pa.DataType:
    if column in _TIME_COLUMNS:
        return pa.timestamp("us", tz="UTC")
    if column in _FLOAT_COLUMNS:
        return pa.float64()
    if column == "valid":
        return pa.bool_()
    return pa.string()


def _cell(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def export_table(
    settings: Settings,
    table: ExportTable,
    out: Path,
    *,
    devices: Sequence[str],
    since: datetime,
    until: datetime,
    fmt: Literal["csv", "parquet"],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write ``table`` rows of ``devices`` (all when empty) with time in [since, until).

    Returns:
        The rows written.
    """
    time_col, order, columns = EXPORT_TABLES[table]
    sql = (
        f"SELECT {', '.join(columns)} FROM {table} WHERE {time_col} >= $1 AND {time_col} < $2"  # noqa: S608 - names from EXPORT_TABLES
        + (" AND device_id = ANY($3::text[])" if devices else "")
        + f" ORDER BY {order}"
    )
    args: list[Any] = [since, until] + ([list(devices)] if devices else [])
    written = 0
    conn = await asyncpg.connect(settings.db_url())
    try:
        async with conn.transaction(readonly=True):
            cursor = await conn.cursor(sql, *args)
            if fmt == "csv":
                with out.open("w", newline="") as fh:
                    writer = csv.writer(fh)
                    writer.writerow(columns)
                    while page := await cursor.fetch(EXPORT_PAGE):
                        writer.writerows([_cell(r[c]) for c in columns] for r in page)
                        written += len(page)
                        if progress is not None:
                            progress(len(page))
            else:
                schema = pa.schema([(c, _arrow_type(c)) for c in columns])
                with pq.ParquetWriter(out, schema) as pq_writer:
                    while page := await cursor.fetch(EXPORT_PAGE):
                        batch = pa.table({c: [r[c] for r in page] for c in columns}, schema=schema)
                        pq_writer.write_table(batch)
                        written += len(page)
                        if progress is not None:
                            progress(len(page))
    finally:
        await conn.close()
    return written
