"""CEMS: minute and hour CO2 mass emission rates on a dry standard basis (HJ 75/76), vectorised.

Per unit (device) the readings of its channels are averaged per minute (flagged readings
excluded), a minute closes when the unit sends a reading from a later minute, and the
minute's dry standard flow Q_sn and CO2 mass rate G follow the HJ 75 formula of
:mod:`wire.cems`, the one copy the simulator uses too.

A minute is valid with ``min_samples_per_minute`` valid CO2 and flow samples plus a flue
temperature, moisture and a barometric pressure (static pressure defaults to 0 Pa). The
pressure is the unit's own reading, else its site's configured pressure, else the standard
atmosphere at its configured altitude (:meth:`core.settings.DetectionSettings.cems_site`);
with none of them the minute is invalid, never computed at sea level. A wet-basis analyser's
CO2 is made dry with the minute's measured moisture. Hours close like minutes; an hour is
valid with ``min_valid_minutes`` valid minutes (HJ 76: 45). Per hour the engine derives the
mean mass rate, the mean load, gross intensity (g CO2 per kWh generated) and net intensity
(per kWh supplied, gross / (1 − auxiliary power rate)), the valid minutes and how many of them
used a configured rather than a measured pressure; net intensity is compared with the unit
class benchmark, which the plan defines per kWh supplied (supply coal g/kWh ×
``co2_t_per_t_sce``). Judged per closed minute: implausible
combinations (CO2 with no flow, load with no flow, CO2 + O2 above what air combustion allows)
and abnormal steps (the mass rate jumping by ``cems_step_frac`` between valid minutes while
the load holds within ``cems_load_steady_frac``): flow-field and analyser faults, reported as
maintenance.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from core.settings import DetectionSettings
from processors.detection.catalogue import CEMS_PARAMS, Detector
from processors.detection.tables import (
    NEVER_NS,
    DerivedTable,
    EventTable,
    concat_derived,
    concat_events,
)
from wire import (
    co2_dry_from_wet_pct,
    co2_mass_rate_t_h,
    dry_standard_flow_m3_h,
    pressure_at_altitude_pa,
)

__all__ = ["CEMS_PARAMS", "HOUR_SERIES", "STOPPED_SERIES", "CemsAggregator"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

_P = {name: i for i, name in enumerate(CEMS_PARAMS)}
_CO2, _FLOW, _TEMP, _PS, _BA = 0, 1, 2, 3, 4
_MOIST, _O2, _LOAD = 5, 6, 7
NP = len(CEMS_PARAMS)
NS_PER_MIN = 60_000_000_000
MIN_PER_HOUR = 60
_UNIT_SHIFT = 32
_HACC = 6
# The hourly derived series, in this order (reports read them through cems_unit_1h).
HOUR_SERIES = (
    "co2_mass_t_h_1h",  # mean mass rate over the valid minutes, t/h (= t in the hour)
    "intensity_g_kwh_1h",  # gross: g CO2 per kWh generated, over minutes with load
    "valid_minutes_1h",
    "intensity_net_g_kwh_1h",  # per kWh supplied: gross / (1 - auxiliary power rate)
    "load_mw_1h",  # mean load over the valid minutes, MW (= MWh generated in the hour)
    "site_pressure_minutes_1h",  # valid minutes computed with the site's configured pressure
)
# Minutes in the hour with a reading flagged F (HJ 212: the unit was stopped), stored only for
# hours that have any: the report does not substitute a stopped hour (HJ 75-2017).
STOPPED_SERIES = "stopped_minutes_1h"
_KWH_PER_MWH = 1000.0
_G_PER_T = 1e6


def _bincount(idx: npt.NDArray[np.intp] | I64, weights: F64, size: int) -> F64:
    return np.asarray(np.bincount(idx, weights=weights, minlength=size), np.float64)


def _period_groups(u: I64, period: I64, open_period: I64) -> tuple[I64, I64, I64, I64, I64, I64]:
    """Group rows, and each of their units' still-open period, by (unit, period), sorted.

    Args:
        u: unit of each new row.
        period: minute or hour of each new row.
        open_period: per unit, its open minute or hour (``NEVER_NS`` for none).

    Returns:
        ``(units, carried, group_unit, group_period, group_of_row, group_of_carried)``: the
        distinct units, those with an open period, each group's unit and period, the group of
        each new row and of each carried unit's open period.
    """
    units = np.unique(u)
    carried = units[open_period[units] != NEVER_NS]
    key = np.concatenate(
        [(u << _UNIT_SHIFT) | period, (carried << _UNIT_SHIFT) | open_period[carried]]
    )
    gkeys, inv = np.unique(key, return_inverse=True)
    n_new = u.shape[0]
    group_unit = gkeys >> _UNIT_SHIFT
    group_period = gkeys & ((1 << _UNIT_SHIFT) - 1)
    return units, carried, group_unit, group_period, inv[:n_new], inv[n_new:]


class CemsAggregator:
    """Minute/hour windows per CEMS unit, held as arrays indexed by a dense unit id.

    Args:
        cfg: the detection settings.
    """

    def __init__(self, cfg: DetectionSettings) -> None:
        self.cfg = cfg
        self._units: dict[str, int] = {}
        self._names: list[str] = []
        self._cap = 0
        self.open_min: I64 = np.zeros(0, np.int64)
        self.acc_sum: F64 = np.zeros((0, NP))
        self.acc_cnt: F64 = np.zeros((0, NP))
        self.open_hour: I64 = np.zeros(0, np.int64)
        # valid minutes, sum G, sum G with load, sum load (with load), site-pressure minutes,
        # sum load (valid minutes)
        self.h_acc: F64 = np.zeros((0, _HACC))
        # co2 w/o flow, load w/o flow, intensity, co2 + o2 implausible
        self.active: BOOL = np.zeros((4, 0), bool)
        self.onset: I64 = np.zeros((4, 0), np.int64)
        self.last_g: F64 = np.zeros(0)  # last valid minute's mass rate and load, per unit
        self.last_load: F64 = np.zeros(0)
        self.bench_g_kwh: F64 = np.zeros(0)
        self.site_baro_pa: F64 = np.zeros(0)  # NaN: no configured pressure or altitude
        self.wet_basis: BOOL = np.zeros(0, bool)
        self.aux_frac: F64 = np.zeros(0)
        # per unit, from the device registry: benchmark class and site barometric pressure,
        # overriding the settings' values for that unit (None: the settings' value)
        self._site: dict[str, tuple[str | None, float | None]] = {}
        # per unit, the minutes (since the epoch) of readings flagged F not yet in a closed hour
        self._stopped: dict[int, set[int]] = {}

    def set_site(self, name: str, unit_class: str | None, baro_pa: float | None) -> None:
        """A unit's benchmark class and site pressure (from the registry); None: settings'."""
        self._site[name] = (unit_class, baro_pa)
        u = self._units.get(name)
        if u is not None:
            self._apply_site(name, u)

    def _apply_site(self, name: str, u: int) -> None:
        """Benchmark, site pressure, analyser basis and auxiliary rate of unit ``u``: the
        registry's class and pressure where it has them, else the settings' (``cems_site``)."""
        reg_class, reg_baro = self._site.get(name, (None, None))
        site = self.cfg.cems_site(name)
        cls = reg_class or site.unit_class
        bench = self.cfg.cems_benchmarks_g_sce_kwh.get(cls) if cls else None
        self.bench_g_kwh[u] = np.nan if bench is None else bench * self.cfg.co2_t_per_t_sce
        if reg_baro is not None:
            self.site_baro_pa[u] = reg_baro
        elif site.baro_pa is not None:
            self.site_baro_pa[u] = site.baro_pa
        elif site.altitude_m is not None:
            self.site_baro_pa[u] = float(pressure_at_altitude_pa(site.altitude_m))
        else:
            self.site_baro_pa[u] = np.nan
        self.wet_basis[u] = site.co2_basis == "wet"
        self.aux_frac[u] = site.aux_power_frac

    def _unit(self, name: str) -> int:
        u = self._units.get(name)
        if u is not None:
            return u
        u = len(self._names)
        if u >= self._cap:
            self._grow(max(64, 2 * self._cap))
        self._units[name] = u
        self._names.append(name)
        self._apply_site(name, u)
        return u

    def _grow(self, cap: int) -> None:
        old = self._cap

        def grow(a: npt.NDArray[np.generic], fill: object) -> npt.NDArray[np.generic]:
            shape = (cap, *a.shape[1:]) if a.ndim == 1 or a.shape[0] == old else a.shape
            new = np.full(shape, fill, dtype=a.dtype)
            new[:old] = a
            return new

        self.open_min = grow(self.open_min, NEVER_NS)  # type: ignore[assignment]
        self.open_hour = grow(self.open_hour, NEVER_NS)  # type: ignore[assignment]
        self.acc_sum = grow(self.acc_sum, 0.0)  # type: ignore[assignment]
        self.acc_cnt = grow(self.acc_cnt, 0.0)  # type: ignore[assignment]
        self.h_acc = grow(self.h_acc, 0.0)  # type: ignore[assignment]
        self.bench_g_kwh = grow(self.bench_g_kwh, np.nan)  # type: ignore[assignment]
        self.site_baro_pa = grow(self.site_baro_pa, np.nan)  # type: ignore[assignment]
        self.wet_basis = grow(self.wet_basis, False)  # type: ignore[assignment]
        self.aux_frac = grow(self.aux_frac, 0.0)  # type: ignore[assignment]
        self.last_g = grow(self.last_g, np.nan)  # type: ignore[assignment]
        self.last_load = grow(self.last_load, np.nan)  # type: ignore[assignment]
        active = np.zeros((4, cap), bool)
        active[:, :old] = self.active
        onset = np.full((4, cap), NEVER_NS, np.int64)
        onset[:, :old] = self.onset
        self.active, self.onset = active, onset
        self._cap = cap

    def reset_devices(self, names: set[str]) -> None:
        """Forget the open windows of some units."""
        ids = [self._units[n] for n in names if n in self._units]
        if not ids:
            return
        self.open_min[ids] = NEVER_NS
        self.open_hour[ids] = NEVER_NS
        self.acc_sum[ids] = 0.0
        self.acc_cnt[ids] = 0.0
        self.h_acc[ids] = 0.0
        self.last_g[ids] = np.nan
        self.last_load[ids] = np.nan
        self.active[:, ids] = False
        self.onset[:, ids] = NEVER_NS
        for u in ids:
            self._stopped.pop(u, None)

    def note_stopped(self, devices: list[str], local: npt.NDArray[np.intp], ts_ns: I64) -> None:
        """Readings flagged F (the unit stopped): their minutes count as stopped minutes of
        their hour when it closes (any order, before or with :meth:`process`).

        Args:
            devices: device id per local stream.
            local: local stream index per flagged reading.
            ts_ns: their times.
        """
        if local.shape[0] == 0:
            return
        unit_of = np.asarray([self._unit(d) for d in devices], np.int64)
        key = np.unique((unit_of[local] << _UNIT_SHIFT) | (ts_ns // NS_PER_MIN))
        for k in key.tolist():
            self._stopped.setdefault(k >> _UNIT_SHIFT, set()).add(k & ((1 << _UNIT_SHIFT) - 1))

    def _stopped_minutes(self, hu: I64, hh: I64) -> F64:
        """Stopped minutes of each closed (unit, hour); forgets them and any older ones."""
        out = np.zeros(hu.shape[0])
        if not self._stopped:
            return out
        for j, (u, h) in enumerate(zip(hu.tolist(), hh.tolist(), strict=True)):
            minutes = self._stopped.get(u)
            if not minutes:
                continue
            end = (h + 1) * MIN_PER_HOUR
            done = {m for m in minutes if m < end}
            out[j] = sum(1 for m in done if m >= h * MIN_PER_HOUR)
            minutes -= done
            if not minutes:
                del self._stopped[u]
        return out

    def process(
        self,
        devices: list[str],
        metrics: list[str],
        local: npt.NDArray[np.intp],
        ts_ns: I64,
        value: F64,
        usable: BOOL,
    ) -> tuple[EventTable, DerivedTable]:
        """Add a batch of CEMS readings; return what the minutes and hours that closed give.

        Args:
            devices: device id per local stream.
            metrics: metric per local stream.
            local: local stream index per reading.
            ts_ns: reading times.
            value: reading values.
            usable: False for readings flagged out of averages.

        Returns:
            Events and derived rows of the minutes and hours that closed.
        """
        unit_of = np.asarray([self._unit(d) for d in devices], np.int64)
        param_of = np.asarray([_P.get(m, -1) for m in metrics], np.int64)
        u = unit_of[local]
        p = param_of[local]
        minute = ts_ns // NS_PER_MIN
        keep = (p >= 0) & (minute >= self.open_min[u])
        u, p, minute, v, ok = u[keep], p[keep], minute[keep], value[keep], usable[keep]
        if u.size == 0:
            return EventTable.empty(), DerivedTable.empty()
        _, carried, gu, gm, gi, ci = _period_groups(u, minute, self.open_min)
        g = gu.shape[0]
        cell = gi * NP + p
        w = ok.astype(np.float64)
        sums = _bincount(cell, np.where(ok, v, 0.0), g * NP).reshape(g, NP)
        cnts = _bincount(cell, w, g * NP).reshape(g, NP)
        sums[ci] += self.acc_sum[carried]
        cnts[ci] += self.acc_cnt[carried]
        is_last = np.ones(g, bool)
        is_last[:-1] = gu[1:] != gu[:-1]
        lu = gu[is_last]
        self.open_min[lu] = gm[is_last]
        self.acc_sum[lu] = sums[is_last]
        self.acc_cnt[lu] = cnts[is_last]
        closed = ~is_last
        if not closed.any():
            return EventTable.empty(), DerivedTable.empty()
        return self._close_minutes(gu[closed], gm[closed], sums[closed], cnts[closed])

    def _close_minutes(
        self, cu: I64, cm: I64, sums: F64, cnts: F64
    ) -> tuple[EventTable, DerivedTable]:
        cfg = self.cfg
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / cnts
        has = cnts > 0
        # measured pressure, else the site's configured one; NaN (an invalid minute) without
        site_pressure = ~has[:, _BA] & np.isfinite(self.site_baro_pa[cu])
        ba = np.where(has[:, _BA], mean[:, _BA], self.site_baro_pa[cu])
        ps = np.where(has[:, _PS], mean[:, _PS], 0.0)
        q_sn = dry_standard_flow_m3_h(mean[:, _FLOW], mean[:, _TEMP], ba, ps, mean[:, _MOIST])
        co2_dry = np.where(
            self.wet_basis[cu], co2_dry_from_wet_pct(mean[:, _CO2], mean[:, _MOIST]), mean[:, _CO2]
        )
        g_t_h = co2_mass_rate_t_h(co2_dry, q_sn)
        need = cfg.min_samples_per_minute
        valid = (
            (cnts[:, _CO2] >= need)
            & (cnts[:, _FLOW] >= need)
            & has[:, _TEMP]
            & has[:, _MOIST]
            & np.isfinite(g_t_h)
        )
        ts = cm * NS_PER_MIN
        names = [self._names[j] for j in cu.tolist()]
        derived = [
            DerivedTable(
                names + names,
                ["co2_mass_t_h"] * len(names) + ["flow_dry_std_m3_h"] * len(names),
                np.concatenate([ts, ts]),
                np.concatenate([np.where(valid, g_t_h, np.nan), q_sn]),
                np.concatenate([valid, valid]),
            )
        ]
        no_flow = has[:, _FLOW] & (mean[:, _FLOW] <= cfg.zero_flow_m3_h)
        cwf = no_flow & has[:, _CO2] & (mean[:, _CO2] >= cfg.co2_present_pct_vol)
        lwf = no_flow & has[:, _LOAD] & (mean[:, _LOAD] >= cfg.load_present_mw)
        events = [
            self._state_events(0, Detector.CO2_WITHOUT_FLOW, cu, ts, cwf, mean[:, _CO2],
                               mean[:, _FLOW], np.full(cu.size, cfg.zero_flow_m3_h)),
            self._state_events(1, Detector.LOAD_WITHOUT_FLOW, cu, ts, lwf, mean[:, _LOAD],
                               mean[:, _FLOW], np.full(cu.size, cfg.zero_flow_m3_h)),
        ]  # fmt: skip
        co2_o2 = mean[:, _CO2] + mean[:, _O2]
        bad_sum = has[:, _CO2] & has[:, _O2] & (co2_o2 > cfg.max_co2_plus_o2_pct_vol)
        events.append(
            self._state_events(3, Detector.IMPLAUSIBLE_CO2_O2, cu, ts, bad_sum, co2_o2,
                               mean[:, _O2], np.full(cu.size, cfg.max_co2_plus_o2_pct_vol))
        )  # fmt: skip
        load = np.where(has[:, _LOAD], mean[:, _LOAD], 0.0)
        events.append(self._steps(cu, ts, valid, g_t_h, load))
        with_load = valid & (load >= cfg.load_present_mw)
        ev_h, der_h = self._add_minutes_to_hours(
            cu, cm, valid, g_t_h, with_load, load, valid & site_pressure
        )
        return concat_events([*events, ev_h]), concat_derived([*derived, der_h])

    def _steps(self, cu: I64, ts: I64, valid: BOOL, g_t_h: F64, load: F64) -> EventTable:
        """Mass rate jumping between valid minutes while the load holds steady."""
        cfg = self.cfg
        n = cu.shape[0]
        ar = np.arange(n)
        new_seg = np.ones(n, bool)
        new_seg[1:] = cu[1:] != cu[:-1]
        starts = np.flatnonzero(new_seg)
        counts = np.diff(np.append(starts, n))
        seg_first = np.repeat(starts, counts)
        ok = valid & (g_t_h > 0)
        last_ok = np.maximum.accumulate(np.where(ok, ar, -1))
        prev = np.full(n, -1)
        prev[1:] = last_ok[:-1]
        in_seg = prev >= seg_first
        p = np.maximum(prev, 0)
        g_prev = np.where(in_seg, g_t_h[p], self.last_g[cu])
        l_prev = np.where(in_seg, load[p], self.last_load[cu])
        seg_last = starts + counts - 1
        has = last_ok[seg_last] >= starts
        done = last_ok[seg_last][has]
        self.last_g[cu[starts[has]]] = g_t_h[done]
        self.last_load[cu[starts[has]]] = load[done]
        with np.errstate(invalid="ignore", divide="ignore"):
            jump = np.abs(g_t_h - g_prev) / g_prev
            steady = np.abs(load - l_prev) <= cfg.cems_load_steady_frac * np.maximum(l_prev, 1.0)
        idx = np.flatnonzero(ok & np.isfinite(g_prev) & (jump > cfg.cems_step_frac) & steady)
        if idx.size == 0:
            return EventTable.empty()
        return EventTable(
            [self._names[j] for j in cu[idx].tolist()],
            ["co2_mass_t_h"] * idx.size,
            np.full(idx.size, Detector.MASS_RATE_STEP, np.int16),
            np.ones(idx.size, bool),
            ts[idx],
            ts[idx],
            ts[idx] + NS_PER_MIN,
            g_t_h[idx],
            jump[idx],
            np.full(idx.size, cfg.cems_step_frac),
            g_prev[idx],
            np.full(idx.size, np.nan),
        )

    def _add_minutes_to_hours(
        self,
        cu: I64,
        cm: I64,
        valid: BOOL,
        g_t_h: F64,
        with_load: BOOL,
        load: F64,
        site_pressure: BOOL,
    ) -> tuple[EventTable, DerivedTable]:
        cfg = self.cfg
        hour = cm // MIN_PER_HOUR
        units, carried, gu, gh, gi, ci = _period_groups(cu, hour, self.open_hour)
        g = gu.shape[0]
        acc = np.zeros((g, _HACC))
        acc[:, 0] = np.bincount(gi, weights=valid.astype(np.float64), minlength=g)
        acc[:, 1] = np.bincount(gi, weights=np.where(valid, g_t_h, 0.0), minlength=g)
        acc[:, 2] = np.bincount(gi, weights=np.where(with_load, g_t_h, 0.0), minlength=g)
        acc[:, 3] = np.bincount(gi, weights=np.where(with_load, load, 0.0), minlength=g)
        acc[:, 4] = np.bincount(gi, weights=site_pressure.astype(np.float64), minlength=g)
        acc[:, 5] = np.bincount(gi, weights=np.where(valid, load, 0.0), minlength=g)
        acc[ci] += self.h_acc[carried]
        current = self.open_min[gu] // MIN_PER_HOUR
        still_open = gh >= current
        self.open_hour[units] = NEVER_NS
        self.h_acc[units] = 0.0
        self.open_hour[gu[still_open]] = gh[still_open]
        self.h_acc[gu[still_open]] = acc[still_open]
        done = ~still_open
        if not done.any():
            return EventTable.empty(), DerivedTable.empty()
        hu, hh, a = gu[done], gh[done], acc[done]
        ts = hh * MIN_PER_HOUR * NS_PER_MIN
        n_valid = a[:, 0]
        h_valid = n_valid >= cfg.min_valid_minutes
        with np.errstate(invalid="ignore", divide="ignore"):
            g_mean = np.where(n_valid > 0, a[:, 1] / n_valid, np.nan)
            intensity = np.where(a[:, 3] > 0, _G_PER_T * a[:, 2] / (a[:, 3] * _KWH_PER_MWH), np.nan)
            load_mean = np.where(n_valid > 0, a[:, 5] / n_valid, np.nan)
        net = intensity / (1.0 - self.aux_frac[hu])
        names = [self._names[j] for j in hu.tolist()]
        k = len(names)
        has_int = h_valid & np.isfinite(intensity)
        stopped = self._stopped_minutes(hu, hh)
        st = np.flatnonzero(stopped > 0)
        derived = concat_derived([
            DerivedTable(
                names * len(HOUR_SERIES),
                [name for name in HOUR_SERIES for _ in range(k)],
                np.tile(ts, len(HOUR_SERIES)),
                np.concatenate([g_mean, intensity, n_valid, net, load_mean, a[:, 4]]),
                np.concatenate([h_valid, has_int, h_valid, has_int, h_valid, h_valid]),
            ),
            DerivedTable(
                [names[j] for j in st.tolist()], [STOPPED_SERIES] * st.size, ts[st],
                stopped[st], np.ones(st.size, bool),
            ),
        ])  # fmt: skip
        bench = self.bench_g_kwh[hu]
        limit = bench * (1.0 + cfg.intensity_tolerance)
        over = has_int & np.isfinite(bench) & (net > limit)
        known = has_int
        # an invalid hour neither opens nor clears the intensity warning
        ev_int = self._state_events(
            2, Detector.INTENSITY_ABOVE_BENCHMARK, hu, ts, over, net, g_mean, limit,
            mask=known,
        )  # fmt: skip
        # an invalid hour of a stopped unit is no data fault (HJ 212 flag F)
        bad = np.flatnonzero(~h_valid & (stopped < cfg.min_valid_minutes))
        ev_bad = EventTable(
            [names[j] for j in bad.tolist()],
            ["co2_mass_t_h"] * bad.size,
            np.full(bad.size, Detector.HOUR_INVALID, np.int16),
            np.ones(bad.size, bool),
            ts[bad] + MIN_PER_HOUR * NS_PER_MIN,
            ts[bad],
            ts[bad] + MIN_PER_HOUR * NS_PER_MIN,
            n_valid[bad],
            n_valid[bad],
            np.full(bad.size, float(cfg.min_valid_minutes)),
            np.full(bad.size, np.nan),
            np.full(bad.size, np.nan),
        )
        return concat_events([ev_int, ev_bad]), derived

    def _state_events(
        self,
        slot: int,
        det: Detector,
        units: I64,
        ts: I64,
        cond: BOOL,
        value: F64,
        other: F64,
        thr: F64,
        mask: BOOL | None = None,
    ) -> EventTable:
        """Open/clear transitions of a per-unit condition over rows sorted by (unit, time)."""
        n = units.shape[0]
        if n == 0:
            return EventTable.empty()
        m = np.ones(n, bool) if mask is None else mask
        new_seg = np.ones(n, bool)
        new_seg[1:] = units[1:] != units[:-1]
        starts = np.flatnonzero(new_seg)
        counts = np.diff(np.append(starts, n))
        # state after each row: the last decided (masked-in) row's condition, else carried
        ar = np.arange(n)
        last_dec = np.maximum.accumulate(np.where(m, ar, -1))
        seg_first = np.repeat(starts, counts)
        carried = self.active[slot, units]
        state = np.where(last_dec >= seg_first, cond[np.maximum(last_dec, 0)], carried)
        prev = np.empty(n, bool)
        prev[1:] = state[:-1]
        prev[starts] = self.active[slot, units[starts]]
        opened = state & ~prev
        cleared = prev & ~state
        onset_idx = np.maximum.accumulate(np.where(opened, ar, -1))
        onset = np.where(
            onset_idx >= seg_first, ts[np.maximum(onset_idx, 0)], self.onset[slot, units]
        )
        seg_last = starts + counts - 1
        self.active[slot, units[starts]] = state[seg_last]
        self.onset[slot, units[starts]] = onset[seg_last]
        idx = np.flatnonzero(opened | cleared)
        if idx.size == 0:
            return EventTable.empty()
        is_open = opened[idx]
        names = [self._names[j] for j in units[idx].tolist()]
        return EventTable(
            names,
            ["co2_mass_t_h"] * idx.size,
            np.full(idx.size, det, np.int16),
            is_open,
            ts[idx],
            np.where(is_open, ts[idx], onset[idx]),
            np.where(is_open, NEVER_NS, ts[idx]),
            value[idx],
            value[idx],
            thr[idx],
            other[idx],
            np.full(idx.size, np.nan),
        )
