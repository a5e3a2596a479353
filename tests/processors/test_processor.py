"""The storing processor end to end on real tansu and PostgreSQL: exactly once, always."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from proc_helpers import (
    committed_offsets,
    dead_letter,
    fetch_val,
    mixed_records,
    produce,
    total_readings,
    wait_for_count,
    wait_until,
)

from core.settings import Settings
from processors import Processor, SchemaMissing
from processors.storage import migrate
from tests.adapters.loop_helpers import check_survives_commit_timeouts
from wire import RejectReason


def _samples(proc: Processor) -> dict[str, float]:
    """Current values of the processor's Prometheus metrics (its own registry)."""

    def get(name: str, labels: dict[str, str] | None = None) -> float:
        return proc.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    return {
        "stored": get("ghgwatch_processor_readings_stored_total"),
        "duplicates": get("ghgwatch_processor_duplicates_skipped_total"),
        "undecodable": get(
            "ghgwatch_processor_dead_letters_stored_total", {"reason": "undecodable_record"}
        ),
        "batches": get("ghgwatch_processor_batch_seconds_count"),
        "e2e": get("ghgwatch_processor_end_to_end_seconds_count"),
    }


async def _devices_total(dsn: str) -> int:
    return int(await fetch_val(dsn, "SELECT coalesce(sum(readings_count), 0) FROM devices"))


async def _stop(task: asyncio.Task[object], stop: asyncio.Event) -> None:
    stop.set()
    async with asyncio.timeout(30):
        await task


async def test_all_kinds_dead_letters_and_garbage_are_stored_exactly_once(
    migrated: Settings,
) -> None:
    """Readings of every kind, bridge rejects and one garbage record: each stored once.

    The redelivered messages come in format 1, as a bridge of the previous release sent
    them: a rolling upgrade mixes both formats on the topic.
    """
    records = mixed_records(devices_per_kind=3, steps=10)
    dead = [dead_letter(i) for i in range(5)] + [dead_letter(9, RejectReason.OUT_OF_RANGE)]
    garbage = (migrated.kafka.readings_topic, b"\x00not json at all")
    ends = await produce(migrated, records, dead, [garbage])
    ends.update(await produce(migrated, records[:20], record_format=1))  # a redelivery
    n = total_readings(records)

    proc = Processor(migrated)
    before = _samples(proc)
    stats = await proc.run(max_readings=n + total_readings(records[:20]), timeout_s=25)
    after = _samples(proc)
    assert after["stored"] - before["stored"] == n
    assert after["duplicates"] - before["duplicates"] == total_readings(records[:20])
    assert after["undecodable"] - before["undecodable"] == 1
    assert after["batches"] > before["batches"]
    assert after["e2e"] - before["e2e"] == len(records)
    dsn = migrated.db_url()
    assert stats.inserted == n
    assert stats.duplicates == total_readings(records[:20])
    assert stats.undecodable == 1
    assert await fetch_val(dsn, "SELECT count(*) FROM readings") == n
    assert await _devices_total(dsn) == n
    assert await fetch_val(dsn, "SELECT count(DISTINCT kind) FROM devices") == 4
    await wait_for_count(dsn, "dead_letters", len(dead) + 1)
    bad = await fetch_val(
        dsn, "SELECT payload FROM dead_letters WHERE reason = 'undecodable_record'"
    )
    assert bytes(bad) == garbage[1]
    assert await fetch_val(dsn, "SELECT count(*) FROM dead_letters") == len(dead) + 1
    assert await committed_offsets(migrated) == ends


async def test_records_of_many_readings_are_stored_in_bounded_writes(
    proc_settings: Callable[..., Settings],
) -> None:
    """A backlog of gateway batches is stored in writes of about batch_max_readings readings,
    not one transaction of whatever the poll could hold; still every reading once."""
    settings = proc_settings(processor={"batch_max_readings": 40})
    await migrate(settings.db_url(), settings.db)
    records = mixed_records(devices_per_kind=2, steps=20)  # 160 messages, 2-3 readings each
    await produce(settings, records)
    n = total_readings(records)
    stats = await Processor(settings).run(max_readings=n, timeout_s=25)
    assert stats.inserted == n
    assert await fetch_val(settings.db_url(), "SELECT count(*) FROM readings") == n
    # the first poll takes up to 40 records (nothing known yet), then ~40 readings a write
    assert stats.batches >= (n - 40 * 3) // 45


