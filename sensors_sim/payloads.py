"""Wire encoding of simulated readings: valid JSON payloads and realistically malformed ones.

Valid payloads follow :mod:`wire.schemas` exactly (single readings, or a batch carrying a
device's channels and optionally several consecutive samples). :func:`malform` turns a valid
message into one of the mistakes real devices make, each with the reject reason the bridge
must give it, so tests and benchmarks know what to expect.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType

import numpy as np

from sensors_sim.arrays import BoolArray, FloatArray, Int64Array, IntArray
from sensors_sim.profiles import Fleet
from wire.schemas import Flag, RejectReason, SourceKind

__all__ = [
    "EXPECTED_REASON",
    "Malformation",
    "SimMessage",
    "encode_block",
    "iso_timestamps",
    "malform",
    "malformations_for",
]


class Malformation(StrEnum):
    """Ways simulated devices get a message wrong."""

    BROKEN_JSON = "broken_json"  # a logger cut off mid-write
    UNKNOWN_METRIC = "unknown_metric"  # a channel name the catalogue does not know
    WRONG_KIND_METRIC = "wrong_kind_metric"  # a unit that does not belong to the kind
    NAN_VALUE = "nan_value"  # the analyser produced NaN
    OUT_OF_RANGE = "out_of_range"  # a missing-value sentinel (-99999) sent as a value
    NAIVE_TIMESTAMP = "naive_timestamp"  # a clock without a UTC offset
    MISSING_LOCATION = "missing_location"  # a mine sensor not configured with its class
    BAD_TOPIC = "bad_topic"  # an operator typed the topic with capitals


EXPECTED_REASON: Mapping[Malformation, RejectReason] = MappingProxyType(
    {
        Malformation.BROKEN_JSON: RejectReason.MALFORMED_JSON,
        Malformation.UNKNOWN_METRIC: RejectReason.UNKNOWN_METRIC,
        Malformation.WRONG_KIND_METRIC: RejectReason.WRONG_KIND,
        Malformation.NAN_VALUE: RejectReason.OUT_OF_RANGE,
        Malformation.OUT_OF_RANGE: RejectReason.OUT_OF_RANGE,
        Malformation.NAIVE_TIMESTAMP: RejectReason.SCHEMA,
        Malformation.MISSING_LOCATION: RejectReason.MISSING_LOCATION,
        Malformation.BAD_TOPIC: RejectReason.BAD_TOPIC,
    }
)

# The name a misconfigured logger sends instead of the catalogue's, per metric.
_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "co2_ppm": "CO2",
        "ch4_ppm": "ch4",
        "ch4_pct_vol": "CH4_percent",
        "co2_pct_vol": "co2_pct",
        "load_mw": "load",
        "flow_m3_h": "flow",
    }
)
# A metric of the right gas in the wrong unit for the kind (or another kind's metric).
_WRONG_KIND: Mapping[str, str] = MappingProxyType(
    {
        "co2_ppm": "co2_pct_vol",
        "ch4_ppm": "ch4_pct_vol",
        "ch4_pct_vol": "ch4_ppm",
        "co2_pct_vol": "co2_ppm",
        "load_mw": "ch4_pct_vol",
    }
)
_FIRST_METRIC = re.compile(r'"metric":"([a-z0-9_]+)"')
_FIRST_VALUE = re.compile(r'"value":(-?[0-9.eE+-]+)')
_LOCATION = re.compile(r',"location":"[A-Za-z0-9_]+"')
_SENTINEL = "-99999"  # below every metric's physical range


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One MQTT message the simulator sends.

    Attributes:
        topic: the MQTT topic.
        payload: the raw payload.
        kind: the source kind of the sending device.
        readings: readings carried (items of a batch, 1 for a single reading).
        malformation: how it was malformed on purpose, or None for a valid message.
    """

    topic: str
    payload: bytes
    kind: SourceKind
    readings: int
    malformation: Malformation | None = None

    @property
    def valid(self) -> bool:
        """True when the bridge must accept it."""
        return self.malformation is None

    @property
    def expected_reason(self) -> RejectReason | None:
        """The reject reason the bridge must give, None for a valid message."""
        return None if self.malformation is None else EXPECTED_REASON[self.malformation]


def iso_timestamps(ts_us: Int64Array) -> list[str]:
    """Epoch microseconds as aware ISO 8601 UTC strings (``...T08:00:05.123456Z``)."""
    text = np.datetime_as_string(ts_us.astype("datetime64[us]"), unit="us")
    return [s + "Z" for s in text.tolist()]


