"""core.stopping with real processes and real signals: a clean stop exits 0, a stop that
hangs ends within its grace with the stuck task named, a second signal exits at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.stopping import EXIT_STUCK

_SCRIPT = """
import asyncio, sys
from core.logs import configure_logging
from core.settings import LogSettings
from core.stopping import run_until_stopped

configure_logging(LogSettings())  # as every service does: structured lines on stderr

async def stuck_forever() -> None:
    while True:  # swallows every cancellation, as a buggy shutdown step would
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass

async def main(stop: asyncio.Event) -> str:
    print("ready", flush=True)
    await stop.wait()
    if sys.argv[1] == "hang":
        await asyncio.create_task(stuck_forever(), name="reconnect-for-ever")
    return "clean"

print(run_until_stopped(main, grace_s=float(sys.argv[2])), flush=True)
"""


def _start(tmp_path: Path, mode: str, grace_s: float) -> subprocess.Popen[str]:
    script = tmp_path / "service.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, str(grace_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _finish(proc: subprocess.Popen[str], within_s: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=within_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"still running {within_s} s after the stop signal")
    return proc.returncode, out, err


def test_a_clean_stop_exits_normally_and_the_watchdog_stays_quiet(tmp_path: Path) -> None:
    proc = _start(tmp_path, "clean", grace_s=1.0)
    proc.send_signal(signal.SIGTERM)
    code, out, err = _finish(proc, within_s=30)
    time.sleep(1.5)  # past the grace: a watchdog left armed would have fired by now
    assert code == 0, err
    assert out.strip() == "clean"
    assert "overdue" not in err


def test_a_stop_that_hangs_ends_within_its_grace_naming_the_stuck_task(tmp_path: Path) -> None:
    proc = _start(tmp_path, "hang", grace_s=2.0)
    proc.send_signal(signal.SIGTERM)
    code, _out, err = _finish(proc, within_s=30)
    assert code == EXIT_STUCK
    assert "stop overdue" in err
    assert "reconnect-for-ever" in err
    assert "stuck_forever" in err


def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    proc = _start(tmp_path, "hang", grace_s=600.0)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    code, _out, err = _finish(proc, within_s=30)
    assert code == EXIT_STUCK
    assert "second stop signal" in err