async def test_processor_refuses_a_database_without_schema(proc_settings: object) -> None:
    """No migrations run: the processor stops at once with SchemaMissing."""
    settings = proc_settings()  # type: ignore[operator]
    with pytest.raises(SchemaMissing):
        await Processor(settings).run(timeout_s=10)


async def test_failing_database_keeps_offsets_then_recovers_without_loss(
    migrated: Settings, pg_admin_url: str
) -> None:
    """Database renamed away: writes push back, the committed offset stays; then all stored once."""
    dsn = migrated.db_url()
    dbname = dsn.rsplit("/", 1)[1]
    first = mixed_records(devices_per_kind=2, steps=5)
    second = mixed_records(devices_per_kind=2, steps=12)[len(first) :]
    n1, n2 = total_readings(first), total_readings(second)

    proc = Processor(migrated)
    stop = asyncio.Event()
    task = asyncio.create_task(proc.run(stop=stop, timeout_s=60))
    try:
        ends1 = await produce(migrated, first)
        await wait_for_count(dsn, "readings", n1)

        async def committed_caught_up() -> bool:
            return await committed_offsets(migrated) == ends1

        await wait_until(committed_caught_up, "offsets of the first batch committed")
        await _rename(pg_admin_url, dbname, f"{dbname}_away")
        try:
            ends2 = await produce(migrated, second)
            await wait_until(
                _async(lambda: proc.stats.backpressure >= 2), "the writer to push back twice"
            )
            assert not task.done()
            assert await committed_offsets(migrated) == ends1
        finally:
            await _rename(pg_admin_url, f"{dbname}_away", dbname)
        await wait_for_count(dsn, "readings", n1 + n2)

        async def all_committed() -> bool:
            return await committed_offsets(migrated) == {**ends1, **ends2}

        await wait_until(all_committed, "offsets of everything committed after recovery")
    finally:
        await _stop(task, stop)
    assert await fetch_val(dsn, "SELECT count(*) FROM readings") == n1 + n2
    assert await _devices_total(dsn) == n1 + n2
    assert proc.stats.inserted == n1 + n2


def _async(fn: object) -> object:
    async def check() -> bool:
        return bool(fn())  # type: ignore[operator]

    return check


async def _rename(admin_url: str, old: str, new: str) -> None:
    """Rename a database, kicking out its sessions (the processor reconnects at once)."""
    admin = await asyncpg.connect(admin_url)
    try:
        for _ in range(50):
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = $1 AND pid <> pg_backend_pid()",
                old,
            )
            try:
                await admin.execute(f'ALTER DATABASE "{old}" RENAME TO "{new}"')
                return
            except asyncpg.ObjectInUseError:
                await asyncio.sleep(0.05)
        pytest.fail(f"could not rename database {old}")
    finally:
        await admin.close()


def _subprocess_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    for section in ("kafka", "processor", "metrics", "log"):
        env[f"GHGWATCH_{section.upper()}"] = getattr(settings, section).model_dump_json()
    db = settings.db.model_dump(mode="json")
    db["url"] = settings.db_url()
    env["GHGWATCH_DB"] = json.dumps(db)
    return env


