"""Bridge throughput: QoS 1 single-reading messages/s through MQTT -> bridge -> Kafka (tansu).

Two measurements, both with publishers in C (mosquitto_pub, one per device):

- drain: N messages queued in the bridge's persistent session while it is offline, then the
  bridge starts and drains them (validated, produced with acks=all, confirmed, PUBACKed).
  Baseline in the same run: ``mosquitto_sub``, a C client, draining the same backlog from a
  persistent session of its own (receive and PUBACK only: the broker's delivery rate);
- live: the bridge runs while the publishers send N messages; from the first publish to the
  last ack (publisher, broker, bridge and tansu all share the machine).

With ``--rejects`` every message is schema-invalid (an unknown key), so each is dead-lettered
and its device sent a status reply: the cost of rejection against acceptance.

    python benchmarks/bench_bridge.py --messages 100000
    python benchmarks/bench_bridge.py --messages 20000 --rejects
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

from core.settings import Settings
from ghgwatch.embedded import start_mosquitto, start_tansu
from ingest import Bridge

DEVICES = 20


def _lines(device: int, count: int, *, rejects: bool = False) -> bytes:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    extra = {"junk": 1} if rejects else {}
    return b"".join(
        json.dumps(
            {
                "ts": (t0 + timedelta(seconds=i)).isoformat(),
                "metric": "co2_ppm",
                "value": 420.0 + (i % 50) * 0.1,
                "flag": "N",
                **extra,
            }
        ).encode()
        + b"\n"
        for i in range(count)
    )


def _publish(port: int, payloads: list[bytes]) -> list[subprocess.Popen[bytes]]:
    procs = []
    for d, lines in enumerate(payloads):
        topic = f"bench/v1/city/baotou/station-{d:02d}/pic-{d:02d}/data"
        proc = subprocess.Popen(
            ["mosquitto_pub", "-p", str(port), "-q", "1", "-t", topic, "-l"],
            stdin=subprocess.PIPE,
        )
        assert proc.stdin is not None
        proc.stdin.write(lines)
        proc.stdin.close()
        procs.append(proc)
    return procs


async def main(messages: int, profile: bool, rejects: bool = False) -> None:
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
        # The baseline's persistent session, registered before the prefill so it queues too.
        base_argv = ["mosquitto_sub", "-p", str(mosquitto.port), "-c", "-i", "bench-baseline",
                     "-q", "1", "-t", "bench/v1/+/+/+/+/data"]  # fmt: skip
        register = await asyncio.create_subprocess_exec(
            *base_argv,
            "-W",
            "1",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await register.wait()
        # 2. Prefill: the broker queues every message for the offline sessions.
        per_device = messages // DEVICES
        payloads = [_lines(d, per_device, rejects=rejects) for d in range(DEVICES)]
        t0 = time.perf_counter()
        for proc in _publish(mosquitto.port, payloads):
            proc.wait()
        total = per_device * DEVICES
        print(f"prefilled {total} messages in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        drain = await asyncio.create_subprocess_exec(
            *base_argv, "-C", str(total), stdout=asyncio.subprocess.DEVNULL
        )
        assert await drain.wait() == 0
        base_rate = total / (time.perf_counter() - t0)
        print(f"baseline drain (mosquitto_sub, receive + PUBACK only): {base_rate:,.0f} msg/s")
        # 3. Drain through the bridge.
        bridge = Bridge(settings)
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        t0, cpu0 = time.perf_counter(), time.process_time()
        stats = await bridge.run(max_messages=total, timeout_s=120)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(work / "bridge.prof"))
            print(f"profile: {work / 'bridge.prof'}")
        print(
            f"drain: received={stats.received} acked={stats.acked} produced={stats.produced} "
            f"status_published={stats.status_published} coalesced={stats.status_coalesced} "
            f"errors={stats.produce_errors} in {elapsed:.2f} s "
            f"-> {stats.acked / elapsed:,.0f} msg/s; bridge CPU {cpu:.2f} s "
            f"= {cpu / stats.acked * 1e6:.0f} us/msg = {stats.acked / cpu:,.0f} msg/s per core; "
            f"{stats.acked / elapsed / base_rate:.2f}x the baseline drain"
        )
        # 4. Live: publishers and bridge at the same time.
        live = Bridge(settings)
        task = asyncio.create_task(live.run(max_messages=total, timeout_s=120))
        await live.wait_connected(30)
        t0 = time.perf_counter()
        procs = _publish(mosquitto.port, payloads)
        stats = await task
        elapsed = time.perf_counter() - t0
        for proc in procs:
            proc.wait()
        print(
            f"live: acked={stats.acked} errors={stats.produce_errors} in {elapsed:.2f} s "
            f"-> {stats.acked / elapsed:,.0f} msg/s"
        )
    finally:
        await mosquitto.stop()
        await tansu.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--rejects", action="store_true", help="every message schema-invalid (dead-lettered)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.profile, args.rejects))
