"""The gateway over real TCP, with tansu and PostgreSQL: frames to stored readings, refused
frames to dead letters with their reasons, and an outage backfilled with nothing lost or
doubled."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
from gw_helpers import (
    CEMS_DEVICE,
    CEMS_MN,
    CEMS_PW,
    DISABLED_MN,
    MINE_MN,
    MINE_PW,
    TZ,
    running_gateway,
    wait_for_count,
)

from gateway.logger_sim import SimulatedLogger
from wire.hj212 import build_frame, build_segment, format_time

CEMS_VALUES = {
    "a05001": 11.8,
    "a00000": 420.0,
    "a01012": 121.5,
    "a01013": -0.35,
    "a01014": 8.2,
    "a19001": 6.1,
    "a21026": 35.0,
}
CEMS_METRICS = 6  # a21026 (SO2) has no metric here
# HJ 212-2017 appendix C's real-time upload, with CEMS codes in place of its water COD.
STANDARD_SHAPE = (
    "QN=20160801085857223;ST=32;CN=2011;PW={pw};MN={mn};Flag=5;CP=&&DataTime=20160801085857;"
    "a05001-Rtd=12.1,a05001-Flag=N;a00000-Rtd=410.0,a00000-Flag=N&&"
)


async def test_frames_stored_once_refused_ones_dead_lettered_and_unanswered(
    gateway_settings,
) -> None:
    settings = gateway_settings()
    db = settings.db_url()
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    async with running_gateway(settings) as gateway:
        port = gateway.port
        assert port is not None
        cems = SimulatedLogger("127.0.0.1", port, mn=CEMS_MN, pw=CEMS_PW, tz=TZ)
        await cems.connect()
        standard = build_frame(STANDARD_SHAPE.format(pw=CEMS_PW, mn=CEMS_MN))
        await cems.send_raw(standard)
        answered = [
            await cems.upload("2011", t0 + timedelta(seconds=10 * i), CEMS_VALUES) for i in range(5)
        ]
        # The logger did not hear the answer and sends the same packet again: stored once.
        again = await cems.upload("2011", t0, CEMS_VALUES)
        assert answered == [True] * 5
        assert again
        good = build_segment(
            qn="20261125080000001",
            st="31",
            cn="2011",
            pw=CEMS_PW,
            mn=CEMS_MN,
            flag=5,
            cp=f"DataTime={format_time(t0, TZ)};a05001-Rtd=1.0",
        )
        bad_crc = bytearray(build_frame(good))
        bad_crc[-4] = ord("0") if bad_crc[-4] != ord("0") else ord("1")
        wrong_length = b"##0050" + build_frame(good)[6:]
        seg = lambda qn, cn, pw, mn: build_segment(  # noqa: E731
            qn=qn,
            st="31",
            cn=cn,
            pw=pw,
            mn=mn,
            flag=5,
            cp=f"DataTime={format_time(t0, TZ)};a05001-Rtd=2.0",
        )
        refused = {
            "bad_crc": bytes(bad_crc),
            "bad_length": wrong_length,
            "unknown_cn": build_frame(seg("20261125080000002", "5999", CEMS_PW, CEMS_MN)),
            "bad_password": build_frame(seg("20261125080000003", "2011", "000000", CEMS_MN)),
            "unknown_mn": build_frame(seg("20261125080000004", "2011", CEMS_PW, "NOSUCHMN")),
            "disabled": build_frame(seg("20261125080000005", "2011", CEMS_PW, DISABLED_MN)),
            "out_of_range": build_frame(
                build_segment(
                    qn="20261125080000006",
                    st="31",
                    cn="2011",
                    pw=CEMS_PW,
                    mn=CEMS_MN,
                    flag=5,
                    cp=f"DataTime={format_time(t0, TZ)};a19001-Rtd=140",
                )
            ),
        }
        for frame in refused.values():
            await cems.send_raw(frame)
        # One connection is handled in order: once this is answered, all before it were.
        assert await cems.upload("2011", t0 + timedelta(seconds=60), CEMS_VALUES)
        mine = SimulatedLogger("127.0.0.1", port, mn=MINE_MN, pw=MINE_PW, tz=TZ)
        await mine.connect()
        assert await mine.upload("2011", t0, {"a05002": 0.42})
        await mine.send_raw(build_frame(good)[:40])  # then the line drops inside a frame
        await mine.close()
        await cems.close()

        expected_cems = 1 * 2 + 6 * CEMS_METRICS  # the standard's frame (2 codes), 6 uploads
        stored = await wait_for_count(
            db, "select count(*) from readings where device_id = $1", expected_cems, CEMS_DEVICE
        )
        assert stored == expected_cems
        assert await wait_for_count(db, "select count(*) from readings", expected_cems + 1) == (
            expected_cems + 1
        )
        reasons = set(refused) - {"out_of_range"} | {"out_of_range", "truncated"}
        await wait_for_count(db, "select count(distinct reason) from dead_letters", len(reasons))
    conn = await asyncpg.connect(db)
    try:
        dead = {r["reason"]: r for r in await conn.fetch("select * from dead_letters")}
        count = await conn.fetchval(
            "select readings_count from devices where device_id = $1", CEMS_DEVICE
        )
        mine_row = await conn.fetchrow("select * from readings where device_id like 'ordos%'")
        old = await conn.fetchval(
            "select value from readings where ts = '2016-08-01T00:58:57Z' and metric = 'flow_m3_h'"
        )
    finally:
        await conn.close()
    assert set(dead) == reasons
    assert bytes(dead["bad_crc"]["payload"]) == bytes(bad_crc)  # the raw frame is kept
    assert dead["bad_password"]["mqtt_topic"] == f"hj212/{CEMS_MN}"
    assert dead["out_of_range"]["device_id"] == CEMS_DEVICE
    assert count == expected_cems
    assert mine_row["metric"] == "ch4_pct_vol"
    assert mine_row["value"] == 0.42
    assert old == 410.0 * 3600
    # Refused frames get no answer; each stored or dead-lettered packet got exactly one.
    refused_qns = {
        "20261125080000002",
        "20261125080000003",
        "20261125080000004",
        "20261125080000005",
    }
    assert not refused_qns & set(cems.answers)
    assert "20261125080000006" in cems.answers  # dead-lettered for its value, answered


async def test_logger_dropping_mid_stream_is_backfilled_nothing_lost_or_doubled(
    gateway_settings,
) -> None:
    settings = gateway_settings(backfill_min_gap_s=60)
    db = settings.db_url()
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    minute_values = {"a05001": 10.5, "a00000": 400.0, "a01012": 120.0}

    def history(cn: str, begin: datetime, end: datetime) -> list[tuple[datetime, dict[str, float]]]:
        assert cn == "2051"
        out, t = [], base
        while t <= base + timedelta(hours=1):
            if begin <= t <= end:
                out.append((t, minute_values))
            t += timedelta(minutes=1)
        return out

    live_times = [base + timedelta(seconds=10 * k) for k in range(6)]
    dropped = base + timedelta(seconds=60)
    resumed = [base + timedelta(minutes=31, seconds=10 * k) for k in range(6)]
    async with running_gateway(settings) as gateway:
        assert gateway.port is not None
        logger = SimulatedLogger(
            "127.0.0.1", gateway.port, mn=CEMS_MN, pw=CEMS_PW, tz=TZ, history=history
        )
        await logger.connect()
        for t in live_times:
            assert await logger.upload("2011", t, CEMS_VALUES)
        await logger.upload("2011", dropped, CEMS_VALUES, wait=False)
        await logger.close(abort=True)  # the line drops before the answer arrives
        await asyncio.sleep(0.3)
        logger = SimulatedLogger(
            "127.0.0.1", gateway.port, mn=CEMS_MN, pw=CEMS_PW, tz=TZ, history=history
        )
        await logger.connect()
        assert await logger.upload("2011", dropped, CEMS_VALUES)  # re-sent, unanswered before
        for t in resumed:
            assert await logger.upload("2011", t, CEMS_VALUES)
        async with asyncio.timeout(30):
            while not logger.requests or logger.backfilled < 30:
                await asyncio.sleep(0.05)
        request = logger.requests[0]
        assert request.cn == "2051"
        assert request.cp == {
            "BeginTime": format_time(dropped, TZ),
            "EndTime": format_time(resumed[0], TZ),
        }
        live_keys = {(m, t) for t in [*live_times, dropped, *resumed] for m in range(CEMS_METRICS)}
        minutes = [t for t, _v in history("2051", dropped, resumed[0])]
        hist_keys = {(m, t) for t in minutes for m in range(3)}  # CO2, flow, flue temp
        # Live and minute values share a key where a live reading fell on a full minute.
        expected = len(live_keys) + len(hist_keys - live_keys)
        stored = await wait_for_count(db, "select count(*) from readings", expected)
        await asyncio.sleep(1.0)  # anything doubled would arrive by now
        await logger.close()
    conn = await asyncpg.connect(db)
    try:
        total = await conn.fetchval("select count(*) from readings")
        distinct = await conn.fetchval(
            "select count(distinct (metric, ts)) from readings where device_id = $1", CEMS_DEVICE
        )
        gap_rows = await conn.fetchval(
            "select count(*) from readings where ts > $1 and ts < $2", dropped, resumed[0]
        )
    finally:
        await conn.close()
    assert stored == total == distinct == expected
    assert gap_rows == 3 * 29  # every minute of the outage, from the logger's history
    assert len(logger.requests) == 1
