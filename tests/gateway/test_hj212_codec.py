"""The HJ 212-2017 frame codec against the standard's own example frames, and broken ones."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from gateway.mapping import CodeTable, Mapped, frame_payload
from wire.hj212 import (
    Frame,
    FrameError,
    FrameProblem,
    build_frame,
    crc16,
    parse_frame,
    parse_time,
    split_stream,
)
from wire.schemas import BatchPayload, SourceKind

# HJ 212-2017 appendix C: set the real-time data interval (CN 1062), CRC as printed there.
STANDARD_1062 = (
    b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;"
    b"MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80\r\n"
)
# A real-time upload (CN 2011) of an HJ 212-2017 logger, as published with its CRC.
PUBLISHED_2011 = (
    b"##0354QN=20230803171130538;ST=31;CN=2011;PW=123456;MN=88888880000001234567;Flag=5;"
    b"CP=&&DataTime=20230803165500;w01001-Rtd=0.000,w01001-Flag=N;w21003-Rtd=0.000,"
    b"w21003-Flag=N;w01018-Rtd=0.000,w01018-Flag=N;e01002-Rtd=0.000,e01002-Flag=N;"
    b"w01010-Rtd=0.000,w01010-Flag=N;e01001-Rtd=0.000,e01001-Flag=N;w01003-Rtd=0.000,"
    b"w01003-Flag=N;w21011-Rtd=0.000,w21011-Flag=N&&A141\r\n"
)
TZ = ZoneInfo("Asia/Shanghai")


def test_crc_of_the_standards_examples() -> None:
    """Appendix A's CRC gives the CRC printed with the standard's and a logger's frames."""
    for frame in (STANDARD_1062, PUBLISHED_2011):
        body = frame[6:-6]
        assert f"{crc16(body):04X}".encode() == frame[-6:-2]
        assert build_frame(body.decode()) == frame


def test_parse_the_standards_frames() -> None:
    frame = parse_frame(STANDARD_1062)
    assert isinstance(frame, Frame)
    assert (frame.qn, frame.st, frame.cn, frame.pw, frame.flag) == (
        "20160801085857223", "32", "1062", "100000", 5
    )  # fmt: skip
    assert frame.mn == "010000A8900016F000169DC0"
    assert frame.cp == {"RtdInterval": "30"}
    assert frame.wants_answer
    rt = parse_frame(PUBLISHED_2011)
    assert isinstance(rt, Frame)
    assert rt.cp["DataTime"] == "20230803165500"
    assert [p.code for p in rt.pollutants][:2] == ["w01001", "w21003"]
    assert rt.pollutants[0].fields == {"Rtd": "0.000", "Flag": "N"}


def _problem(raw: bytes) -> FrameProblem:
    result = parse_frame(raw)
    assert isinstance(result, FrameError), result
    return result.problem


def test_broken_frames_are_refused_with_their_problem() -> None:
    good = STANDARD_1062
    assert _problem(good.replace(b"1C80", b"1C81")) is FrameProblem.BAD_CRC
    assert _problem(good.replace(b"RtdInterval=30", b"RtdInterval=31")) is FrameProblem.BAD_CRC
    assert _problem(b"##0100" + good[6:]) is FrameProblem.BAD_LENGTH
    assert _problem(good[:-2]) is FrameProblem.BAD_FRAME
    assert _problem(b"#!" + good[2:]) is FrameProblem.BAD_FRAME
    assert _problem(build_frame("QN=1;ST=32;CN=2011;PW=1;MN=x;Flag=5;CP=&&a")) is (
        FrameProblem.BAD_SEGMENT
    )
    assert _problem(build_frame("QN=1;ST=32;PW=1;MN=x;Flag=5;CP=&&&&")) is FrameProblem.BAD_SEGMENT
    assert _problem(build_frame("QN=1;ST=32;CN=20x1;PW=1;MN=x;Flag=5;CP=&&&&")) is (
        FrameProblem.BAD_SEGMENT
    )


def test_split_stream_cuts_frames_junk_and_truncation() -> None:
    buffer = bytearray(b"junk" + STANDARD_1062 + PUBLISHED_2011[:50])
    items = list(split_stream(buffer))
    assert isinstance(items[0], FrameError)
    assert items[0].problem is FrameProblem.BAD_FRAME
    assert items[1] == STANDARD_1062
    assert len(items) == 2
    buffer.extend(PUBLISHED_2011[50:])
    assert list(split_stream(buffer)) == [PUBLISHED_2011]
    buffer.extend(STANDARD_1062[:30])
    last = list(split_stream(buffer, final=True))
    assert isinstance(last[0], FrameError)
    assert last[0].problem is FrameProblem.TRUNCATED
    assert not buffer


def test_a_frame_split_byte_by_byte_is_found() -> None:
    buffer = bytearray()
    found = []
    for byte in STANDARD_1062 * 2:
        buffer.append(byte)
        found += list(split_stream(buffer))
    assert found == [STANDARD_1062, STANDARD_1062]


def test_cems_packet_maps_to_the_wire_contract() -> None:
    segment = (
        "QN=20261125080000000;ST=31;CN=2011;PW=123456;MN=CEMS01;Flag=5;CP=&&"
        "DataTime=20261125080000;a05001-Rtd=11.8,a05001-Flag=N;a00000-Rtd=420.0,a00000-Flag=N;"
        "a01012-Rtd=121.5,a01012-Flag=N;a01013-Rtd=-0.35,a01013-Flag=N;"
        "a01014-Rtd=8.2,a01014-Flag=N;a19001-Rtd=6.1,a19001-Flag=C;a21026-Rtd=35.0&&"
    )
    frame = parse_frame(build_frame(segment))
    assert isinstance(frame, Frame)
    mapped = frame_payload(frame, SourceKind.CEMS, None, CodeTable(), TZ)
    assert isinstance(mapped, Mapped)
    assert mapped.skipped_codes == ("a21026",)  # SO2: not a metric of this project
    payload = BatchPayload.model_validate_json(mapped.payload)
    assert payload.ts == datetime(2026, 11, 25, 0, 0, tzinfo=UTC)
    got = {r.metric: (r.value, r.flag) for r in payload.readings}
    assert got["co2_pct_vol"] == (11.8, "N")
    assert got["flow_m3_h"] == (420.0 * 3600, "N")
    assert got["static_pressure_pa"] == (-350.0, "N")
    assert got["o2_pct_vol"] == (6.1, "C")
    assert set(got) == {
        "co2_pct_vol", "flow_m3_h", "flue_temp_c", "static_pressure_pa", "moisture_pct_vol",
        "o2_pct_vol",
    }  # fmt: skip


def test_datatime_is_local_time() -> None:
    assert parse_time("20261125080000", TZ) == datetime(2026, 11, 25, 0, 0, tzinfo=UTC)
    assert parse_time("20261325080000", TZ) is None
    assert parse_time("2026112508000", TZ) is None


def test_a_wrong_length_is_one_refused_frame_and_the_next_is_found() -> None:
    short = b"##0050" + STANDARD_1062[6:]
    long = b"##0200" + STANDARD_1062[6:]
    for bad in (short, long):
        buffer = bytearray(bad + STANDARD_1062)
        items = list(split_stream(buffer))
        assert [getattr(i, "problem", None) for i in items] == [FrameProblem.BAD_LENGTH, None]
        assert items[1] == STANDARD_1062
