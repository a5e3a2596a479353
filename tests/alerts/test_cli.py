"""`ghgwatch alerts ...` from a terminal, run as a real subprocess on the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from alerts import AlertStore
from core.settings import Settings
from tests.alerts.conftest import det

CLI = str(Path(sys.executable).parent / "ghgwatch")


def ghgwatch(s: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env["GHGWATCH_DB__URL"] = s.db_url()
    return subprocess.run(
        [CLI, "--log-level", "WARNING", "alerts", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_alerts_cli_lists_shows_acknowledges_silences_and_resolves(
    alert_settings: Callable[..., Settings],
) -> None:
    """The CLI does what the API does, directly on the database, and reports bad ids."""
    s = alert_settings()
    async with AlertStore(s.db_url(), s.alerts, s.db) as store:
        await store.apply_detections([det()], datetime.now(UTC))
    listed = ghgwatch(s, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (alert,) = json.loads(listed.stdout)
    alert_id = str(alert["alert_id"])
    assert "im/shendong-3" in ghgwatch(s, "list").stdout
    shown = ghgwatch(s, "show", alert_id)
    assert "history:" in shown.stdout
    assert "opened" in shown.stdout
    acked = ghgwatch(s, "ack", alert_id, "--by", "wang.fang", "--note", "checking")
    assert "ack:wang.fang" in acked.stdout
    again = ghgwatch(s, "ack", alert_id)
    assert again.returncode == 1
    assert "already acknowledged" in again.stderr
    silenced = ghgwatch(s, "silence", alert_id, "--duration-s", "600", "--reason", "crew on site")
    assert silenced.stdout.startswith("silence #"), silenced.stderr
    resolved = ghgwatch(s, "resolve", alert_id, "--json")
    assert json.loads(resolved.stdout)["state"] == "resolved"
    missing = ghgwatch(s, "show", "424242")
    assert missing.returncode == 1
    assert "no alert 424242" in missing.stderr
    bad = ghgwatch(s, "list", "--severity", "apocalyptic")
    assert bad.returncode == 1
    assert "bad filter" in bad.stderr
