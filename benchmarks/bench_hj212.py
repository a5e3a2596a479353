"""HJ 212 gateway against the MQTT path, same readings, same run.

N loggers (CEMS units, 6 channels each) connect to ``ghgwatch hj212`` and send real-time
packets (2011) every 10 s; each first left one packet a backfill window ago, so on connecting
the gateway asks it for its minute history (2051) over the window, which it then sends.
Alongside, N MQTT devices publish the same readings (the real-time ones every 10 s, the
history as batch messages) through ``ghgwatch bridge``. ``ghgwatch processor`` stores both.
Gateway, bridge and processor run as their own processes; loggers and publishers here.

The benchmark waits (``--wait-s``, 1 h) until both paths have stored every reading and every
logger's history request is answered, printing progress on stderr; if that does not happen
it says INCOMPLETE and exits 1. Reported per path: readings stored, readings/s over the run,
p50/p99 of stored_at minus received_at (frame or message received -> row committed, the
database's clocks), and the gateway's CPU seconds per frame (from /proc, user + system).

    python benchmarks/bench_hj212.py                      # 300 loggers, 1 day backfill, 120 s
    python benchmarks/bench_hj212.py --short              # 300 loggers, 1 h backfill, 40 s
    python benchmarks/bench_hj212.py --registry           # loggers in the device registry
    python benchmarks/bench_hj212.py --history-window 8   # loggers send 8 history packets
                                                          # ahead of their answers (default 1:
                                                          # each answered before the next)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiomqtt
import asyncpg

from adapters.ports import free_port
from gateway.logger_sim import SimulatedLogger
from ghgwatch.embedded import start_mosquitto, start_tansu
from registry.credentials import hash_password
from registry.models import DeviceRecord
from registry.store import RegistryStore
from wire import SourceKind

TZ = ZoneInfo("Asia/Shanghai")
PG = os.environ.get("GHGWATCH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
VALUES = {"a05001": 11.8, "a00000": 420.0, "a01012": 121.5, "a01013": -0.35, "a01014": 8.2,
          "a19001": 6.1}  # fmt: skip
METRICS = {"a05001": ("co2_pct_vol", 1.0), "a00000": ("flow_m3_h", 3600.0),
           "a01012": ("flue_temp_c", 1.0), "a01013": ("static_pressure_pa", 1000.0),
           "a01014": ("moisture_pct_vol", 1.0), "a19001": ("o2_pct_vol", 1.0)}  # fmt: skip
INTERVAL_S = 10.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mqtt_batch(ts: datetime, values: dict[str, float]) -> bytes:
    return json.dumps({"ts": ts.isoformat(), "readings": [
        {"metric": METRICS[c][0], "value": v * METRICS[c][1]} for c, v in values.items()
    ]}).encode()  # fmt: skip


async def main(
    loggers: int,
    backfill_h: float,
    duration_s: float,
    history_window: int,
    wait_s: float,
    registry: bool = False,
) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-hj212-"))
    run = uuid.uuid4().hex[:8]
    db = f"bench_hj212_{run}"
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    db_url = PG.rsplit("/", 1)[0] + f"/{db}"
    tansu = await start_tansu(work / "kafka", port=0)
    mosquitto = await start_mosquitto(work / "mqtt", port=0, persistence=False)
    port = free_port()
    mns = [f"BENCH{i:05d}" for i in range(loggers)]
    pw_hash = hash_password("123456", iterations=1000)
    env = {
        **os.environ,
        "GHGWATCH_KAFKA__BOOTSTRAP": f"{tansu.host}:{tansu.port}",
        "GHGWATCH_KAFKA__READINGS_TOPIC": f"readings-{run}",
        "GHGWATCH_KAFKA__DEADLETTER_TOPIC": f"dead-{run}",
        "GHGWATCH_DB__URL": db_url,
        "GHGWATCH_MQTT__URL": f"mqtt://127.0.0.1:{mosquitto.port}",
        "GHGWATCH_MQTT__TOPIC_ROOT": f"b{run}/v1",
        "GHGWATCH_MQTT__CLIENT_ID": f"bridge-{run}",
        "GHGWATCH_PROCESSOR__GROUP_ID": f"proc-{run}",
        "GHGWATCH_METRICS__ENABLED": "false",
        "GHGWATCH_LOG__LEVEL": "WARNING",
        "GHGWATCH_DATA_DIR": str(work / "data"),
        "GHGWATCH_GATEWAY__HOST": "127.0.0.1",
        "GHGWATCH_GATEWAY__PORT": str(port),
        "GHGWATCH_GATEWAY__MAX_CONNECTIONS": str(loggers + 10),
        "GHGWATCH_GATEWAY__LOGGERS": "{}"
        if registry
        else json.dumps(
            {
                mn: {
                    "kind": "cems",
                    "network": "hj212",
                    "site": "plant",
                    "device": f"u{i}",
                    "password_hash": pw_hash,
                }
                for i, mn in enumerate(mns)
            }
        ),
        "GHGWATCH_REGISTRY__APPLY": "none",
    }
    exe = [sys.executable, "-m", "ghgwatch"]
    subprocess_kw = {"env": env, "stdout": asyncio.subprocess.DEVNULL}
    migrate = await asyncio.create_subprocess_exec(*exe, "db", "migrate", **subprocess_kw)
    await migrate.wait()
    if registry:  # the loggers as registered devices: the gateway resolves them there
        reg = await asyncpg.connect(db_url)
        try:
            await RegistryStore(reg).add_many([
                (DeviceRecord(device_id=f"hj212/plant/u{i}", kind=SourceKind.CEMS, hj212_mn=mn,
                              hj212_password_hash=pw_hash), None)
                for i, mn in enumerate(mns)
            ])  # fmt: skip
        finally:
            await reg.close()
    procs = [await asyncio.create_subprocess_exec(*exe, name, **subprocess_kw)
             for name in ("hj212", "bridge", "processor")]  # fmt: skip
    gateway_pid = procs[0].pid
    try:
        for _ in range(600):  # the gateway listens once Kafka is ready
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            w.close()
            break
        await asyncio.sleep(3.0)  # bridge and processor connect
        now = datetime.now(UTC).replace(microsecond=0)
        since = now - timedelta(hours=backfill_h)
        minutes = [since + timedelta(minutes=m) for m in range(1, int(backfill_h * 60))]

        def history(_cn: str, begin: datetime, end: datetime) -> list[tuple[datetime, dict]]:
            return [(t, VALUES) for t in minutes if begin <= t <= end]

        # Each logger's last packet before the outage, a backfill window ago.
        async def before(mn: str) -> None:
            lg = SimulatedLogger("127.0.0.1", port, mn=mn, pw="123456", tz=TZ)
            await lg.connect()
            await lg.upload("2011", since, VALUES, timeout_s=60)
            await lg.close()

        for k in range(0, loggers, 50):
            await asyncio.gather(*(before(mn) for mn in mns[k : k + 50]))
        cpu0, frames_t0 = _cpu_s(gateway_pid), time.monotonic()
        sims = [SimulatedLogger("127.0.0.1", port, mn=mn, pw="123456", tz=TZ, history=history,
                                answer_timeout_s=300, history_window=history_window)
                for mn in mns]  # fmt: skip
        for k in range(0, loggers, 50):
            await asyncio.gather(*(s.connect() for s in sims[k : k + 50]))
        sent = {"live": 0, "mqtt": 0}
        root = env["GHGWATCH_MQTT__TOPIC_ROOT"]

        async def logger_loop(i: int, sim: SimulatedLogger) -> None:
            await asyncio.sleep(INTERVAL_S * i / loggers)  # spread over the interval
            t = datetime.now(UTC).replace(microsecond=0)
            end = time.monotonic() + duration_s
            while time.monotonic() < end:
                if await sim.upload("2011", t, VALUES, timeout_s=60):
                    sent["live"] += 1
                await asyncio.sleep(INTERVAL_S)
                t += timedelta(seconds=INTERVAL_S)

        async def mqtt_path() -> None:
            async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"pub-{run}") as c:
                for i in range(loggers):  # the same history, as batches
                    topic = f"{root}/cems/mqtt/plant/u{i}/data"
                    await asyncio.gather(
                        *(c.publish(topic, _mqtt_batch(t, VALUES), qos=1) for t in minutes)
                    )
                    sent["mqtt"] += len(minutes)
                t = datetime.now(UTC).replace(microsecond=0)
                end = time.monotonic() + duration_s
                while time.monotonic() < end:
                    batch = _mqtt_batch(t, VALUES)
                    await asyncio.gather(*(
                        c.publish(f"{root}/cems/mqtt/plant/u{i}/data", batch, qos=1)
                        for i in range(loggers)
                    ))  # fmt: skip
                    sent["mqtt"] += loggers
                    await asyncio.sleep(INTERVAL_S)
                    t += timedelta(seconds=INTERVAL_S)

        await asyncio.gather(mqtt_path(), *(logger_loop(i, s) for i, s in enumerate(sims)))
        # the gateway: each logger's packet before the outage, its history and its live packets;
        # the MQTT path: the batches it published (history and live), 6 readings each
        expected = {
            "hj212": loggers * len(VALUES) * (len(minutes) + 1) + sent["live"] * len(VALUES),
            "mqtt": sent["mqtt"] * len(VALUES),
        }
        conn = await asyncpg.connect(db_url)
        wanted_history = loggers * len(minutes)
        deadline = time.monotonic() + wait_s
        counts = {"hj212": 0, "mqtt": 0}
        last_note = 0.0
        complete = False
        while time.monotonic() < deadline:
            for path in counts:
                counts[path] = await conn.fetchval(
                    "select count(*) from readings where device_id like $1", f"{path}/%"
                )
            backfilled = sum(s.backfilled for s in sims)
            if all(counts[p] >= expected[p] for p in counts) and backfilled >= wanted_history:
                complete = True
                break
            if time.monotonic() - last_note >= 30:  # progress, on stderr
                last_note = time.monotonic()
                print(f"[{time.monotonic() - frames_t0:5.0f} s] stored: gateway"
                      f" {counts['hj212']:,} / {expected['hj212']:,}, MQTT {counts['mqtt']:,} /"
                      f" {expected['mqtt']:,}; history answered {backfilled:,} /"
                      f" {wanted_history:,}", file=sys.stderr, flush=True)  # fmt: skip
            await asyncio.sleep(2.0)
        elapsed = time.monotonic() - frames_t0
        cpu = _cpu_s(gateway_pid) - cpu0
        frames = sent["live"] + sum(s.backfilled for s in sims) + 2 * sum(
            len(s.requests) for s in sims)  # 9011 + 9012 per request  # fmt: skip
        await asyncio.sleep(5.0)
        print(f"loggers {loggers} ({'device registry' if registry else 'gateway.loggers'}),"
              f" backfill {backfill_h} h ({len(minutes)} minutes each, "
              f"{history_window} history packet(s) in flight per logger), "
              f"real-time every {INTERVAL_S:.0f} s for {duration_s:.0f} s")  # fmt: skip
        print("| path | readings stored | readings/s | p50 received->stored | p99 |")
        print("|---|---|---|---|---|")
        rates: list[float] = []
        p99s: list[float] = []
        for name, pattern in (("HJ 212 gateway", "hj212/%"), ("MQTT bridge", "mqtt/%")):
            row = await conn.fetchrow(
                "select count(*) n, min(stored_at) t0, max(stored_at) t1,"
                " percentile_cont(0.5) within group (order by extract(epoch from stored_at - received_at)) p50,"  # noqa: E501
                " percentile_cont(0.99) within group (order by extract(epoch from stored_at - received_at)) p99"  # noqa: E501
                " from readings where device_id like $1", pattern)  # fmt: skip
            span = (row["t1"] - row["t0"]).total_seconds() or 1.0
            rates.append(row["n"] / span)
            p99s.append(row["p99"])
            print(f"| {name} | {row['n']:,} | {row['n'] / span:,.0f} | "
                  f"{row['p50'] * 1000:.0f} ms | {row['p99'] * 1000:.0f} ms |")  # fmt: skip
        print(f"gateway / MQTT: readings/s x{rates[0] / rates[1]:.2f}, "
              f"p99 x{p99s[0] / p99s[1]:.2f}")  # fmt: skip
        backfilled = sum(s.backfilled for s in sims)
        print(f"backfill: {backfilled:,} of {wanted_history:,} history packets answered;"
              f" every reading stored ({expected['hj212']:,} gateway, {expected['mqtt']:,} MQTT)"
              f" {elapsed:.0f} s after the first live frame"
              if complete else
              f"INCOMPLETE after waiting {wait_s:.0f} s: {backfilled:,} of {wanted_history:,}"
              f" history packets answered, gateway {counts['hj212']:,} of {expected['hj212']:,}"
              f" and MQTT {counts['mqtt']:,} of {expected['mqtt']:,} readings stored")  # fmt: skip
        print(f"gateway: {frames:,} data frames in {elapsed:.0f} s, CPU {cpu:.1f} s = "
              f"{cpu / max(frames, 1) * 1e6:.0f} us per frame; "
              f"{sum(len(s.requests) for s in sims)} history requests")  # fmt: skip
        await conn.close()
        for sim in sims:
            await sim.close()
        if not complete:
            raise SystemExit(1)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await proc.wait()
        await mosquitto.stop()
        await tansu.stop()
        admin = await asyncpg.connect(PG)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loggers", type=int, default=300)
    parser.add_argument("--backfill-hours", type=float, default=24.0)
    parser.add_argument("--duration-s", type=float, default=120.0)
    parser.add_argument("--history-window", type=int, default=1,
                        help="history packets a logger sends ahead of their answers")  # fmt: skip
    parser.add_argument("--wait-s", type=float, default=3600.0,
                        help="longest wait after the real-time phase for every reading"
                        " and history answer (not all by then: INCOMPLETE, exit 1)")  # fmt: skip
    parser.add_argument("--registry", action="store_true",
                        help="loggers registered in the device registry (as in production)"
                        " instead of listed in gateway.loggers")  # fmt: skip
    parser.add_argument("--short", action="store_true", help="1 h backfill, 40 s real-time")
    args = parser.parse_args()
    if args.short:
        args.backfill_hours, args.duration_s = 1.0, 40.0
    params = (args.loggers, args.backfill_hours, args.duration_s, args.history_window)
    asyncio.run(main(*params, args.wait_s, args.registry))
