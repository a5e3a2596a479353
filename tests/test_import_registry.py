"""``ghgwatch import`` and the device registry, as the live paths use it: with
``ingest.require_registration`` rows of unregistered or disabled devices are refused as
``unregistered`` (as the bridge dead-letters them), and an HJ 212 dump of a logger known only
to the registry is resolved by its MN and PW as ``ghgwatch hj212`` resolves it."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from core.settings import Settings
from ghgwatch.history_io import import_file
from processors import Processor
from processors.storage import migrate
from registry.models import DeviceRecord
from registry.onboard import NoBroker, Onboarding
from wire.hj212 import build_frame, build_segment, format_time

DEADLINE_S = 60.0
TZ = ZoneInfo("Asia/Shanghai")


async def _stored(db: str, expected: int) -> dict[str, int]:
    """Readings per device once ``expected`` are stored (or the deadline passed)."""
    conn = await asyncpg.connect(db)
    try:
        sql = "SELECT count(*) FROM readings"
        try:
            async with asyncio.timeout(DEADLINE_S):
                while int(await conn.fetchval(sql)) < expected:
                    await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # nothing more arrives
        except TimeoutError:
            pass
        rows = await conn.fetch("SELECT device_id, count(*) AS n FROM readings GROUP BY 1")
        return {r["device_id"]: int(r["n"]) for r in rows}
    finally:
        await conn.close()


async def _register(db: str, *records: tuple[DeviceRecord, str | None, bool]) -> None:
    conn = await asyncpg.connect(db)
    try:
        onboarding = Onboarding(conn, NoBroker())
        for record, hj212_pw, enabled in records:
            await onboarding.add(record, hj212_password=hj212_pw)
            if not enabled:
                await onboarding.set_enabled(record.device_id, False)
    finally:
        await conn.close()


async def test_csv_import_refuses_unregistered_and_disabled_devices(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(ingest={"require_registration": True})
    db = settings.db_url()
    await migrate(db, settings.db)
    await _register(
        db,
        (DeviceRecord(device_id="baotou/kundulun/pic-01", kind="city"), None, True),
        (DeviceRecord(device_id="baotou/kundulun/pic-02", kind="city"), None, False),
    )
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
    rows = [["ts", "device_id", "kind", "metric", "value"]]
    for i in range(5):
        ts = (t0 + timedelta(minutes=i)).isoformat()
        rows.append([ts, "baotou/kundulun/pic-01", "city", "co2_ppm", str(420 + i)])
    rows.insert(3, [t0.isoformat(), "baotou/kundulun/pic-02", "city", "co2_ppm", "421"])  # line 4
    rows.insert(5, [t0.isoformat(), "baotou/kundulun/stranger", "city", "co2_ppm", "1"])  # line 6
    rows.append([t0.isoformat(), "baotou/kundulun/pic-01", "cems", "co2_pct_vol", "11"])  # line 9
    rows.append([t0.isoformat(), "baotou/kundulun/pic-01", "city", "co2_ppm", "x"])  # line 10
    path = tmp_path / "history.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)

    stop = asyncio.Event()
    processor = asyncio.create_task(Processor(settings).run(stop=stop))
    try:
        report = await import_file(path, settings)
        stored = await _stored(db, 5)
    finally:
        stop.set()
        await asyncio.wait_for(processor, 30)
    assert [(p.line, p.reason) for p in report.problems] == [
        (4, "unregistered"), (6, "unregistered"), (9, "unregistered"), (10, "schema")
    ]  # fmt: skip
    details = {p.line: p.detail for p in report.problems}
    assert "disabled" in details[4]
    assert "not registered" in details[6]
    assert "registered as city" in details[9]
    assert report.rows == 9
    assert report.produced == 5
    assert stored == {"baotou/kundulun/pic-01": 5}


def _frame(mn: str, pw: str, when: datetime, value: float) -> bytes:
    cp = f"DataTime={format_time(when, TZ)};a05001-Rtd={value},a05001-Flag=N;a19001-Rtd=6.0"
    return build_frame(build_segment(qn=None, st="31", cn="2011", pw=pw, mn=mn, flag=4, cp=cp))


async def test_hj212_dump_of_a_registry_logger_resolved_like_the_gateway(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory(ingest={"require_registration": True})
    assert not settings.gateway.loggers  # the gateway would use the registry
    db = settings.db_url()
    await migrate(db, settings.db)
    await _register(
        db,
        (DeviceRecord(device_id="beifang/dalate/unit-3", kind="cems", hj212_mn="MN03"),
         "123456", True),
        (DeviceRecord(device_id="beifang/dalate/unit-4", kind="cems", hj212_mn="MN04"),
         "123456", False),
    )  # fmt: skip
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=1)
    lines = [
        _frame("MN03", "123456", t0, 11.0),
        _frame("MN03", "654321", t0 + timedelta(minutes=1), 11.1),  # line 2: wrong PW
        _frame("MN09", "123456", t0 + timedelta(minutes=2), 11.2),  # line 3: unknown MN
        _frame("MN04", "123456", t0 + timedelta(minutes=3), 11.3),  # line 4: disabled
        _frame("MN03", "123456", t0 + timedelta(minutes=4), 11.4),
    ]
    dump = tmp_path / "logger.txt"
    dump.write_bytes(b"".join(line.rstrip(b"\r\n") + b"\n" for line in lines))

    stop = asyncio.Event()
    processor = asyncio.create_task(Processor(settings).run(stop=stop))
    try:
        report = await import_file(dump, settings)
        stored = await _stored(db, 4)
    finally:
        stop.set()
        await asyncio.wait_for(processor, 30)
    assert [(p.line, p.reason) for p in report.problems] == [
        (2, "bad_password"), (3, "unknown_mn"), (4, "disabled")
    ]  # fmt: skip
    assert report.produced == 2
    assert stored == {"beifang/dalate/unit-3": 4}  # two frames, two metrics each
