"""Hourly (CN 2061) and daily (CN 2031) data packets stored as readings: asked for as the
backfill of an outage (``gateway.backfill_cn``) and, for 2061, taken live
(``gateway.live_cns``). Real TCP to the gateway, real tansu, real PostgreSQL: the stored
readings are checked for their values, their timestamps and that each is stored once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from gw_helpers import CEMS_DEVICE, CEMS_MN, CEMS_PW, TZ, running_gateway, wait_for_count

from gateway.logger_sim import SimulatedLogger

LIVE_VALUES = {"a05001": 9.5, "a00000": 380.0, "a01012": 110.0}
METRICS = ("co2_pct_vol", "flow_m3_h", "flue_temp_c")
SETTLE_S = 1.0  # anything doubled or stored by mistake arrives by now


def _averages(k: int) -> dict[str, float]:
    """The k-th stored history record's averages: each record is told apart by its values."""
    return {"a05001": 10.0 + k, "a00000": 400.0 + k, "a01012": 120.0 + k}


def _expected(values: dict[str, float]) -> dict[str, float]:
    return {
        "co2_pct_vol": values["a05001"],
        "flow_m3_h": values["a00000"] * 3600,  # m³/s in HJ 212, m³/h in the contract
        "flue_temp_c": values["a01012"],
    }


async def _stored(db: str) -> dict[tuple[str, datetime], float]:
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            "select metric, ts, value from readings where device_id = $1", CEMS_DEVICE
        )
        total = await conn.fetchval("select count(*) from readings")
    finally:
        await conn.close()
    assert total == len(rows)  # nothing stored for another device
    out = {(r["metric"], r["ts"]): r["value"] for r in rows}
    assert len(out) == len(rows)  # one row per (metric, time)
    return out


@pytest.mark.parametrize("cn", ["2061", "2031"])
async def test_an_outage_is_backfilled_with_hourly_or_daily_averages_stored_once(
    gateway_settings, cn: str
) -> None:
    if cn == "2061":  # hourly: an outage of five hours
        step = timedelta(hours=1)
        first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)
        records = 5
    else:  # daily: the logger's days begin at its local midnight
        step = timedelta(days=1)
        today = datetime.now(TZ).replace(hour=0, minute=0, second=0, microsecond=0)
        first = (today - timedelta(days=4)).astimezone(UTC)
        records = 3
    history_times = [first + step * (k + 1) for k in range(records)]
    before = first + timedelta(seconds=30)  # the last live packet before the outage
    after = history_times[-1] + timedelta(seconds=30)  # the first one after it
    asked: list[tuple[str, datetime, datetime]] = []

    def history(req_cn: str, begin: datetime, end: datetime) -> list[tuple[datetime, dict]]:
        asked.append((req_cn, begin, end))
        return [(t, _averages(k)) for k, t in enumerate(history_times) if begin <= t <= end]

    settings = gateway_settings(backfill_cn=cn, backfill_min_gap_s=60)
    db = settings.db_url()
    expected_rows = 2 * len(METRICS) + records * len(METRICS)
    async with running_gateway(settings) as gateway:
        assert gateway.port is not None
        logger = SimulatedLogger(
            "127.0.0.1", gateway.port, mn=CEMS_MN, pw=CEMS_PW, tz=TZ, history=history
        )
        await logger.connect()
        assert await logger.upload("2011", before, LIVE_VALUES)
        assert await logger.upload("2011", after, LIVE_VALUES)  # the outage is seen here
        async with asyncio.timeout(30):
            while logger.backfilled < records:
                await asyncio.sleep(0.05)
        assert [r.cn for r in logger.requests] == [cn]  # asked once, with the configured CN
        assert asked == [(cn, before, after)]
        stored_count = await wait_for_count(db, "select count(*) from readings", expected_rows)
        # The same history once more, unasked (a logger re-sending it): answered, not stored
        # again, and not stored at all when outside what was asked for.
        k = records - 1
        assert await logger.upload(cn, history_times[k], _averages(k))
        assert await logger.upload(cn, first - step, _averages(99))
        await asyncio.sleep(SETTLE_S)
        await logger.close()
    assert stored_count == expected_rows
    stored = await _stored(db)
    assert len(stored) == expected_rows
    want: dict[tuple[str, datetime], float] = {}
    for t in (before, after):
        want |= {(m, t): v for m, v in _expected(LIVE_VALUES).items()}
    for k, t in enumerate(history_times):
        want |= {(m, t): v for m, v in _expected(_averages(k)).items()}
    assert stored == pytest.approx(want)


async def test_hourly_uploads_taken_live_are_stored_once_and_realtime_ones_are_not(
    gateway_settings,
) -> None:
    # the default minimum gap (120 s): hourly uploads an hour apart are still no outage
    settings = gateway_settings(live_cns=["2061"], backfill_cn="2061")
    db = settings.db_url()
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    hours = [hour + timedelta(hours=k) for k in range(3)]
    async with running_gateway(settings) as gateway:
        assert gateway.port is not None
        logger = SimulatedLogger("127.0.0.1", gateway.port, mn=CEMS_MN, pw=CEMS_PW, tz=TZ)
        await logger.connect()
        for k, t in enumerate(hours):
            assert await logger.upload("2061", t, _averages(k))
        assert await logger.upload("2061", hours[1], _averages(1))  # re-sent: stored once
        # Real-time packets are not among the live CNs now: answered, not stored.
        assert await logger.upload("2011", hours[-1] + timedelta(seconds=10), LIVE_VALUES)
        stored_count = await wait_for_count(
            db, "select count(*) from readings", len(hours) * len(METRICS)
        )
        await asyncio.sleep(SETTLE_S)
        await logger.close()
    assert stored_count == len(hours) * len(METRICS)
    assert logger.requests == []  # an hour apart is the CN's own period, no outage
    want = {(m, t): v for k, t in enumerate(hours) for m, v in _expected(_averages(k)).items()}
    assert await _stored(db) == pytest.approx(want)
