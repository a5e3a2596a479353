"""PostgreSQL binary COPY data for reading rows, assembled from numpy columns.

asyncpg's ``copy_records_to_table`` encodes one Python tuple per row; at a hundred thousand
readings a second that alone costs more than the database's insert. Here the rows are laid
out with numpy instead: every row of the ``readings`` COPY has the same fields, and only the
text of (device_id, metric) varies in length, so rows are grouped by that length and each
group is one structured array whose fields are filled column-wise.

The format is PostgreSQL's binary COPY: a signature and two zero words, then per row a field
count (int16) and per field its length (int32) and big-endian bytes, then a -1 trailer.
``timestamptz`` travels as microseconds since 2000-01-01 UTC.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["COPY_COLUMNS", "PG_EPOCH_US", "pair_blob", "readings_copy_data"]

# The column order of the COPY (and of the staging table).
COPY_COLUMNS = ("ts", "device_id", "metric", "value", "flag", "received_at")
# 2000-01-01T00:00:00Z in microseconds since the Unix epoch: PostgreSQL's timestamp zero.
PG_EPOCH_US = 946_684_800_000_000
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)
_I4 = struct.Struct(">i")


def pair_blob(device_id: str, metric: str) -> bytes:
    """The (device_id, metric) fields of a row as COPY bytes: length, text, length, text."""
    dev, met = device_id.encode(), metric.encode()
    return b"".join((_I4.pack(len(dev)), dev, _I4.pack(len(met)), met))


@functools.lru_cache(maxsize=256)
def _row_dtype(pair_bytes: int) -> np.dtype[np.void]:
    """One COPY row with a (device_id, metric) part of ``pair_bytes`` bytes, unpadded."""
    return np.dtype(
        [
            ("fields", ">i2"),
            ("ts_len", ">i4"),
            ("ts", ">i8"),
            ("pair", f"V{pair_bytes}"),
            ("value_len", ">i4"),
            ("value", ">f8"),
            ("flag_len", ">i4"),
            ("flag", "u1"),
            ("received_len", ">i4"),
            ("received", ">i8"),
        ]
    )


def readings_copy_data(
    ts_us: npt.NDArray[np.int64],
    pair: npt.NDArray[np.intp],
    pair_blobs: Sequence[bytes],
    value: npt.NDArray[np.float64],
    flag: npt.NDArray[np.uint8],
    received_us: npt.NDArray[np.int64],
) -> bytes:
    """Binary COPY data of rows (ts, device_id, metric, value, flag, received_at).

    Args:
        ts_us: each row's device time, microseconds since the Unix epoch.
        pair: each row's index into ``pair_blobs``.
        pair_blobs: the distinct (device_id, metric) parts, made by :func:`pair_blob`.
        value: each row's value.
        flag: each row's one-letter flag as an ASCII code.
        received_us: each row's receive time, microseconds since the Unix epoch.

    Returns:
        The whole COPY stream (signature, rows, trailer). Rows come grouped by the length of
        their (device_id, metric) text, in input order within a group.
    """
    blob_len = np.fromiter(map(len, pair_blobs), dtype=np.int64, count=len(pair_blobs))
    row_len = blob_len[pair]
    parts = [_SIGNATURE]
    lengths = np.unique(blob_len).tolist()
    for length in lengths:
        members = np.flatnonzero(blob_len == length)
        # this group's rows (all of them when every pair has this length)
        rows: slice | npt.NDArray[np.intp] = slice(None)
        count = len(ts_us)
        if len(lengths) > 1:
            rows = np.flatnonzero(row_len == length)
            count = len(rows)
            if not count:
                continue
        # each row's pair as a position among this group's blobs
        position = np.zeros(len(pair_blobs), dtype=np.intp)
        position[members] = np.arange(len(members))
        blobs = np.frombuffer(b"".join([pair_blobs[i] for i in members.tolist()]), f"V{length}")
        out = np.empty(count, dtype=_row_dtype(length))
        out["fields"] = len(COPY_COLUMNS)
        out["ts_len"] = 8
        out["ts"] = ts_us[rows] - PG_EPOCH_US
        out["pair"] = blobs[position[pair[rows]]]
        out["value_len"] = 8
        out["value"] = value[rows]
        out["flag_len"] = 1
        out["flag"] = flag[rows]
        out["received_len"] = 8
        out["received"] = received_us[rows] - PG_EPOCH_US
        parts.append(out.tobytes())
    parts.append(_TRAILER)
    return b"".join(parts)
