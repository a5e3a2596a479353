"""Hostile loggers: 10,000 fuzzed frames, a stuck connection, too many connections. The
gateway must neither crash nor stall, and must keep answering well-behaved loggers."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

from gw_helpers import CEMS_MN, CEMS_PW, TZ, loggers, running_gateway

from gateway.logger_sim import SimulatedLogger, data_cp
from wire.hj212 import build_frame, build_segment, format_time

FUZZ_FRAMES = 10_000
CONNECTIONS = 20
CODES = ["a05001", "a00000", "a01012", "a01013", "a01014", "a19001", "a05002", "zz", ""]
VALUES = ["11.8", "-1", "1e308", "nan", "inf", "", "abc", "0x10", "9" * 40, "1,2", "-0.0"]


def _valid_but_hostile(rng: random.Random, now: datetime, own_mn: str) -> bytes:
    """A frame with a correct length and CRC and odd contents."""
    cn = rng.choice(["2011", "2011", "2051", "2061", "2031", "9014", "1013", "0000", "20x1"])
    mn = rng.choice([own_mn, own_mn, CEMS_MN, "", "X" * 200, "010000A8900016F000169DC1"])
    pw = rng.choice([CEMS_PW, CEMS_PW, "", "000000"])
    when = now - timedelta(seconds=rng.randint(-3600, 86400 * 400))
    cp = [f"DataTime={rng.choice([format_time(when, TZ), '20261399', '', '2016'])}"]
    for _ in range(rng.randint(0, 8)):
        code = rng.choice(CODES)
        cp.append(f"{code}-{rng.choice(['Rtd', 'Avg', 'Max', 'Flag'])}={rng.choice(VALUES)}")
        if rng.random() < 0.3:
            cp.append(f"{code}-Flag={rng.choice(['N', 'C', 'X', '', 'NN'])}")
    segment = build_segment(
        qn=str(rng.randint(0, 10**17)), st=rng.choice(["31", "32", "", "9" * 10]), cn=cn,
        pw=pw, mn=mn, flag=rng.choice([4, 5, 7, 255]), cp=rng.choice([";", ","]).join(cp),
    )  # fmt: skip
    if rng.random() < 0.1:
        segment = segment.replace("CP=&&", rng.choice(["CP=&", "", "CP=&&&&"]), 1)
    return build_frame(segment[:9999])


def _corrupt(rng: random.Random, frame: bytes) -> bytes:
    """Byte-level damage: flips, cuts, wrong lengths, junk, huge length fields."""
    data = bytearray(frame)
    how = rng.randrange(7)
    if how == 0:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif how == 1:
        data = data[: rng.randrange(1, len(data))]
    elif how == 2:
        data[2:6] = f"{rng.randint(0, 9999):04d}".encode()
    elif how == 3:
        data = bytearray(rng.randbytes(rng.randint(1, 300)))
    elif how == 4:
        data[2:6] = rng.choice([b"9999", b"abcd", b"-001", b"    "])
    elif how == 5:
        data = data.replace(b"\r\n", b"")
    else:
        data[rng.randrange(len(data))] = rng.randrange(128, 256)
    return bytes(data)


async def test_ten_thousand_fuzzed_frames_neither_crash_nor_stall(gateway_settings) -> None:
    # One logger per connection: a second connection of the same MN takes over from the first.
    fuzz_loggers = loggers()
    for i in range(CONNECTIONS):
        fuzz_loggers[f"FUZZ{i:02d}"] = {**fuzz_loggers[CEMS_MN], "device": f"unit-f{i}"}
    settings = gateway_settings(read_timeout_s=30, frame_timeout_s=5, loggers=fuzz_loggers)
    rng = random.Random(212)
    now = datetime.now(UTC)
    share = FUZZ_FRAMES // CONNECTIONS
    parts: list[list[bytes]] = []
    for i in range(CONNECTIONS):
        part = []
        for _ in range(share):
            frame = _valid_but_hostile(rng, now, f"FUZZ{i:02d}")
            part.append(frame if rng.random() < 0.5 else _corrupt(rng, frame))
        parts.append(part)
    async with running_gateway(settings, processor=False) as gateway:
        assert gateway.port is not None
        port = gateway.port

        async def hostile(i: int, part: list[bytes]) -> bool:
            logger = SimulatedLogger("127.0.0.1", port, mn=f"FUZZ{i:02d}", pw=CEMS_PW, tz=TZ)
            await logger.connect()
            for k in range(0, len(part), 50):
                await logger.send_raw(b"".join(part[k : k + 50]))
            # Whatever came before, a whole frame after a CR LF is taken and answered.
            await logger.send_raw(b"\r\n")
            ok = await logger.upload("2011", now, {"a05001": 11.0}, timeout_s=60)
            await logger.close()
            return ok

        async with asyncio.timeout(120):
            answered = await asyncio.gather(*(hostile(i, p) for i, p in enumerate(parts)))
        assert answered == [True] * CONNECTIONS
        # Still serving a fresh logger at once.
        fresh = SimulatedLogger("127.0.0.1", port, mn=CEMS_MN, pw=CEMS_PW, tz=TZ)
        await fresh.connect()
        assert await fresh.upload("2011", now, {"a05001": 12.0}, timeout_s=10)
        await fresh.close()
        rejected = {
            s.labels["reason"]: s.value
            for m in gateway.metrics.rejected.collect()
            for s in m.samples
            if s.name.endswith("_total")
        }
    for reason in ("bad_crc", "bad_length", "bad_frame", "bad_segment", "unknown_cn", "schema",
                   "unknown_mn", "bad_password"):  # fmt: skip
        assert rejected.get(reason, 0) > 0, (reason, rejected)
    assert sum(rejected.values()) > FUZZ_FRAMES * 0.4


async def test_a_stuck_logger_blocks_no_one_and_connections_are_bounded(gateway_settings) -> None:
    settings = gateway_settings(max_connections=3, frame_timeout_s=1.0, read_timeout_s=30)
    now = datetime.now(UTC)
    async with running_gateway(settings, processor=False) as gateway:
        assert gateway.port is not None
        port = gateway.port
        stuck_r, stuck_w = await asyncio.open_connection("127.0.0.1", port)
        frame = build_frame(
            build_segment(qn="1", st="31", cn="2011", pw=CEMS_PW, mn=CEMS_MN, flag=5,
                          cp=data_cp("2011", now, {"a05001": 1.0}, TZ))
        )  # fmt: skip
        stuck_w.write(frame[:30])  # and then nothing: half a frame
        await stuck_w.drain()
        good = SimulatedLogger("127.0.0.1", port, mn=CEMS_MN, pw=CEMS_PW, tz=TZ)
        await good.connect()
        assert await good.upload("2011", now, {"a05001": 11.0}, timeout_s=5)
        _idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(10):
            while gateway.connections < 3:
                await asyncio.sleep(0.02)
        # Three open: a fourth is closed at once.
        extra_r, extra_w = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(5):
            assert await extra_r.read() == b""
        # The half frame is given up after frame_timeout_s and its connection closed.
        async with asyncio.timeout(5):
            assert await stuck_r.read() == b""
        assert await good.upload("2011", now + timedelta(seconds=10), {"a05001": 11.5})
        refused = gateway.metrics.refused_connections.collect()[0].samples[0].value
        for w in (stuck_w, idle_w, extra_w):
            w.close()
        await good.close()
    assert refused == 1
