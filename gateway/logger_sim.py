"""A simulated HJ 212-2017 data logger: for trying the gateway, its tests and its benchmark.

It connects over TCP, uploads real-time packets (2011, answer asked for) and waits for the
data answer (9014), and answers the gateway's history requests (2031/2051/2061 with
BeginTime/EndTime) as the standard's appendix C shows: a request answer (9011, QnRtn=1),
the history packets (answer asked for, each waited for; with ``history_window`` above 1,
that many sent ahead of their answers), and the execution result (9012, ExeRtn=1) once all
were answered. Its history is whatever ``history(cn, begin, end)`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

from wire.hj212 import (
    FLAG_ACK,
    FLAG_V2017,
    Frame,
    build_frame,
    build_segment,
    format_time,
    new_qn,
    parse_frame,
    parse_time,
    split_stream,
)

__all__ = ["HistoryRecord", "SimulatedLogger", "data_cp"]

HistoryRecord = tuple[datetime, Mapping[str, float]]
"""One stored record of a logger: its DataTime and value per pollutant code."""

ANSWER_TIMEOUT_S = 10.0


def data_cp(cn: str, data_time: datetime, values: Mapping[str, float], tz: tzinfo) -> str:
    """The CP region of a data packet: ``-Rtd`` for 2011, ``-Avg`` for the others."""
    suffix = "Rtd" if cn == "2011" else "Avg"
    parts = [f"DataTime={format_time(data_time, tz)}"]
    parts += [f"{code}-{suffix}={value:.4f},{code}-Flag=N" for code, value in values.items()]
    return ";".join(parts)


class SimulatedLogger:
    """One data logger on one TCP connection to the gateway."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        mn: str,
        pw: str,
        tz: tzinfo,
        st: str = "31",
        history: Callable[[str, datetime, datetime], Sequence[HistoryRecord]] | None = None,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
        history_window: int = 1,
    ) -> None:
        self.host, self.port, self.mn, self.pw, self.st, self.tz = host, port, mn, pw, st, tz
        self._history = history or (lambda _cn, _b, _e: [])
        self.answer_timeout_s = answer_timeout_s
        self.history_window = history_window  # history packets sent ahead of their answers
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: dict[str, asyncio.Future[Frame]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._qn_last = ""
        self.requests: list[Frame] = []  # history requests received
        self.backfilled = 0  # history packets answered by the gateway
        self.answers: list[str] = []  # QN of every data answer (9014) and notification answer

    async def connect(self) -> None:
        """Open the connection and start reading what the gateway sends."""
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._spawn(self._read_loop())

    async def close(self, *, abort: bool = False) -> None:
        """Close the connection (``abort``: drop it at once, as a cut line does)."""
        writer = self._writer
        self._writer = None
        if writer is not None:
            if abort:
                writer.transport.abort()
            else:
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for fut in self._waiting.values():
            if not fut.done():
                fut.cancel()
        self._waiting.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _qn(self) -> str:
        qn = new_qn(datetime.now(UTC), self.tz)
        if qn <= self._qn_last:
            qn = str(int(self._qn_last) + 1)
        self._qn_last = qn
        return qn

    def frame(self, cn: str, cp: str, *, qn: str | None = None, flag: int | None = None) -> bytes:
        """A frame of this logger."""
        flag = FLAG_V2017 | FLAG_ACK if flag is None else flag
        return build_frame(
            build_segment(
                qn=qn or self._qn(), st=self.st, cn=cn, pw=self.pw, mn=self.mn, flag=flag, cp=cp
            )
        )

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (malformed frames, fuzz)."""
        assert self._writer is not None, "not connected"
        self._writer.write(data)
        await self._writer.drain()

    async def upload(
        self,
        cn: str,
        data_time: datetime,
        values: Mapping[str, float],
        *,
        qn: str | None = None,
        wait: bool = True,
        timeout_s: float = ANSWER_TIMEOUT_S,
    ) -> bool:
        """Send a data packet; with ``wait``, True when the gateway answered it (9014)."""
        qn = qn or self._qn()
        data = self.frame(cn, data_cp(cn, data_time, values, self.tz), qn=qn)
        if not wait:
            await self.send_raw(data)
            return False
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiting[qn] = fut
        try:
            await self.send_raw(data)
            async with asyncio.timeout(timeout_s):
                await fut
        except (TimeoutError, asyncio.CancelledError, ConnectionError):
            return False
        finally:
            self._waiting.pop(qn, None)
        return True

    async def _read_loop(self) -> None:
        reader = self._reader
        assert reader is not None
        buffer = bytearray()
        while True:
            data = await reader.read(65_536)
            if not data:
                return
            buffer.extend(data)
            for item in split_stream(buffer):
                if not isinstance(item, bytes):
                    continue
                frame = parse_frame(item)
                if isinstance(frame, Frame):
                    self._dispatch(frame)

    def _dispatch(self, frame: Frame) -> None:
        if frame.cn in {"9014", "9013"}:
            self.answers.append(frame.qn or "")
            fut = self._waiting.get(frame.qn or "")
            if fut is not None and not fut.done():
                fut.set_result(frame)
        elif frame.cn in {"2031", "2051", "2061"} and "BeginTime" in frame.cp:
            self.requests.append(frame)
            self._spawn(self._answer_history(frame))

    async def _send_history(self, cn: str, records: Sequence[HistoryRecord]) -> bool:
        """Upload history, ``history_window`` packets ahead of their answers; True: all answered."""
        window = asyncio.Semaphore(self.history_window)
        failed = False

        async def one(data_time: datetime, values: Mapping[str, float]) -> None:
            nonlocal failed
            try:
                if await self.upload(
                    cn, data_time, values, qn=self._qn(), timeout_s=self.answer_timeout_s
                ):
                    self.backfilled += 1
                else:
                    failed = True
            except (AssertionError, ConnectionError):  # closed meanwhile
                failed = True
            finally:
                window.release()

        sending: list[asyncio.Task[None]] = []
        for data_time, values in records:
            await window.acquire()
            if failed:
                break
            sending.append(asyncio.create_task(one(data_time, values)))  # sent in this order
        await asyncio.gather(*sending)
        return not failed

    async def _answer_history(self, request: Frame) -> None:
        begin = parse_time(request.cp.get("BeginTime", ""), self.tz)
        end = parse_time(request.cp.get("EndTime", ""), self.tz)
        qn = request.qn or self._qn()
        await self.send_raw(self.frame("9011", "QnRtn=1", qn=qn, flag=FLAG_V2017))
        ok = begin is not None and end is not None
        if ok:
            assert begin is not None
            assert end is not None
            ok = await self._send_history(request.cn, self._history(request.cn, begin, end))
        result = "ExeRtn=1" if ok else "ExeRtn=2"
        with contextlib.suppress(ConnectionError, AssertionError):
            await self.send_raw(self.frame("9012", result, qn=qn, flag=FLAG_V2017))
