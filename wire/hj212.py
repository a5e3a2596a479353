"""HJ 212-2017 frames: the CRC, parsing and building, pure (no I/O).

A frame (HJ 212-2017 §6.3) is ASCII::

    ## | data-segment length, 4 decimal digits | data segment | CRC, 4 hex digits | CR LF

The CRC (appendix A) covers the data segment only: register 0xFFFF; for each byte the
register becomes ``(reg >> 8) ^ byte``, then eight times: shift right, and XOR 0xA001 when
the bit shifted out was 1. It is written as four upper-case hex digits.

The data segment is ``QN=…;ST=…;CN=…;PW=…;MN=…;Flag=…;[PNUM=…;PNO=…;]CP=&&…&&``. The CP
region holds fields separated by ``;`` (one pollutant's fields by ``,``), each
``name=value``; a pollutant's fields are ``code-Rtd``, ``code-Avg``, ``code-Min``,
``code-Max``, ``code-Cou``, ``code-Flag``… ``Flag`` is a bit field: bit 0 (A) asks for an
answer, bit 1 (D) says the packet carries PNUM/PNO (a split packet), bits 2-7 the protocol
version (1 = HJ 212-2017, so 4 and 5 are the usual values).

:func:`parse_frame` never raises on bad input: it returns a :class:`FrameError` with a code
and a reason. :func:`split_stream` finds frames in a byte stream (a TCP connection or a text
dump), with a bounded frame size.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

__all__ = [
    "DATA_CNS",
    "FLAG_ACK",
    "FLAG_SPLIT",
    "FLAG_V2017",
    "MAX_DATA_LEN",
    "MAX_FRAME_BYTES",
    "Frame",
    "FrameError",
    "FrameProblem",
    "Pollutant",
    "answer_segment",
    "build_frame",
    "build_segment",
    "crc16",
    "format_time",
    "history_request",
    "new_qn",
    "parse_frame",
    "parse_time",
    "split_stream",
]

HEADER = b"##"
TRAILER = b"\r\n"
# The length field has four digits: a data segment is at most 9999 characters.
MAX_DATA_LEN = 9999
MAX_FRAME_BYTES = len(HEADER) + 4 + MAX_DATA_LEN + 4 + len(TRAILER)
FLAG_ACK = 0b1
FLAG_SPLIT = 0b10
FLAG_V2017 = 0b100
# Data uploads of HJ 212-2017 (§6.6, table 8): answered with a data answer (9014).
DATA_CNS = frozenset({"2011", "2021", "2031", "2041", "2051", "2061", "2081", "3020"})
_TIME_FORMAT = "%Y%m%d%H%M%S"


def crc16(data: bytes) -> int:
    """The HJ 212-2017 CRC16 (appendix A) of ``data`` (the data segment)."""
    reg = 0xFFFF
    for byte in data:
        reg = (reg >> 8) ^ byte
        for _ in range(8):
            carry = reg & 1
            reg >>= 1
            if carry:
                reg ^= 0xA001
    return reg


class FrameProblem(enum.StrEnum):
    """Why a frame is refused (each becomes a dead-letter reason)."""

    BAD_FRAME = "bad_frame"  # no ## header, length not 4 digits, no CR LF, not ASCII
    BAD_LENGTH = "bad_length"  # the length field disagrees with the data segment
    TRUNCATED = "truncated"  # the connection ended inside a frame
    BAD_CRC = "bad_crc"
    BAD_SEGMENT = "bad_segment"  # a required field missing, CP not &&…&&


@dataclass(frozen=True, slots=True)
class FrameError:
    """A refused frame: the problem, a detail for people, the raw bytes."""

    problem: FrameProblem
    detail: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class Pollutant:
    """One pollutant's fields of a CP region (``Rtd``, ``Avg``, ``Flag``… by suffix)."""

    code: str
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class Frame:
    """A parsed frame: the header fields and the CP region, split."""

    qn: str | None
    st: str
    cn: str
    pw: str
    mn: str
    flag: int
    cp: dict[str, str]
    pollutants: tuple[Pollutant, ...]
    pnum: int | None = None
    pno: int | None = None
    raw: bytes = field(default=b"", repr=False)

    @property
    def wants_answer(self) -> bool:
        """Bit A of Flag: the sender waits for an answer."""
        return bool(self.flag & FLAG_ACK)


def format_time(dt: datetime, tz: tzinfo) -> str:
    """``YYYYMMDDhhmmss`` of ``dt`` in the loggers' time zone."""
    return dt.astimezone(tz).strftime(_TIME_FORMAT)


def parse_time(text: str, tz: tzinfo) -> datetime | None:
    """An HJ 212 time (``YYYYMMDDhhmmss``, local time ``tz``) or None when it is not one."""
    if len(text) != 14 or not text.isdigit():
        return None
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=tz)
    except ValueError:
        return None


