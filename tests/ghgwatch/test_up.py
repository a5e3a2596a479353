"""`ghgwatch up` runs the whole pipeline as one process and stops cleanly on SIGINT."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from adapters.ports import port_is_free
from core.settings import Settings
from reports import closed_quarter

DEADLINE_S = 60.0
STOP_DEADLINE_S = 45.0
KINDS = {"city", "cems", "mine", "leak"}


API_TOKEN = "up-test-token"


def _env(settings: Settings) -> dict[str, str]:
    """The test's isolated settings as GHGWATCH_* variables for a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env.update(
        GHGWATCH_DATA_DIR=str(settings.data_dir),
        GHGWATCH_MQTT__URL=settings.mqtt_url(),
        GHGWATCH_MQTT__TOPIC_ROOT=settings.mqtt.topic_root,
        GHGWATCH_MQTT__CLIENT_ID=settings.mqtt.client_id,
        GHGWATCH_MQTT__SHARE_GROUP=settings.mqtt.share_group,
        GHGWATCH_KAFKA__BOOTSTRAP=settings.kafka_bootstrap(),
        GHGWATCH_KAFKA__READINGS_TOPIC=settings.kafka.readings_topic,
        GHGWATCH_KAFKA__DEADLETTER_TOPIC=settings.kafka.deadletter_topic,
        GHGWATCH_KAFKA__EVENTS_TOPIC=settings.kafka.events_topic,
        GHGWATCH_KAFKA__PARTITIONS=str(settings.kafka.partitions),
        GHGWATCH_DB__URL=settings.db_url(),
        GHGWATCH_KAFKA__DETECTIONS_TOPIC=f"det-{settings.processor.group_id}",
        GHGWATCH_PROCESSOR__GROUP_ID=settings.processor.group_id,
        GHGWATCH_DETECTION__GROUP_ID=f"detector-{settings.processor.group_id}",
        GHGWATCH_ALERTS__GROUP_ID=f"alerts-{settings.processor.group_id}",
        GHGWATCH_ALERTS__API_PORT="0",
        GHGWATCH_ALERTS__API_TOKENS=json.dumps({"duty": API_TOKEN}),
        GHGWATCH_PROCESSOR__COMMIT_INTERVAL_S="0.2",
        GHGWATCH_METRICS__ENABLED="false",
        GHGWATCH_LOG__LEVEL="INFO",
        # The quarterly report's schedule checks at once; no PDF (no browser needed).
        GHGWATCH_REPORTS__START_DELAY_S="0",
        GHGWATCH_REPORTS__REVISE_QUARTERS="0",
        GHGWATCH_REPORTS__PDF="false",
        GHGWATCH_REPORTS__OUT_DIR=str(settings.data_dir / "reports"),
    )
    return env


def _ghgwatch(*args: str) -> list[str]:
    return [sys.executable, "-c", "from ghgwatch.cli import main; main()", *args]


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit may never be reaped in a container)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


