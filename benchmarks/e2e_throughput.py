"""End-to-end throughput and latency: simulator -> Mosquitto -> Bridge -> tansu -> Processor -> PG.

Everything runs on this machine: a private Mosquitto (deep queues, no persistence), an
embedded tansu broker, a fresh PostgreSQL database (created and dropped here), the bridge and
the processor as separate processes (``ghgwatch bridge`` / ``ghgwatch processor``), and the
simulator in this process. The same loads then go through the naive baseline
(``benchmarks/naive_baseline.py``: paho callback per message, one INSERT per reading).

Scenarios:

a. single-reading messages, QoS 1, published as fast as the broker acknowledges;
b. batched messages of 100 readings (a mine sensor's 100 buffered samples), as fast as possible;
c. single-reading messages at a fixed 10,000 readings/s: publish -> stored latency.

Throughput is readings stored / (time from the first publish until the harness saw the last
reading stored). Latency is ``stored_at - ts`` per reading: the simulator stamps ``ts`` with the
publish time (no jitter) and ``stored_at`` is when the storing transaction began (ghgwatch) or
the row was inserted (naive).

    python benchmarks/e2e_throughput.py                 # defaults: about 2-3 minutes
    python benchmarks/e2e_throughput.py --quick         # a smaller run, under a minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import resource
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from core.settings import Settings
from ghgwatch.embedded import ManagedProcess, start_mosquitto, start_tansu
from processors.storage import migrate
from sensors_sim import SimulationConfig, run_simulation
from wire import SourceKind

ADMIN_DSN = os.environ.get("GHGWATCH_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = "bench/v1"
POLL_S = 0.25
WARMUP_DEADLINE_S = 90.0
STOP_TIMEOUT_S = 30.0
TARGETS = {"a": 15_000.0, "b": 150_000.0}
P99_TARGET_S = 1.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_CLI = "from ghgwatch.cli import main; main()"
_NAIVE = str(Path(__file__).with_name("naive_baseline.py"))


@dataclass
class Result:
    """One scenario through one system."""

    system: str
    scenario: str
    published_msgs: int
    expected: int
    stored: int
    publish_s: float
    elapsed_s: float
    p50_s: float | None
    p99_s: float | None
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.stored / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.stored >= self.expected


@dataclass
class Child:
    """A child process of the benchmark (bridge, processor or naive subscriber)."""

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _postgres_cpu_s() -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    total += _cpu_s(int(entry.name))
    return total


class CpuMeter:
    """CPU seconds used per process over a scenario (postgres: all backends on the machine)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {n: _cpu_s(p) for n, p in self.pids.items()}
        self._start["postgres*"] = _postgres_cpu_s()

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._t0, 1e-9)
        now = {n: _cpu_s(p) for n, p in self.pids.items()}
        now["postgres*"] = _postgres_cpu_s()
        return {n: 100.0 * (now[n] - self._start.get(n, 0.0)) / wall for n in now}


async def _profile(pids: dict[str, int], seconds: float, out_dir: Path, tag: str) -> None:
    """Sample the named processes with py-spy for ``seconds`` (raw folded stacks)."""
    procs = []
    for name, pid in pids.items():
        if name.startswith(("bridge", "processor", "naive")):
            out = out_dir / f"{tag}-{name}.txt"
            procs.append(
                await asyncio.create_subprocess_exec(
                    "py-spy", "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "100",
                    "-f", "raw", "-o", str(out), "--nonblocking",
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )  # fmt: skip
    for proc in procs:
        await proc.wait()


def _profile_summary(path: Path, top: int = 12) -> list[str]:
    """The functions with the most samples (own time, and inclusive) in a py-spy raw file."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        # "func (path/to/file.py:123)" -> "func (file.py)": one entry per function.
        frames = [
            f"{f.split(' (')[0]} ({f.split(' (')[-1].split('/')[-1].split(':')[0]})"
            for f in stack.split(";")
        ]
        if frames and "select" in frames[-1].lower():
            continue  # idle in the event loop's poll
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    if total == 0:
        return ["  (no samples)"]
    lines = [f"  busy samples (100/s while profiled): {total}; own time:"]
    for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {100 * n / total:5.1f}%  {f}")
    return lines


def _env(settings: Settings) -> dict[str, str]:
    """The GHGWATCH_* variables that make the CLI services use these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env.update(
        {
            "GHGWATCH_MQTT__URL": settings.mqtt_url(),
            "GHGWATCH_MQTT__TOPIC_ROOT": settings.mqtt.topic_root,
            "GHGWATCH_MQTT__SHARE_GROUP": settings.mqtt.share_group,
            "GHGWATCH_KAFKA__BOOTSTRAP": settings.kafka_bootstrap(),
            "GHGWATCH_KAFKA__READINGS_TOPIC": settings.kafka.readings_topic,
            "GHGWATCH_KAFKA__DEADLETTER_TOPIC": settings.kafka.deadletter_topic,
            "GHGWATCH_KAFKA__EVENTS_TOPIC": settings.kafka.events_topic,
            "GHGWATCH_KAFKA__PARTITIONS": str(settings.kafka.partitions),
            "GHGWATCH_DB__URL": settings.db_url(),
            "GHGWATCH_PROCESSOR__GROUP_ID": settings.processor.group_id,
            "GHGWATCH_METRICS__ENABLED": "false",
            "GHGWATCH_LOG__LEVEL": "WARNING",
        }
    )
    return env


async def _spawn(name: str, argv: list[str], env: dict[str, str], work: Path) -> Child:
    log_path = work / f"{name}.log"
    with log_path.open("ab") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=log_file, stderr=asyncio.subprocess.STDOUT, env=env
        )
    return Child(name, proc, log_path)


