"""The numpy-built binary COPY data is what PostgreSQL reads back, row for row."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import numpy as np

from processors.storage.pgcopy import COPY_COLUMNS, pair_blob, readings_copy_data
from wire import epoch_us, from_epoch_us


async def _source(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_rows_of_mixed_text_lengths_come_back_exactly(pg_url: str) -> None:
    """Devices and metrics of different lengths (several row layouts), odd values, all flags."""
    pairs = [
        ("ordos-coal/buertai/t1-0302", "ch4_pct_vol"),
        ("a/b/c", "co_ppm"),
        ("baotou/kundulun/picarro-01", "co2_ppm"),
        ("包头/站点/设备", "ch4_ppb"),  # non-ASCII text is counted in bytes
    ]
    rng = np.random.default_rng(3)
    n = 2_000
    pair = rng.integers(0, len(pairs), n).astype(np.intp)
    t0 = epoch_us(datetime(2026, 11, 25, tzinfo=UTC))
    ts = t0 + np.arange(n, dtype=np.int64) * 1_000_003
    # before PostgreSQL's epoch (negative on the wire) and at the Unix epoch
    ts[:2] = [epoch_us(datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)), 0]
    value = rng.normal(0, 1e6, n)
    value[:4] = [0.0, -0.0, 1e-300, 123.456]
    flag = rng.choice(np.frombuffer(b"NFMSDCTB", np.uint8), n)
    received = ts + 1_500_000
    data = readings_copy_data(ts, pair, [pair_blob(*p) for p in pairs], value, flag, received)

    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "CREATE TABLE r (ts timestamptz, device_id text, metric text, value float8,"
            " flag text, received_at timestamptz, seq bigserial)"
        )
        await conn.copy_to_table("r", source=_source(data), columns=COPY_COLUMNS, format="binary")
        rows = await conn.fetch(f"SELECT {', '.join(COPY_COLUMNS)} FROM r")
    finally:
        await conn.close()
    expected = sorted(
        (
            from_epoch_us(t),
            pairs[p][0],
            pairs[p][1],
            v,
            chr(f),
            from_epoch_us(r),
        )
        for t, p, v, f, r in zip(
            ts.tolist(), pair.tolist(), value.tolist(), flag.tolist(), received.tolist(),
            strict=True,
        )
    )  # fmt: skip
    assert sorted(tuple(r) for r in rows) == expected
    assert rows[0]["ts"].tzinfo is not None
    assert min(r["ts"] for r in rows) == datetime(1970, 1, 1, tzinfo=UTC)