async def _wait_for(predicate: Callable[[], Any], what: str) -> Any:
    """Poll an async predicate until it returns a truthy value or the deadline passes."""
    try:
        async with asyncio.timeout(DEADLINE_S):
            while not (result := await predicate()):
                await asyncio.sleep(0.3)
            return result
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
async def up_process(
    settings: Settings, tmp_path: Path
) -> AsyncIterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `ghgwatch up` children; any still running after the test is killed."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        n = len(started)
        with (
            (tmp_path / f"up-{n}.out").open("wb") as out,
            (tmp_path / f"up-{n}.err").open("wb") as err,
        ):
            proc = subprocess.Popen(
                _ghgwatch("up", *args), env=_env(settings), stdout=out, stderr=err, cwd=tmp_path
            )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_up_with_simulator_stores_every_kind_shows_status_and_stops_on_sigint(
    settings: Settings, tmp_path: Path, up_process: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """`up --simulate` stores readings of all four kinds, `status --json` in another process
    reports them via the configured URLs, the on-call API answers with a token and refuses
    without, the quarterly report's schedule issues the last closed quarter by itself, and
    SIGINT stops every service (processor, alert service and API, report schedule, detector,
    bridge, simulator) with exit status 0."""
    proc = up_process("--simulate", "--devices", "2", "--timeout-s", "300")
    endpoints = settings.data_dir / "endpoints.json"

    async def stored_kinds() -> set[str] | None:
        assert proc.poll() is None, (tmp_path / "up-0.err").read_text()[-3000:]
        try:
            conn = await asyncpg.connect(settings.db_url())
        except (OSError, asyncpg.PostgresError):
            return None
        try:
            rows = await conn.fetch("SELECT DISTINCT kind FROM devices WHERE readings_count > 0")
        except asyncpg.UndefinedTableError:
            return None
        finally:
            await conn.close()
        kinds = {r["kind"] for r in rows}
        return kinds if kinds >= KINDS else None

    await _wait_for(stored_kinds, "readings of every kind in the database")
    assert json.loads(endpoints.read_text())["pid"] == proc.pid

    status = await asyncio.to_thread(
        subprocess.run,
        _ghgwatch("status", "--json"),
        env=_env(settings),
        capture_output=True,
        timeout=DEADLINE_S,
    )
    assert status.returncode == 0, status.stderr.decode()[-3000:]
    report = json.loads(status.stdout)
    assert {k["kind"] for k in report["kinds"]} >= KINDS
    assert all(k["readings"] > 0 for k in report["kinds"])
    assert report["devices_total"] >= len(KINDS)
    assert report["readings_topic"] == settings.kafka.readings_topic
    assert [p["partition"] for p in report["lag"]] == list(range(settings.kafka.partitions))

    cfg = Settings().reports
    due = closed_quarter(datetime.now(UTC), cfg.timezone, cfg.issue_delay_h)

    async def scheduled_report() -> bool:
        conn = await asyncpg.connect(settings.db_url())
        try:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM quarterly_reports WHERE quarter = $1"
                    " AND trigger = 'schedule'",
                    str(due),
                )
            )
        except asyncpg.UndefinedTableError:
            return False
        finally:
            await conn.close()

    await _wait_for(scheduled_report, f"the scheduled report of {due}")

    api = json.loads(endpoints.read_text())["api_url"].removesuffix("/docs")
    async with httpx.AsyncClient(base_url=api, timeout=DEADLINE_S) as client:
        refused = await client.get("/alerts")
        listed = await client.get("/alerts", headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert refused.status_code == 401
    assert listed.status_code == 200, listed.text

    proc.send_signal(signal.SIGINT)
    code = await asyncio.to_thread(proc.wait, STOP_DEADLINE_S)
    out = (tmp_path / "up-0.out").read_text()
    assert code == 0, (tmp_path / "up-0.err").read_text()[-3000:]
    assert "ghgwatch is up" in out
    assert "ghgwatch stopped cleanly" in out
    # the services line names exactly what was started
    started = "processor, alert-service, report-schedule, alerts-api, alert-log, detector, bridge,"
    assert f"{started} hj212, simulator" in out
    assert not endpoints.exists()


async def test_up_exits_non_zero_when_a_service_fails_and_stops_the_others(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    up_process: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """A bridge that cannot start (malformed MQTT URL) makes `up` stop the processor and
    exit with the fatal status 2, naming the error."""
    bad = settings_factory(mqtt={"url": "mqtt://127.0.0.1:notaport"})
    env = _env(bad)
    proc = subprocess.Popen(
        _ghgwatch("up", "--timeout-s", "120"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        out, err = await asyncio.to_thread(proc.communicate, None, STOP_DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, err.decode()[-3000:]
    assert "mqtt url" in err.decode()
    assert b"stopped cleanly" not in out
    assert not (bad.data_dir / "endpoints.json").exists()


def _fresh_env() -> dict[str, str]:
    """A new user's environment: no GHGWATCH_* at all (data dir .ghgwatch in the cwd)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env.update(GHGWATCH_METRICS__ENABLED="false")
    return env


async def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await asyncio.to_thread(
        subprocess.run,
        _ghgwatch(*args),
        env=_fresh_env(),
        cwd=cwd,
        capture_output=True,
        timeout=DEADLINE_S,
    )


async def test_up_with_nothing_configured_is_found_by_every_command_and_keeps_its_ports(
    tmp_path: Path,
) -> None:
    """A new user's first run: with no setting at all, `up` starts embedded PostgreSQL,
    Kafka and MQTT (fallback ports here: 5432 and 1883 are taken), prints a development API
    token and a `mosquitto_pub` line with the port. That exact line and the README's device
    example store readings; `status`, `db migrate`, `alerts list` and `simulate` in other
    processes find the same stack without any export and name it on stderr; the token opens
    the on-call API. SIGTERM frees every port, and the next `up` on the same folder takes the
    same ports again."""
    env = _fresh_env()
    data_dir = tmp_path / ".ghgwatch"
    endpoints_file = data_dir / "endpoints.json"

    def start(n: int) -> subprocess.Popen[bytes]:
        with (
            (tmp_path / f"up{n}.out").open("wb") as out,
            (tmp_path / f"up{n}.err").open("wb") as err,
        ):
            return subprocess.Popen(
                _ghgwatch("up", "--timeout-s", "180"), env=env, stdout=out, stderr=err, cwd=tmp_path
            )

    async def started(proc: subprocess.Popen[bytes], n: int) -> dict[str, Any]:
        async def endpoints() -> dict[str, Any] | None:
            assert proc.poll() is None, (tmp_path / f"up{n}.err").read_text()[-3000:]
            if (
                not endpoints_file.exists()
                or "ghgwatch is up" not in (tmp_path / f"up{n}.out").read_text()
            ):
                return None
            data: dict[str, Any] = json.loads(endpoints_file.read_text())
            return data

        found: dict[str, Any] = await _wait_for(endpoints, "endpoints.json")
        return found

    async def stop(proc: subprocess.Popen[bytes], n: int) -> None:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, STOP_DEADLINE_S)
        assert code == 0, (tmp_path / f"up{n}.err").read_text()[-3000:]

    def ports_of(found: dict[str, Any]) -> list[int]:
        return [
            int(found["db_url"].rsplit(":", 1)[1].split("/")[0]),
            int(found["kafka_bootstrap"].rsplit(":", 1)[1]),
            int(found["mqtt_url"].rsplit(":", 1)[1]),
            int(found["api_port"]),
            int(found["gateway_port"]),
        ]

    proc = start(0)
    try:
        found = await started(proc, 0)
        assert set(found["embedded"]) == {"postgres", "kafka", "mqtt"}
        out = (tmp_path / "up0.out").read_text()
        mqtt_port = found["mqtt_url"].rsplit(":", 1)[1]
        [pub] = [
            line.split("send one reading", 1)[1].strip()
            for line in out.splitlines()
            if "send one reading" in line
        ]
        assert f"-p {mqtt_port} " in pub
        token = (data_dir / "api-token").read_text().strip()
        assert token in out
        assert found["api_token_file"] == str(data_dir / "api-token")
        # the HJ 212 gateway (issue 11) listens where the summary says
        [gateway] = [
            line.split("HJ 212 gateway", 1)[1].split()[0]
            for line in out.splitlines()
            if "HJ 212 gateway" in line
        ]
        gw_host, _, gw_port = gateway.removeprefix("tcp://").rpartition(":")
        assert int(gw_port) == found["gateway_port"]
        _reader, writer = await asyncio.open_connection(gw_host, int(gw_port))
        writer.close()
        await writer.wait_closed()

        sent = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", pub], capture_output=True, timeout=DEADLINE_S
        )
        assert sent.returncode == 0, sent.stderr

        async def readings_of(device_id: str) -> int:
            conn = await asyncpg.connect(found["db_url"])
            try:
                n = await conn.fetchval(
                    "SELECT readings_count FROM devices WHERE device_id = $1", device_id
                )
            finally:
                await conn.close()
            return int(n or 0)

        mine = "ordos-coal/buertai/t1-0302"

        async def stored(count: int) -> bool:
            return await readings_of(mine) >= count

        await _wait_for(lambda: stored(1), "the mosquitto_pub reading in the database")

        # The README's device example, as written (less the endless mosquitto_sub), works
        # against this `up` although 1883 is taken here by another broker.
        readme = (Path(__file__).parents[2] / "README.md").read_text()
        [example] = [b for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if "ports.json" in b]
        script = example.split("\nmosquitto_sub", 1)[0]
        await asyncio.sleep(1.1)  # a new second: the reading's ts differs from the first one
        ran = await asyncio.to_thread(
            subprocess.run, ["bash", "-c", script], cwd=tmp_path, capture_output=True, timeout=30
        )
        assert ran.returncode == 0, ran.stderr
        await _wait_for(lambda: stored(2), "the README example's reading in the database")

        # Other commands in this folder, no export: all find this `up` (run side by side).
        status, migrated, listed, simulated = await asyncio.gather(
            _cli(tmp_path, "status", "--json"),
            _cli(tmp_path, "db", "migrate"),
            _cli(tmp_path, "alerts", "list"),
            _cli(tmp_path, "simulate", "--messages", "20", "--no-progress"),
        )
        for done in (status, migrated, listed, simulated):
            assert done.returncode == 0, done.stderr.decode()[-3000:]
        report = json.loads(status.stdout)
        assert "endpoints.json" in report["endpoints_source"]
        assert report["readings_total"] >= 2
        assert f"database {found['db_url']}" in migrated.stderr.decode()
        assert "`ghgwatch up`" in listed.stderr.decode()
        assert f"mqtt {found['mqtt_url']}" in simulated.stderr.decode()

        async def simulated_stored() -> bool:
            conn = await asyncpg.connect(found["db_url"])
            try:
                n = await conn.fetchval("SELECT count(*) FROM devices WHERE readings_count > 0")
            finally:
                await conn.close()
            return bool(n > 1)

        await _wait_for(simulated_stored, "the simulated readings in the database")
        # replay the stored readings of this `up`'s database through the detectors
        since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        replayed = await _cli(tmp_path, "replay", "--from-db", "--since", since, "--device", mine)
        assert replayed.returncode == 0, replayed.stderr.decode()[-3000:]
        assert "`ghgwatch up`" in replayed.stderr.decode()
        assert re.search(rb"^[2-9]\d* readings \(0 late\)", replayed.stdout, re.M), replayed.stdout

        api = f"http://127.0.0.1:{found['api_port']}"
        async with httpx.AsyncClient(base_url=api, timeout=DEADLINE_S) as client:
            listed_api = await client.get("/alerts", headers={"Authorization": f"Bearer {token}"})
        assert listed_api.status_code == 200, listed_api.text
        # the web console's printed address: the printed token logs in, the overview shows
        [console_url] = [
            line.split("web console", 1)[1].split()[0]
            for line in out.splitlines()
            if "web console" in line
        ]
        assert console_url == f"{api}/console"
        async with httpx.AsyncClient(timeout=DEADLINE_S, follow_redirects=True) as browser:
            page = await browser.get(console_url)
            assert page.status_code == 200
            assert 'name="token"' in page.text  # no session yet: the log-in page
            await browser.post(f"{console_url}/login", data={"token": token})
            overview = await browser.get(console_url)
        assert overview.status_code == 200
        assert 'name="token"' not in overview.text
        await stop(proc, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    first_ports = ports_of(found)
    assert all(port_is_free(p) for p in first_ports), first_ports
    assert not endpoints_file.exists()
    assert (data_dir / "postgres" / "pgdata" / "PG_VERSION").exists()

    proc = start(1)
    try:
        again = await started(proc, 1)
        assert ports_of(again) == first_ports
        assert (data_dir / "api-token").read_text().strip() == token
        await stop(proc, 1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_second_up_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    """While an `up` (a live pid in endpoints.json) owns the data dir, another refuses to
    start, before touching any service."""
    from core.errors import ConfigurationError
    from ghgwatch.up import ENDPOINTS_FILE, Endpoints, UpOptions, run_up

    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        (data_dir / ENDPOINTS_FILE).write_text(
            Endpoints(
                pid=owner.pid,
                started_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
                mqtt_url="mqtt://127.0.0.1:1",
                mqtt_topic="t",
                kafka_bootstrap="127.0.0.1:1",
                db_url="postgresql://x@127.0.0.1:1/x",
                metrics_urls=[],
                data_dir=str(data_dir),
                embedded={},
                notes=[],
            ).model_dump_json()
        )
        with pytest.raises(ConfigurationError, match="already running"):
            await run_up(Settings(data_dir=data_dir), UpOptions(), stop=asyncio.Event())
        assert not (data_dir / "postgres").exists()
    finally:
        owner.kill()
        owner.wait()


async def test_stand_ins_of_a_killed_up_are_stopped_by_the_next_one(tmp_path: Path) -> None:
    """SIGKILL leaves the embedded services running (their own sessions); the next `up` on
    the same data dir stops them before starting its own."""
    from ghgwatch.up import PIDS_FILE, _stop_leftovers

    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env.update(GHGWATCH_DATA_DIR=str(data_dir), GHGWATCH_METRICS__ENABLED="false")
    with (tmp_path / "up.out").open("wb") as out, (tmp_path / "up.err").open("wb") as err:
        proc = subprocess.Popen(
            _ghgwatch("up", "--timeout-s", "120"), env=env, stdout=out, stderr=err, cwd=tmp_path
        )
    try:

        async def started() -> bool:
            assert proc.poll() is None, (tmp_path / "up.err").read_text()[-3000:]
            return (data_dir / "endpoints.json").exists()

        await _wait_for(started, "endpoints.json")
        pids = [
            pid
            for pid, _prog in json.loads((data_dir / PIDS_FILE).read_text())["services"].values()
        ]
    finally:
        proc.kill()
        proc.wait()
    assert len(pids) == 3
    assert all(_running(pid) for pid in pids)  # orphans, still running

    await _stop_leftovers(data_dir)

    assert not any(_running(pid) for pid in pids)
    assert not (data_dir / PIDS_FILE).exists()


async def test_up_on_amqtt_runs_on_mqtt_311_and_stores_every_kind(
    settings: Settings, tmp_path: Path
) -> None:
    """`up --simulate --mqtt-broker amqtt` (no MQTT URL, as on a machine without Mosquitto)
    runs the bridge and simulator on MQTT 3.1.1, says so, stores readings of all four kinds
    and stops cleanly on SIGINT."""
    env = _env(settings)
    del env["GHGWATCH_MQTT__URL"]
    argv = _ghgwatch("up", "--simulate", "--devices", "2", "--mqtt-broker", "amqtt")
    with (tmp_path / "up.out").open("wb") as out, (tmp_path / "up.err").open("wb") as err:
        proc = subprocess.Popen([*argv, "--timeout-s", "300"], env=env, stdout=out, stderr=err)
    try:

        async def stored_kinds() -> set[str] | None:
            assert proc.poll() is None, (tmp_path / "up.err").read_text()[-3000:]
            conn = await asyncpg.connect(settings.db_url())
            try:
                rows = await conn.fetch(
                    "SELECT DISTINCT kind FROM devices WHERE readings_count > 0"
                )
            except asyncpg.UndefinedTableError:
                return None
            finally:
                await conn.close()
            kinds = {r["kind"] for r in rows}
            return kinds if kinds >= KINDS else None

        await _wait_for(stored_kinds, "readings of every kind stored via amqtt")
        endpoints = json.loads((settings.data_dir / "endpoints.json").read_text())
        proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(proc.wait, STOP_DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out_text = (tmp_path / "up.out").read_text()
    assert code == 0, (tmp_path / "up.err").read_text()[-3000:]
    assert set(endpoints["embedded"]) == {"mqtt"}
    assert "amqtt" in endpoints["embedded"]["mqtt"]
    assert "use MQTT 3.1.1" in " ".join(out_text.split())
    assert "WARNING" not in out_text
    assert "ghgwatch stopped cleanly" in out_text
    connected = [
        line for line in (tmp_path / "up.err").read_text().splitlines() if "mqtt connected" in line
    ]
    assert connected, "the bridge never connected"
    # A plain subscription: amqtt would take a $share/ filter literally and deliver nothing.
    assert all("protocol=3.1.1" in line and "$share" not in line for line in connected)
    assert port_is_free(int(endpoints["mqtt_url"].rsplit(":", 1)[1]))


async def test_mqtt_broker_choice_with_a_configured_mqtt_url_is_refused(
    settings: Settings,
) -> None:
    """Choosing an MQTT stand-in while mqtt.url is set is a configuration error, raised
    before any service starts."""
    from core.errors import ConfigurationError
    from ghgwatch.up import UpOptions, run_up

    with pytest.raises(ConfigurationError, match="GHGWATCH_MQTT__URL is set"):
        await run_up(settings, UpOptions(mqtt_broker="amqtt"), stop=asyncio.Event())
    assert not (settings.data_dir / "endpoints.json").exists()


# Bounded waits of the injected-event tests: up's start, the first event (EVENTS_EVERY_S
# after the simulator starts) and the release's ramp past the alarm level, on a busy machine.
EVENT_DEADLINE_S = 180.0
EVENTS_EVERY_S = "5"


def _lines_with(path: Path, *words: str) -> list[str]:
    """Lines of a child's output holding every one of ``words``."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return [line for line in text.splitlines() if all(w in line for w in words)]


async def _wait_for_line(proc: subprocess.Popen[bytes], out: Path, err: Path, *words: str) -> str:
    """Wait (bounded) for a line of ``up``'s console output holding every one of ``words``."""
    try:
        async with asyncio.timeout(EVENT_DEADLINE_S):
            while not (lines := _lines_with(out, *words)):
                assert proc.poll() is None, err.read_text()[-3000:]
                await asyncio.sleep(0.5)
            return lines[0]
    except TimeoutError:
        pytest.fail(f"no console line with {words}; got:\n{out.read_text()[-3000:]}")


async def test_up_simulate_injects_events_and_logs_alerts_that_can_be_acknowledged(
    settings: Settings, tmp_path: Path, up_process: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """`up --simulate --events-every-s 5`: the injected mine release opens a critical alert
    and the sensor fault a maintenance ticket, each logged on the console with site, device,
    detector label, reading and threshold and the ack hint; `ghgwatch alerts ack ID` in
    another process acknowledges the alert and `up` logs that too."""
    proc = up_process(
        "--simulate", "--devices", "3", "--events-every-s", EVENTS_EVERY_S, "--timeout-s", "600"
    )
    out, err = tmp_path / "up-0.out", tmp_path / "up-0.err"
    critical = await _wait_for_line(
        proc, out, err, "ALERT #", "opened", "critical", "(threshold_alarm)"
    )
    ticket = await _wait_for_line(
        proc, out, err, "ALERT #", "opened", "maintenance", "(out_of_range)"
    )
    releases = _lines_with(err, "simulated event injected", "release")
    faults = _lines_with(err, "simulated event injected", "sensor_fault")
    assert releases
    assert faults
    assert "methane alarm level" in critical
    assert "reading " in critical
    assert "% vol" in critical
    alert_id = critical.split("#", 1)[1].split()[0]
    assert f"ghgwatch alerts ack {alert_id}" in critical
    assert "out of range" in ticket

    # The console line names the alert's site and device as the store has them.
    conn = await asyncpg.connect(settings.db_url())
    try:
        row = await conn.fetchrow(
            "SELECT network, site, device_id, severity, threshold FROM alerts WHERE alert_id = $1",
            int(alert_id),
        )
    finally:
        await conn.close()
    assert row is not None
    assert row["severity"] == "critical"
    assert f"{row['network']}/{row['site']}" in critical
    assert f"device {row['device_id'].rsplit('/', 1)[-1]}" in critical
    assert any(row["device_id"] in line for line in releases)
    assert f"threshold {row['threshold']:g} % vol" in critical

    acked = await asyncio.to_thread(
        subprocess.run,
        _ghgwatch("alerts", "ack", alert_id, "--by", "newcomer"),
        env=_env(settings),
        capture_output=True,
        timeout=DEADLINE_S,
    )
    assert acked.returncode == 0, acked.stderr.decode()[-3000:]
    line = await _wait_for_line(proc, out, err, f"ALERT #{alert_id} ", "acknowledged")
    assert "by newcomer" in line

    proc.send_signal(signal.SIGINT)
    code = await asyncio.to_thread(proc.wait, STOP_DEADLINE_S)
    assert code == 0, err.read_text()[-3000:]
    assert "gas release, sensor fault, silent device" in out.read_text()


async def test_up_simulate_no_events_injects_none(
    settings: Settings, tmp_path: Path, up_process: Callable[..., subprocess.Popen[bytes]]
) -> None:
    """`up --simulate --no-events` injects nothing: after mine readings well past the time
    the first event would have come, no event was injected and no mine alarm or fault
    was raised."""
    proc = up_process(
        "--simulate",
        "--devices",
        "3",
        "--no-events",
        "--events-every-s",
        EVENTS_EVERY_S,
        "--timeout-s",
        "600",
    )
    out, err = tmp_path / "up-0.out", tmp_path / "up-0.err"
    span_s = 6 * float(EVENTS_EVERY_S)

    async def mine_span() -> bool:
        assert proc.poll() is None, err.read_text()[-3000:]
        try:
            conn = await asyncpg.connect(settings.db_url())
        except (OSError, asyncpg.PostgresError):
            return False
        try:
            got = await conn.fetchval(
                "SELECT extract(epoch FROM max(ts) - min(ts)) FROM readings"
                " WHERE metric = 'ch4_pct_vol'"
            )
        except asyncpg.UndefinedTableError:
            return False
        finally:
            await conn.close()
        return got is not None and float(got) >= span_s

    try:
        async with asyncio.timeout(EVENT_DEADLINE_S):
            while not await mine_span():
                await asyncio.sleep(0.5)
    except TimeoutError:
        pytest.fail("mine readings did not cover the first event times")
    proc.send_signal(signal.SIGINT)
    code = await asyncio.to_thread(proc.wait, STOP_DEADLINE_S)
    assert code == 0, err.read_text()[-3000:]
    assert not _lines_with(err, "simulated event injected")
    for detector in ("(threshold_alarm)", "(power_cut)", "(out_of_range)"):
        assert not _lines_with(out, "ALERT #", detector)
    assert "no injected events" in out.read_text()
