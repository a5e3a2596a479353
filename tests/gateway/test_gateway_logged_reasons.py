"""Malformed frames are rejected with a logged reason: the real ``ghgwatch hj212`` service
(a subprocess, JSON log lines on stderr as an operator's log collector gets them), real TCP,
real tansu. Each of a bad CRC, a wrong length, a bad password, an unknown CN and a
truncated frame yields a structured line naming its reason, and the gateway keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gw_helpers import CEMS_MN, CEMS_PW, TZ, loggers

from core.settings import Settings
from gateway.logger_sim import SimulatedLogger
from wire.hj212 import build_frame, build_segment, format_time

DEADLINE_S = 30.0


def _env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")}
    env |= {
        "GHGWATCH_DATA_DIR": str(tmp_path / "data"),
        "GHGWATCH_DB__URL": settings.db_url(),
        "GHGWATCH_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
        "GHGWATCH_KAFKA__READINGS_TOPIC": settings.kafka.readings_topic,
        "GHGWATCH_KAFKA__DEADLETTER_TOPIC": settings.kafka.deadletter_topic,
        "GHGWATCH_KAFKA__EVENTS_TOPIC": settings.kafka.events_topic,
        "GHGWATCH_METRICS__ENABLED": "false",
        "GHGWATCH_GATEWAY__HOST": "127.0.0.1",
        "GHGWATCH_GATEWAY__PORT": "0",
        "GHGWATCH_GATEWAY__STATE_FILE": str(tmp_path / "hj212-state.json"),
        "GHGWATCH_GATEWAY__LOGGERS": json.dumps(loggers()),
    }
    return env


class LogLines:
    """Every JSON line the service writes to stderr, as it comes."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[dict[str, Any]] = []
        self.other: list[str] = []
        self._task = asyncio.create_task(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").strip()
            try:
                self.lines.append(json.loads(text))
            except ValueError:
                self.other.append(text)

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == event]

    async def wait(self, what: str, check: Any) -> Any:
        try:
            async with asyncio.timeout(DEADLINE_S):
                while not (found := check()):
                    if self._task.done():
                        raise AssertionError(f"service ended before {what}: {self.other[-5:]}")
                    await asyncio.sleep(0.05)
                return found
        except TimeoutError:
            raise AssertionError(
                f"not within {DEADLINE_S:.0f} s: {what}; {self.lines[-5:]}"
            ) from None


def _segment(qn: str, cn: str, pw: str, t: datetime) -> str:
    return build_segment(qn=qn, st="31", cn=cn, pw=pw, mn=CEMS_MN, flag=5,
                         cp=f"DataTime={format_time(t, TZ)};a05001-Rtd=2.0")  # fmt: skip


async def test_each_malformed_frame_is_logged_with_its_reason_and_the_gateway_serves_on(
    gateway_settings, tmp_path: Path
) -> None:
    settings = gateway_settings()
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ghgwatch", "--log-format", "json", "hj212",
        env=_env(settings, tmp_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    log = LogLines(proc.stderr)
    try:
        listening = await log.wait(
            "the gateway listening", lambda: log.events("hj212 gateway listening")
        )
        port = int(listening[0]["port"])
        good = build_frame(_segment("20261201080000001", "2011", CEMS_PW, t0))
        bad_crc = bytearray(good)
        bad_crc[-4] = ord("0") if bad_crc[-4] != ord("0") else ord("1")
        sent = {
            "bad_crc": bytes(bad_crc),
            "bad_length": b"##0050" + good[6:],
            "bad_password": build_frame(_segment("20261201080000002", "2011", "000000", t0)),
            "unknown_cn": build_frame(_segment("20261201080000003", "5999", CEMS_PW, t0)),
        }
        logger = SimulatedLogger("127.0.0.1", port, mn=CEMS_MN, pw=CEMS_PW, tz=TZ)
        await logger.connect()
        for frame in sent.values():
            await logger.send_raw(frame)
        # The same connection is served on after them: a good packet is answered.
        assert await logger.upload("2011", t0 + timedelta(seconds=10), {"a05001": 11.0})
        dropping = SimulatedLogger("127.0.0.1", port, mn=CEMS_MN, pw=CEMS_PW, tz=TZ)
        await dropping.connect()
        await dropping.send_raw(good[:40])  # then the line drops inside the frame
        await dropping.close()
        reasons = {*sent, "truncated"}

        def rejected() -> dict[str, dict[str, Any]] | None:
            by_reason = {line.get("reason"): line for line in log.events("hj212 frame rejected")}
            return by_reason if reasons <= set(by_reason) else None

        lines = await log.wait(f"a rejection line for each of {sorted(reasons)}", rejected)
        # A new connection after them all is served too: nothing crashed.
        after = SimulatedLogger("127.0.0.1", port, mn=CEMS_MN, pw=CEMS_PW, tz=TZ)
        await after.connect()
        assert await after.upload("2011", t0 + timedelta(seconds=20), {"a05001": 12.0})
        await after.close()
        await logger.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 30)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, log.other[-10:]
    for reason, line in lines.items():
        if reason not in reasons:
            continue
        assert line["level"] == "warning", line
        assert line["detail"], line  # says why, not only that
        assert line["peer"].startswith("127.0.0.1:"), line
    assert lines["bad_password"]["mn"] == CEMS_MN
    assert lines["unknown_cn"]["mn"] == CEMS_MN
    assert "5999" in lines["unknown_cn"]["detail"]
    assert lines["bad_crc"]["frame"] == bytes(bad_crc).decode("ascii")[:120]
    assert set(lines) == reasons  # the good packets were not reported as rejected
    assert not log.other, log.other  # every line is structured (JSON)
