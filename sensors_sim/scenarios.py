"""Labelled scenario sets: long-format readings CSV plus event labels, for backtesting detection.

``generate_scenarios(out_dir, seed)`` writes

- ``readings.csv``: ``time,device_id,metric,value,flag,kind,location`` in time order;
- ``labels.csv``: ``device_id,start,end,label,expect,magnitude,reach`` where ``expect`` is
  ``detect`` (an event the detectors must find) or ``quiet`` (a window where nothing may
  page, e.g. a calibration), and ``reach`` is when the injected signal first stood
  ``REACH_RISE`` above baseline (the reference for detection delay).

What is injected (sizes and shapes drawn from the seed):

- mines (``ch4_pct_vol``, % vol, every 10 s): gas releases as steps and ramps of 0.2-2 %,
  outbursts (a fast rise to several % and a slow decay), sensor faults (stuck value,
  single-sample spikes, dropouts to a negative value, slow drift);
- oil and gas sites (``ch4_ppm``, every 10 s): releases of 2-50 ppm with plume intermittency;
- city stations (``co2_ppm``, every 60 s): urban plumes and calibration-gas runs flagged ``C``;
- CEMS units (eight channels every 30 s): calibration periods flagged ``C`` and flow-meter
  failures (flow reads zero while CO2 and load stay normal).
- optionally (``neighbour_stations``) a city network, ``wuhai``, whose stations share one
  regional signal, one of them drifting several ppm over hours while the others do not
  (``fault_neighbour_drift``: found only by comparing stations).

Background has noise plus slow correlated wander, so false alarms are measured on
something less kind than white noise; some sensors of each kind get no events at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["REACH_RISE", "ScenarioConfig", "ScenarioSummary", "generate_scenarios"]

F64 = npt.NDArray[np.float64]
NS_PER_S = 1_000_000_000
# Rise above baseline that defines "reached" for the delay target: 0.2 % CH4 / 2 ppm.
REACH_RISE = {"mine": 0.2, "leak": 2.0, "city": 10.0}
_EPOCH = np.datetime64("2026-01-05T00:00:00", "s")
_MINE_LOCATIONS = ("T0", "T1", "T2", "T3", "main_return")


@dataclass(frozen=True, slots=True)
class ScenarioConfig:
    """How big a scenario set is."""

    hours: float = 48.0
    mine_sensors: int = 40
    leak_monitors: int = 20
    city_stations: int = 6
    cems_units: int = 4
    mine_interval_s: int = 10
    leak_interval_s: int = 10
    city_interval_s: int = 60
    cems_interval_s: int = 30
    quiet_fraction: float = 0.25  # sensors with no injected event at all
    # a separate city network (wuhai) sharing one regional signal, one station drifting
    # against the others; 0 = none (keeps the default set as it was)
    neighbour_stations: int = 0


@dataclass(slots=True)
class ScenarioSummary:
    """What was written."""

    readings: int = 0
    labels: int = 0
    by_label: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Label:
    device_id: str
    start: float
    end: float
    label: str
    expect: str
    magnitude: float
    reach: float


@dataclass(slots=True)
class _Rows:
    t: list[F64] = field(default_factory=list)
    dev: list[npt.NDArray[np.int64]] = field(default_factory=list)
    met: list[npt.NDArray[np.int64]] = field(default_factory=list)
    val: list[F64] = field(default_factory=list)
    flag: list[npt.NDArray[np.int64]] = field(default_factory=list)
    devices: list[tuple[str, str, str]] = field(default_factory=list)  # id, kind, location
    metrics: list[str] = field(default_factory=list)

    def device(self, device_id: str, kind: str, location: str = "") -> int:
        self.devices.append((device_id, kind, location))
        return len(self.devices) - 1

    def metric(self, name: str) -> int:
        if name not in self.metrics:
            self.metrics.append(name)
        return self.metrics.index(name)

    def add(self, dev: int, metric: str, t: F64, v: F64, flag: npt.NDArray[np.int64]) -> None:
        self.t.append(t)
        self.dev.append(np.full(t.shape[0], dev, np.int64))
        self.met.append(np.full(t.shape[0], self.metric(metric), np.int64))
        self.val.append(v)
        self.flag.append(flag)


def _wander(rng: np.random.Generator, n: int, dt_s: float, tau_s: float, sd: float) -> F64:
    """Ornstein-Uhlenbeck wander with stationary sd (correlated background variation)."""
    a = np.exp(-dt_s / tau_s)
    eps = rng.standard_normal(n) * sd * np.sqrt(1 - a * a)
    out = np.empty(n)
    # a short linear recursion per device, computed in blocks with cumulative products
    acc = 0.0
    block = 512
    powers = a ** np.arange(block)
    for s in range(0, n, block):
        e = eps[s : s + block]
        m = e.shape[0]
        p = powers[:m]
        out[s : s + m] = p * (acc * a) + p * np.cumsum(e / p)
        acc = out[s + m - 1]
    return out


def _event_times(
    rng: np.random.Generator, t_end: float, count: int, min_len: float, max_len: float
) -> list[tuple[float, float]]:
    """Non-overlapping (start, end) windows with at least 2 h of clean data before each."""
    out: list[tuple[float, float]] = []
    slot = t_end / max(count, 1)
    for i in range(count):
        length = rng.uniform(min_len, max_len)
        lo = i * slot + 2 * 3600.0
        hi = (i + 1) * slot - length - 1800.0
        if hi <= lo:
            continue
        start = float(np.round(rng.uniform(lo, hi)))
        out.append((start, start + length))
    return out


def _shape(t: F64, start: float, end: float, ramp_s: float, mag: float) -> F64:
    """A step (ramp_s=0) or ramp up to mag held until end, then back down within 60 s."""
    up = np.clip((t - start) / max(ramp_s, 1e-9), 0.0, 1.0) if ramp_s > 0 else (t >= start) * 1.0
    down = np.clip((end + 60.0 - t) / 60.0, 0.0, 1.0)
    return np.asarray(mag * np.minimum(up, down) * (t >= start), np.float64)


def _reach(start: float, ramp_s: float, mag: float, rise: float) -> float:
    return start + (ramp_s * min(rise / mag, 1.0) if ramp_s > 0 else 0.0)


def _mine(cfg: ScenarioConfig, rng: np.random.Generator, rows: _Rows, labels: list[_Label]) -> None:
    dt = cfg.mine_interval_s
    t = np.arange(0, cfg.hours * 3600.0, dt)
    n = t.shape[0]
    t_end = float(t[-1])
    kinds = ["step", "ramp", "outburst", "fault_stuck", "fault_spike", "fault_dropout", "drift"]
    for i in range(cfg.mine_sensors):
        loc = _MINE_LOCATIONS[i % len(_MINE_LOCATIONS)]
        dev_id = f"ordos-coal/buertai/{loc.lower()}-{i:04d}"
        d = rows.device(dev_id, "mine", loc)
        base = rng.uniform(0.05, 0.35)
        noise = rng.uniform(0.004, 0.02)
        v = (
            base
            + _wander(rng, n, dt, 3600.0, rng.uniform(0.005, 0.03))
            + 0.03 * np.sin(2 * np.pi * t / (8 * 3600.0) + rng.uniform(0, 6.3))
        )
        v += noise * rng.standard_normal(n)
        flag = np.zeros(n, np.int64)
        if rng.random() >= cfg.quiet_fraction:
            windows = _event_times(rng, t_end, int(rng.integers(2, 5)), 1200.0, 4800.0)
            for start, end in windows:
                what = kinds[int(rng.integers(0, len(kinds)))]
                if what in {"step", "ramp"}:
                    mag = float(rng.choice([0.2, 0.3, 0.5, 1.0, 2.0]))
                    ramp = 0.0 if what == "step" else float(rng.choice([120.0, 600.0, 1800.0]))
                    stop = max(end, start + ramp + 600.0)
                    gas = _shape(t, start, stop, ramp, mag)
                    v += gas * (1 + 0.1 * rng.standard_normal(n))
                    reach = _reach(start, ramp, mag, REACH_RISE["mine"])
                    labels.append(
                        _Label(dev_id, start, stop, f"release_{what}", "detect", mag, reach)
                    )
                elif what == "outburst":
                    mag = float(rng.uniform(3.0, 8.0))
                    rise = np.clip((t - start) / 30.0, 0.0, 1.0)
                    decay = np.exp(-np.maximum(t - start - 30.0, 0.0) / 900.0)
                    v += np.where(t >= start, mag * rise * decay, 0.0)
                    stop = start + 900.0 * float(np.log(mag / 0.05)) + 30.0
                    reach = _reach(start, 30.0, mag, REACH_RISE["mine"])
                    labels.append(_Label(dev_id, start, stop, "outburst", "detect", mag, reach))
                elif what == "fault_stuck":
                    sel = (t >= start) & (t < start + 3 * 3600.0)
                    v[sel] = round(float(v[sel][0]), 2) if sel.any() else 0.0
                    labels.append(
                        _Label(dev_id, start, start + 3 * 3600.0, what, "detect", 0.0, start)
                    )
                elif what == "fault_spike":
                    k = int(np.searchsorted(t, start))
                    v[k] += float(rng.uniform(0.8, 3.0))
                    labels.append(_Label(dev_id, start, start + dt, what, "detect", 0.0, start))
                elif what == "fault_dropout":
                    sel = (t >= start) & (t < start + 600.0)
                    v[sel] = -0.5
                    labels.append(_Label(dev_id, start, start + 600.0, what, "detect", 0.0, start))
                else:  # slow drift: a calibration problem, not a leak; must page nobody
                    v += np.clip((t - start) / (12 * 3600.0), 0.0, 1.0) * 0.15
                    labels.append(
                        _Label(dev_id, start, t_end, "fault_drift", "detect", 0.15, start)
                    )
                    break  # the drift lasts to the end: nothing else on this sensor
        # sensors report 0.001 % resolution
        rows.add(d, "ch4_pct_vol", t, np.round(v, 3), flag)


def _leak(cfg: ScenarioConfig, rng: np.random.Generator, rows: _Rows, labels: list[_Label]) -> None:
    dt = cfg.leak_interval_s
    t = np.arange(0, cfg.hours * 3600.0, dt)
    n = t.shape[0]
    for i in range(cfg.leak_monitors):
        dev_id = f"changqing/sulige-cs7/ch4-{i:02d}"
        d = rows.device(dev_id, "leak")
        v = rng.uniform(1.9, 2.2) + _wander(rng, n, dt, 1800.0, rng.uniform(0.02, 0.08))
        v += rng.uniform(0.01, 0.05) * rng.standard_normal(n)
        if rng.random() >= cfg.quiet_fraction:
            for start, end in _event_times(rng, float(t[-1]), int(rng.integers(2, 4)), 1200, 3600):
                mag = float(rng.choice([2.0, 3.0, 5.0, 10.0, 50.0]))
                ramp = float(rng.choice([0.0, 0.0, 120.0, 600.0]))
                gas = _shape(t, start, end, ramp, mag)
                # plume intermittency: the wind moves the plume on and off the monitor
                hit = np.clip(1.0 + 0.35 * rng.standard_normal(n), 0.2, None)
                v += gas * hit
                reach = _reach(start, ramp, mag, REACH_RISE["leak"])
                label = "release_step" if ramp == 0 else "release_ramp"
                labels.append(_Label(dev_id, start, end, label, "detect", mag, reach))
        rows.add(d, "ch4_ppm", t, np.round(v, 3), np.zeros(n, np.int64))


def _city(cfg: ScenarioConfig, rng: np.random.Generator, rows: _Rows, labels: list[_Label]) -> None:
    dt = cfg.city_interval_s
    t = np.arange(0, cfg.hours * 3600.0, dt)
    n = t.shape[0]
    cities = ("baotou", "ordos")
    for i in range(cfg.city_stations):
        dev_id = f"{cities[i % 2]}/station-{i:02d}/picarro-01"
        d = rows.device(dev_id, "city")
        diurnal = rng.uniform(5, 15) * np.cos(2 * np.pi * (t / 86400.0 - 0.2))
        v = 425 + diurnal + _wander(rng, n, dt, 7200.0, 2.0) + 0.3 * rng.standard_normal(n)
        flag = np.zeros(n, np.int64)
        if rng.random() >= cfg.quiet_fraction:
            for start, end in _event_times(rng, float(t[-1]), int(rng.integers(1, 4)), 1800, 5400):
                if rng.random() < 0.7:
                    mag = float(rng.uniform(15, 60))
                    gas = _shape(t, start, end, 300.0, mag)
                    v += gas * np.clip(1 + 0.3 * rng.standard_normal(n), 0.1, None)
                    reach = _reach(start, 300.0, mag, REACH_RISE["city"])
                    labels.append(_Label(dev_id, start, end, "plume", "detect", mag, reach))
                else:
                    sel = (t >= start) & (t < start + 1200.0)
                    v[sel] = 500.0 + 0.1 * rng.standard_normal(int(sel.sum()))
                    flag[sel] = ord("C")
                    labels.append(
                        _Label(dev_id, start, start + 1200.0, "calibration", "quiet", 0, start)
                    )
        rows.add(d, "co2_ppm", t, np.round(v, 2), flag)


def _neighbours(
    cfg: ScenarioConfig, rng: np.random.Generator, rows: _Rows, labels: list[_Label]
) -> None:
    """A city network whose stations share the regional CO2 signal; one drifts off alone."""
    dt = cfg.city_interval_s
    t = np.arange(0, cfg.hours * 3600.0, dt)
    n = t.shape[0]
    regional = (
        425
        + rng.uniform(5, 15) * np.cos(2 * np.pi * (t / 86400.0 - 0.2))
        + _wander(rng, n, dt, 6 * 3600.0, 3.0)
    )
    drifting = int(rng.integers(0, cfg.neighbour_stations))
    for i in range(cfg.neighbour_stations):
        dev_id = f"wuhai/station-{i:02d}/picarro-01"
        d = rows.device(dev_id, "city")
        v = (
            regional
            + rng.uniform(-5, 10)
            + _wander(rng, n, dt, 7200.0, 0.5)
            + 0.3 * rng.standard_normal(n)
        )
        if i == drifting:
            start = float(rng.uniform(0.55, 0.7) * t[-1])
            ramp_s = float(rng.uniform(3, 6)) * 3600.0
            mag = float(rng.uniform(8, 15))
            v += mag * np.clip((t - start) / ramp_s, 0.0, 1.0)
            labels.append(
                _Label(dev_id, start, float(t[-1]), "fault_neighbour_drift", "detect", mag, start)
            )
        rows.add(d, "co2_ppm", t, np.round(v, 2), np.zeros(n, np.int64))


def _cems(cfg: ScenarioConfig, rng: np.random.Generator, rows: _Rows, labels: list[_Label]) -> None:
    dt = cfg.cems_interval_s
    t = np.arange(0, cfg.hours * 3600.0, dt)
    n = t.shape[0]
    for i in range(cfg.cems_units):
        dev_id = f"beifang-power/dalate-plant/unit-{i + 1}"
        d = rows.device(dev_id, "cems")
        load = np.clip(
            480 + 80 * np.sin(2 * np.pi * t / 86400.0) + _wander(rng, n, dt, 3600, 20), 200, 600
        )
        frac = load / 600.0
        ch = {
            "load_mw": load,
            "co2_pct_vol": 12.0 + 0.8 * frac + 0.1 * rng.standard_normal(n),
            "flow_m3_h": 2.2e6 * frac * (1 + 0.02 * rng.standard_normal(n)),
            "flue_temp_c": 125 + 5 * frac + 0.5 * rng.standard_normal(n),
            "static_pressure_pa": -300 + 10 * rng.standard_normal(n),
            "baro_pressure_pa": 88_500 + 50 * rng.standard_normal(n),
            "moisture_pct_vol": 8.0 + 0.2 * rng.standard_normal(n),
            "o2_pct_vol": 6.0 + 0.2 * rng.standard_normal(n),
        }
        flags = {k: np.zeros(n, np.int64) for k in ch}
        for start, end in _event_times(rng, float(t[-1]), 2, 1800, 3600):
            if rng.random() < 0.5:
                sel = (t >= start) & (t < start + 1800.0)
                ch["co2_pct_vol"][sel] = 15.0
                flags["co2_pct_vol"][sel] = ord("C")
                labels.append(
                    _Label(dev_id, start, start + 1800.0, "calibration", "quiet", 0, start)
                )
            else:
                sel = (t >= start) & (t < end)
                ch["flow_m3_h"][sel] = 0.0
                labels.append(_Label(dev_id, start, end, "flow_failure", "detect", 0.0, start))
        for name, values in ch.items():
            rows.add(d, name, t, np.round(values, 3), flags[name])


def generate_scenarios(
    out_dir: Path, seed: int, cfg: ScenarioConfig | None = None
) -> ScenarioSummary:
    """Write ``readings.csv`` and ``labels.csv`` for one seeded scenario set.

    Args:
        out_dir: directory to write into (created if missing).
        seed: random seed; the same seed always gives the same files.
        cfg: sizes; defaults to :class:`ScenarioConfig`.

    Returns:
        Counts of what was written.
    """
    cfg = cfg or ScenarioConfig()
    rng = np.random.default_rng(seed)
    rows = _Rows()
    labels: list[_Label] = []
    _mine(cfg, rng, rows, labels)
    _leak(cfg, rng, rows, labels)
    _city(cfg, rng, rows, labels)
    _cems(cfg, rng, rows, labels)
    if cfg.neighbour_stations:
        _neighbours(cfg, rng, rows, labels)
    t = np.concatenate(rows.t)
    dev = np.concatenate(rows.dev)
    met = np.concatenate(rows.met)
    val = np.concatenate(rows.val)
    flag = np.concatenate(rows.flag)
    order = np.lexsort((met, dev, t))
    t, dev, met, val, flag = t[order], dev[order], met[order], val[order], flag[order]
    out_dir.mkdir(parents=True, exist_ok=True)
    uniq_t, inv_t = np.unique(t, return_inverse=True)
    stamps = np.datetime_as_string(_EPOCH + uniq_t.astype("timedelta64[s]"), unit="s")
    time_txt = [s + "Z" for s in stamps.tolist()]
    dev_txt = [f"{d},{{}},{{}},{{}},{k},{loc}" for d, k, loc in rows.devices]
    flag_txt = {0: "N", **{c: chr(c) for c in np.unique(flag).tolist() if c}}
    with (out_dir / "readings.csv").open("w", encoding="ascii") as fh:
        fh.write("time,device_id,metric,value,flag,kind,location\n")
        chunk = 500_000
        for s in range(0, t.shape[0], chunk):
            lines = [
                time_txt[ti] + "," + dev_txt[di].format(rows.metrics[mi], repr(vi), flag_txt[fi])
                for ti, di, mi, vi, fi in zip(
                    inv_t[s : s + chunk].tolist(),
                    dev[s : s + chunk].tolist(),
                    met[s : s + chunk].tolist(),
                    val[s : s + chunk].tolist(),
                    flag[s : s + chunk].tolist(),
                    strict=True,
                )
            ]
            fh.write("\n".join(lines) + "\n")
    summary = ScenarioSummary(readings=int(t.shape[0]), labels=len(labels))

    def stamp(sec: float) -> str:
        return str(np.datetime_as_string(_EPOCH + np.timedelta64(round(sec), "s"), "s")) + "Z"

    with (out_dir / "labels.csv").open("w", encoding="ascii") as fh:
        fh.write("device_id,start,end,label,expect,magnitude,reach\n")
        for lab in sorted(labels, key=lambda x: (x.start, x.device_id)):
            fh.write(
                f"{lab.device_id},{stamp(lab.start)},{stamp(lab.end)},{lab.label},"
                f"{lab.expect},{lab.magnitude:g},{stamp(lab.reach)}\n"
            )
            summary.by_label[lab.label] = summary.by_label.get(lab.label, 0) + 1
    return summary