def new_qn(now: datetime, tz: tzinfo) -> str:
    """A request number: the time to the millisecond (``YYYYMMDDhhmmssZZZ``)."""
    local = now.astimezone(tz)
    return local.strftime(_TIME_FORMAT) + f"{local.microsecond // 1000:03d}"


def build_frame(segment: str) -> bytes:
    """The whole frame around a data segment (length, CRC, CR LF).

    Raises:
        ValueError: the segment is longer than the length field can say, or not ASCII.
    """
    data = segment.encode("ascii")
    if len(data) > MAX_DATA_LEN:
        raise ValueError(f"data segment of {len(data)} characters; at most {MAX_DATA_LEN}")
    return b"%s%04d%s%04X%s" % (HEADER, len(data), data, crc16(data), TRAILER)


def build_segment(*, qn: str | None, st: str, cn: str, pw: str, mn: str, flag: int, cp: str) -> str:
    """A data segment from its fields (``cp`` without the ``&&`` delimiters)."""
    head = f"QN={qn};" if qn is not None else ""
    return f"{head}ST={st};CN={cn};PW={pw};MN={mn};Flag={flag};CP=&&{cp}&&"


def split_stream(buffer: bytearray, *, final: bool = False) -> Iterator[bytes | FrameError]:
    """Take the complete frames (and refused junk) off the front of ``buffer``.

    Bytes before a ``##`` are junk (reported once as a bad frame); a frame whose length field
    is not four digits is refused and scanning resumes after its ``##``. A frame is complete
    when its length says so (the CR LF is checked by :func:`parse_frame`). What is left is a
    frame still arriving; with ``final`` (the connection ended) it is reported as truncated.

    Args:
        buffer: received bytes; consumed frames are deleted from it.
        final: no more bytes will come.

    Yields:
        Each whole frame's bytes, or a :class:`FrameError`.
    """
    while buffer:
        start = buffer.find(HEADER)
        if start != 0:
            cut = len(buffer) if start < 0 else start
            if start < 0 and buffer.endswith(b"#") and not final:
                cut -= 1  # a header may be split across reads
            if cut == 0:
                return
            junk = bytes(buffer[:cut])
            del buffer[:cut]
            yield FrameError(FrameProblem.BAD_FRAME, "bytes outside a ## frame", junk)
            continue
        if len(buffer) < 6:
            break
        digits = bytes(buffer[2:6])
        if not digits.isdigit():
            raw = bytes(buffer[:6])
            del buffer[:2]
            yield FrameError(
                FrameProblem.BAD_FRAME, f"length field {digits!r} is not four digits", raw
            )
            continue
        total = 6 + int(digits) + 4 + len(TRAILER)
        if len(buffer) < total:
            # A frame still arriving; a wrong (too large) length shows as a frame that never
            # ends: the next ## inside it is where the sender started again.
            nxt = _restart(buffer)
            if nxt > 0:
                raw = bytes(buffer[:nxt])
                del buffer[:nxt]
                yield FrameError(
                    FrameProblem.BAD_LENGTH,
                    f"length field says {int(digits)}, a new frame starts after {nxt - 6}",
                    raw,
                )
                continue
            break
        if buffer[total - 2 : total] != TRAILER:
            # The frame does not end where its length says: refuse it up to its own end (the
            # first CR LF, or the next header), so its tail is not mistaken for junk.
            end = buffer.find(TRAILER, 6)
            nxt = buffer.find(HEADER, 2)
            if end >= 0 and (nxt < 0 or end < nxt):
                cut = end + len(TRAILER)
            elif nxt > 0:
                cut = nxt
            elif final or len(buffer) >= MAX_FRAME_BYTES:
                cut = len(buffer)
            else:
                break
            raw = bytes(buffer[:cut])
            del buffer[:cut]
            yield FrameError(
                FrameProblem.BAD_LENGTH,
                f"length field says {int(digits)}, the frame ends after {cut - 12}",
                raw,
            )
            continue
        raw = bytes(buffer[:total])
        del buffer[:total]
        yield raw
    if final and buffer:
        raw = bytes(buffer)
        buffer.clear()
        yield FrameError(
            FrameProblem.TRUNCATED, f"connection ended {len(raw)} bytes into a frame", raw
        )


def _restart(buffer: bytearray) -> int:
    """Where a sender started a new frame inside one whose length never came: the first
    ``##dddd`` after a CR LF (-1 when there is none yet)."""
    crlf = buffer.find(TRAILER, 6)
    while crlf >= 0:
        at = buffer.find(HEADER, crlf + len(TRAILER))
        if at < 0:
            return -1
        if len(buffer) < at + 6:
            return -1
        if bytes(buffer[at + 2 : at + 6]).isdigit():
            return at
        crlf = buffer.find(TRAILER, at + 2)
    return -1


