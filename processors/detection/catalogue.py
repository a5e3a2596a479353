"""The engine's detector and source-kind codes used in arrays; names and severities are
read from the detector catalogue, :mod:`wire.detectors`."""

from __future__ import annotations

import re
from enum import IntEnum

from wire.detectors import DETECTORS, DetectorSpec

__all__ = [
    "CEMS_PARAMS",
    "DETECTOR_NAMES",
    "DETECTOR_SEVERITY",
    "KIND_NAMES",
    "Detector",
    "Kind",
    "infer_kind",
    "infer_location",
    "parse_kind",
]


class Kind(IntEnum):
    """Source kind of a stream; decides which detectors run on it."""

    MINE = 0
    LEAK = 1
    CITY = 2
    CEMS = 3
    GENERIC = 4


KIND_NAMES: dict[Kind, str] = {
    Kind.MINE: "mine",
    Kind.LEAK: "leak",
    Kind.CITY: "city",
    Kind.CEMS: "cems",
    Kind.GENERIC: "generic",
}


class Detector(IntEnum):
    """Every detector the engine runs; the value is its code in event arrays.

    Names and codes are those of :data:`wire.detectors.DETECTORS` (upper-cased).
    """

    THRESHOLD_ALARM = 0
    POWER_CUT = 1
    RELEASE = 2
    PLUME = 3
    ANOMALY = 4
    SPIKE = 5
    STUCK = 6
    OUT_OF_RANGE = 7
    GAP = 8
    CO2_WITHOUT_FLOW = 9
    LOAD_WITHOUT_FLOW = 10
    INTENSITY_ABOVE_BENCHMARK = 11
    HOUR_INVALID = 12
    DRIFT = 13
    IMPLAUSIBLE_CO2_O2 = 14
    MASS_RATE_STEP = 15
    NEIGHBOUR_DRIFT = 16
    NO_DATA = 17
    # Published by the quarterly report (reports.warnings_out), never by the engine; listed
    # so the codes stay exactly the catalogue's.
    QUARTERLY_WARNING = 18


# Names and severities come from the catalogue in wire/, the contract every service reads;
# tests/test_detector_catalogue.py checks that the codes above are exactly its codes.
_SPECS: dict[int, DetectorSpec] = {spec.code: spec for spec in DETECTORS}
DETECTOR_NAMES: dict[Detector, str] = {d: _SPECS[d.value].name for d in Detector}
# Values of wire.events.Severity; faults are maintenance tickets, never pages.
DETECTOR_SEVERITY: dict[Detector, str] = {d: str(_SPECS[d.value].severity) for d in Detector}

_KIND_ALIASES = {
    "mine": Kind.MINE,
    "leak": Kind.LEAK,
    "leak_monitor": Kind.LEAK,
    "city": Kind.CITY,
    "cems": Kind.CEMS,
    "generic": Kind.GENERIC,
}

# The CEMS channels (ingest's CEMS metrics), in the column order CemsAggregator stores them.
CEMS_PARAMS = (
    "co2_pct_vol",
    "flow_m3_h",
    "flue_temp_c",
    "static_pressure_pa",
    "baro_pressure_pa",
    "moisture_pct_vol",
    "o2_pct_vol",
    "load_mw",
)
_CEMS_METRICS = frozenset(CEMS_PARAMS)
_CITY_METRICS = frozenset(
    {
        "co2_ppm",
        "ch4_ppb",
        "wind_speed_m_s",
        "wind_dir_deg",
        "air_temp_c",
        "air_pressure_hpa",
        "rel_humidity_pct",
    }
)
_MINE_METRICS = frozenset({"ch4_pct_vol", "co_ppm", "air_velocity_m_s"})
_LOCATION_RE = re.compile(r"^(t[0-8])(?:[-_]|$)")


def parse_kind(text: str) -> Kind:
    """Parse a kind name (``city``, ``cems``, ``mine``, ``leak``/``leak_monitor``, ``generic``).

    Raises:
        ValueError: the name is not a known kind.
    """
    try:
        return _KIND_ALIASES[text.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown kind {text!r}; one of {', '.join(_KIND_ALIASES)}") from None


def infer_kind(metric: str) -> Kind:
    """The source kind a metric name implies; unknown metrics are generic."""
    if metric in _MINE_METRICS:
        return Kind.MINE
    if metric in _CEMS_METRICS:
        return Kind.CEMS
    if metric in _CITY_METRICS:
        return Kind.CITY
    if metric == "ch4_ppm":
        return Kind.LEAK
    return Kind.GENERIC


def infer_location(device_id: str) -> str:
    """A mine sensor's location class from its device name (``t1-0302`` -> ``T1``), else other."""
    name = device_id.rsplit("/", 1)[-1].lower()
    match = _LOCATION_RE.match(name)
    if match:
        return match.group(1).upper()
    for cls in ("main_return", "wing_return"):
        if name.startswith(cls):
            return cls
    return "other"
