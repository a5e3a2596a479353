"""The registry store, password hashing and the CSV import with its per-row report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from pydantic import ValidationError

from core.settings import Settings
from processors.storage import migrate
from registry.credentials import hash_password, verify_password
from registry.importer import parse_csv
from registry.models import DeviceRecord
from registry.onboard import NoBroker, Onboarding
from registry.store import DeviceExists, RegistryStore, UnknownDevice

CSV = """device_id,kind,location_class,units,cems_class,site_altitude_m,hj212_mn,hj212_password,lat
ordos-coal/buertai/s-01,mine,T4,ch4_pct_vol,,,,,39.4
ordos-coal/buertai/s-02,mine,,ch4_pct_vol,,,,,
beifang/dalate/unit-3,cems,,co2_pct_vol=% vol;flow_m3_h,600mw_sc,1300,88888880000001,123456,40.2
baotou/kundulun/pic-01,city,,co2_ppm=ppb,,,,,
Baotou/Bad Id/x,city,,,,,,,
baotou/kundulun/pic-02,city,,,,,,,95
ordos-coal/buertai/s-01,mine,T1,,,,,,
baotou/kundulun/pic-03,city,,,,,88888880000001,,
baotou/kundulun/pic-04,city,,,,,,,
"""


def test_passwords_are_hashed_and_verified() -> None:
    stored = hash_password("123456")
    assert stored.startswith("$7$210000$")
    assert "123456" not in stored
    assert verify_password(stored, "123456")
    assert not verify_password(stored, "123457")
    assert not verify_password(stored, "")
    assert not verify_password("not a hash", "123456")
    assert hash_password("123456") != stored  # salted


def test_record_rules() -> None:
    with pytest.raises(ValidationError, match="location class"):
        DeviceRecord(device_id="a/b/c", kind="mine")
    with pytest.raises(ValidationError, match="network/site/device"):
        DeviceRecord(device_id="a/b", kind="city")
    rec = DeviceRecord(device_id="a/b/t4-x", kind="mine", location_class="serial_intake")
    assert rec.location_class is not None
    assert rec.location_class.value == "T4"
    assert rec.mqtt_username == "a.b.t4-x"
    assert DeviceRecord(device_id="a/b/c", kind="cems", site_altitude_m=0).baro_pressure_pa() == (
        pytest.approx(101_325)
    )


def test_csv_report_names_each_bad_line() -> None:
    rows = parse_csv(CSV)
    report = {r.line: r.error for r in rows}
    assert [line for line, err in report.items() if err is None] == [2, 4, 10]
    assert "location class" in (report[3] or "")
    assert "co2_ppm is reported in ppm" in (report[5] or "")
    assert "network/site/device" in (report[6] or "")
    assert "lat" in (report[7] or "")
    assert "repeats line 2" in (report[8] or "")
    assert "hj212_mn repeats line 4" in (report[9] or "")
    with pytest.raises(ValueError, match="unknown colour"):
        parse_csv("device_id,kind,colour\n")


async def test_import_dry_run_then_real_then_again(
    settings_factory: Callable[..., Settings], pg_url: str
) -> None:
    await migrate(pg_url, settings_factory().db)
    conn = await asyncpg.connect(pg_url)
    try:
        onboarding = Onboarding(conn, NoBroker())
        rows = parse_csv(CSV)
        dry = await onboarding.import_rows(rows, dry_run=True)
        assert [s for _, _, s, _ in dry.rows].count("would add") == 3
        assert await conn.fetchval("SELECT count(*) FROM registry_devices") == 0
        real = await onboarding.import_rows(rows, dry_run=False)
        assert [s for _, _, s, _ in real.rows].count("added") == 3
        assert len(real.issued) == 3
        assert not real.ok
        again = await onboarding.import_rows(rows, dry_run=False)
        assert [s for _, _, s, _ in again.rows].count("exists") == 3
        assert await conn.fetchval("SELECT count(*) FROM registry_devices") == 3

        store = RegistryStore(conn)
        unit = await store.by_mn("88888880000001")
        assert unit is not None
        assert unit.device_id == "beifang/dalate/unit-3"
        assert unit.units == {"co2_pct_vol": "% vol", "flow_m3_h": "m³/h"}
        assert unit.hj212_password_hash is not None
        assert verify_password(unit.hj212_password_hash, "123456")
        assert unit.baro_pressure_pa() == pytest.approx(86_700, rel=0.005)
        assert await store.by_mn("nope") is None
        mine = await store.get("ordos-coal/buertai/s-01")
        assert mine is not None
        assert mine.location_class is not None
        assert mine.location_class.value == "T4"
        with pytest.raises(DeviceExists):
            await onboarding.add(DeviceRecord(device_id="baotou/kundulun/pic-04", kind="city"))
        with pytest.raises(UnknownDevice):
            await onboarding.set_enabled("no/such/device", False)
        # the storing processor's own devices table is untouched by the registry
        assert await conn.fetchval("SELECT count(*) FROM devices") == 0
    finally:
        await conn.close()


def test_cli_add_show_list_import(pg_url: str, tmp_path: Path) -> None:
    """The commands an operator types, as a subprocess (registry only: apply = none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env.update({"GHGWATCH_DB__URL": pg_url, "GHGWATCH_REGISTRY__APPLY": "none"})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ghgwatch", *args], env=env, cwd=tmp_path,
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    added = cli("stations", "add", "ordos-coal/buertai/s-09", "--kind", "mine", "--location", "t4")
    assert added.returncode == 0, added.stderr
    password = next(ln.split()[1] for ln in added.stdout.splitlines() if ln.startswith("password"))
    shown = cli("stations", "show", "ordos-coal/buertai/s-09")
    assert json.loads(shown.stdout)["location_class"] == "T4"
    assert password not in shown.stdout
    (tmp_path / "s.csv").write_text(CSV)
    dry = cli("stations", "import", "s.csv", "--dry-run")
    assert dry.returncode == 1  # bad rows
    assert "line     3  error" in dry.stdout
    assert "3 would add" in dry.stdout
    assert not (tmp_path / "station-credentials.csv").exists()
