"""The simulated device fleets: who exists, where they sit in the topic scheme, and their constants.

A :class:`Fleet` is every simulated device of one source kind. It is built once from a seeded
generator and then only read: names and topics follow :mod:`wire.topics`, channels follow the
``METRICS`` catalogue of :mod:`wire.schemas`, and each device gets fixed per-device
parameters (station altitude and urban enhancement, unit capacity class and its coal-consumption
benchmark, mine sensor location class and baseline...) as numpy arrays indexed by device.

The names are real places: the city GHG pilots in Baotou and Ordos (plan ch. 6 §2), coal-fired
plants of Inner Mongolia, the Shendong and Ordos coal mines and the Sulige / Daniudi gas fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from sensors_sim.arrays import FloatArray
from wire.schemas import MineLocation, SourceKind
from wire.topics import DeviceRef

__all__ = [
    "CALIBRATED_CHANNELS",
    "CEMS_UNIT_CLASSES",
    "CHANNELS",
    "CITY_STATIONS",
    "Fleet",
    "UnitClass",
    "build_fleet",
    "pressure_at_altitude_hpa",
]


# Channels each kind reports, in payload order, with the decimals a real logger sends.
CHANNELS: Mapping[SourceKind, tuple[tuple[str, int], ...]] = MappingProxyType(
    {
        SourceKind.CITY: (
            ("co2_ppm", 2),
            ("ch4_ppm", 4),
            ("wind_speed_m_s", 1),
            ("wind_dir_deg", 0),
            ("air_temp_c", 1),
            ("air_pressure_hpa", 1),
            ("rel_humidity_pct", 1),
        ),
        SourceKind.CEMS: (
            ("load_mw", 1),
            ("co2_pct_vol", 2),
            ("o2_pct_vol", 2),
            ("flow_m3_h", 0),
            ("flue_temp_c", 1),
            ("static_pressure_pa", 0),
            ("baro_pressure_pa", 0),
            ("moisture_pct_vol", 2),
        ),
        # A coal-mine sensor measures one gas; CO and air-velocity sensors are separate devices.
        SourceKind.MINE: (("ch4_pct_vol", 2),),
        SourceKind.LEAK: (
            ("ch4_ppm", 3),
            ("wind_speed_m_s", 1),
            ("wind_dir_deg", 0),
            ("air_temp_c", 1),
        ),
    }
)

# Channels that read calibration gas (flag C) while the device is calibrating.
CALIBRATED_CHANNELS: Mapping[SourceKind, frozenset[str]] = MappingProxyType(
    {
        SourceKind.CITY: frozenset({"co2_ppm", "ch4_ppm"}),
        SourceKind.CEMS: frozenset({"co2_pct_vol", "o2_pct_vol"}),
        SourceKind.MINE: frozenset({"ch4_pct_vol"}),
        SourceKind.LEAK: frozenset(),
    }
)

# Natural reporting intervals per kind (seconds); each device draws one.
_INTERVALS_S: Mapping[SourceKind, tuple[float, ...]] = MappingProxyType(
    {
        SourceKind.CITY: (5.0, 10.0, 15.0, 30.0, 60.0),
        SourceKind.CEMS: (10.0, 15.0, 30.0, 60.0),
        SourceKind.MINE: (2.0, 5.0, 10.0),  # the regulations ask for polling every <= 10 s
        SourceKind.LEAK: (1.0, 2.0, 5.0, 10.0),
    }
)

# (period, duration) of calibration runs per kind, seconds; period 0 means never.
_CALIBRATION_S: Mapping[SourceKind, tuple[float, float]] = MappingProxyType(
    {
        SourceKind.CITY: (12 * 3600.0, 300.0),  # target-gas run twice a day
        SourceKind.CEMS: (24 * 3600.0, 600.0),  # HJ 75 daily zero/span check
        SourceKind.MINE: (15 * 86400.0, 900.0),  # sensors calibrated every 15 days
        SourceKind.LEAK: (0.0, 0.0),
    }
)

# (network, site, altitude m, CO2 urban enhancement scale ppm, CH4 enhancement scale ppm)
CITY_STATIONS: tuple[tuple[str, str, float, float, float], ...] = (
    ("baotou", "kundulun", 1050.0, 30.0, 0.12),  # Baotou Steel's district
    ("ordos", "kangbashi", 1350.0, 8.0, 0.05),
    ("baotou", "qingshan", 1060.0, 22.0, 0.09),
    ("ordos", "dongsheng", 1460.0, 18.0, 0.10),
    ("baotou", "donghe", 1010.0, 18.0, 0.08),
    ("ordos", "ejin-horo", 1330.0, 12.0, 0.15),  # coal-mining banner
    ("baotou", "jiuyuan", 1030.0, 15.0, 0.07),
    ("ordos", "dalad", 1020.0, 15.0, 0.08),
    ("baotou", "xitu-gaoxin", 1040.0, 20.0, 0.08),
    ("ordos", "jungar", 1180.0, 16.0, 0.14),
    ("baotou", "shiguai", 1350.0, 8.0, 0.10),
    ("ordos", "otog", 1380.0, 6.0, 0.04),
    ("baotou", "baiyun-obo", 1550.0, 10.0, 0.04),
    ("ordos", "uxin", 1300.0, 6.0, 0.06),
)


@dataclass(frozen=True, slots=True)
class UnitClass:
    """A coal-fired unit class and its supply coal-consumption benchmark (plan ch. 3 §5 box 3)."""

    code: str
    capacity_mw: float
    coal_g_kwh: float
    wet_fgd: bool


CEMS_UNIT_CLASSES: tuple[UnitClass, ...] = (
    UnitClass("1000mw-usc", 1000.0, 285.0, True),
    UnitClass("600mw-usc", 600.0, 293.0, True),
    UnitClass("600mw-sc", 600.0, 300.0, True),
    UnitClass("600mw-sub", 600.0, 314.0, True),
    UnitClass("300mw-sc", 300.0, 308.0, True),
    UnitClass("300mw-sub", 300.0, 323.0, True),
    UnitClass("200mw-uhp", 200.0, 352.0, False),
    UnitClass("600mw-cfb-wet", 600.0, 306.0, True),
    UnitClass("600mw-cfb-air", 600.0, 325.0, False),
    UnitClass("300mw-cfb-wet", 300.0, 318.0, True),
    UnitClass("300mw-cfb-air", 300.0, 338.0, False),
)

# (company, plant, altitude m)
_PLANTS: tuple[tuple[str, str, float], ...] = (
    ("datang-nm", "tuoketuo", 1000.0),
    ("nmg-power", "dalate", 1020.0),
    ("nmg-power", "baotou-no2", 1050.0),
    ("guoneng-nm", "jungar", 1150.0),
    ("guoneng-nm", "shangdu", 1300.0),
    ("jingneng-nm", "daihai", 1220.0),
    ("huadian-nm", "baotou-donghua", 1040.0),
    ("beifang-power", "haibowan", 1100.0),
)

# (group, mine)
_MINES: tuple[tuple[str, str], ...] = (
    ("shendong", "bulianta"),
    ("shendong", "buertai"),
    ("shendong", "wulanmulun"),
    ("shendong", "shigetai"),
    ("shendong", "shangwan"),
    ("yitai", "suancigou"),
    ("zhongtian-hechuang", "menkeqing"),
    ("huineng", "madiliang"),
    ("ordos-coal", "nalinmiao"),
)

# Location class: (device prefix, share of sensors, normal CH4 baseline range in % vol).
# Baselines stay well under the alarm levels of DOMAIN.md: normal air raises no alarm.
_MINE_LOCATIONS: tuple[tuple[MineLocation, str, float, tuple[float, float]], ...] = (
    (MineLocation.WORKING_FACE, "t1", 0.30, (0.20, 0.45)),
    (MineLocation.UPPER_CORNER, "t0", 0.15, (0.30, 0.60)),
    (MineLocation.FACE_RETURN, "t2", 0.20, (0.25, 0.50)),
    (MineLocation.INTAKE_HIGH_GAS, "t3", 0.10, (0.02, 0.08)),
    (MineLocation.DRAINAGE, "t7", 0.10, (0.60, 1.50)),
    (MineLocation.MAIN_RETURN, "mr", 0.05, (0.15, 0.35)),
    (MineLocation.WING_RETURN, "wr", 0.05, (0.20, 0.40)),
    (MineLocation.OTHER, "ot", 0.05, (0.05, 0.20)),
)

# (company, site, altitude m)
_GAS_SITES: tuple[tuple[str, str, float], ...] = (
    ("changqing", "sulige-cs7", 1300.0),
    ("changqing", "sulige-cs3", 1290.0),
    ("changqing", "sulige-cpf1", 1320.0),
    ("huabei-oil", "daniudi-cs2", 1250.0),
    ("huabei-oil", "dongsheng-gas", 1400.0),
    ("xiqi-pipeline", "ordos-valve12", 1350.0),
)


def pressure_at_altitude_hpa(altitude_m: FloatArray) -> FloatArray:
    """Standard-atmosphere pressure at the given altitudes (hPa)."""
    return 1013.25 * (1.0 - 2.25577e-5 * altitude_m) ** 5.25588


@dataclass(frozen=True, slots=True)
class Fleet:
    """Every simulated device of one source kind, with its fixed per-device parameters.

    Attributes:
        kind: the source kind.
        refs: each device's place in the topic scheme.
        channels: metric names reported, in payload order.
        decimals: decimals sent per channel.
        calibrated: per channel, whether it reads calibration gas during a calibration run.
        interval_s: each device's natural reporting interval.
        locations: mine sensor location class per device (None for other kinds).
        params: named per-device parameter arrays, read by :mod:`sensors_sim.signals`.
        calibration_period_s: how often a device calibrates (0: never).
        calibration_duration_s: how long a calibration run lasts.
    """

    kind: SourceKind
    refs: tuple[DeviceRef, ...]
    channels: tuple[str, ...]
    decimals: tuple[int, ...]
    calibrated: tuple[bool, ...]
    interval_s: FloatArray
    locations: tuple[MineLocation | None, ...]
    params: Mapping[str, FloatArray]
    calibration_period_s: float
    calibration_duration_s: float

    @property
    def size(self) -> int:
        """Number of devices."""
        return len(self.refs)

    def topics(self, root: str) -> list[str]:
        """Each device's data topic under ``root``."""
        return [ref.data_topic(root) for ref in self.refs]