async def _count(conn: asyncpg.Connection, table: str, since: datetime | None = None) -> int:
    """Rows in ``table``, only those measured at or after ``since`` when given."""
    if since is None:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    return int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE ts >= $1", since))


async def _registered(conn: asyncpg.Connection, table: str) -> int | None:
    """Readings ghgwatch's writer has counted into ``devices`` (None for the naive table)."""
    if table != "readings":
        return None
    return int(await conn.fetchval("SELECT coalesce(sum(readings_count), 0) FROM devices"))


async def _warm_up(settings: Settings, conn: asyncpg.Connection, table: str) -> None:
    """Publish a trickle until rows appear: the consumer has joined and the bridge subscribed."""
    deadline = time.monotonic() + WARMUP_DEADLINE_S
    cfg = SimulationConfig(
        kinds=(SourceKind.MINE,), devices_per_kind=5, rate=50.0, duration_s=1.0, progress=False
    )
    while await _count(conn, table) == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing reached {table} within {WARMUP_DEADLINE_S} s")
        await run_simulation(settings, cfg)
    # Let stragglers land before the table is emptied.
    await asyncio.sleep(2.0)


@dataclass
class Published:
    """What the publisher processes of one scenario sent, summed."""

    messages: int = 0
    valid_readings: int = 0
    started: float = math.inf
    cpu_s: float = 0.0


