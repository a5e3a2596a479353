"""The small things a new user tripped over: help text, time zones, kinds, stale endpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alert_views import alert_view
from typer.testing import CliRunner

from alerts.console import format_alert_header, format_alert_line
from alerts.models import AlertView
from core.settings import Settings
from ghgwatch.cli import app
from ghgwatch.stack import resolve, resolve_settings
from ghgwatch.up import DEV_TOKEN_FILE, ENDPOINTS_FILE, Endpoints

runner = CliRunner()


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        (["alerts", "list"], "--json"),
        (["alerts", "show"], "--json"),
        (["status"], "--json"),
        (["up"], "--simulate"),
        (["up"], "--no-events"),
        (["alerts", "list"], "--all"),
    ],
)
def test_boolean_flags_show_no_value_in_help(command: list[str], flag: str) -> None:
    """`--json` and the other flags take no value, and the help does not suggest one."""
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    [line] = [ln for ln in result.output.splitlines() if ln.lstrip("│ ").startswith(f"{flag} ")]
    assert "<bool>" not in line, line


def _alert(started_at: datetime) -> AlertView:
    return alert_view(started_at, group_key="g", rule="mine-ch4", detector="threshold")


def test_alert_lines_carry_their_zone_under_a_header() -> None:
    """`alerts list` has column heads naming the zone, and each time shows its UTC offset, so
    it reads right beside `status`'s UTC times."""
    line = format_alert_line(_alert(datetime(2026, 12, 2, 5, 0, tzinfo=UTC)), "Asia/Shanghai")
    header = format_alert_header("Asia/Shanghai")
    assert "2026-12-02 13:00:00 +08:00" in line
    assert "STARTED (Asia/Shanghai)" in header
    assert header.index("STARTED") == line.index("2026-12-02")
    assert header.index("STATE") == line.index("open")


def test_replay_accepts_the_topic_kind_leak(tmp_path: Path) -> None:
    """`replay --kind leak` (the kind in the topic) works like leak_monitor."""
    csv = tmp_path / "r.csv"
    csv.write_text(
        "time,device_id,metric,value\n"
        + "".join(
            f"2026-12-01T00:{m:02d}:00Z,changqing/sulige-cs7/ch4-04,ch4_ppm,2.1\n"
            for m in range(10)
        )
    )
    result = runner.invoke(app, ["replay", str(csv), "--kind", "leak"])
    assert result.exit_code == 0, result.output
    assert "10 readings" in result.output


def _endpoints(data_dir: Path, pid: int, db_url: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / ENDPOINTS_FILE).write_text(
        Endpoints(
            pid=pid,
            started_at=datetime.now(UTC),
            mqtt_url="mqtt://127.0.0.1:41883",
            mqtt_topic="ghg/v1/...",
            kafka_bootstrap="127.0.0.1:49092",
            db_url=db_url,
            metrics_urls=[],
            api_url="http://127.0.0.1:49643/docs",
            api_port=49643,
            data_dir=str(data_dir),
            embedded={},
            notes=[],
        ).model_dump_json()
    )


def test_settings_resolve_to_a_live_up_and_never_to_a_gone_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unset URLs come from a live `up` (with its API port and dev token), configured ones
    win, and a file left by a gone `up` is ignored and named as stale."""
    data_dir = tmp_path / "d"
    _endpoints(data_dir, os.getpid(), "postgresql://postgres@127.0.0.1:45432/ghgwatch")
    (data_dir / DEV_TOKEN_FILE).write_text("tok\n")

    got = resolve_settings(Settings(data_dir=data_dir), uses=("db", "mqtt"))
    line = capsys.readouterr().err
    assert got.db_url() == "postgresql://postgres@127.0.0.1:45432/ghgwatch"
    assert got.mqtt_url() == "mqtt://127.0.0.1:41883"
    assert got.alerts.api_port == 49643
    assert got.alerts.api_tokens["dev"].get_secret_value() == "tok"
    assert "database postgresql://postgres@127.0.0.1:45432/ghgwatch" in line
    assert "mqtt mqtt://127.0.0.1:41883" in line
    assert f"pid {os.getpid()}" in line

    configured = Settings(
        data_dir=data_dir,
        db={"url": "postgresql://u:secret@db.example:5432/g"},  # type: ignore[arg-type]
    )
    found = resolve(configured)
    assert found.settings.db_url() == "postgresql://u:secret@db.example:5432/g"
    assert "secret" not in found.describe(("db",))

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _endpoints(data_dir, gone.pid, "postgresql://postgres@127.0.0.1:45432/ghgwatch")
    stale = resolve(Settings(data_dir=data_dir))
    assert stale.up is None
    assert stale.settings.db.url is None
    assert "stale" in stale.source


def test_simulate_without_a_running_up_or_a_broker_url_refuses(tmp_path: Path) -> None:
    """Nothing configured and no `up`: simulate publishes nothing and says why, instead of
    reporting success for readings no ghgwatch process reads."""
    result = runner.invoke(
        app,
        ["simulate", "--messages", "1", "--no-progress"],
        env={"GHGWATCH_DATA_DIR": str(tmp_path / "none")},
    )
    assert result.exit_code == 2
    assert "no `ghgwatch up` running" in result.output