def _city(n: int, rng: np.random.Generator) -> tuple[list[DeviceRef], dict[str, FloatArray]]:
    idx = np.arange(n) % len(CITY_STATIONS)
    refs = []
    for i in range(n):
        network, site, *_ = CITY_STATIONS[i % len(CITY_STATIONS)]
        analyser = "picarro" if (i // len(CITY_STATIONS)) % 2 == 0 else "lgr"
        refs.append(
            DeviceRef(
                SourceKind.CITY, network, site, f"{analyser}-{i // len(CITY_STATIONS) + 1:02d}"
            )
        )
    table = np.array([s[2:] for s in CITY_STATIONS], dtype=np.float64)[idx]
    params = {
        "altitude_m": table[:, 0],
        "co2_enh_ppm": table[:, 1] * rng.uniform(0.8, 1.2, n),
        "ch4_enh_ppm": table[:, 2] * rng.uniform(0.8, 1.2, n),
        "co2_noise_ppm": rng.uniform(0.05, 0.3, n),
        "ch4_noise_ppm": rng.uniform(0.0005, 0.002, n),
        "wind_mean_m_s": rng.uniform(2.0, 4.5, n),
        "wind_dir_mean_deg": rng.normal(300.0, 20.0, n) % 360.0,  # north-westerly monsoon
        "co2_ref_ppm": rng.choice([400.0, 450.0], n),
        "ch4_ref_ppm": rng.choice([1.9, 2.5], n),
    }
    return refs, params


def _cems(n: int, rng: np.random.Generator) -> tuple[list[DeviceRef], dict[str, FloatArray]]:
    classes = rng.integers(0, len(CEMS_UNIT_CLASSES), n)
    refs = []
    for i in range(n):
        company, plant, _alt = _PLANTS[i % len(_PLANTS)]
        unit = CEMS_UNIT_CLASSES[classes[i]]
        refs.append(
            DeviceRef(SourceKind.CEMS, company, plant, f"u{i // len(_PLANTS) + 1}-{unit.code}")
        )
    alt = np.array([p[2] for p in _PLANTS])[np.arange(n) % len(_PLANTS)]
    wet = np.array([CEMS_UNIT_CLASSES[c].wet_fgd for c in classes], dtype=np.float64)
    params = {
        "capacity_mw": np.array([CEMS_UNIT_CLASSES[c].capacity_mw for c in classes]),
        "coal_g_kwh": np.array([CEMS_UNIT_CLASSES[c].coal_g_kwh for c in classes]),
        # Real units run a few per cent either side of their class benchmark.
        "performance": rng.uniform(0.97, 1.06, n),
        "wet_fgd": wet,
        "altitude_m": alt,
        "flue_temp_base_c": np.where(wet > 0, rng.uniform(45.0, 55.0, n), rng.uniform(115, 140, n)),
        "moisture_base_pct": np.where(
            wet > 0, rng.uniform(10.0, 14.0, n), rng.uniform(6.0, 8.5, n)
        ),
        "static_base_pa": rng.uniform(-400.0, 250.0, n),
        "dispatch_phase_h": rng.uniform(-1.5, 1.5, n),
        "min_load_frac": rng.uniform(0.40, 0.55, n),
    }
    return refs, params


def _mine(
    n: int, rng: np.random.Generator
) -> tuple[list[DeviceRef], dict[str, FloatArray], list[MineLocation | None]]:
    shares = np.array([loc[2] for loc in _MINE_LOCATIONS])
    which = rng.choice(len(_MINE_LOCATIONS), size=n, p=shares / shares.sum())
    refs = []
    locations: list[MineLocation | None] = []
    for i in range(n):
        group, mine = _MINES[i % len(_MINES)]
        loc, prefix, _share, _range = _MINE_LOCATIONS[which[i]]
        face, seq = divmod(i // len(_MINES), 100)
        refs.append(DeviceRef(SourceKind.MINE, group, mine, f"{prefix}-{face + 1:02d}{seq:02d}"))
        locations.append(loc)
    lo = np.array([_MINE_LOCATIONS[w][3][0] for w in which])
    hi = np.array([_MINE_LOCATIONS[w][3][1] for w in which])
    params = {
        "baseline_pct": rng.uniform(lo, hi),
        "shift_phase_h": rng.uniform(0.0, 8.0, n),
        "noise_pct": rng.uniform(0.003, 0.01, n),
        "cal_gas_pct": rng.choice([1.0, 2.0], n),
    }
    return refs, params, locations


def _leak(n: int, rng: np.random.Generator) -> tuple[list[DeviceRef], dict[str, FloatArray]]:
    refs = [
        DeviceRef(
            SourceKind.LEAK,
            _GAS_SITES[i % len(_GAS_SITES)][0],
            _GAS_SITES[i % len(_GAS_SITES)][1],
            f"ch4-{i // len(_GAS_SITES) + 1:02d}",
        )
        for i in range(n)
    ]
    params = {
        "altitude_m": np.array([s[2] for s in _GAS_SITES])[np.arange(n) % len(_GAS_SITES)],
        "background_ppm": rng.uniform(1.95, 2.08, n),
        "noise_ppm": rng.uniform(0.005, 0.02, n),
        "wind_mean_m_s": rng.uniform(2.5, 5.0, n),
        "wind_dir_mean_deg": rng.normal(300.0, 25.0, n) % 360.0,
    }
    return refs, params


def build_fleet(kind: SourceKind, n: int, rng: np.random.Generator) -> Fleet:
    """Build ``n`` devices of ``kind`` with reproducible names and parameters.

    Args:
        kind: the source kind.
        n: number of devices (names stay unique for any ``n``).
        rng: the seeded generator that draws per-device parameters.

    Returns:
        The fleet.
    """
    locations: list[MineLocation | None] = [None] * n
    if kind is SourceKind.CITY:
        refs, params = _city(n, rng)
    elif kind is SourceKind.CEMS:
        refs, params = _cems(n, rng)
    elif kind is SourceKind.MINE:
        refs, params, locations = _mine(n, rng)
    else:
        refs, params = _leak(n, rng)
    period, duration = _CALIBRATION_S[kind]
    # Calibration runs start at a device-specific phase so the fleet never calibrates at once.
    params["calibration_phase_s"] = rng.uniform(0.0, max(period, 1.0), n)
    channels = CHANNELS[kind]
    return Fleet(
        kind=kind,
        refs=tuple(refs),
        channels=tuple(c for c, _ in channels),
        decimals=tuple(d for _, d in channels),
        calibrated=tuple(c in CALIBRATED_CHANNELS[kind] for c, _ in channels),
        interval_s=rng.choice(np.array(_INTERVALS_S[kind]), n),
        locations=tuple(locations),
        params=MappingProxyType(params),
        calibration_period_s=period,
        calibration_duration_s=duration,
    )
