"""Columnar reading batches: one accepted MQTT message's readings, in memory and on Kafka.

The bridge turns every accepted message into a :class:`ReadingBatch`: who sent it in a small
header, and its readings as four numpy columns (time, metric, value, flag). Consumers store
and analyse the columns without building a Python object per reading.

On the readings topic a batch is one record (key: ``device_id``) in format 2, little-endian::

    b"GHGR" | version u8 (2) | header length H u32 | readings n u32 | received_at i64 (us)
    | header: H bytes of JSON | ts_us: n x i64 | value: n x f64 | metric: n x u16 | flag: n x u8

The JSON header is a :class:`~wire.schemas.ReadingHeader` (device, kind, network, site,
device, location, MQTT topic and the distinct ``metrics`` of the message). ``metric`` holds
indices into ``metrics``, ``flag`` the HJ 212 flag letter as an ASCII byte, ``ts_us`` the
device time and ``received_at`` the bridge's receive time, both in microseconds since the
Unix epoch (UTC). A device's header rarely changes, so both ends cache it.

:meth:`ReadingBatch.decode` also reads format 1 (a :class:`~wire.schemas.ReadingRecord` as
JSON, what bridges before format 2 produced), so a rolling upgrade loses nothing.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from wire.schemas import (
    SENDER_FIELDS,
    Flag,
    MineLocation,
    ReadingHeader,
    ReadingRecord,
    WireReading,
)
from wire.topics import DeviceRef

__all__ = [
    "BATCH_MAGIC",
    "BATCH_VERSION",
    "FLAG_CODES",
    "ReadingBatch",
    "ReadingFrame",
    "encode_batch",
    "epoch_us",
    "from_epoch_us",
    "reading_header",
]

BATCH_MAGIC = b"GHGR"
BATCH_VERSION = 2
_PREFIX = struct.Struct("<4sBIIq")  # magic, version, header length, readings, received_at
# Bytes per reading in the column section: i64 ts, f64 value, u16 metric, u8 flag.
_ROW_BYTES = 8 + 8 + 2 + 1
# Distinct headers kept by each cache: one per device and metric set is the normal case.
HEADER_CACHE_SIZE = 65_536
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
# ASCII code of every HJ 212 flag letter; a flag byte outside this set is corrupt input.
FLAG_CODES = np.array(sorted(ord(f.value) for f in Flag), dtype=np.uint8)
_FLAG_LETTERS = bytes(FLAG_CODES.tolist())

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
UInt16Array = npt.NDArray[np.uint16]
UInt8Array = npt.NDArray[np.uint8]
IntpArray = npt.NDArray[np.intp]


def epoch_us(dt: datetime) -> int:
    """Microseconds since the Unix epoch of a timezone-aware datetime (exact)."""
    return (dt - _EPOCH) // _US


def from_epoch_us(us: int) -> datetime:
    """The UTC datetime of ``us`` microseconds since the Unix epoch."""
    return _EPOCH + timedelta(microseconds=us)


def encode_batch(
    header_json: bytes,
    received_us: int,
    ts_us: Sequence[int] | Int64Array,
    metric: Sequence[int] | UInt16Array,
    value: Sequence[float] | Float64Array,
    flag: bytes,
) -> bytes:
    """The format-2 Kafka value of a batch, from numpy columns or plain lists.

    Lists are packed with :mod:`struct`, which for the one or few readings of a typical
    message is several times cheaper than making numpy arrays first.
    """
    n = len(flag)
    prefix = _PREFIX.pack(BATCH_MAGIC, BATCH_VERSION, len(header_json), n, received_us)
    if isinstance(ts_us, np.ndarray):
        columns = b"".join(
            (
                ts_us.astype("<i8", copy=False).tobytes(),
                np.asarray(value).astype("<f8", copy=False).tobytes(),
                np.asarray(metric).astype("<u2", copy=False).tobytes(),
            )
        )
    else:
        columns = struct.pack(f"<{n}q{n}d{n}H", *ts_us, *value, *metric)
    return b"".join((prefix, header_json, columns, flag))


@functools.lru_cache(maxsize=HEADER_CACHE_SIZE)
def reading_header(
    device: DeviceRef, topic: str, location: MineLocation | None, metrics: tuple[str, ...]
) -> tuple[ReadingHeader, bytes]:
    """The header of a batch from ``device`` on ``topic``, and its JSON (cached)."""
    header = ReadingHeader(
        device_id=device.device_id,
        kind=device.kind,
        network=device.network,
        site=device.site,
        device=device.device,
        location=location,
        mqtt_topic=topic,
        metrics=metrics,
    )
    return header, header.model_dump_json().encode()


@functools.lru_cache(maxsize=HEADER_CACHE_SIZE)
def _parse_header(raw: bytes) -> ReadingHeader:
    return ReadingHeader.model_validate_json(raw)


@dataclass(frozen=True, slots=True, eq=False)
class ReadingBatch:
    """The readings of one accepted message as columns (see the module docstring).

    Attributes:
        header: the device, its topic and the metric names.
        header_json: ``header`` as it is encoded (shared by every batch with that header).
        received_us: when the bridge received the message, microseconds since the epoch.
        ts_us: device time of each reading, microseconds since the Unix epoch (UTC).
        metric: index of each reading's metric in ``header.metrics``.
        value: each reading's value, in the metric's unit.
        flag: each reading's HJ 212 flag letter as an ASCII code.
    """

    header: ReadingHeader
    header_json: bytes
    received_us: int
    ts_us: Int64Array
    metric: UInt16Array
    value: Float64Array
    flag: UInt8Array

    def __len__(self) -> int:
        return int(self.ts_us.shape[0])

    @property
    def device_id(self) -> str:
        """``network/site/device``: the Kafka key and database key of the sender."""
        return self.header.device_id

    @property
    def received_at(self) -> datetime:
        """When the bridge received the message."""
        return from_epoch_us(self.received_us)

    @classmethod
    def build(
        cls,
        header: tuple[ReadingHeader, bytes],
        received_us: int,
        ts_us: Sequence[int] | Int64Array,
        metric: Sequence[int] | UInt16Array,
        value: Sequence[float] | Float64Array,
        flag: bytes | UInt8Array,
    ) -> ReadingBatch:
        """A batch from a (header, header JSON) pair and column data (lists or arrays).

        ``flag`` may be the flag letters as ASCII bytes.
        """
        flags = np.frombuffer(flag, dtype=np.uint8) if isinstance(flag, bytes) else flag
        return cls(
            header[0],
            header[1],
            received_us,
            np.asarray(ts_us, dtype=np.int64),
            np.asarray(metric, dtype=np.uint16),
            np.asarray(value, dtype=np.float64),
            np.asarray(flags, dtype=np.uint8),
        )

    @classmethod
    def from_record(cls, record: ReadingRecord) -> ReadingBatch:
        """The columns of a format-1 record (a :class:`~wire.schemas.ReadingRecord`)."""
        index: dict[str, int] = {}
        metric = [index.setdefault(r.metric, len(index)) for r in record.readings]
        header = ReadingHeader(**record.model_dump(include=SENDER_FIELDS), metrics=tuple(index))
        return cls.build(
            (header, header.model_dump_json().encode()),
            epoch_us(record.received_at),
            [epoch_us(r.ts) for r in record.readings],
            metric,
            [r.value for r in record.readings],
            "".join(r.flag.value for r in record.readings).encode("ascii"),
        )

    def to_record(self) -> ReadingRecord:
        """The same readings as a format-1 :class:`~wire.schemas.ReadingRecord` (one object
        per reading: for tools and tests, not the hot path)."""
        h = self.header
        names = h.metrics
        flags = bytes(self.flag).decode("ascii")
        return ReadingRecord(
            **h.model_dump(include=SENDER_FIELDS),
            received_at=self.received_at,
            readings=[
                WireReading(ts=from_epoch_us(t), metric=names[m], value=v, flag=Flag(f))
                for t, m, v, f in zip(
                    self.ts_us.tolist(),
                    self.metric.tolist(),
                    self.value.tolist(),
                    flags,
                    strict=True,
                )
            ],
        )

    def encode(self) -> bytes:
        """The format-2 Kafka value of this batch."""
        return encode_batch(
            self.header_json,
            self.received_us,
            self.ts_us,
            self.metric,
            self.value,
            self.flag.tobytes(),
        )

    @classmethod
    def decode(cls, raw: bytes) -> ReadingBatch:
        """Read a readings-topic value: format 2, or format 1 (JSON) from older bridges.

        Raises:
            ValueError: the bytes are not a well-formed batch (the message says what is wrong).
        """
        if raw[:1] == b"{":
            try:
                return cls.from_record(ReadingRecord.model_validate_json(raw))
            except ValidationError as exc:
                raise ValueError(f"format 1 record: {exc}") from exc
        if len(raw) < _PREFIX.size:
            raise ValueError(f"record of {len(raw)} bytes is too short for a batch")
        magic, version, head_len, n, received_us = _PREFIX.unpack_from(raw)
        if magic != BATCH_MAGIC:
            raise ValueError(f"not a readings batch (starts with {raw[:4]!r})")
        if version != BATCH_VERSION:
            raise ValueError(f"unknown batch format version {version}")
        start = _PREFIX.size + head_len
        if len(raw) - start != n * _ROW_BYTES:
            raise ValueError(f"batch says {n} readings but {len(raw) - start} bytes follow")
        head = raw[_PREFIX.size : start]
        try:
            header = _parse_header(head)
        except ValidationError as exc:
            raise ValueError(f"bad batch header: {exc}") from exc
        metric = np.frombuffer(raw, "<u2", n, start + 16 * n)
        # numpy's reduction costs more than Python's max on a handful of values
        if n and (metric.max() if n > 16 else max(metric.tolist())) >= len(header.metrics):
            raise ValueError("batch metric index outside its metric list")
        if raw[start + 18 * n :].translate(None, _FLAG_LETTERS):
            raise ValueError("batch carries an unknown data flag")
        flag = np.frombuffer(raw, np.uint8, n, start + 18 * n)
        return cls(
            header,
            head,
            received_us,
            np.frombuffer(raw, "<i8", n, start),
            metric,
            np.frombuffer(raw, "<f8", n, start + 8 * n),
            flag,
        )


def _concat(parts: list[npt.NDArray[Any]], dtype: type[Any]) -> npt.NDArray[Any]:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype)


@dataclass(frozen=True, slots=True, eq=False)
class ReadingFrame:
    """The readings of many batches concatenated column-wise, in batch order.

    Consumers take a poll's batches as one frame, so every per-reading step is one numpy
    operation over the whole poll.

    Attributes:
        batches: the batches, in order.
        counts: readings per batch.
        ts_us, metric, value, flag: the batches' columns end to end (``metric`` still indexes
            each reading's own batch header).
    """

    batches: Sequence[ReadingBatch]
    counts: Int64Array
    ts_us: Int64Array
    metric: IntpArray
    value: Float64Array
    flag: UInt8Array

    @classmethod
    def of(cls, batches: Sequence[ReadingBatch]) -> ReadingFrame:
        """Concatenate ``batches``."""
        return cls(
            batches,
            np.fromiter(map(len, batches), dtype=np.int64, count=len(batches)),
            _concat([b.ts_us for b in batches], np.int64),
            _concat([b.metric for b in batches], np.intp),
            _concat([b.value for b in batches], np.float64),
            _concat([b.flag for b in batches], np.uint8),
        )

    def __len__(self) -> int:
        return int(self.ts_us.shape[0])

    def per_reading(self, per_batch: npt.ArrayLike) -> npt.NDArray[Any]:
        """Spread one value per batch over that batch's readings."""
        return np.repeat(np.asarray(per_batch), self.counts)

    def ids(self, id_of: Callable[[ReadingBatch, str], int]) -> IntpArray:
        """Each reading's id, asking ``id_of(batch, metric)`` once per metric of each batch.

        For example the stream id of (device, metric), or a row key: Python runs once per
        message and metric name, numpy spreads the answers over the readings.
        """
        flat: list[int] = []
        first = np.empty(len(self.batches), dtype=np.intp)
        for i, b in enumerate(self.batches):
            first[i] = len(flat)
            flat.extend([id_of(b, name) for name in b.header.metrics])
        ids: IntpArray = np.asarray(flat, dtype=np.intp)[self.per_reading(first) + self.metric]
        return ids
