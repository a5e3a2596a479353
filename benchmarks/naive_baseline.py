"""The naive MQTT -> PostgreSQL subscriber that ghgwatch is compared with (a benchmark aid).

It is what a first attempt usually looks like: one paho ``on_message`` callback per message,
parsing the JSON and running one autocommitted ``INSERT`` per reading, synchronously inside
the callback, into its own table. QoS 1 is acknowledged when the callback returns, so the
broker's queue is the only buffer. Run it as a process:

    python benchmarks/naive_baseline.py --mqtt-url mqtt://127.0.0.1:1883 --root bench/v1 \
        --dsn postgresql://postgres@127.0.0.1:5432/db --table naive_readings

It stops on SIGTERM/SIGINT and prints how many readings it stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import threading
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

INSERT_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    metric      text NOT NULL,
    value       double precision NOT NULL,
    flag        text NOT NULL DEFAULT 'N',
    received_at timestamptz NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (device_id, metric, ts)
)"""
INSERT = (
    "INSERT INTO {table} (ts, device_id, metric, value, flag, received_at) "
    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING"
)


class NaiveSubscriber:
    """paho callback per message, one INSERT per reading (the baseline under comparison)."""

    def __init__(self, mqtt_url: str, root: str, dsn: str, table: str) -> None:
        self.mqtt_url = mqtt_url
        self.root = root
        self.dsn = dsn
        self.table = table
        self.stored = 0
        self.messages = 0
        self.errors = 0
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection | None = None
        self._insert = INSERT.format(table=table)

    def _run_db(self, coro: Any) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(INSERT_TIMEOUT_S)

    def on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        """Parse one message and INSERT each of its readings, one statement per reading."""
        self.messages += 1
        received = datetime.now(UTC)
        parts = msg.topic.split("/")
        device_id = "/".join(parts[-4:-1])
        try:
            body = json.loads(msg.payload)
            envelope_ts = body.get("ts")
            items = body.get("readings", [body])
            for item in items:
                ts = datetime.fromisoformat(item.get("ts") or envelope_ts)
                flag = item.get("flag") or body.get("flag") or "N"
                assert self._conn is not None
                self._run_db(
                    self._conn.execute(
                        self._insert,
                        ts,
                        device_id,
                        item["metric"],
                        float(item["value"]),
                        flag,
                        received,
                    )
                )
                self.stored += 1
        except (ValueError, KeyError, TypeError, AttributeError, asyncpg.PostgresError):
            self.errors += 1

    def run(self, stop: threading.Event) -> None:
        """Create the table, subscribe, and store until ``stop`` is set."""
        loop_thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        loop_thread.start()
        self._conn = self._run_db(asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT_S))
        assert self._conn is not None
        self._run_db(self._conn.execute(CREATE_TABLE.format(table=self.table)))
        parts = urlsplit(self.mqtt_url)
        client = paho.Client(CallbackAPIVersion.VERSION2, clean_session=True)
        client.on_message = self.on_message
        client.on_connect = lambda c, *_: c.subscribe(f"{self.root}/+/+/+/+/data", qos=1)
        client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        client.loop_start()
        stop.wait()
        client.loop_stop()
        client.disconnect()
        self._run_db(self._conn.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        loop_thread.join(5)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mqtt-url", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--table", default="naive_readings")
    args = parser.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sub = NaiveSubscriber(args.mqtt_url, args.root, args.dsn, args.table)
    sub.run(stop)
    print(json.dumps({"messages": sub.messages, "stored": sub.stored, "errors": sub.errors}))


if __name__ == "__main__":
    main()