def _start_subprocess(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ghgwatch", "processor", "--timeout-s", "60"],
            env=_subprocess_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
async def test_sigkill_mid_stream_then_restart_loses_and_doubles_nothing(
    proc_settings: object, tmp_path: Path
) -> None:
    """SIGKILL the processor process while it stores; a restart stores the rest exactly once."""
    settings = proc_settings(processor={"batch_max": 100, "commit_interval_s": 0.3})  # type: ignore[operator]
    from processors.storage import migrate

    await migrate(settings.db_url(), settings.db)
    records = mixed_records(devices_per_kind=25, steps=160)
    n = total_readings(records)
    await produce(settings, records)
    dsn = settings.db_url()
    log_path = tmp_path / "processor.log"

    first = _start_subprocess(settings, log_path)
    try:
        await wait_until(
            _async_count_above(dsn, n // 10), "the first processor to store some readings", 40
        )
    finally:
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, 10)
    at_kill = await fetch_val(dsn, "SELECT count(*) FROM readings")
    assert 0 < at_kill < n, f"kill was not mid-stream ({at_kill} of {n})"

    second = _start_subprocess(settings, log_path)
    try:
        await wait_for_count(dsn, "readings", n, timeout_s=45)
    finally:
        second.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(second.wait, 30)
    assert code == 0, log_path.read_text()[-3000:]
    assert await fetch_val(dsn, "SELECT count(*) FROM readings") == n
    assert await _devices_total(dsn) == n


def _async_count_above(dsn: str, threshold: int) -> object:
    async def check() -> bool:
        return bool(await fetch_val(dsn, "SELECT count(*) FROM readings") > threshold)

    return check


async def test_two_processors_split_partitions_and_hand_over_on_stop(
    migrated: Settings,
) -> None:
    """Two members share the group; when one stops the other takes over, no loss, no doubles."""
    dsn = migrated.db_url()
    a, b = Processor(migrated), Processor(migrated)
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    task_a = asyncio.create_task(a.run(stop=stop_a, timeout_s=60))
    task_b = asyncio.create_task(b.run(stop=stop_b, timeout_s=60))
    try:

        async def split() -> bool:
            return bool(a.assigned) and bool(b.assigned) and not (a.assigned & b.assigned)

        await wait_until(split, "both members to own partitions", 25)
        assert len(a.assigned | b.assigned) == 2 * migrated.kafka.partitions
        part1 = mixed_records(devices_per_kind=4, steps=8)
        await produce(migrated, part1)
        await wait_for_count(dsn, "readings", total_readings(part1))
        assert a.stats.records > 0
        assert b.stats.records > 0

        await _stop(task_a, stop_a)
        part2 = mixed_records(devices_per_kind=4, steps=20)[len(part1) :]
        await produce(migrated, part2)
        total = total_readings(part1) + total_readings(part2)
        await wait_for_count(dsn, "readings", total)
        assert len(b.assigned) == 2 * migrated.kafka.partitions
    finally:
        for task, stop in ((task_a, stop_a), (task_b, stop_b)):
            if not task.done():
                await _stop(task, stop)
    assert await fetch_val(dsn, "SELECT count(*) FROM readings") == total
    assert await _devices_total(dsn) == total
    assert a.stats.inserted + b.stats.inserted == total
    assert a.stats.duplicates + b.stats.duplicates == 0


async def test_module_entry_point_exits_2_when_schema_is_missing(
    proc_settings: object, tmp_path: Path
) -> None:
    """`python -m ghgwatch processor` on an unmigrated database exits 2 with the migrate hint."""
    settings = proc_settings()  # type: ignore[operator]
    log_path = tmp_path / "processor.log"
    proc = _start_subprocess(settings, log_path)
    code = await asyncio.to_thread(proc.wait, 30)
    output = log_path.read_text()
    assert code == 2, output[-2000:]
    assert "ghgwatch db migrate" in output


async def test_commits_timing_out_do_not_stop_the_processor(
    migrated: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits Kafka does not take in time are retried; every reading is stored and, once
    commits go through, committed (issue 9, finding 7)."""
    records = mixed_records(devices_per_kind=2, steps=5)
    proc = Processor(migrated)

    async def feed() -> int:
        await produce(migrated, records)
        return len(records)

    await check_survives_commit_timeouts(
        monkeypatch,
        migrated,
        proc,
        group=migrated.processor.group_id,
        topics=[migrated.kafka.readings_topic, migrated.kafka.deadletter_topic],
        feed=feed,
    )
    assert await fetch_val(migrated.db_url(), "SELECT count(*) FROM readings") == total_readings(
        records
    )