def parse_frame(raw: bytes) -> Frame | FrameError:
    """Check and split one whole frame (as :func:`split_stream` yields it). Never raises."""

    def refuse(problem: FrameProblem, detail: str) -> FrameError:
        return FrameError(problem, detail, raw)

    if not raw.startswith(HEADER) or len(raw) < 12:
        return refuse(FrameProblem.BAD_FRAME, "not a ## frame")
    if not raw.endswith(TRAILER):
        # A wrong length field puts the CRC and CR LF elsewhere.
        if TRAILER in raw[6:]:
            return refuse(FrameProblem.BAD_LENGTH, "length field disagrees with the frame end")
        return refuse(FrameProblem.BAD_FRAME, "frame does not end with CR LF")
    digits = raw[2:6]
    if not digits.isdigit():
        return refuse(FrameProblem.BAD_FRAME, f"length field {digits!r} is not four digits")
    length = int(digits)
    body = raw[6:-6]
    if len(body) != length:
        return refuse(
            FrameProblem.BAD_LENGTH,
            f"length field says {length}, the data segment has {len(body)} characters",
        )
    crc_text = raw[-6:-2]
    try:
        got = int(crc_text.decode("ascii"), 16)
    except (UnicodeDecodeError, ValueError):
        return refuse(FrameProblem.BAD_CRC, f"CRC field {crc_text!r} is not four hex digits")
    want = crc16(body)
    if got != want:
        return refuse(FrameProblem.BAD_CRC, f"CRC {got:04X} sent, {want:04X} computed")
    try:
        segment = body.decode("ascii")
    except UnicodeDecodeError:
        return refuse(FrameProblem.BAD_FRAME, "data segment is not ASCII")
    return _parse_segment(segment, raw)


def _parse_segment(segment: str, raw: bytes) -> Frame | FrameError:
    head, sep, rest = segment.partition("CP=&&")
    if not sep or not rest.endswith("&&"):
        return FrameError(FrameProblem.BAD_SEGMENT, "no CP=&&…&& region", raw)
    cp_text = rest[:-2]
    fields: dict[str, str] = {}
    for part in head.split(";"):
        if not part:
            continue
        name, eq, value = part.partition("=")
        if not eq:
            return FrameError(FrameProblem.BAD_SEGMENT, f"field {part[:40]!r} has no =", raw)
        fields[name] = value
    for name in ("ST", "CN", "MN", "Flag"):
        if name not in fields:
            return FrameError(FrameProblem.BAD_SEGMENT, f"no {name} field", raw)
    cn, flag_text = fields["CN"], fields["Flag"]
    if len(cn) != 4 or not cn.isdigit():
        return FrameError(FrameProblem.BAD_SEGMENT, f"CN {cn[:20]!r} is not four digits", raw)
    if not flag_text.isdigit() or int(flag_text) > 255:
        return FrameError(FrameProblem.BAD_SEGMENT, f"Flag {flag_text[:20]!r} is not 0-255", raw)
    pnum = pno = None
    if "PNUM" in fields or "PNO" in fields:
        if not (fields.get("PNUM", "").isdigit() and fields.get("PNO", "").isdigit()):
            return FrameError(FrameProblem.BAD_SEGMENT, "PNUM/PNO not numbers", raw)
        pnum, pno = int(fields["PNUM"]), int(fields["PNO"])
    cp: dict[str, str] = {}
    pollutants: dict[str, dict[str, str]] = {}
    for group in cp_text.split(";"):
        for item in group.split(","):
            if not item:
                continue
            name, eq, value = item.partition("=")
            if not eq:
                return FrameError(FrameProblem.BAD_SEGMENT, f"CP item {item[:40]!r} has no =", raw)
            code, dash, suffix = name.partition("-")
            if dash and code and suffix:
                pollutants.setdefault(code, {})[suffix] = value
            else:
                cp[name] = value
    return Frame(
        qn=fields.get("QN"),
        st=fields["ST"],
        cn=cn,
        pw=fields.get("PW", ""),
        mn=fields["MN"],
        flag=int(flag_text),
        cp=cp,
        pollutants=tuple(Pollutant(c, f) for c, f in pollutants.items()),
        pnum=pnum,
        pno=pno,
        raw=raw,
    )


def answer_segment(frame: Frame, cn: str, cp: str = "", *, flag: int = FLAG_V2017) -> str:
    """The segment of an answer to ``frame`` (same QN, ST 91 system interaction)."""
    return build_segment(qn=frame.qn, st="91", cn=cn, pw=frame.pw, mn=frame.mn, flag=flag, cp=cp)


def history_request(
    *, qn: str, st: str, cn: str, pw: str, mn: str, begin: datetime, end: datetime, tz: tzinfo
) -> bytes:
    """A history-data request (CN 2031/2051/2061 with BeginTime/EndTime), answer asked for."""
    cp = f"BeginTime={format_time(begin, tz)};EndTime={format_time(end, tz)}"
    segment = build_segment(qn=qn, st=st, cn=cn, pw=pw, mn=mn, flag=FLAG_V2017 | FLAG_ACK, cp=cp)
    return build_frame(segment)