async def _publish(
    cfg: SimulationConfig, publishers: int, env: dict[str, str], meter: CpuMeter
) -> Published:
    """Run the load in ``publishers`` processes, each with its share of the devices.

    Separate processes keep the load generator from being the bottleneck of one GIL.
    """
    procs = []
    for i in range(publishers):
        shard = cfg.model_copy(
            update={
                "shard_index": i,
                "shard_count": publishers,
                "max_messages": None
                if cfg.max_messages is None
                else max(1, cfg.max_messages // publishers),
                "rate": cfg.rate if cfg.rate is None else cfg.rate / publishers,
            }
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--role",
            "publish",
            "--sim-config",
            shard.model_dump_json(),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        procs.append(proc)
    meter.start()
    total = Published()
    for proc in procs:
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"publisher failed with status {proc.returncode}")
        stats = json.loads(out.decode().strip().splitlines()[-1])
        total.messages += stats["messages"]
        total.valid_readings += stats["valid_readings"]
        total.started = min(total.started, stats["started"])
        total.cpu_s += stats["cpu_s"]
    return total


async def _publisher_role(cfg_json: str) -> None:
    """Child process: publish one shard of a scenario and print its counts as JSON."""
    from core.logs import configure_logging
    from core.settings import load_settings

    settings = load_settings()
    configure_logging(settings.log)
    cfg = SimulationConfig.model_validate_json(cfg_json)
    started = time.time()
    stats = await run_simulation(settings, cfg)
    print(
        json.dumps(
            {
                "messages": stats.messages,
                "valid_readings": stats.valid_readings,
                "started": started,
                "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
            }
        )
    )


async def _measure(
    system: str,
    scenario: str,
    settings: Settings,
    conn: asyncpg.Connection,
    table: str,
    cfg: SimulationConfig,
    drain_s: float,
    meter: CpuMeter,
    *,
    publishers: int,
    env: dict[str, str],
    profile_dir: Path | None = None,
) -> Result:
    await conn.execute(f"TRUNCATE {table}")
    registered = await _registered(conn, table)
    profiler = None
    if profile_dir is not None:
        seconds = cfg.duration_s or 10.0
        profiler = asyncio.create_task(
            _profile(dict(meter.pids), seconds, profile_dir, f"{system}-{scenario}")
        )
    t0 = time.time()
    # Only this scenario's readings count: a backlog of an earlier one has older timestamps.
    # A batch's first samples predate the publish by up to the message's sample window.
    window_s = cfg.samples_per_message * (cfg.sample_interval_s or 0.0)
    since = datetime.fromtimestamp(t0 - window_s, UTC)
    stats = await _publish(cfg, publishers, env, meter)
    # Time runs from the first publish (not from the publisher processes' start-up).
    t0 = stats.started
    publish_s = time.time() - t0
    expected = stats.valid_readings
    deadline = time.monotonic() + drain_s
    # Poll the writer's exact per-device counts (a few thousand rows) rather than count(*)
    # over millions of readings, which would load the database being measured; then confirm.
    while registered is not None and time.monotonic() < deadline:
        if await _registered(conn, table) - registered >= expected:
            break
        await asyncio.sleep(POLL_S)
    seen_at = time.time()
    stored = await _count(conn, table, since)
    while stored < expected and time.monotonic() < deadline:
        await asyncio.sleep(POLL_S)
        stored = await _count(conn, table, since)
        seen_at = time.time()
    elapsed = seen_at - t0
    cpu = meter.stop()
    if profiler is not None:
        await profiler
    cpu["publishers"] = 100.0 * stats.cpu_s / max(elapsed, 1e-9)
    row = await conn.fetchrow(
        f"""SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lat) AS p50,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY lat) AS p99
              FROM (SELECT extract(epoch FROM stored_at - ts)::float8 AS lat
                      FROM {table} WHERE ts >= $1) AS l""",
        since,
    )
    return Result(
        system=system,
        scenario=scenario,
        published_msgs=stats.messages,
        expected=expected,
        stored=stored,
        publish_s=publish_s,
        elapsed_s=elapsed,
        # A batch's readings are up to its sample window old when sent: no transit latency.
        p50_s=row["p50"] if row and window_s == 0 else None,
        p99_s=row["p99"] if row and window_s == 0 else None,
        cpu=cpu,
    )


def _configs(args: argparse.Namespace) -> dict[str, SimulationConfig]:
    common: dict[str, Any] = {"jitter_s": 0.0, "progress": False, "max_inflight": args.inflight}
    kinds = tuple(SourceKind)
    return {
        "a": SimulationConfig(
            kinds=kinds,
            devices_per_kind=args.devices // 4,
            rate=math.inf,
            duration_s=args.duration_a,
            batch=False,
            **common,
        ),
        "b": SimulationConfig(
            kinds=(SourceKind.MINE,),
            devices_per_kind=args.devices,
            rate=math.inf,
            max_messages=args.batch_messages,
            duration_s=args.duration_a,
            batch=True,
            samples_per_message=100,
            sample_interval_s=0.01,
            **common,
        ),
        "c": SimulationConfig(
            kinds=kinds,
            devices_per_kind=args.devices // 4,
            rate=args.latency_rate,
            duration_s=args.duration_c,
            batch=False,
            **common,
        ),
    }


def _naive_config(cfg: SimulationConfig, duration_s: float) -> SimulationConfig:
    """The same load shape, published for a shorter time (the baseline drains slowly)."""
    cap = None if cfg.max_messages is None else max(1, cfg.max_messages // 4)
    return cfg.model_copy(update={"duration_s": duration_s, "max_messages": cap})


def _fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _print_report(results: list[Result], args: argparse.Namespace) -> None:
    names = {
        "a": "a. single reading/msg, QoS 1, max rate",
        "b": "b. 100 readings/msg, QoS 1, max rate",
        "c": f"c. single reading/msg at {args.latency_rate:,.0f}/s",
    }
    print()
    print(
        f"ghgwatch end-to-end benchmark on {platform.node()} ({os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}); broker, Kafka (tansu) and PostgreSQL on this box"
    )
    header = (
        f"{'scenario':<42} {'system':<9} {'msgs sent':>10} {'readings':>10} {'stored':>10} "
        f"{'publish s':>9} {'total s':>8} {'readings/s':>11} {'p50 s':>7} {'p99 s':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in sorted(results, key=lambda r: (r.system != "ghgwatch", r.scenario)):
        flag = "" if r.complete else f"  (backlog {r.expected - r.stored:,} at deadline)"
        print(
            f"{names[r.scenario]:<42} {r.system:<9} {r.published_msgs:>10,} {r.expected:>10,} "
            f"{r.stored:>10,} {r.publish_s:>9.1f} {r.elapsed_s:>8.1f} {r.rate:>11,.0f} "
            f"{_fmt_s(r.p50_s):>7} {_fmt_s(r.p99_s):>7}{flag}"
        )
    print()
    by = {(r.system, r.scenario): r for r in results}
    for sc in ("a", "b"):
        g, n = by.get(("ghgwatch", sc)), by.get(("naive", sc))
        if g and n and n.rate > 0:
            print(
                f"{names[sc]}: ghgwatch {g.rate:,.0f} readings/s vs naive {n.rate:,.0f} "
                f"readings/s -> {g.rate / n.rate:.1f}x"
            )
    print()
    checks = []
    if ("ghgwatch", "a") in by:
        checks.append(("a >= 15,000 readings/s", by[("ghgwatch", "a")].rate >= TARGETS["a"]))
    if ("ghgwatch", "b") in by:
        checks.append(("b >= 150,000 readings/s", by[("ghgwatch", "b")].rate >= TARGETS["b"]))
    if ("ghgwatch", "c") in by:
        c = by[("ghgwatch", "c")]
        checks.append(("c p99 <= 1 s", c.p99_s is not None and c.p99_s <= P99_TARGET_S))
    for text, ok in checks:
        print(f"target {text}: {'met' if ok else 'NOT met'}")
    print()
    print(
        "CPU % of one core per process during each scenario, from the first publish until"
        " stored\n(postgres*: all backends on the machine, other users included;"
        " publishers: all of them):"
    )
    for r in sorted(results, key=lambda r: (r.system != "ghgwatch", r.scenario)):
        parts = ", ".join(f"{k} {v:.0f}" for k, v in r.cpu.items())
        print(f"  {r.system:<9} {r.scenario}: {parts}")


async def run(args: argparse.Namespace) -> list[Result]:
    work = Path(tempfile.mkdtemp(prefix="ghgw-e2e-"))
    bench = uuid.uuid4().hex[:8]
    dbname = f"ghgw_bench_{bench}"
    mosquitto: ManagedProcess | None = None
    tansu: ManagedProcess | None = None
    children: list[Child] = []
    results: list[Result] = []
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    await admin.close()
    base, _, _ = ADMIN_DSN.rpartition("/")
    dsn = f"{base}/{dbname}"
    try:
        mosquitto = await start_mosquitto(work / "mqtt", port=0, persistence=False)
        tansu = await start_tansu(work / "kafka", port=0)
        settings = Settings(
            data_dir=work / "data",
            mqtt={
                "url": f"mqtt://127.0.0.1:{mosquitto.port}",
                "topic_root": ROOT,
                "share_group": f"bench{bench}",
            },
            kafka={
                "bootstrap": f"127.0.0.1:{tansu.port}",
                "readings_topic": f"readings-{bench}",
                "deadletter_topic": f"deadletter-{bench}",
                "events_topic": f"events-{bench}",
                "partitions": args.partitions,
            },
            db={"url": dsn},
            processor={"group_id": f"proc-{bench}"},
            metrics={"enabled": False},
        )
        report = await migrate(dsn, settings.db)
        print("\n".join(report.lines()), file=sys.stderr)
        conn = await asyncpg.connect(dsn)
        configs = _configs(args)
        env = _env(settings)
        pids = {"mosquitto": mosquitto.proc.pid, "tansu": tansu.proc.pid, "harness": os.getpid()}
        if not args.skip_ghgwatch:
            for i in range(args.bridges):
                benv = dict(env, GHGWATCH_MQTT__CLIENT_ID=f"bench-bridge-{bench}-{i}")
                child = await _spawn(
                    f"bridge{i}", [sys.executable, "-c", _CLI, "bridge"], benv, work
                )
                children.append(child)
                pids[child.name] = child.proc.pid
            for i in range(args.processors):
                cmd = [sys.executable, "-c", _CLI, "processor"]
                child = await _spawn(f"processor{i}", cmd, env, work)
                children.append(child)
                pids[child.name] = child.proc.pid
            print("warming up the pipeline...", file=sys.stderr)
            await _warm_up(settings, conn, "readings")
            meter = CpuMeter(pids)
            # Latency first, on a quiet database: after a/b PostgreSQL checkpoints and
            # vacuums millions of fresh rows, which would be measured as c's latency.
            for sc in sorted(args.scenarios, key="cab".index):
                print(f"ghgwatch scenario {sc}...", file=sys.stderr)
                res = await _measure(
                    "ghgwatch",
                    sc,
                    settings,
                    conn,
                    "readings",
                    configs[sc],
                    args.drain,
                    meter,
                    publishers=args.publishers,
                    env=env,
                    profile_dir=args.profile,
                )
                results.append(res)
                print(f"  {res.rate:,.0f} readings/s p99 {_fmt_s(res.p99_s)}", file=sys.stderr)
                await asyncio.sleep(1.5)  # every device's next timestamps lie past this run's
            for child in children:
                await child.stop()
                pids.pop(child.name, None)
            children.clear()
        if not args.skip_naive:
            naive_cmd = [
                sys.executable,
                _NAIVE,
                "--mqtt-url",
                settings.mqtt_url(),
                "--root",
                ROOT,
                "--dsn",
                dsn,
                "--table",
                "naive_readings",
            ]
            child = await _spawn("naive", naive_cmd, env, work)
            children.append(child)
            pids["naive"] = child.proc.pid
            print("warming up the naive baseline...", file=sys.stderr)
            deadline = time.monotonic() + WARMUP_DEADLINE_S
            while not await conn.fetchval("SELECT to_regclass('naive_readings') IS NOT NULL"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the naive baseline did not create its table")
                await asyncio.sleep(POLL_S)
            await _warm_up(settings, conn, "naive_readings")
            meter = CpuMeter(pids)
            for sc in [s for s in args.scenarios if s in ("a", "b")]:
                print(f"naive scenario {sc}...", file=sys.stderr)
                cfg = _naive_config(configs[sc], args.naive_duration)
                # The baseline's backlog from one scenario must not bleed into the next.
                res = await _measure(
                    "naive",
                    sc,
                    settings,
                    conn,
                    "naive_readings",
                    cfg,
                    args.naive_drain,
                    meter,
                    publishers=args.publishers,
                    env=env,
                    profile_dir=args.profile,
                )
                results.append(res)
                print(f"  {res.rate:,.0f} readings/s", file=sys.stderr)
                await child.stop()
                children.remove(child)
                if sc != "b" and "b" in args.scenarios:
                    # A fresh subscriber (clean session) drops the old backlog.
                    child = await _spawn("naive", naive_cmd, env, work)
                    children.append(child)
                    pids["naive"] = child.proc.pid
                    meter = CpuMeter(pids)
                    await conn.execute("TRUNCATE naive_readings")
                    await _warm_up(settings, conn, "naive_readings")
        await conn.close()
    finally:
        for child in children:
            await child.stop()
        if tansu is not None:
            await tansu.stop()
        if mosquitto is not None:
            await mosquitto.stop()
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await admin.close()
        print(f"logs in {work}", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000, help="simulated devices in total")
    parser.add_argument("--duration-a", type=float, default=15.0, help="scenario a publish s")
    parser.add_argument("--batch-messages", type=int, default=15_000, help="scenario b messages")
    parser.add_argument("--duration-c", type=float, default=15.0, help="scenario c publish s")
    parser.add_argument("--latency-rate", type=float, default=10_000.0, help="scenario c msg/s")
    parser.add_argument("--drain", type=float, default=60.0, help="max wait for storage, s")
    parser.add_argument("--naive-duration", type=float, default=6.0, help="naive publish s")
    parser.add_argument("--naive-drain", type=float, default=10.0, help="naive max wait, s")
    parser.add_argument("--inflight", type=int, default=1000, help="simulator QoS 1 in flight")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--bridges", type=int, default=1)
    parser.add_argument("--processors", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--scenarios", default="abc", help="subset of abc")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-ghgwatch", action="store_true")
    parser.add_argument("--quick", action="store_true", help="short run (about a minute)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy the bridge/processor into this dir"
    )
    parser.add_argument("--role", default="harness", help=argparse.SUPPRESS)
    parser.add_argument("--sim-config", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "publish":
        asyncio.run(_publisher_role(args.sim_config))
        return
    args.scenarios = [s for s in "abc" if s in args.scenarios]
    if args.quick:
        args.duration_a, args.duration_c, args.batch_messages = 6.0, 6.0, 4000
        args.naive_duration, args.naive_drain = 3.0, 5.0
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args))
    _print_report(results, args)
    if args.profile is not None:
        for path in sorted(args.profile.glob("*.txt")):
            print(f"\nprofile {path.name}:")
            print("\n".join(_profile_summary(path)))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                [dict(r.__dict__, rate=r.rate, complete=r.complete) for r in results], indent=2
            )
        )


if __name__ == "__main__":
    main()