def encode_block(
    fleet: Fleet,
    topics: Sequence[str],
    idx: IntArray,
    ts_us: Int64Array,
    values: FloatArray,
    calibrating: BoolArray,
    *,
    batch: bool,
) -> list[SimMessage]:
    """Encode the samples of some devices as valid messages.

    Args:
        fleet: the devices' fleet.
        topics: every device's data topic (indexed by device).
        idx: the devices sampled, shape (k,).
        ts_us: reading times in epoch microseconds, shape (k, samples).
        values: shape (k, samples, channels).
        calibrating: shape (k, samples); calibrated channels are flagged C.
        batch: one message per device (its channels and samples together) instead of one
            message per reading.

    Returns:
        The messages, per device in sample then channel order.
    """
    k, samples = ts_us.shape
    channels = fleet.channels
    fmts = [f"{{:.{d}f}}" for d in fleet.decimals]
    stamps = iso_timestamps(ts_us.reshape(-1))
    cal_channels = [i for i, c in enumerate(fleet.calibrated) if c]
    kind = fleet.kind
    out: list[SimMessage] = []
    for row in range(k):
        dev = int(idx[row])
        topic = topics[dev]
        loc = fleet.locations[dev]
        loc_part = f',"location":"{loc.value}"' if loc is not None else ""
        vals = values[row].tolist()
        if batch:
            items: list[str] = []
            for s in range(samples):
                cal = bool(calibrating[row, s])
                ts_part = f'"ts":"{stamps[row * samples + s]}",' if samples > 1 else ""
                for c, metric in enumerate(channels):
                    flag_part = ',"flag":"C"' if cal and c in cal_channels else ""
                    items.append(
                        f'{{{ts_part}"metric":"{metric}","value":{fmts[c].format(vals[s][c])}'
                        f"{flag_part}}}"
                    )
            head = f'"ts":"{stamps[row * samples]}",' if samples == 1 else ""
            payload = f'{{{head}"flag":"N"{loc_part},"readings":[{",".join(items)}]}}'
            out.append(SimMessage(topic, payload.encode(), kind, samples * len(channels)))
            continue
        for s in range(samples):
            cal = bool(calibrating[row, s])
            stamp = stamps[row * samples + s]
            for c, metric in enumerate(channels):
                flag = Flag.CALIBRATION.value if cal and c in cal_channels else "N"
                payload = (
                    f'{{"ts":"{stamp}","metric":"{metric}",'
                    f'"value":{fmts[c].format(vals[s][c])},"flag":"{flag}"{loc_part}}}'
                )
                out.append(SimMessage(topic, payload.encode(), kind, 1))
    return out


def malformations_for(kind: SourceKind) -> tuple[Malformation, ...]:
    """The malformations that make sense for a device of ``kind``."""
    return tuple(
        m for m in Malformation if kind is SourceKind.MINE or m is not Malformation.MISSING_LOCATION
    )


def malform(msg: SimMessage, how: Malformation) -> SimMessage:
    """Return ``msg`` broken in the given way (it must come from :func:`encode_block`).

    Args:
        msg: a valid message.
        how: the mistake to make.

    Returns:
        The malformed message, carrying ``how`` so its expected reject reason is known.
    """
    text = msg.payload.decode()
    topic = msg.topic
    if how is Malformation.BROKEN_JSON:
        text = text[: len(text) // 2]
    elif how is Malformation.UNKNOWN_METRIC:
        text = _FIRST_METRIC.sub(
            lambda m: f'"metric":"{_ALIASES.get(m[1], m[1].upper())}"', text, count=1
        )
    elif how is Malformation.WRONG_KIND_METRIC:
        text = _FIRST_METRIC.sub(
            lambda m: f'"metric":"{_WRONG_KIND.get(m[1], _other_kind_metric(msg.kind))}"',
            text,
            count=1,
        )
    elif how is Malformation.NAN_VALUE:
        text = _FIRST_VALUE.sub('"value":NaN', text, count=1)
    elif how is Malformation.OUT_OF_RANGE:
        text = _FIRST_VALUE.sub(f'"value":{_SENTINEL}', text, count=1)
    elif how is Malformation.NAIVE_TIMESTAMP:
        text = text.replace('Z"', '"')
    elif how is Malformation.MISSING_LOCATION:
        text = _LOCATION.sub("", text)
    else:
        parts = topic.split("/")
        # root may have several segments; the network sits 4 segments before "data".
        parts[-4] = parts[-4].capitalize() if parts[-4][0].isalpha() else "X" + parts[-4]
        topic = "/".join(parts)
    return replace(msg, topic=topic, payload=text.encode(), malformation=how)


def _other_kind_metric(kind: SourceKind) -> str:
    return "co2_pct_vol" if kind is not SourceKind.CEMS else "ch4_pct_vol"
