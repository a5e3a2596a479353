"""HJ 212 data packets onto the wire contract: pollutant codes to metrics, frames to payloads.

A data packet (2011 real-time, 2051 minute, 2061 hourly, 2031 daily) becomes one batch payload
of the wire contract (:class:`~wire.schemas.BatchPayload`) for the logger's device, at its
``DataTime`` (the loggers' local time, ``gateway.timezone``), which then goes through exactly
the validation every MQTT message goes through (:func:`wire.validate.validate_messages`).

Values: ``-Rtd`` of a real-time packet, ``-Avg`` of the others; ``-Flag`` is the reading's
HJ 212 data flag (N when absent). Codes (HJ 212-2017 appendix B, HJ 524) and their units:

====== =============================== ========================================== =========
code   what                            metric (kind)                              factor
====== =============================== ========================================== =========
a05001 CO2                             co2_pct_vol (cems, % sent), co2_ppm (city) 1
a05002 CH4                             ch4_pct_vol (mine), ch4_ppm (city, leak)   1
a00000 flue-gas flow, m³/s             flow_m3_h (cems)                           3600
a01012 flue-gas temperature, °C        flue_temp_c (cems)                         1
a01013 flue-gas pressure, kPa          static_pressure_pa (cems)                  1000
a01014 flue-gas moisture, %            moisture_pct_vol (cems)                    1
a19001 O2, %                           o2_pct_vol (cems)                          1
a01006 atmospheric pressure, kPa       baro_pressure_pa (cems) / air_pressure_hpa 1000 / 10
a01001 air temperature, °C             air_temp_c (city, leak)                    1
a01002 relative humidity, %            rel_humidity_pct (city, leak)              1
a01007 wind speed, m/s                 wind_speed_m_s (city, leak)                1
a01008 wind direction, °               wind_dir_deg (city, leak)                  1
====== =============================== ========================================== =========

``gateway.codes`` adds or replaces codes (a logger reporting CO2 in mg/m³, the unit load on a
site code). A code with no metric for the logger's kind (SO2, NOx, dust…) is skipped and
counted, not refused: the packet's greenhouse-gas readings must not be lost for it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo

from core.settings import Hj212Code
from wire.hj212 import Frame, parse_time
from wire.schemas import MineLocation, SourceKind

__all__ = [
    "AVERAGE_CNS",
    "DEFAULT_CODES",
    "REALTIME_CN",
    "CodeTable",
    "Mapped",
    "Unmappable",
    "frame_payload",
]

REALTIME_CN = "2011"
AVERAGE_CNS = frozenset({"2031", "2051", "2061"})
_C, _E, _M, _L = SourceKind.CITY, SourceKind.CEMS, SourceKind.MINE, SourceKind.LEAK


@dataclass(frozen=True, slots=True)
class _Code:
    metric: str
    scale: float


def _by_kind(**per_kind: tuple[str, float]) -> dict[SourceKind, _Code]:
    return {SourceKind(k): _Code(m, s) for k, (m, s) in per_kind.items()}


DEFAULT_CODES: Mapping[str, Mapping[SourceKind, _Code]] = {
    "a05001": _by_kind(cems=("co2_pct_vol", 1.0), city=("co2_ppm", 1.0)),
    "a05002": _by_kind(mine=("ch4_pct_vol", 1.0), city=("ch4_ppm", 1.0), leak=("ch4_ppm", 1.0)),
    "a00000": _by_kind(cems=("flow_m3_h", 3600.0)),
    "a01012": _by_kind(cems=("flue_temp_c", 1.0)),
    "a01013": _by_kind(cems=("static_pressure_pa", 1000.0)),
    "a01014": _by_kind(cems=("moisture_pct_vol", 1.0)),
    "a19001": _by_kind(cems=("o2_pct_vol", 1.0)),
    "a01006": _by_kind(
        cems=("baro_pressure_pa", 1000.0),
        city=("air_pressure_hpa", 10.0),
        leak=("air_pressure_hpa", 10.0),
    ),
    "a01001": _by_kind(city=("air_temp_c", 1.0), leak=("air_temp_c", 1.0)),
    "a01002": _by_kind(city=("rel_humidity_pct", 1.0), leak=("rel_humidity_pct", 1.0)),
    "a01007": _by_kind(city=("wind_speed_m_s", 1.0), leak=("wind_speed_m_s", 1.0)),
    "a01008": _by_kind(city=("wind_dir_deg", 1.0), leak=("wind_dir_deg", 1.0)),
}


class CodeTable:
    """The built-in pollutant codes with ``gateway.codes`` on top."""

    def __init__(self, extra: Mapping[str, Hj212Code] | None = None) -> None:
        table = {code: dict(kinds) for code, kinds in DEFAULT_CODES.items()}
        for code, spec in (extra or {}).items():
            kinds = spec.kinds or tuple(SourceKind)
            table[code] = {k: _Code(spec.metric, spec.scale) for k in kinds}
        self._table = table

    def lookup(self, code: str, kind: SourceKind) -> tuple[str, float] | None:
        """(metric, factor) of ``code`` for a source of ``kind``, or None."""
        entry = self._table.get(code, {}).get(kind)
        return None if entry is None else (entry.metric, entry.scale)


@dataclass(frozen=True, slots=True)
class Mapped:
    """A data packet as a wire-contract payload, and the codes it skipped."""

    payload: bytes
    readings: int
    skipped_codes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unmappable:
    """A data packet that cannot be a payload (no DataTime, a value that is no number)."""

    detail: str


def frame_payload(
    frame: Frame,
    kind: SourceKind,
    location: MineLocation | None,
    codes: CodeTable,
    tz: tzinfo,
) -> Mapped | Unmappable:
    """The wire-contract JSON payload of a data packet (2011, 2031, 2051, 2061).

    Returns:
        :class:`Mapped` (possibly with no readings, when no code maps) or :class:`Unmappable`.
    """
    data_time = frame.cp.get("DataTime")
    if data_time is None:
        return Unmappable(f"CN {frame.cn} packet without DataTime")
    ts = parse_time(data_time, tz)
    if ts is None:
        return Unmappable(f"DataTime {data_time[:20]!r} is not YYYYMMDDhhmmss")
    field = "Rtd" if frame.cn == REALTIME_CN else "Avg"
    readings: list[dict[str, object]] = []
    skipped: list[str] = []
    for pol in frame.pollutants:
        text = pol.fields.get(field)
        if text is None:
            continue
        target = codes.lookup(pol.code, kind)
        if target is None:
            skipped.append(pol.code)
            continue
        try:
            value = float(text)
        except ValueError:
            return Unmappable(f"{pol.code}-{field}={text[:20]!r} is not a number")
        if not math.isfinite(value):
            return Unmappable(f"{pol.code}-{field}={text[:20]!r} is not a finite number")
        metric, scale = target
        reading: dict[str, object] = {"metric": metric, "value": value * scale}
        flag = pol.fields.get("Flag")
        if flag is not None:
            reading["flag"] = flag
        readings.append(reading)
    body: dict[str, object] = {"ts": ts.isoformat(), "readings": readings}
    if location is not None:
        body["location"] = location.value
    return Mapped(json.dumps(body).encode(), len(readings), tuple(skipped))
