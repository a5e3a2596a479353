"""The onboarding and history commands run as an operator runs them: ``python -m ghgwatch``
in a subprocess, configured by GHGWATCH_* variables, against a database of this test (and,
for import, the test run's tansu with a storing processor). Registry changes are applied to
no broker (``registry.apply = none``): what is checked is what the commands print, their exit
codes and what they leave in the database or on disk."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import stat
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from core.settings import Settings
from processors import Processor
from processors.storage import migrate
from registry import DeviceRecord, NoBroker, Onboarding
from registry.credentials import verify_password

DEADLINE_S = 60.0
T4 = "ordos-coal/buertai/t4-0101"


async def _cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ghgwatch", *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env |= {
        "GHGWATCH_DATA_DIR": str(tmp_path / "data"),  # no `ghgwatch up` there to borrow from
        "GHGWATCH_DB__URL": settings.db_url(),
        "GHGWATCH_MQTT__URL": settings.mqtt.url,
        "GHGWATCH_MQTT__TOPIC_ROOT": settings.mqtt.topic_root,
        "GHGWATCH_REGISTRY__APPLY": "none",
        "GHGWATCH_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
        "GHGWATCH_KAFKA__READINGS_TOPIC": settings.kafka.readings_topic,
        "GHGWATCH_KAFKA__DEADLETTER_TOPIC": settings.kafka.deadletter_topic,
        "GHGWATCH_KAFKA__EVENTS_TOPIC": settings.kafka.events_topic,
        "GHGWATCH_KAFKA__PARTITIONS": str(settings.kafka.partitions),
        "GHGWATCH_METRICS__ENABLED": "false",
    }
    return env


def _issued(stdout: str) -> dict[str, str]:
    """The ``name   value`` lines ``stations add`` and ``rotate`` print."""
    out = {}
    for line in stdout.splitlines():
        name, _, value = line.partition(" ")
        if name in {"device", "username", "password", "publish", "subscribe"}:
            out[name] = value.strip()
    return out


async def _row(db: str, device_id: str) -> asyncpg.Record:
    conn = await asyncpg.connect(db)
    try:
        return await conn.fetchrow("select * from registry_devices where device_id = $1", device_id)
    finally:
        await conn.close()


async def test_stations_add_then_list_as_text_and_json(settings: Settings, tmp_path: Path) -> None:
    env = _env(settings, tmp_path)
    db = settings.db_url()
    await migrate(db, settings.db)  # two commands at once need not both create the schema
    added = await asyncio.gather(
        _cli(env, "stations", "add", T4, "--kind", "mine", "--location", "T4",
             "--units", "ch4_pct_vol", "--lat", "39.6", "--lon", "110.1"),
        _cli(env, "stations", "add", "baotou/kundulun/pic-01", "--kind", "city"),
    )  # fmt: skip
    for code, _out, err in added:
        assert code == 0, err
    first, city = _issued(added[0][1]), _issued(added[1][1])
    assert first["device"] == f"{T4} (mine)"
    assert T4 in first["publish"]
    assert T4 in first["subscribe"]
    assert first["password"]
    assert first["password"] != city["password"]

    (code, text, err), (code_json, as_json, err_json) = await asyncio.gather(
        _cli(env, "stations", "list"), _cli(env, "stations", "list", "--json")
    )
    assert code == 0, err
    lines = {line.split()[2]: line.split() for line in text.splitlines() if line.strip()}
    assert lines[T4] == ["enabled", "mine", T4, "T4", first["username"]]
    assert lines["baotou/kundulun/pic-01"] == [
        "enabled", "city", "baotou/kundulun/pic-01", "-", city["username"]
    ]  # fmt: skip
    assert first["password"] not in text
    assert city["password"] not in text
    assert code_json == 0, err_json
    listed = {d["device_id"]: d for d in map(json.loads, as_json.splitlines())}
    assert set(listed) == {T4, "baotou/kundulun/pic-01"}
    t4 = listed[T4]
    assert (t4["kind"], t4["location_class"], t4["enabled"]) == ("mine", "T4", True)
    assert (t4["lat"], t4["lon"], t4["units"]) == (39.6, 110.1, {"ch4_pct_vol": "% vol"})
    assert t4["mqtt_username"] == first["username"]
    assert t4["hj212_password_set"] is False
    assert "hash" not in as_json
    assert first["password"] not in as_json
    assert verify_password((await _row(db, T4))["mqtt_password_hash"], first["password"])


async def test_stations_disable_enable_rotate_print_exit_and_store_what_they_say(
    settings: Settings, tmp_path: Path
) -> None:
    env = _env(settings, tmp_path)
    db = settings.db_url()
    await migrate(db, settings.db)
    conn = await asyncpg.connect(db)  # registered beforehand, as `stations add` does
    try:
        onboarding = Onboarding(conn, NoBroker())
        first = await onboarding.add(
            DeviceRecord.model_validate({"device_id": T4, "kind": "mine", "location_class": "T4"})
        )
        city = await onboarding.add(
            DeviceRecord.model_validate({"device_id": "baotou/kundulun/pic-01", "kind": "city"})
        )
    finally:
        await conn.close()
    before = await _row(db, T4)
    assert verify_password(before["mqtt_password_hash"], first.password)
    code, out, err = await _cli(env, "stations", "disable", T4)
    assert code == 0, err
    assert out.strip() == f"{T4}: disabled (its connection is cut)"
    assert (await _row(db, T4))["enabled"] is False
    code, text, _ = await _cli(env, "stations", "list")
    assert any(line.split()[:3] == ["DISABLED", "mine", T4] for line in text.splitlines())
    code, out, err = await _cli(env, "stations", "enable", T4)
    assert code == 0, err
    assert out.strip() == f"{T4}: enabled"
    after = await _row(db, T4)
    assert after["enabled"] is True
    assert after["mqtt_password_hash"] == before["mqtt_password_hash"]  # same password again

    code, out, err = await _cli(env, "stations", "rotate", T4)
    assert code == 0, err
    rotated = _issued(out)
    assert rotated["username"] == first.username
    assert rotated["password"]
    assert rotated["password"] != first.password
    assert "shown only this once" in out
    stored = (await _row(db, T4))["mqtt_password_hash"]
    assert verify_password(stored, rotated["password"])
    assert not verify_password(stored, first.password)  # the old one stops working
    assert rotated["password"] not in stored

    code, out, err = await _cli(env, "stations", "disable", "nowhere/none/x-1")
    assert code == 1, out
    assert "nowhere/none/x-1" in err
    other = await _row(db, "baotou/kundulun/pic-01")
    assert other["enabled"] is True
    assert verify_password(other["mqtt_password_hash"], city.password)  # untouched


async def test_stations_import_registers_valid_rows_and_a_second_import_finds_them(
    settings: Settings, tmp_path: Path
) -> None:
    env = _env(settings, tmp_path)
    db = settings.db_url()
    sheet = tmp_path / "stations.csv"
    sheet.write_text(
        "device_id,kind,location_class,hj212_mn,hj212_password,site_altitude_m\n"
        "ordos-coal/buertai/t1-0302,mine,T1,,,\n"
        "beifang/dalate/unit-3,cems,,010000A8900016F000169DC0,123456,1400\n"
        "ordos-coal/buertai/t9-0001,mine,T9,,,\n"  # no class T9: refused
        "baotou/kundulun/pic-01,city,,,,\n"
    )
    creds = tmp_path / "creds.csv"
    code, out, err = await _cli(env, "stations", "import", str(sheet), "--credentials-out",
                                str(creds))  # fmt: skip
    assert code == 1, (out, err)  # a refused row: the operator must look
    report = [line.split(None, 3) for line in out.splitlines() if line.startswith("line")]
    assert [(r[1], r[2], r[3].split()[0]) for r in report] == [
        ("2", "added", "ordos-coal/buertai/t1-0302"),
        ("3", "added", "beifang/dalate/unit-3"),
        ("4", "error", "ordos-coal/buertai/t9-0001"),
        ("5", "added", "baotou/kundulun/pic-01"),
    ]
    assert "location" in report[2][3]  # the reason is given
    assert "3 added, 1 error" in out
    assert f"credentials of 3 devices written to {creds}" in out
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    issued = list(csv.DictReader(io.StringIO(creds.read_text())))
    assert [r["device_id"] for r in issued] == [
        "ordos-coal/buertai/t1-0302", "beifang/dalate/unit-3", "baotou/kundulun/pic-01"
    ]  # fmt: skip
    conn = await asyncpg.connect(db)
    try:
        rows = {r["device_id"]: r for r in await conn.fetch("select * from registry_devices")}
    finally:
        await conn.close()
    assert set(rows) == {r["device_id"] for r in issued}
    for r in issued:
        assert rows[r["device_id"]]["mqtt_username"] == r["username"]
        assert verify_password(rows[r["device_id"]]["mqtt_password_hash"], r["password"])
    cems = rows["beifang/dalate/unit-3"]
    assert cems["hj212_mn"] == "010000A8900016F000169DC0"
    assert verify_password(cems["hj212_password_hash"], "123456")
    assert cems["site_altitude_m"] == 1400
    assert rows["ordos-coal/buertai/t1-0302"]["location_class"] == "T1"

    creds.unlink()
    code, out, err = await _cli(env, "stations", "import", str(sheet), "--credentials-out",
                                str(creds))  # fmt: skip
    assert code == 1, (out, err)
    statuses = [line.split()[2] for line in out.splitlines() if line.startswith("line")]
    assert statuses == ["exists", "exists", "error", "exists"]
    assert "3 exists" in out
    assert not creds.exists()  # nobody was issued anything
    again = await _row(db, "beifang/dalate/unit-3")
    assert again["mqtt_password_hash"] == cems["mqtt_password_hash"]  # left as it was


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


async def test_certs_makes_ca_server_and_client_files_and_keeps_the_ca(
    settings: Settings, tmp_path: Path
) -> None:
    env = _env(settings, tmp_path)
    out_dir = tmp_path / "tls"
    code, out, err = await _cli(env, "certs", "--out", str(out_dir), "--client", "dev-t4-0101")
    assert code == 0, err
    assert f"new development CA: {out_dir / 'ca.crt'}" in out
    files = {"ca.crt", "ca.key", "server.crt", "server.key", "clients/dev-t4-0101.crt",
             "clients/dev-t4-0101.key"}  # fmt: skip
    assert {str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file()} == files
    for key in ("ca.key", "server.key", "clients/dev-t4-0101.key"):
        assert stat.S_IMODE((out_dir / key).stat().st_mode) == 0o600, key
        assert b"PRIVATE KEY" in (out_dir / key).read_bytes()
    ca, server = _cert(out_dir / "ca.crt"), _cert(out_dir / "server.crt")
    client = _cert(out_dir / "clients/dev-t4-0101.crt")
    assert ca.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value.ca
    for leaf in (server, client):
        leaf.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-t4-0101"

    ca_bytes = (out_dir / "ca.crt").read_bytes(), (out_dir / "ca.key").read_bytes()
    code, out, err = await _cli(env, "certs", "--out", str(out_dir), "--client", "dev-other",
                                "--host", "broker.example")  # fmt: skip
    assert code == 0, err
    assert f"using the CA in {out_dir}" in out
    assert ((out_dir / "ca.crt").read_bytes(), (out_dir / "ca.key").read_bytes()) == ca_bytes
    server2 = _cert(out_dir / "server.crt")
    server2.verify_directly_issued_by(ca)  # the kept CA signs the new ones
    _cert(out_dir / "clients/dev-other.crt").verify_directly_issued_by(ca)
    sans = server2.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert sans.get_values_for_type(x509.DNSName) == ["broker.example"]
    _cert(out_dir / "clients/dev-t4-0101.crt").verify_directly_issued_by(ca)  # still valid


async def _wait_readings(db: str, expected: int) -> int:
    conn = await asyncpg.connect(db)
    try:
        async with asyncio.timeout(DEADLINE_S):
            while (got := int(await conn.fetchval("select count(*) from readings"))) < expected:
                await asyncio.sleep(0.2)
        return got
    except TimeoutError:
        return int(await conn.fetchval("select count(*) from readings"))
    finally:
        await conn.close()


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_import_and_export_commands_exit_codes_reports_progress_and_csv(
    settings: Settings, tmp_path: Path
) -> None:
    env = _env(settings, tmp_path)
    db = settings.db_url()
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
    city = "baotou/kundulun/pic-01"
    history = tmp_path / "history.csv"
    lines = ["ts,device_id,kind,metric,value"]
    lines += [f"{(t0 + timedelta(minutes=i)).isoformat()},{city},city,co2_ppm,{420 + i}"
              for i in range(6)]  # fmt: skip
    lines.insert(3, f"{t0.isoformat()},{city},city,co2_ppm,lots")  # line 4
    lines.insert(6, f"{t0.isoformat()},baotou/kundulun,city,co2_ppm,1")  # line 7
    history.write_text("\n".join(lines) + "\n")
    await migrate(db, settings.db)
    stop = asyncio.Event()
    processor = asyncio.create_task(Processor(settings).run(stop=stop))
    try:
        code, out, err = await _cli(env, "import", str(history))
        assert code == 3, (out, err)
        assert "8 rows read, 6 readings sent, 2 refused" in out
        problems = [line for line in out.splitlines() if line.startswith("line ")]
        assert [p.split(":")[0] for p in problems] == ["line 4", "line 7"]
        assert all(len(p.split(": ")) >= 3 for p in problems), problems  # line: reason: detail
        assert await _wait_readings(db, 6) == 6
    finally:
        stop.set()
        await asyncio.wait_for(processor, 30)

    conn = await asyncpg.connect(db)
    try:
        await conn.executemany(
            "insert into derived (ts, device_id, series, value, valid) values ($1, $2, $3, $4, $5)",
            [(t0 + timedelta(hours=h), "beifang/dalate/unit-3", "co2_mass_t_h", 250.0 + h, h != 1)
             for h in range(3)],
        )  # fmt: skip
        await conn.execute(
            "insert into detections (detection_id, state, device_id, kind, network, site, metric,"
            " detector, severity, location, started_at, ended_at, score, value, threshold)"
            " values ('det-1', 'cleared', 'ordos-coal/buertai/t1-0302', 'mine', 'ordos-coal',"
            " 'buertai', 'ch4_pct_vol', 'threshold_alarm', 'critical', 'T1', $1, $2, 3.5, 1.2,"
            " 1.0), ('det-2', 'open', $3, 'city', 'baotou', 'kundulun', 'co2_ppm', 'release',"
            " 'warning', null, $2, null, 2.0, 480.0, null)",
            t0, t0 + timedelta(minutes=30), city,
        )  # fmt: skip
    finally:
        await conn.close()

    since = (t0 - timedelta(hours=1)).isoformat()
    readings_csv = tmp_path / "readings.csv"
    code, out, err = await _cli(env, "export", "readings", "--out", str(readings_csv),
                                "--since", since, "--device", city)  # fmt: skip
    assert code == 0, err
    assert f"6 rows written to {readings_csv}" in out
    progress = [line for line in (out + err).splitlines() if "exporting readings" in line]
    assert progress, out + err
    assert "6 rows" in progress[-1], progress  # the progress line, with its count
    readings = _csv(readings_csv.read_text())
    assert [float(r["value"]) for r in readings] == [420.0 + i for i in range(6)]
    assert {r["device_id"] for r in readings} == {city}

    derived_csv = tmp_path / "derived.csv"
    code, out, err = await _cli(env, "export", "derived", "--out", str(derived_csv),
                                "--since", since)  # fmt: skip
    assert code == 0, err
    assert f"3 rows written to {derived_csv}" in out
    derived = _csv(derived_csv.read_text())
    assert list(derived[0]) == ["ts", "device_id", "series", "value", "valid"]
    assert [(r["series"], float(r["value"])) for r in derived] == [
        ("co2_mass_t_h", 250.0), ("co2_mass_t_h", 251.0), ("co2_mass_t_h", 252.0)
    ]  # fmt: skip
    assert [r["valid"].lower() for r in derived] == ["true", "false", "true"]
    assert datetime.fromisoformat(derived[0]["ts"]) == t0

    detections_csv = tmp_path / "detections.csv"
    code, out, err = await _cli(env, "export", "detections", "--out", str(detections_csv),
                                "--since", since, "--until",
                                (t0 + timedelta(hours=1)).isoformat())  # fmt: skip
    assert code == 0, err
    assert f"2 rows written to {detections_csv}" in out
    detections = {r["detection_id"]: r for r in _csv(detections_csv.read_text())}
    assert set(detections) == {"det-1", "det-2"}
    one = detections["det-1"]
    assert (one["device_id"], one["detector"], one["severity"], one["state"]) == (
        "ordos-coal/buertai/t1-0302", "threshold_alarm", "critical", "cleared"
    )  # fmt: skip
    assert datetime.fromisoformat(one["started_at"]) == t0
    assert datetime.fromisoformat(one["ended_at"]) == t0 + timedelta(minutes=30)
    assert (float(one["score"]), float(one["value"]), float(one["threshold"])) == (3.5, 1.2, 1.0)
    assert detections["det-2"]["ended_at"] == ""
    assert detections["det-2"]["threshold"] == ""
