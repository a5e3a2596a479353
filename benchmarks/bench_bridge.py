"""Bridge throughput: QoS 1 single-reading messages/s through MQTT -> bridge -> Kafka (tansu).

Prefills the bridge's persistent session with N messages while it is offline (mosquitto_pub,
C, so the publisher does not share the Python process), then starts the bridge and measures
how fast it drains them: validated, produced with acks=all, confirmed and PUBACKed.

    python benchmarks/bench_bridge.py --messages 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ghgwatch.embedded import start_mosquitto, start_tansu
from ghgwatch.settings import Settings
from ingest import Bridge

DEVICES = 20


def _lines(device: int, count: int) -> bytes:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    return b"".join(
        json.dumps(
            {
                "ts": (t0 + timedelta(seconds=i)).isoformat(),
                "metric": "co2_ppm",
                "value": 420.0 + (i % 50) * 0.1,
                "flag": "N",
            }
        ).encode()
        + b"\n"
        for i in range(count)
    )


async def main(messages: int, profile: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    mosquitto = await start_mosquitto(work / "mqtt", port=0, persistence=False)
    tansu = await start_tansu(work / "kafka", port=0)
    try:
        settings = Settings(
            mqtt={
                "url": f"mqtt://127.0.0.1:{mosquitto.port}",
                "client_id": "bench-bridge",
                "topic_root": "bench/v1",
            },
            kafka={"bootstrap": f"127.0.0.1:{tansu.port}", "partitions": 6},
            metrics={"enabled": False},
        )
        # 1. Create the persistent session and its subscription, then go offline.
        first = Bridge(settings)
        task = asyncio.create_task(first.run())
        await first.wait_connected(30)
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # 2. Prefill: the broker queues every message for the offline session.
        per_device = messages // DEVICES
        t0 = time.perf_counter()
        procs = []
        for d in range(DEVICES):
            topic = f"bench/v1/city/baotou/station-{d:02d}/pic-{d:02d}/data"
            proc = subprocess.Popen(
                ["mosquitto_pub", "-p", str(mosquitto.port), "-q", "1", "-t", topic, "-l"],
                stdin=subprocess.PIPE,
            )
            assert proc.stdin is not None
            proc.stdin.write(_lines(d, per_device))
            proc.stdin.close()
            procs.append(proc)
        for proc in procs:
            proc.wait()
        total = per_device * DEVICES
        print(f"prefilled {total} messages in {time.perf_counter() - t0:.1f} s")
        # 3. Drain through the bridge.
        bridge = Bridge(settings)
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        t0 = time.perf_counter()
        stats = await bridge.run(max_messages=total, timeout_s=120)
        elapsed = time.perf_counter() - t0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(work / "bridge.prof"))
            print(f"profile: {work / 'bridge.prof'}")
        print(
            f"received={stats.received} acked={stats.acked} produced={stats.produced} "
            f"errors={stats.produce_errors} in {elapsed:.2f} s -> {stats.acked / elapsed:,.0f} msg/s"
        )
    finally:
        await mosquitto.stop()
        await tansu.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.profile))
