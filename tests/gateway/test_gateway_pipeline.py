"""A connection reads ahead of Kafka, within its window, and answers in frame order only
after Kafka confirmed each frame; a 9012 closes a gap only after the history sent before it
is confirmed. Real tansu (the test's own, paused with SIGSTOP to hold confirmations back) and
real TCP."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gw_helpers import CEMS_MN, CEMS_PW, DEADLINE_S, MINE_MN, MINE_PW, TZ, running_gateway

from gateway.backfill import Gap
from gateway.logger_sim import SimulatedLogger, data_cp
from gateway.server import Gateway
from ghgwatch.embedded import ManagedProcess
from wire.hj212 import FLAG_V2017, Frame, parse_frame, split_stream

VALUES = {"a05001": 11.8, "a00000": 420.0, "a01012": 121.5}
SETTLE_S = 0.5  # for "nothing more happens": it can only hide a failure, never invent one


class RawLogger:
    """A logger that writes frames without waiting and records every frame it gets back."""

    def __init__(self, port: int, mn: str, pw: str) -> None:
        self.port = port
        self.frames = SimulatedLogger("127.0.0.1", port, mn=mn, pw=pw, tz=TZ)  # frame builder
        self.received: list[Frame] = []
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        buffer = bytearray()
        while data := await reader.read(65_536):
            buffer.extend(data)
            for item in split_stream(buffer):
                frame = parse_frame(item) if isinstance(item, bytes) else item
                if isinstance(frame, Frame):
                    self.received.append(frame)

    async def write(self, *frames: bytes) -> None:
        assert self._writer is not None
        self._writer.write(b"".join(frames))
        await self._writer.drain()

    def data(self, cn: str, t: datetime, qn: str) -> bytes:
        return self.frames.frame(cn, data_cp(cn, t, VALUES, TZ), qn=qn)

    def answered(self) -> list[str]:
        return [f.qn or "" for f in self.received if f.cn == "9014"]

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()


def frames_read(gateway: Gateway, cn: str | None = None) -> float:
    return sum(
        s.value
        for m in gateway.metrics.frames.collect()
        for s in m.samples
        if s.name.endswith("_total") and (cn is None or s.labels["cn"] == cn)
    )


async def wait_until(what: str, check: Callable[[], bool]) -> None:
    try:
        async with asyncio.timeout(DEADLINE_S / 2):
            while not check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {DEADLINE_S / 2:.0f} s: {what}") from None


def qns(first: int, n: int) -> list[str]:
    return [f"2026120210{first + k:07d}" for k in range(n)]


async def test_a_connection_reads_ahead_within_its_window_and_answers_in_order_after_kafka(
    gateway_settings, own_tansu: ManagedProcess
) -> None:
    window = 4
    settings = gateway_settings(
        frames_in_flight=window, kafka={"bootstrap": f"{own_tansu.host}:{own_tansu.port}"}
    )
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    assert own_tansu.proc is not None
    async with running_gateway(settings, processor=False) as gateway:
        assert gateway.port is not None
        logger = RawLogger(gateway.port, CEMS_MN, CEMS_PW)
        other = RawLogger(gateway.port, MINE_MN, MINE_PW)
        await logger.connect()
        await other.connect()
        first = qns(0, 1)
        await logger.write(logger.data("2011", t0, first[0]))
        await wait_until("the first frame answered", lambda: logger.answered() == first)
        burst = qns(1, 10)
        frames = [logger.data("2011", t0 + timedelta(seconds=10 * (k + 1)), q)
                  for k, q in enumerate(burst)]  # fmt: skip
        own_tansu.proc.send_signal(signal.SIGSTOP)  # Kafka confirms nothing from here
        try:
            await logger.write(*frames)
            # Read ahead: a window's worth of frames handed over, none waiting for another.
            await wait_until(
                f"{window} frames read while Kafka holds the first",
                lambda: frames_read(gateway) >= 1 + window,
            )
            await asyncio.sleep(SETTLE_S)
            assert frames_read(gateway) == 1 + window  # and no more: the window is full
            assert logger.answered() == first  # nothing answered before Kafka has it
            # Another connection is read all the same.
            await other.write(other.data("2011", t0, qns(100, 1)[0]))
            await wait_until(
                "the other logger's frame read", lambda: frames_read(gateway) >= 2 + window
            )
        finally:
            own_tansu.proc.send_signal(signal.SIGCONT)
        await wait_until("the burst answered", lambda: len(logger.answered()) == 1 + len(burst))
        assert logger.answered() == first + burst  # in frame order
        full = gateway.metrics.window_full.collect()[0].samples[0].value
        await logger.close()
        await other.close()
    assert full >= 1


async def test_a_gap_is_closed_only_after_the_history_before_its_9012_is_in_kafka(
    gateway_settings, own_tansu: ManagedProcess, tmp_path: Path
) -> None:
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    gap = Gap(base, base + timedelta(minutes=10))
    state = tmp_path / "hj212-state.json"
    entry = {"last": gap.end.isoformat(), "gaps": [[gap.begin.isoformat(), gap.end.isoformat()]]}
    state.write_text(json.dumps({CEMS_MN: entry}))
    settings = gateway_settings(
        state_file=str(state), kafka={"bootstrap": f"{own_tansu.host}:{own_tansu.port}"}
    )
    assert own_tansu.proc is not None
    async with running_gateway(settings, processor=False) as gateway:
        assert gateway.port is not None
        assert gateway.open_gaps(CEMS_MN) == [gap]
        logger = RawLogger(gateway.port, CEMS_MN, CEMS_PW)
        await logger.connect()
        live = qns(0, 1)
        await logger.write(logger.data("2011", gap.end + timedelta(seconds=10), live[0]))
        await wait_until("the live frame answered", lambda: logger.answered() == live)
        requests = [f for f in logger.received if f.cn == "2051" and "BeginTime" in f.cp]
        assert len(requests) == 1
        request_qn = requests[0].qn or ""
        history = qns(1, 9)
        frames = [
            logger.frames.frame("9011", "QnRtn=1", qn=request_qn, flag=FLAG_V2017),
            *(logger.data("2051", base + timedelta(minutes=k + 1), q)
              for k, q in enumerate(history)),
            logger.frames.frame("9012", "ExeRtn=1", qn=request_qn, flag=FLAG_V2017),
        ]  # fmt: skip
        own_tansu.proc.send_signal(signal.SIGSTOP)
        try:
            await logger.write(*frames)
            await wait_until("the 9012 read", lambda: frames_read(gateway, "9012") == 1)
            await asyncio.sleep(SETTLE_S)
            assert gateway.open_gaps(CEMS_MN) == [gap]  # its history is not in Kafka yet
            assert logger.answered() == live
        finally:
            own_tansu.proc.send_signal(signal.SIGCONT)
        await wait_until("the history answered", lambda: len(logger.answered()) == 1 + len(history))
        assert logger.answered() == live + history
        await wait_until("the gap closed", lambda: gateway.open_gaps(CEMS_MN) == [])
        await logger.close()
