"""Quarantine: a record the database cannot store is dead-lettered, and the stream goes on.

Issue 9, finding 1: one 70-byte message with a NUL in a JSON key stopped storage for every
device (the processor exited on PostgreSQL's refusal and met the record again at every
restart). These tests drive the writer, the processor and the whole bridge path with such
records and check that everything else is stored.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import aiomqtt
from proc_helpers import as_batches, fetch_val, mixed_records, produce, total_readings

from core.settings import Settings
from ingest import Bridge
from processors import Processor
from processors.metrics import ProcessorMetrics
from processors.storage import (
    QUARANTINE_REASON,
    UNDECODABLE_REASON,
    DeadLetter,
    KafkaValue,
    ReadingStore,
    decode_values,
    migrate,
)
from wire import MAX_DEAD_TOPIC_CHARS, ReadingBatch, ReadingHeader
from wire.batch import encode_batch

DEADLINE_S = 60.0
# The finding's poison, byte for byte.
POISON = b'{"ts":"2026-11-25T08:00:05Z","metric":"co2_ppm","value":1,"a\\u0000b":1}'
_NOW_US = int(datetime.now(UTC).timestamp() * 1e6)


def test_quarantined_records_are_counted_in_the_processors_own_registry() -> None:
    """What the writer reports as quarantined shows as records_quarantined_total."""
    metrics = ProcessorMetrics()
    metrics.count_batch(
        inserted=5, duplicates=0, dead_reasons=[QUARANTINE_REASON], latencies_s=[], seconds=0.1,
        quarantined=1,
    )  # fmt: skip
    got = metrics.registry.get_sample_value("ghgwatch_processor_records_quarantined_total")
    assert got == 1


def _header_json(**override: str) -> bytes:
    """A format-2 header as JSON text, with fields replaced verbatim (escapes and all)."""
    fields = {
        "v": "2",
        "device_id": '"net/site/dev-x"',
        "kind": '"city"',
        "network": '"net"',
        "site": '"site"',
        "device": '"dev-x"',
        "location": "null",
        "mqtt_topic": '"ghg/v1/city/net/site/dev-x/data"',
        "metrics": '["co2_ppm"]',
    }
    fields.update(override)
    return ("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}").encode()


def _raw_batch(header: bytes, ts_us: int = _NOW_US, flag: bytes = b"N") -> bytes:
    """A format-2 readings record of one co2_ppm reading, header bytes as given."""
    return encode_batch(header, _NOW_US, [ts_us], [0], [420.0], flag)


def _no_unstorable_text(rows: list[object]) -> bool:
    return not any("\x00" in str(r) for r in rows)


async def test_the_writer_quarantines_a_batch_the_database_refuses_and_stores_the_rest(
    migrated: Settings,
) -> None:
    """A batch whose flag byte is no UTF-8 text makes PostgreSQL refuse the COPY: it is
    found by splitting the write, kept as an unstorable_record dead letter with its Kafka
    position, and every other reading and dead letter of the write is stored."""
    records = mixed_records(devices_per_kind=2, steps=5)
    good = as_batches(records)
    head = ReadingHeader.model_validate_json(_header_json())
    bad = ReadingBatch.build((head, _header_json()), _NOW_US, [_NOW_US], [0], [1.0], b"\xff")
    # decode_values refuses that flag byte: the bad batch joins the decoded ones by hand, as
    # a decoder bug would let it through.
    batches = decode_values(
        [KafkaValue("readings", 0, i, b"k", b.encode()) for i, b in enumerate(good)],
        readings_topic="readings",
        received_at=datetime.now(UTC),
    ).readings
    batches.insert(3, bad)
    batches.records.insert(3, KafkaValue("readings", 2, 77, b"k", bad.encode()))
    async with ReadingStore(migrated.db_url(), migrated.db) as store:
        result = await store.write(batches, [])
    dsn = migrated.db_url()
    assert result.inserted == total_readings(records)
    assert result.quarantined == 1
    assert await fetch_val(dsn, "SELECT count(*) FROM readings") == total_readings(records)
    row = await fetch_val(
        dsn, "SELECT row(mqtt_topic, detail, payload) FROM dead_letters WHERE reason = $1",
        QUARANTINE_REASON,
    )  # fmt: skip
    topic, detail, payload = row
    assert topic == "kafka:readings"
    assert "partition 2 offset 77" in detail
    assert bytes(payload) == bad.encode()


async def test_raw_kafka_records_with_nul_or_lone_surrogates_in_header_fields_are_dead_lettered(
    migrated: Settings,
) -> None:
    """Header fields with NUL or a lone surrogate, a key with NUL, a dead letter whose text
    holds NUL, and reading times no datetime can hold: all dead-lettered, the rest stored."""
    rt = "readings"
    hostile = [
        KafkaValue(rt, 0, 10, b"k", _raw_batch(_header_json(mqtt_topic='"a\\u0000b"'))),
        KafkaValue(rt, 0, 11, b"k", _raw_batch(_header_json(device='"\\ud800"'))),
        KafkaValue(rt, 0, 12, b"k", _raw_batch(_header_json(metrics='["co2\\u0000"]'))),
        KafkaValue(rt, 1, 13, b"dev\x00\xed\xa0\x80", b"GHGR\x02garbage"),
        KafkaValue(rt, 1, 14, b"k", _raw_batch(_header_json(), ts_us=2**62)),
        KafkaValue(rt, 1, 15, b"k", _raw_batch(_header_json(), ts_us=-(2**62))),
        KafkaValue(
            "dead", 0, 16, b"k",
            json.dumps({
                "mqtt_topic": "t\u0000" + "x" * 70_000, "device_id": "d\u0000",
                "reason": "schema", "detail": "key a\u0000b", "payload_b64": "",
                "received_at": datetime.now(UTC).isoformat(),
            }).encode(),
        ),
    ]  # fmt: skip
    records = mixed_records(devices_per_kind=2, steps=3)
    good = [KafkaValue(rt, 2, 100 + i, b"k", b.encode()) for i, b in enumerate(as_batches(records))]
    decoded = decode_values(good + hostile, readings_topic=rt, received_at=datetime.now(UTC))
    async with ReadingStore(migrated.db_url(), migrated.db) as store:
        result = await store.write(decoded.readings, decoded.dead)
    dsn = migrated.db_url()
    assert result.inserted == total_readings(records)
    assert await fetch_val(dsn, "SELECT count(*) FROM readings") == total_readings(records)
    assert await fetch_val(dsn, "SELECT count(*) FROM dead_letters") == len(hostile)
    reasons = await fetch_val(dsn, "SELECT array_agg(reason ORDER BY reason) FROM dead_letters")
    assert reasons.count(UNDECODABLE_REASON) == 4
    assert reasons.count(QUARANTINE_REASON) == 2
    assert reasons.count("schema") == 1
    texts = await fetch_val(
        dsn, "SELECT array_agg(mqtt_topic || coalesce(device_id, '') || detail) FROM dead_letters"
    )
    assert _no_unstorable_text(texts)
    details = await fetch_val(
        dsn, "SELECT array_agg(detail) FROM dead_letters WHERE reason = $1", QUARANTINE_REASON
    )
    assert sorted("offset 14" in d or "offset 15" in d for d in details) == [True, True]


async def test_dead_letters_made_in_process_are_stored_escaped_and_cut(
    migrated: Settings,
) -> None:
    """A DeadLetter built by any code (not through the wire model) with NUL and lone
    surrogates in its text and a 70,000-character topic is stored, escaped and cut."""
    letter = DeadLetter(
        mqtt_topic="kafka:\x00" + "t" * 70_000,
        device_id="dev\ud800",
        reason="undecodable_record\x00",
        detail="bad \x00 \udfff",
        payload=b"\x00raw",
        received_at=datetime.now(UTC),
    )
    async with ReadingStore(migrated.db_url(), migrated.db) as store:
        result = await store.write([], [letter])
    assert (result.dead_letters, result.quarantined) == (1, 0)
    row = await fetch_val(
        migrated.db_url(), "SELECT row(mqtt_topic, device_id, detail, payload) FROM dead_letters"
    )
    topic, device_id, detail, payload = row
    assert topic.startswith("kafka:\\x00t")
    assert len(topic) <= MAX_DEAD_TOPIC_CHARS
    assert (device_id, detail) == ("dev\\ud800", "bad \\x00 \\udfff")
    assert bytes(payload) == b"\x00raw"  # bytes are bytea: kept exactly


async def test_the_processor_stores_everything_around_poison_records_from_kafka(
    migrated: Settings,
) -> None:
    """Through real Kafka: poison records between valid ones never stop the processor."""
    rt = migrated.kafka.readings_topic
    records = mixed_records(devices_per_kind=5, steps=10)
    poison = [
        (rt, _raw_batch(_header_json(mqtt_topic='"a\\u0000b"'))),
        (rt, _raw_batch(_header_json(), ts_us=2**62)),
    ]
    await produce(migrated, records[:50], raw=poison)
    await produce(migrated, records[50:])
    n = total_readings(records)
    stats = await Processor(migrated).run(max_readings=n, timeout_s=30)
    dsn = migrated.db_url()
    assert stats.inserted == n
    assert await fetch_val(dsn, "SELECT count(*) FROM readings") == n
    for reason in (UNDECODABLE_REASON, QUARANTINE_REASON):
        assert (
            await fetch_val(dsn, "SELECT count(*) FROM dead_letters WHERE reason = $1", reason) == 1
        ), reason


async def _wait_count(dsn: str, sql: str, expected: int) -> int:
    async with asyncio.timeout(DEADLINE_S):
        while (got := int(await fetch_val(dsn, sql))) < expected:
            await asyncio.sleep(0.2)
    return got


async def test_the_nul_key_poison_through_the_bridge_then_1000_readings_all_stored(
    settings: Settings,
) -> None:
    """The finding's exact 70-byte payload through MQTT, the real bridge, Kafka and the
    processor, then 1,000 valid readings from other devices: all 1,000 stored, the poison
    dead-lettered with its key escaped, and neither service stopped."""
    await migrate(settings.db_url(), settings.db)
    root = settings.mqtt.topic_root
    host, _, port = settings.mqtt_url().split("://", 1)[1].partition(":")
    stop = asyncio.Event()
    bridge = Bridge(settings)
    tasks = [
        asyncio.create_task(bridge.run(stop=stop)),
        asyncio.create_task(Processor(settings).run(stop=stop)),
    ]
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    try:
        await bridge.wait_connected(DEADLINE_S)
        async with aiomqtt.Client(host, int(port or 1883), identifier=f"dev-{root}") as dev:
            await dev.publish(f"{root}/city/evil/site/dev-0/data", POISON, qos=1)
            for i in range(1000):
                body = {
                    "ts": (t0 + timedelta(seconds=i // 50)).isoformat(),
                    "metric": "co2_ppm",
                    "value": 420 + i % 7,
                }
                topic = f"{root}/city/net/site-{i % 5}/dev-{i % 50}/data"
                await dev.publish(topic, json.dumps(body).encode(), qos=1)
        dsn = settings.db_url()
        stored = await _wait_count(dsn, "SELECT count(*) FROM readings", 1000)
        dead = await _wait_count(dsn, "SELECT count(*) FROM dead_letters", 1)
        assert not any(t.done() for t in tasks), "a service stopped"
    finally:
        stop.set()
        async with asyncio.timeout(30):
            results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    assert (stored, dead) == (1000, 1)
    detail = await fetch_val(dsn, "SELECT detail FROM dead_letters WHERE reason = 'schema'")
    assert "a\\x00b" in detail
    payload = await fetch_val(dsn, "SELECT payload FROM dead_letters")
    assert bytes(payload) == POISON
