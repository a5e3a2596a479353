"""The streaming window engine: per-stream state in shared numpy arrays, detectors vectorised.

A batch of readings arrives as arrays ``(stream, ts_ns, value, usable)``. The engine

1. holds readings back by the grace ``late_grace_s`` (default 0: none): a reading waits until
   its stream has seen one ``late_grace_s`` newer, so readings that arrive out of order by
   less than the grace are merged in event-time order (inside one batch they always are).
   A reading at or before its stream's watermark (the newest time the stream has processed)
   is *late*: it is counted in ``late_readings`` and kept out of every stateful detector
   (trend, baseline, stuck, drift, gap, background), but it still goes through the stateless
   level checks - ``threshold_alarm`` / ``power_cut`` levels and the plausible range - as an
   instantaneous event at its own timestamp, so no exceedance is missed whatever order it
   arrives in (unless an alarm of the stream still open since before it covers it). A
   duplicate of a processed time is counted as late and checks nothing. Late readings are
   stored by the storing consumer all the same. With a grace, held readings of the live
   service wait for their stream's next readings; ``flush`` releases them (end of a replay);
2. sorts the rest by (stream, time) and groups streams by how many readings they have, so
   step ``k`` updates every stream that has a ``k``-th reading at once over a slice of the
   state arrays: the only Python loop runs over reading ranks, never over readings or streams;
   the readings of a rank sit in one contiguous slice (rank-major layout), and what depends
   on nothing else of the recursion - intervals, smoothing weights, the regulatory levels,
   stuck sensors, spikes - is judged over the whole batch at once outside that loop;
3. turns the per-reading detector states into OPEN / CLEARED transitions afterwards.

The recursions are exact per stream, so the output does not depend on how readings are cut
into batches: ``replay`` over a CSV and the live service give the same detections.

Detectors (per stream, time-based so irregular sampling and gaps are handled by ``dt``):

- ``threshold_alarm`` / ``power_cut`` (mine CH4): level by sensor location with the restore
  hysteresis, raised at the very reading that crosses the level;
- ``release`` / ``plume`` / ``anomaly``: the robust z-score of the residual of a robust
  level (median of the last three samples) above a Huber-updated EWMA baseline, scaled by a
  noise scale learned online (mean absolute residual, so slow correlated wander is part of
  the scale); an event opens after ``open_samples`` consecutive samples beyond ``z_open`` and
  at least ``min_rise`` above baseline, so one noisy sample can never open one; it clears after
  ``close_samples`` samples below ``z_close``. The baseline is frozen while an event is open
  (for at most ``rebaseline_s``) and the detectors arm after ``warmup_s`` of data (generic
  metrics, of unknown time scale, also after ``generic_warmup_samples``). ``release``
  and ``plume`` look up only; ``anomaly`` (unknown metrics) both ways;
- ``anomaly`` on a generic device's ``multivariate`` metric: the Hotelling T² of the device's
  channel vector (two or more co-sampled generic metrics) against a mean and covariance
  learned over ``generic_warmup_samples`` vectors, opened beyond a chi-square quantile; once
  it is armed the device's per-metric anomaly opens no more events, see
  :mod:`processors.detection.multivariate`;
- data quality: ``out_of_range`` (plausible range), ``stuck`` (unchanged value for
  ``stuck_s`` and ``stuck_min_samples`` readings), ``spike`` (one sample beyond ``spike_z``
  that returns at once; on leak monitors and city stations only a drop below background, a
  rise being signal, see :meth:`DetectionEngine._spikes`), ``gap`` (silence longer than
  ``gap_s`` and ``gap_factor`` typical intervals, reported when data resumes, unless it is a
  regular pause of the stream's learned duty cycle: inlet switching, calibration cycles,
  hourly means). A sensor back from a stuck fault re-learns its baseline, so its recovery
  is not mistaken for a release. Maintenance detections are one ticket per problem episode:
  a spike or gap within ``ticket_episode_s`` of the device's previous one (any metric), or a
  stuck / out-of-range / drift re-opening within it of the stream's previous clear, is not
  reported again;
- ``drift``: the baseline more than ``drift_limit`` (per metric) away from a slow reference
  (time constant ``drift_tau_s``) for ``drift_persist_s``: a calibration problem, reported
  as maintenance (a slow drift never looks like a release: the baseline absorbs it);
- ``neighbour_drift`` (city stations): each station's baseline against the median of its
  network's other stations, see :mod:`processors.detection.neighbours`;
- city background: a rolling low percentile (``background_quantile``, a stochastic-
  approximation quantile tracker with time constant ``background_tau_s``), emitted with the
  enhancement above it as derived series (aggregated per city by the ``city_enhancement_1h``
  view). CEMS units are aggregated by :mod:`processors.detection.cems`.

Readings whose HJ 212 flag is in ``excluded_flags`` (or non-finite) advance the watermark but
touch no statistic and no detector state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from core.settings import DetectionSettings
from processors.detection.catalogue import Detector, Kind
from processors.detection.cems import CemsAggregator
from processors.detection.multivariate import NEVER_COVER, MultivariateScore
from processors.detection.neighbours import NeighbourCheck
from processors.detection.streams import StreamTable, TrendMode
from processors.detection.tables import (
    NEVER_NS,
    DerivedTable,
    EventTable,
    concat_derived,
    concat_events,
)

__all__ = ["DetectionEngine", "EngineOutput", "flag_codes"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

_A = TypeVar("_A", bound=npt.NDArray[Any])

NS_PER_S = 1_000_000_000
# Mean absolute deviation of a normal variable is sigma * sqrt(2/pi).
MAD_TO_SIGMA = 1.2533
# Weight of each new interval in the typical sampling interval of a stream.
INTERVAL_ALPHA = 0.05
# Weight of each new regular pause in the learned duty-cycle pause of a stream.
PAUSE_ALPHA = 0.2
# A spike must come back within this many sigmas on the next sample.
SPIKE_RETURN_Z = 3.0

# Stateful detector slots, in the order of the state's ``active`` rows.
_STOPPED = ord("F")  # HJ 212 flag: the source (a CEMS unit) is stopped
_SLOT_ALARM, _SLOT_CUT, _SLOT_TREND, _SLOT_STUCK, _SLOT_OOR, _SLOT_DRIFT = range(6)
_N_SLOTS = 6
# Maintenance slots whose re-openings inside one problem episode are one ticket.
_EPISODE_SLOTS = frozenset({_SLOT_STUCK, _SLOT_OOR, _SLOT_DRIFT})
# Instant maintenance detectors, one ticket per device and episode (row in ``_ep_last``).
_INSTANT_TICKETS = (Detector.SPIKE, Detector.GAP)
# Detectors with a fixed stateful slot (the trend slot's detector depends on the stream).
_DETECTOR_SLOT = {
    Detector.THRESHOLD_ALARM: _SLOT_ALARM,
    Detector.POWER_CUT: _SLOT_CUT,
    Detector.STUCK: _SLOT_STUCK,
    Detector.OUT_OF_RANGE: _SLOT_OOR,
    Detector.DRIFT: _SLOT_DRIFT,
}
# The regulatory level slots and their run-below counters.
_LEVEL_COUNTERS = {_SLOT_ALARM: "al_below", _SLOT_CUT: "cut_below"}
_FLOAT_STATE = (
    "n",
    "base",
    "scale",
    "n_hi",
    "n_lo",
    "al_below",
    "cut_below",
    "x1",
    "x2",
    "prev_z",
    "prev2_z",
    "prev_x",
    "stuck_val",
    "bg",
    "ref",
    "smooth",
    "spread",
    "dt_avg",
    "raw_scale",
    "pause",
    "stuck_n",
)
_NAN_STATE = frozenset(
    {"x1", "x2", "prev_z", "prev2_z", "prev_x", "stuck_val", "bg", "ref", "smooth"}
)
_INT_STATE = (
    "last_ts",
    "prev_used_ts",
    "stuck_since",
    "first_ts",
    "tr_since",
    "drift_since",
    "pause_ts",
)


def _first(a: Any, _b: Any) -> Any:
    """``np.where(mask, a, b)`` for a mask known to be all true."""
    return a


def _unpermute(a: _A, rm: npt.NDArray[np.intp] | I64) -> _A:
    """Rows (last axis) written in ``rm`` order, put back in natural order."""
    out: _A = np.empty_like(a)
    out[..., rm] = a
    return out


def _masked(mask: BOOL) -> Callable[[Any, Any], Any]:
    """``np.where`` bound to a mask."""
    return functools.partial(np.where, mask)


def flag_codes(flags: list[str] | npt.NDArray[np.str_]) -> npt.NDArray[np.uint8]:
    """HJ 212 flag letters as byte codes (empty string counts as ``N``)."""
    arr = np.asarray(flags, dtype="S1")
    codes = arr.view(np.uint8).copy()
    codes[codes == 0] = ord("N")
    return codes


@dataclass(frozen=True, slots=True)
class EngineOutput:
    """What one batch produced."""

    events: EventTable
    derived: DerivedTable
    readings: int
    late: int


class DetectionEngine:
    """Runs every detector over batches of readings from many streams.

    Args:
        cfg: the detection settings.
        derived_city: emit per-reading background/enhancement rows for city streams.
    """

    def __init__(self, cfg: DetectionSettings, *, derived_city: bool = True) -> None:
        self.cfg = cfg
        self.streams = StreamTable(cfg)
        self.cems = CemsAggregator(cfg)
        self.neighbours = NeighbourCheck(cfg)
        self.multivariate = MultivariateScore(cfg, self.streams) if cfg.multivariate else None
        self.derived_city = derived_city
        self.late_readings = 0
        self._excluded = np.frombuffer(
            "".join(cfg.excluded_flags).encode("ascii") or b"\xff", dtype=np.uint8
        ).copy()
        self._cap = 0
        self._f: dict[str, F64] = {}
        self._i: dict[str, I64] = {}
        self._active: BOOL = np.zeros((_N_SLOTS, 0), bool)
        self._onset: I64 = np.zeros((_N_SLOTS, 0), np.int64)
        self._seen: I64 = np.zeros(0, np.int64)
        # problem episodes: last occurrence per device of each instant maintenance detector,
        # and per stream and slot the last clear and whether the open event was suppressed
        self._ep_last: I64 = np.zeros((len(_INSTANT_TICKETS), 0), np.int64)
        self._ep_clear: I64 = np.zeros((_N_SLOTS, 0), np.int64)
        self._ep_supp: BOOL = np.zeros((_N_SLOTS, 0), bool)
        self._ep_ns = round(cfg.ticket_episode_s * NS_PER_S)
        self._grace_ns = round(cfg.late_grace_s * NS_PER_S)
        e_i, e_f = np.empty(0, np.int64), np.empty(0)
        self._pending: tuple[I64, I64, F64, BOOL] = (e_i, e_i, e_f, np.empty(0, bool))
        self._ensure_capacity()

    # -- state -----------------------------------------------------------------------------

    def _ensure_capacity(self) -> None:
        cap = self.streams.capacity
        if cap <= self._cap:
            return
        old = self._cap

        def grow_f(name: str, fill: float) -> None:
            new = np.full(cap, fill)
            if old:
                new[:old] = self._f[name]
            self._f[name] = new

        def grow_i(name: str, fill: int) -> None:
            new = np.full(cap, fill, np.int64)
            if old:
                new[:old] = self._i[name]
            self._i[name] = new

        for name in _FLOAT_STATE:
            grow_f(name, np.nan if name in _NAN_STATE else 0.0)
        for name in _INT_STATE:
            grow_i(name, NEVER_NS)
        active = np.zeros((_N_SLOTS, cap), bool)
        onset = np.full((_N_SLOTS, cap), NEVER_NS, np.int64)
        if old:
            active[:, :old] = self._active
            onset[:, :old] = self._onset
        self._active, self._onset = active, onset
        seen = np.full(cap, NEVER_NS, np.int64)
        seen[:old] = self._seen
        self._seen = seen
        ep_last = np.full((len(_INSTANT_TICKETS), cap), NEVER_NS, np.int64)
        ep_clear = np.full((_N_SLOTS, cap), NEVER_NS, np.int64)
        ep_supp = np.zeros((_N_SLOTS, cap), bool)
        if old:
            ep_last[:, :old] = self._ep_last
            ep_clear[:, :old] = self._ep_clear
            ep_supp[:, :old] = self._ep_supp
        self._ep_last, self._ep_clear, self._ep_supp = ep_last, ep_clear, ep_supp
        self.neighbours.grow(cap)
        self._cap = cap

    def register(
        self, device_id: str, metric: str, kind: Kind | None = None, location: str | None = None
    ) -> int:
        """Register (or look up) a stream; see :meth:`StreamTable.register`."""
        known = self.streams.get(device_id, metric)
        idx = self.streams.register(device_id, metric, kind, location)
        self._ensure_capacity()
        if known is None and self.streams.kind[idx] == Kind.CITY:
            self.neighbours.register(idx, device_id, metric)
        return idx

    def reset_streams(self, ids: I64) -> None:
        """Forget the window state of some streams (their partition was revoked)."""
        for name in _FLOAT_STATE:
            self._f[name][ids] = np.nan if name in _NAN_STATE else 0
        for name in _INT_STATE:
            self._i[name][ids] = NEVER_NS
        self._active[:, ids] = False
        self._onset[:, ids] = NEVER_NS
        self._seen[ids] = NEVER_NS
        self._ep_last[:, self.streams.device[ids]] = NEVER_NS
        self._ep_clear[:, ids] = NEVER_NS
        self._ep_supp[:, ids] = False
        self.neighbours.reset(ids)
        if self.multivariate is not None:
            self.multivariate.reset(ids)
        if self._pending[0].shape[0]:
            keep = ~np.isin(self._pending[0], ids)
            self._pending = tuple(a[keep] for a in self._pending)  # type: ignore[assignment]
        self.cems.reset_devices({self.streams.infos[i].device_id for i in ids.tolist()})

    def resume_episode(self, stream: int, detector: Detector, onset_ns: int) -> bool | None:
        """Continue a stored open episode after a restart (its clear then shares its id).

        Called once per stream after the warm-up re-read rebuilt its window state. The
        warm-up may start after the episode's onset, so the rebuilt state opens it again
        under a later onset; the stored onset is carried instead. A stream that saw no
        warm-up reading has no rebuilt state: a regulatory level is carried as open (its
        clear depends on readings only), anything else cannot be judged.

        Args:
            stream: the stream id.
            detector: the stored episode's detector.
            onset_ns: the stored episode's onset, ns since the epoch.

        Returns:
            True when the episode continues, False when the rebuilt state has it closed
            (the caller clears the stored row), None when the engine cannot tell (the
            detector keeps no per-stream episode here, or no state was rebuilt).
        """
        slot = _DETECTOR_SLOT.get(detector)
        if slot is None and int(self.streams.trend_detector[stream]) == detector:
            slot = _SLOT_TREND
        if slot is None:
            return None
        if self._active[slot, stream]:
            self._onset[slot, stream] = onset_ns
            # a maintenance episode continued from the store is reported when it clears
            self._ep_supp[slot, stream] = False
            return True
        if self._i["last_ts"][stream] != NEVER_NS:
            return False
        if slot not in _LEVEL_COUNTERS:
            return None
        self._active[slot, stream] = True
        self._onset[slot, stream] = onset_ns
        self._f[_LEVEL_COUNTERS[slot]][stream] = 0.0
        return True

    def silence_allowance_s(self, ids: I64) -> F64:
        """How long each stream may be silent as part of its learned sampling pattern.

        ``no_data_factor`` typical intervals, or its learned regular (duty-cycle) pause
        times ``duty_pause_factor``, whichever is longer; 0 for a stream with no interval
        learned yet. The liveness check adds its floor (``no_data_floor_s``).
        """
        cfg = self.cfg
        dt = np.nan_to_num(self._f["dt_avg"][ids]) * cfg.no_data_factor
        pause = np.nan_to_num(self._f["pause"][ids]) * cfg.duty_pause_factor
        out: F64 = np.maximum(dt, pause)
        return out

    def usable(self, flags: npt.NDArray[np.uint8], value: F64) -> BOOL:
        """Readings that take part in detection: finite and not flagged out."""
        return np.isfinite(value) & ~np.isin(flags, self._excluded)

    def watermark_ns(self, stream: int) -> int:
        """The newest reading time a stream has processed (``NEVER_NS`` if none)."""
        return int(self._i["last_ts"][stream])

    # -- the batch -------------------------------------------------------------------------

    def process(
        self,
        stream: I64,
        ts_ns: I64,
        value: F64,
        usable: BOOL,
        flags: npt.NDArray[np.uint8] | None = None,
    ) -> EngineOutput:
        """Run every detector over one batch of readings.

        Args:
            stream: stream id per reading (from :meth:`register`).
            ts_ns: measurement time, ns since the epoch (UTC).
            value: reading value.
            usable: False for readings flagged out of detection (see :meth:`usable`).
            flags: the readings' flag codes (ASCII), where known: a CEMS reading flagged F
                (the unit stopped) makes its minute a stopped minute of its hour.

        Returns:
            The detection transitions and derived series the batch produced.
        """
        self._ensure_capacity()
        n_in = int(stream.shape[0])
        if n_in == 0:
            return EngineOutput(EventTable.empty(), DerivedTable.empty(), 0, 0)
        stream = np.asarray(stream, np.int64)
        ts_ns = np.asarray(ts_ns, np.int64)
        if flags is not None:
            self._note_stopped(stream, ts_ns, np.asarray(flags, np.uint8))
        value = np.asarray(value, np.float64)
        usable = np.asarray(usable, bool) & np.isfinite(value)
        order = np.lexsort((ts_ns, stream))
        s, t, x, u = stream[order], ts_ns[order], value[order], usable[order]
        last = self._i["last_ts"][s]
        keep = t > last
        if s.shape[0] > 1:
            dup = np.zeros(s.shape[0], bool)
            dup[1:] = (s[1:] == s[:-1]) & (t[1:] == t[:-1])
            keep &= ~dup
        late = int(n_in - np.count_nonzero(keep))
        self.late_readings += late
        late_events = EventTable.empty()
        if late:
            # older than the watermark: level checks only, so no exceedance is ever missed
            old = ~keep & (t < last) & u
            if old.any():
                late_events = self._late_levels(s[old], t[old], x[old])
        if not keep.all():
            s, t, x, u = s[keep], t[keep], x[keep], u[keep]
        if self._grace_ns > 0:
            s, t, x, u = self._hold_back(s, t, x, u, flush=False)
        return self._finish(s, t, x, u, n_in, late, late_events)

    def flush(self) -> EngineOutput:
        """Process every reading still held back by the grace (end of a replay)."""
        self._ensure_capacity()
        s, t, x, u = self._hold_back(
            np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0, bool), flush=True
        )
        return self._finish(s, t, x, u, 0, 0, EventTable.empty())

    @property
    def held_back(self) -> int:
        """Readings waiting for the grace to pass."""
        return int(self._pending[0].shape[0])

    def _hold_back(
        self, s: I64, t: I64, x: F64, u: BOOL, *, flush: bool
    ) -> tuple[I64, I64, F64, BOOL]:
        """Merge with the held readings; release those the stream's newest time passed by grace."""
        ps, pt, px, pu = self._pending
        if ps.shape[0]:
            s, t, x, u = (
                np.concatenate([ps, s]),
                np.concatenate([pt, t]),
                np.concatenate([px, x]),
                np.concatenate([pu, u]),
            )
        if s.shape[0] == 0:
            return s, t, x, u
        np.maximum.at(self._seen, s, t)
        ready = np.ones(s.shape[0], bool) if flush else t <= self._seen[s] - self._grace_ns
        held = ~ready
        self._pending = (s[held], t[held], x[held], u[held])
        if held.any():
            s, t, x, u = s[ready], t[ready], x[ready], u[ready]
        if ps.shape[0] and s.shape[0]:
            order = np.lexsort((t, s))
            s, t, x, u = s[order], t[order], x[order], u[order]
        return s, t, x, u

    def _finish(
        self, s: I64, t: I64, x: F64, u: BOOL, n_in: int, late: int, late_events: EventTable
    ) -> EngineOutput:
        if s.shape[0] == 0:
            return EngineOutput(late_events.sorted(), DerivedTable.empty(), n_in, late)
        events, derived, base, ok = self._run(s, t, x, u)
        cems_events, cems_derived = self._run_cems(s, t, x, u)
        nb_events = self._neighbour_events(s, t, base, ok)
        out_events = concat_events([events, cems_events, nb_events, late_events]).sorted()
        return EngineOutput(out_events, concat_derived([derived, cems_derived]), n_in, late)

    def _neighbour_events(self, s: I64, t: I64, base: F64, ok: BOOL) -> EventTable:
        found = self.neighbours.update(s, t, base, ok)
        if found is None:
            return EventTable.empty()
        ss, opened, at, started, offset, dev, limit, med = found
        ended = np.where(opened, NEVER_NS, at)
        det = np.full(ss.shape[0], Detector.NEIGHBOUR_DRIFT, np.int16)
        nan = np.full(ss.shape[0], np.nan)
        return self._table(ss, det, opened, at, started, ended, offset, dev, limit, med, nan)

    def _late_levels(self, s: I64, t: I64, x: F64) -> EventTable:
        """Instant events for late readings beyond a regulatory level or the plausible range.

        A late reading inside an alarm (power cut) that is still open adds nothing.
        """
        st = self.streams
        parts: list[EventTable] = []
        for slot, det, level in (
            (_SLOT_ALARM, Detector.THRESHOLD_ALARM, st.alarm),
            (_SLOT_CUT, Detector.POWER_CUT, st.cut),
        ):
            thr = level[s]
            covered = self._active[slot, s] & (self._onset[slot, s] <= t)
            idx = np.flatnonzero((x >= thr) & ~covered)
            if idx.size:
                parts.append(self._instant(s, t, x, idx, det, x[idx] / thr[idx], thr[idx]))
        lo, hi = st.lo[s], st.hi[s]
        idx = np.flatnonzero((x < lo) | (x > hi))
        if idx.size:
            thr = np.where(x[idx] > hi[idx], hi[idx], lo[idx])
            parts.append(self._instant(s, t, x, idx, Detector.OUT_OF_RANGE, x[idx], thr))
        return concat_events(parts)

    def _instant(
        self, s: I64, t: I64, x: F64, idx: npt.NDArray[np.intp], det: Detector, score: F64, thr: F64
    ) -> EventTable:
        nan = np.full(idx.size, np.nan)
        ts = t[idx]
        return self._table(
            s[idx], np.full(idx.size, det, np.int16), np.ones(idx.size, bool),
            ts, ts, ts, x[idx], score, thr, nan, nan,
        )  # fmt: skip

    def _note_stopped(self, stream: I64, ts_ns: I64, flags: npt.NDArray[np.uint8]) -> None:
        """Hand the CEMS aggregator the readings flagged F (stopped) of its units."""
        idx = np.flatnonzero((flags == _STOPPED) & (self.streams.kind[stream] == Kind.CEMS))
        if idx.size == 0:
            return
        uniq = np.unique(stream[idx])
        infos = self.streams.infos
        self.cems.note_stopped(
            [infos[int(i)].device_id for i in uniq], np.searchsorted(uniq, stream[idx]), ts_ns[idx]
        )

    def _run_cems(self, s: I64, t: I64, x: F64, u: BOOL) -> tuple[EventTable, DerivedTable]:
        is_cems = self.streams.kind[s] == Kind.CEMS
        if not is_cems.any():
            return EventTable.empty(), DerivedTable.empty()
        idx = np.flatnonzero(is_cems)
        infos = self.streams.infos
        uniq = np.unique(s[idx])
        dev_of = {int(i): infos[int(i)].device_id for i in uniq}
        met_of = {int(i): infos[int(i)].metric for i in uniq}
        return self.cems.process(
            [dev_of[int(i)] for i in uniq],
            [met_of[int(i)] for i in uniq],
            np.searchsorted(uniq, s[idx]),
            t[idx],
            x[idx],
            u[idx],
        )

    def _run(self, s: I64, t: I64, x: F64, u: BOOL) -> tuple[EventTable, DerivedTable, F64, BOOL]:
        cfg = self.cfg
        st = self.streams
        n = int(s.shape[0])
        new_seg = np.ones(n, bool)
        new_seg[1:] = s[1:] != s[:-1]
        starts = np.flatnonzero(new_seg)
        counts = np.diff(np.append(starts, n))
        co = np.argsort(-counts, kind="stable")
        seg_start = starts[co]
        seg_count = counts[co]
        ls = s[seg_start]  # local index j -> stream id
        n_rank = int(seg_count[0])
        m_of_rank = np.searchsorted(-seg_count, -np.arange(n_rank), side="left")

        # local copies of state and parameters (gathered once per batch)
        f = {k: v[ls] for k, v in self._f.items()}
        i = {k: v[ls] for k, v in self._i.items()}
        active0 = self._active[:, ls]
        active = active0.copy()
        p_alarm, p_alarm_clear = st.alarm[ls], st.alarm_clear[ls]
        p_cut, p_restore = st.cut[ls], st.restore[ls]
        p_floor, p_rel = st.sigma_floor[ls], st.sigma_rel[ls]
        p_rise = st.min_rise[ls]
        p_drift = st.drift_limit[ls]
        p_city = st.kind[ls] == Kind.CITY
        # blocks no stream of this batch needs are skipped (their state stays as it is)
        has_levels = bool(np.isfinite(p_alarm).any() or np.isfinite(p_cut).any())
        has_city = bool(p_city.any())
        has_drift = bool(np.isfinite(p_drift).any())
        p_mode = st.trend_mode[ls]
        p_up = p_mode != TrendMode.NONE
        p_both = p_mode == TrendMode.BOTH

        o_state = np.zeros((_N_SLOTS, n), bool)
        o_spike = np.zeros(n, bool)
        o_gap = np.zeros(n, bool)
        o_aux_ts = np.zeros(n, np.int64)
        o_gap_ts = np.zeros(n, np.int64)
        o_aux_x = np.zeros(n)
        o_score = np.zeros(n)
        o_base = np.zeros(n)
        o_ref = np.zeros(n)
        o_sigma = np.zeros(n)
        o_bg = np.zeros(n)
        o_used = np.zeros(n, bool)
        o_warm = np.zeros(n, bool)
        o_zr = np.zeros(n)

        gap_s, gap_factor = cfg.gap_s, cfg.gap_factor
        pause_max, pause_f = cfg.duty_pause_max_s, cfg.duty_pause_factor
        pause_recur_ns = cfg.duty_pause_recur_s * NS_PER_S
        tau_bg = cfg.background_tau_s
        warm_n, c_h = float(cfg.warmup_samples), cfg.huber_c
        warm_ns = cfg.warmup_s * NS_PER_S
        gen_warm_n = float(cfg.generic_warmup_samples)
        a_gen = -np.expm1(-1.0 / gen_warm_n)
        z_open, z_close = cfg.z_open, cfg.z_close
        open_n, close_n = float(cfg.open_samples), float(cfg.close_samples)
        rebase_ns = cfg.rebaseline_s * NS_PER_S
        drift_ns = cfg.drift_persist_s * NS_PER_S
        tau_sm = cfg.drift_smooth_s
        q_bg = cfg.background_quantile
        ts_f = t.astype(np.float64)

        # rank-major layout: the readings of rank k are the contiguous slice off[k]:off[k+1],
        # so the loop reads and writes slices (views), never gathers
        off = np.zeros(n_rank + 1, np.int64)
        np.cumsum(m_of_rank, out=off[1:])
        rank_of = np.repeat(np.arange(n_rank), m_of_rank)
        rm = seg_start[np.arange(n) - off[rank_of]] + rank_of
        x_r, t_r, u_r, ts_f = x[rm], t[rm], u[rm], t[rm].astype(np.float64)
        oor = (x < st.lo[s]) | (x > st.hi[s])
        use_o = u & ~oor
        stuck_o, back_o, stuck_end = self._stuck(s, t, x, use_o, self._active[_SLOT_STUCK, s])
        oor_r, use_r, stuck_r, back_r = oor[rm], use_o[rm], stuck_o[rm], back_o[rm]
        # generic devices with several metrics: the device's T² (multivariate.py); once it is
        # armed, the per-metric anomaly of its streams opens no more events
        mv_events = EventTable.empty()
        cover_r = np.full(n, NEVER_COVER, np.int64)
        if self.multivariate is not None:
            mv_events = self.multivariate.process(s, t, x, use_o)
            cover_r = self.multivariate.cover_ts(s)[rm]
        back_any = np.logical_or.reduceat(back_r, off[:-1]).tolist()
        all_use = np.logical_and.reduceat(use_r, off[:-1]).tolist()
        # per-reading intervals and smoothing weights, computed once for the batch
        prev_t = np.empty(n, np.int64)
        prev_t[1:] = t[:-1]
        prev_t[starts] = self._i["last_ts"][s[starts]]
        prev_r = prev_t[rm]
        hp_r = prev_r != NEVER_NS
        dt_r = np.where(hp_r, (ts_f - prev_r) / NS_PER_S, 0.0)
        ab_r = -np.expm1(-dt_r / cfg.baseline_tau_s)
        as_r = -np.expm1(-dt_r / cfg.scale_tau_s)
        aref_r = -np.expm1(-dt_r / cfg.drift_tau_s) if has_drift else dt_r
        asm_r = -np.expm1(-dt_r / cfg.drift_smooth_s) if has_drift and has_city else dt_r
        m_prev = -1
        fv: dict[str, F64] = {}
        iv: dict[str, I64] = {}
        pv: dict[str, Any] = {}
        sel: Callable[[Any, Any], Any]
        av = active
        params = {
            "alarm": p_alarm, "alarm_clear": p_alarm_clear, "cut": p_cut, "restore": p_restore,
            "floor": p_floor, "rel": p_rel, "rise": p_rise, "drift": p_drift, "city": p_city,
            "up": p_up, "both": p_both,
        }  # fmt: skip

        for k in range(n_rank):
            lo_k, hi_k = int(off[k]), int(off[k + 1])
            m = hi_k - lo_k
            if m != m_prev:
                fv = {name: v[:m] for name, v in f.items()}
                iv = {name: v[:m] for name, v in i.items()}
                pv = {name: v[:m] for name, v in params.items()}
                av = active[:, :m]
                m_prev = m
            xk, tk, uk = x_r[lo_k:hi_k], t_r[lo_k:hi_k], u_r[lo_k:hi_k]
            last_t = prev_r[lo_k:hi_k]
            has_prev = hp_r[lo_k:hi_k]
            dt = dt_r[lo_k:hi_k]
            # a gap is silence longer than gap_s and than gap_factor typical intervals, and
            # not a regular pause of the stream's duty cycle (inlet switching, calibration
            # cycles): pauses up to duty_pause_max_s are learned, and one up to
            # duty_pause_factor times the learned pause belongs to the sampling pattern
            dt_avg = fv["dt_avg"]
            pause = fv["pause"]
            long_ = has_prev & (dt_avg > 0) & (dt > gap_s) & (dt > gap_factor * dt_avg)
            # a pause is part of the pattern only while it recurs (one outage now and then
            # teaches nothing): the previous one ended at most duty_pause_recur_s before
            p_ts = iv["pause_ts"]
            recent = (p_ts != NEVER_NS) & ((last_t - p_ts) <= pause_recur_ns)
            regular = (pause > 0) & (dt <= pause_f * pause) & recent
            gap = long_ & ~regular
            learn = long_ & (dt <= pause_max)
            fv["pause"][...] = np.where(
                learn,
                np.where((pause > 0) & recent, pause + PAUSE_ALPHA * (dt - pause), dt),
                pause,
            )
            iv["pause_ts"][...] = np.where(learn, tk, p_ts)
            fv["dt_avg"][...] = np.where(
                has_prev, np.where(dt_avg > 0, dt_avg + INTERVAL_ALPHA * (dt - dt_avg), dt), 0.0
            )
            o_gap[lo_k:hi_k] = gap
            o_gap_ts[lo_k:hi_k] = last_t

            # out of range: a fault; such readings feed no statistic
            oor_now = oor_r[lo_k:hi_k]
            a_oor = av[_SLOT_OOR]
            a_oor[:] = np.where(uk, oor_now, a_oor)
            use = use_r[lo_k:hi_k]
            sel = _first if all_use[k] else _masked(use)
            o_used[lo_k:hi_k] = use

            # regulatory levels: raised at the crossing reading; cleared after level_n
            # consecutive readings below the restore level (no chattering alarms)
            # stuck (the same value for stuck_s, judged before the loop); a sensor back from
            # a stuck fault re-learns its baseline and noise from scratch
            a_st = stuck_r[lo_k:hi_k]
            av[_SLOT_STUCK] = a_st
            if back_any[k]:
                back = back_r[lo_k:hi_k]
                fv["n"][...] = np.where(back, 0.0, fv["n"])
                fv["x1"][...] = np.where(back, np.nan, fv["x1"])
                fv["x2"][...] = np.where(back, np.nan, fv["x2"])
                fv["scale"][...] = np.where(back, 0.0, fv["scale"])

            # robust level (median of the last three used samples) against the baseline
            nn = fv["n"]
            first = nn == 0
            warm = nn < warm_n
            b = fv["base"]
            sc = fv["scale"]
            x1, x2 = fv["x1"][...], fv["x2"]
            lvl = np.where(
                np.isnan(x2),
                xk,
                np.maximum(np.minimum(x1, x2), np.minimum(np.maximum(x1, x2), xk)),
            )
            fv["x2"][...] = sel(x1, x2)
            fv["x1"][...] = sel(xk, x1)
            sigma = np.maximum(sc * MAD_TO_SIGMA, pv["floor"] + pv["rel"] * np.abs(b))
            r = np.where(first, 0.0, lvl - b)
            z = r / sigma
            iv["first_ts"][...] = np.where(use & first, tk, iv["first_ts"])
            both = pv["both"]
            # generic metrics have no known time scale: enough samples arm them as well
            armed = (
                ~warm & (((tk - iv["first_ts"]) >= warm_ns) | (both & (nn >= gen_warm_n))) & ~gap
            )
            rise = pv["rise"]
            hi = armed & (((r >= rise) & (z >= z_open)) | (both & (-r >= rise) & (z <= -z_open)))
            hi &= tk < cover_r[lo_k:hi_k]
            lo = np.where(both, np.abs(z), z) < z_close
            n_hi = fv["n_hi"]
            n_lo = fv["n_lo"]
            n_hi = sel(np.where(hi, n_hi + 1.0, 0.0), n_hi)
            n_lo = sel(np.where(lo, n_lo + 1.0, 0.0), n_lo)
            fv["n_hi"][...], fv["n_lo"][...] = n_hi, n_lo
            a_tr = av[_SLOT_TREND]
            tr_new = np.where(use & pv["up"], np.where(a_tr, n_lo < close_n, n_hi >= open_n), a_tr)
            since = np.where(tr_new & ~a_tr, tk, iv["tr_since"])
            iv["tr_since"][...] = since
            a_tr[:] = tr_new
            o_score[lo_k:hi_k] = z
            o_base[lo_k:hi_k] = b
            o_warm[lo_k:hi_k] = use & ~warm
            o_sigma[lo_k:hi_k] = sigma

            # spike inputs: the raw reading against its own noise scale (judged after the loop)
            rs = fv["raw_scale"]
            sigma_raw = np.maximum(rs * MAD_TO_SIGMA, sigma)
            o_zr[lo_k:hi_k] = np.where(first, 0.0, (xk - b) / sigma_raw)

            # baseline and scale: Huber-clipped updates, frozen while a trend event is open
            # (until it has been open rebaseline_s: then it is the new normal)
            # (generic metrics: after generic_warmup_samples typical intervals)
            rebase_after = np.where(both, gen_warm_n * fv["dt_avg"] * NS_PER_S, rebase_ns)
            upd = use & ~a_st & (~tr_new | ((tk - since) >= rebase_after))
            inv_n = 1.0 / np.maximum(nn, 1.0)
            alpha_b = np.where(warm, 1.0 / (nn + 1.0), ab_r[lo_k:hi_k])
            # generic metrics: the noise scale over as many samples as arm them, not over
            # scale_tau_s (their time scale is unknown; an hour of a 1 s stream is too long)
            alpha_s = np.where(warm, inv_n, np.where(both, a_gen, as_r[lo_k:hi_k]))
            lim = c_h * sigma
            rh = np.where(warm, r, np.clip(r, -lim, lim))
            fv["base"][...] = np.where(use & first, xk, np.where(upd, b + alpha_b * rh, b))
            abs_r = np.where(warm, np.abs(r), np.minimum(np.abs(r), lim))
            fv["scale"][...] = np.where(upd & ~first, sc + alpha_s * (abs_r - sc), sc)
            raw_lim = c_h * sigma_raw
            raw_r = np.where(first, 0.0, np.abs(xk - b))
            abs_raw = np.where(warm, raw_r, np.minimum(raw_r, raw_lim))
            fv["raw_scale"][...] = np.where(upd & ~first, rs + alpha_s * (abs_raw - rs), rs)

            # city background: a low-quantile tracker (stochastic approximation)
            # with a step scaled by the spread of the data around it: it rises by about one
            # spread per background_tau_s and falls (1 - q) / q times faster
            if has_city:
                bg = fv["bg"]
                spread = fv["spread"]
                a_bg = np.minimum(dt / tau_bg, 1.0)
                dev_bg = np.where(np.isnan(bg), 0.0, np.abs(xk - bg))
                spread = sel(spread + a_bg * (dev_bg - spread), spread)
                fv["spread"][...] = spread
                step = np.maximum(spread, sigma) * a_bg / q_bg
                bg_new = np.where(np.isnan(bg), xk, bg + step * (q_bg - (xk < bg)))
                bg_new = sel(bg_new, bg)
                fv["bg"][...] = bg_new
                o_bg[lo_k:hi_k] = bg_new

            # drift: the baseline wandering off a slow reference (days) for drift_persist_s
            # (city stations: the background smoothed over drift_smooth_s, so neither plumes
            # nor the diurnal cycle count as drift)
            if has_drift:
                b_now = fv["base"]
                if has_city:
                    sm = fv["smooth"]
                    a_sm = asm_r[lo_k:hi_k]
                    sm = np.where(
                        use, np.where(np.isnan(sm), bg_new, sm + a_sm * (bg_new - sm)), sm
                    )
                    fv["smooth"][...] = sm
                    b_now = np.where(pv["city"], sm, b_now)
                ref = fv["ref"]
                # the reference follows the level until the level has settled
                learning = (tk - iv["first_ts"]) < np.where(pv["city"], tau_sm * NS_PER_S, warm_ns)
                ref = np.where(
                    upd & ~warm,
                    np.where(
                        np.isnan(ref) | learning,
                        b_now,
                        ref + aref_r[lo_k:hi_k] * (b_now - ref),
                    ),
                    ref,
                )
                fv["ref"][...] = ref
                o_ref[lo_k:hi_k] = ref
                dev = np.abs(b_now - ref)
                lim_d = pv["drift"]
                over = armed & ~learning & use & (dev > lim_d)
                d_since = iv["drift_since"]
                d_start = np.where(d_since == NEVER_NS, tk, d_since)
                d_since = sel(np.where(over, d_start, NEVER_NS), d_since)
                iv["drift_since"][...] = d_since
                a_dr = av[_SLOT_DRIFT]
                a_dr[:] = np.where(
                    use,
                    np.where(a_dr, dev > 0.5 * lim_d, over & ((tk - d_since) >= drift_ns)),
                    a_dr,
                )

            fv["n"][...] = nn + use
            o_state[:, lo_k:hi_k] = av

        i["last_ts"] = t[seg_start + seg_count - 1]
        # back from rank-major to (stream, time) order
        o_state = _unpermute(o_state, rm)
        o_spike, o_gap = _unpermute(o_spike, rm), _unpermute(o_gap, rm)
        o_aux_ts, o_gap_ts = _unpermute(o_aux_ts, rm), _unpermute(o_gap_ts, rm)
        o_aux_x, o_score = _unpermute(o_aux_x, rm), _unpermute(o_score, rm)
        o_base, o_ref = _unpermute(o_base, rm), _unpermute(o_ref, rm)
        o_sigma, o_bg = _unpermute(o_sigma, rm), _unpermute(o_bg, rm)
        o_used, o_warm = _unpermute(o_used, rm), _unpermute(o_warm, rm)
        o_zr = _unpermute(o_zr, rm)

        for k2, v in f.items():
            self._f[k2][ls] = v
        for k2, vi in i.items():
            self._i[k2][ls] = vi
        self._active[:, ls] = active
        self._spikes(s, t, x, o_used, o_warm, o_zr, o_spike, o_aux_ts, o_aux_x)
        if has_levels:
            # regulatory levels (stateless of the rest): judged over the whole batch at once
            for slot, on_lvl, off_lvl, cnt_name in (
                (_SLOT_ALARM, st.alarm, st.alarm_clear, "al_below"),
                (_SLOT_CUT, st.cut, st.restore, "cut_below"),
            ):
                lv = np.flatnonzero(np.isfinite(on_lvl[s]))
                o_state[slot] = False
                if lv.size:
                    o_state[slot, lv] = self._level(
                        s[lv], x[lv], use_o[lv], on_lvl, off_lvl, slot, cnt_name
                    )
        ends, val_end, since_end, reps_end = stuck_end
        self._f["stuck_val"][ends] = val_end
        self._f["stuck_n"][ends] = reps_end
        self._i["stuck_since"][ends] = since_end

        events = self._transitions(
            s, t, x, starts, counts, co, ls, active0, o_state, o_score, o_base, o_sigma, o_ref
        )
        instant = self._instant_events(
            s, t, x, o_spike, o_gap, o_aux_ts, o_aux_x, o_gap_ts, o_base, o_sigma
        )
        derived = self._city_derived(s, t, x, o_used, o_bg)
        return concat_events([events, instant, mv_events]), derived, o_base, o_warm

    def _level(
        self, s: I64, x: F64, use: BOOL, on_lvl: F64, off_lvl: F64, slot: int, cnt_name: str
    ) -> BOOL:
        """A regulatory level's state after each reading; updates the stream's end state.

        Raised at the reading that reaches ``on_lvl``; cleared at the ``level_clear_samples``-th
        consecutive used reading below ``off_lvl`` (a run carried across batches). Vectorised:
        a reading is in alarm when the last raising reading comes after the last clearing one.
        """
        n = s.shape[0]
        carried: BOOL = self._active[slot, s]
        ui = np.flatnonzero(use)
        if ui.size == 0:
            return carried.copy()
        su, xu = s[ui], x[ui]
        k = np.arange(ui.size)
        first = np.ones(ui.size, bool)
        first[1:] = su[1:] != su[:-1]
        below = xu < off_lvl[su]
        raise_ = xu >= on_lvl[su]
        reset = ~below | first
        r = np.maximum.accumulate(np.where(reset, k, 0))
        run = np.where(~below[r], k - r, k - r + 1 + self._f[cnt_name][su[r]])
        run = np.where(below, run, 0.0)
        clear = below & (run >= self.cfg.level_clear_samples)
        base = np.where(first, 2 * k - 1, -2)
        carried_u = carried[ui]
        on_at = np.maximum.accumulate(
            np.maximum(np.where(raise_, 2 * k + 1, np.where(first & carried_u, 2 * k, -2)), base)
        )
        off_at = np.maximum.accumulate(np.maximum(np.where(clear, 2 * k + 1, -2), base))
        act_u = on_at > off_at
        seg_first = np.ones(n, bool)
        seg_first[1:] = s[1:] != s[:-1]
        state = np.where(seg_first, carried, False)
        state[ui] = act_u
        at = np.maximum.accumulate(np.where(seg_first | use, np.arange(n), 0))
        last = np.ones(ui.size, bool)
        last[:-1] = su[1:] != su[:-1]
        ends = su[last]
        self._active[slot, ends] = act_u[last]
        self._f[cnt_name][ends] = np.where(act_u[last], run[last], 0.0)
        out: BOOL = state[at]
        return out

    def _stuck(
        self, s: I64, t: I64, x: F64, use: BOOL, carried: BOOL
    ) -> tuple[BOOL, BOOL, tuple[I64, F64, I64, F64]]:
        """Stuck state after each reading, where it ends, and each stream's end state.

        A used reading equal to the previous used one continues a run begun at the last
        change; the sensor is stuck while the run has lasted ``stuck_s``. Unused readings keep
        the state. Vectorised over the batch (stream, time order), the run carried across
        batches.

        Returns:
            Stuck per reading, "back from stuck" per reading, and (streams with used
            readings, their last used value, the start time of their current run, its
            repeats so far).
        """
        n = s.shape[0]
        ui = np.flatnonzero(use)
        if ui.size == 0:
            empty = (ui.astype(np.int64), x[ui], t[ui], x[ui])
            return carried.copy(), np.zeros(n, bool), empty
        su, xu, tu = s[ui], x[ui], t[ui]
        first = np.ones(ui.size, bool)
        first[1:] = su[1:] != su[:-1]
        prev = np.empty(ui.size)
        prev[1:] = xu[:-1]
        prev[first] = self._f["stuck_val"][su[first]]
        same = xu == prev
        mark = ~same | first
        run_at = np.maximum.accumulate(np.where(mark, np.arange(ui.size), 0))
        since = np.where(same[run_at] & first[run_at], self._i["stuck_since"][su[run_at]], 0)
        since = np.where(~same[run_at], tu[run_at], since)
        # repeats of the run's value so far (a run begun in an earlier batch carries its own)
        reps: F64 = (
            np.arange(ui.size, dtype=np.float64)
            - run_at
            + np.where(same[run_at] & first[run_at], self._f["stuck_n"][su[run_at]] + 1, 0.0)
        )
        stuck_u = (
            same
            & ((tu - since) >= self.cfg.stuck_s * NS_PER_S)
            & (reps + 1 >= self.cfg.stuck_min_samples)
        )
        # per reading: the state after the last used reading so far (else the carried one)
        seg_first = np.ones(n, bool)
        seg_first[1:] = s[1:] != s[:-1]
        state = np.where(seg_first, carried, False)
        state[ui] = stuck_u
        at = np.maximum.accumulate(np.where(seg_first | use, np.arange(n), 0))
        stuck = state[at]
        was = np.empty(ui.size, bool)
        was[1:] = stuck_u[:-1]
        was[first] = carried[ui[first]]
        back = np.zeros(n, bool)
        back[ui] = was & ~stuck_u
        last = np.ones(ui.size, bool)
        last[:-1] = su[1:] != su[:-1]
        since_end: I64 = since[last].astype(np.int64)
        return stuck, back, (su[last], xu[last], since_end, reps[last].astype(np.float64))

    def _spikes(
        self,
        s: I64,
        t: I64,
        x: F64,
        used: BOOL,
        warmed: BOOL,
        zr: F64,
        o_spike: BOOL,
        o_aux_ts: I64,
        o_aux_x: F64,
    ) -> None:
        """Spikes: the previous used sample was far out and the samples around it were not.

        On leak monitors and city stations (streams that look for rises: releases, plumes) a
        short rise above background is signal, not a fault: in atmospheric greenhouse-gas
        practice a "spike" is a short, high excursion caused by a very local emission near
        the inlet, i.e. real air (ICOS Atmosphere network: Cristofanelli et al. 2023, AMT 16,
        5977, doi:10.5194/amt-16-5977-2023; El Yazidi et al. 2018, AMT 11, 1599,
        doi:10.5194/amt-11-1599-2018, who detect *positive* spikes from local sources to
        select background data, not to invalidate the instrument). So on those streams
        only what is physically implausible earns a fault verdict: a reading outside the
        plausible range (``out_of_range``) or a one-sample drop far *below* the background,
        which ambient air cannot do (the background is the floor local sources add to). A
        one-sample rise is left to the release/plume detectors, whose persistence rule
        decides whether it is an event. Other streams (mine sensors, whose one-sample jumps
        are judged against regulatory levels anyway; generic metrics) keep the two-sided rule.

        Vectorised over the used readings of the batch (in stream, time order), carrying the
        last two used samples of each stream across batches.
        """
        ui = np.flatnonzero(used)
        if ui.size == 0:
            return
        su = s[ui]
        first = np.ones(ui.size, bool)
        first[1:] = su[1:] != su[:-1]
        last = np.ones(ui.size, bool)
        last[:-1] = su[1:] != su[:-1]
        f, i = self._f, self._i
        fs = su[first]

        def shifted(cur: npt.NDArray[Any], carried: npt.NDArray[Any]) -> npt.NDArray[Any]:
            out = np.empty_like(cur)
            out[1:] = cur[:-1]
            out[first] = carried[fs]
            return out

        z = zr[ui]
        pz = shifted(z, f["prev_z"])
        p2z = shifted(pz, f["prev2_z"])
        px = shifted(x[ui], f["prev_x"])
        pt = shifted(t[ui], i["prev_used_ts"])
        kind = self.streams.kind[su]
        rises_are_signal = (self.streams.trend_mode[su] == TrendMode.UP) & (
            (kind == Kind.LEAK) | (kind == Kind.CITY)
        )
        o_spike[ui] = (
            warmed[ui]
            & (np.abs(pz) >= self.cfg.spike_z)
            & ~(rises_are_signal & (pz > 0))
            & (np.abs(z) < SPIKE_RETURN_Z)
            & (np.abs(p2z) < SPIKE_RETURN_Z)
        )
        o_aux_ts[ui] = pt
        o_aux_x[ui] = px
        ls = su[last]
        f["prev_z"][ls] = z[last]
        f["prev2_z"][ls] = pz[last]
        f["prev_x"][ls] = x[ui][last]
        i["prev_used_ts"][ls] = t[ui][last]

    def _transitions(
        self,
        s: I64,
        t: I64,
        x: F64,
        starts: npt.NDArray[np.intp],
        counts: npt.NDArray[np.intp],
        co: npt.NDArray[np.intp],
        ls: I64,
        active0: BOOL,
        o_state: BOOL,
        o_score: F64,
        o_base: F64,
        o_sigma: F64,
        o_ref: F64,
    ) -> EventTable:
        st = self.streams
        n = int(s.shape[0])
        inv_co = np.empty_like(co)
        inv_co[co] = np.arange(co.shape[0])
        seg_first = np.repeat(starts, counts)
        seg_last = starts + counts - 1
        ar = np.arange(n)
        parts: list[EventTable] = []
        for slot in range(_N_SLOTS):
            a = o_state[slot]
            prev = np.empty(n, bool)
            prev[1:] = a[:-1]
            prev[starts] = active0[slot, inv_co]
            opened = a & ~prev
            cleared = prev & ~a
            if not (opened.any() or cleared.any()):
                continue
            onset_idx = np.maximum.accumulate(np.where(opened, ar, -1))
            carried = self._onset[slot, s]
            in_batch = onset_idx >= seg_first
            onset_ns = np.where(in_batch, t[np.maximum(onset_idx, 0)], carried)
            # carry the onset of events still open at the end of the batch
            last_open = onset_idx[seg_last]
            has = last_open >= starts
            self._onset[slot, s[starts[has]]] = t[last_open[has]]
            idx = np.flatnonzero(opened | cleared)
            ss = s[idx]
            if slot == _SLOT_ALARM:
                det = np.full(idx.shape[0], Detector.THRESHOLD_ALARM, np.int16)
                thr = st.alarm[ss]
                score = x[idx] / thr
            elif slot == _SLOT_CUT:
                det = np.full(idx.shape[0], Detector.POWER_CUT, np.int16)
                thr = st.cut[ss]
                score = x[idx] / thr
            elif slot == _SLOT_TREND:
                det = st.trend_detector[ss].astype(np.int16)
                thr = o_base[idx] + st.min_rise[ss]
                score = o_score[idx]
            elif slot == _SLOT_STUCK:
                det = np.full(idx.shape[0], Detector.STUCK, np.int16)
                thr = np.full(idx.shape[0], np.nan)
                score = (t[idx] - onset_ns[idx]) / NS_PER_S
            elif slot == _SLOT_DRIFT:
                det = np.full(idx.shape[0], Detector.DRIFT, np.int16)
                thr = st.drift_limit[ss]
                score = np.abs(o_base[idx] - o_ref[idx])
            else:
                det = np.full(idx.shape[0], Detector.OUT_OF_RANGE, np.int16)
                thr = np.where(x[idx] > st.hi[ss], st.hi[ss], st.lo[ss])
                score = x[idx]
            is_open = opened[idx]
            if slot in _EPISODE_SLOTS and self._ep_ns > 0:
                report = self._episode_rows(slot, ss, t[idx], is_open)
                if not report.all():
                    idx, ss, is_open = idx[report], ss[report], is_open[report]
                    det, thr, score = det[report], thr[report], score[report]
                    if idx.size == 0:
                        continue
            started = np.where(is_open, t[idx], onset_ns[idx])
            ended = np.where(is_open, NEVER_NS, t[idx])
            parts.append(
                self._table(
                    ss,
                    det,
                    is_open,
                    t[idx],
                    started,
                    ended,
                    x[idx],
                    score,
                    thr,
                    o_base[idx],
                    o_sigma[idx],
                )
            )
        del ls
        return concat_events(parts)

    def _instant_events(
        self,
        s: I64,
        t: I64,
        x: F64,
        o_spike: BOOL,
        o_gap: BOOL,
        o_aux_ts: I64,
        o_aux_x: F64,
        o_gap_ts: I64,
        o_base: F64,
        o_sigma: F64,
    ) -> EventTable:
        parts: list[EventTable] = []
        idx = self._one_per_episode(0, s, t, np.flatnonzero(o_spike))
        if idx.size:
            z = (o_aux_x[idx] - o_base[idx]) / o_sigma[idx]
            parts.append(
                self._table(
                    s[idx], np.full(idx.size, Detector.SPIKE, np.int16), np.ones(idx.size, bool),
                    t[idx], o_aux_ts[idx], o_aux_ts[idx], o_aux_x[idx], z,
                    np.full(idx.size, np.nan), o_base[idx], o_sigma[idx],
                )
            )  # fmt: skip
        idx = self._one_per_episode(1, s, t, np.flatnonzero(o_gap))
        if idx.size:
            gap_s = (t[idx] - o_gap_ts[idx]) / NS_PER_S
            parts.append(
                self._table(
                    s[idx], np.full(idx.size, Detector.GAP, np.int16), np.ones(idx.size, bool),
                    t[idx], o_gap_ts[idx], t[idx], x[idx], gap_s,
                    np.full(idx.size, self.cfg.gap_s), o_base[idx], o_sigma[idx],
                )
            )  # fmt: skip
        return concat_events(parts)

    def _one_per_episode(
        self, row: int, s: I64, t: I64, idx: npt.NDArray[np.intp]
    ) -> npt.NDArray[np.intp]:
        """The occurrences of an instant maintenance detector that open a new ticket.

        An occurrence belongs to its device's current problem episode (no new ticket) when
        the device's previous occurrence of the same detector, on any of its metrics, is at
        most ``ticket_episode_s`` older. Episodes chain on occurrences, so a problem that
        keeps recurring stays one ticket. The last occurrence per device is carried.
        """
        if idx.size == 0 or self._ep_ns <= 0:
            return idx
        dev = self.streams.device[s[idx]]
        tt = t[idx]
        order = np.lexsort((tt, dev))
        d, ts = dev[order], tt[order]
        first = np.ones(d.size, bool)
        first[1:] = d[1:] != d[:-1]
        last = np.ones(d.size, bool)
        last[:-1] = d[1:] != d[:-1]
        prev = np.empty_like(ts)
        prev[1:] = ts[:-1]
        prev[first] = self._ep_last[row, d[first]]
        new = (prev == NEVER_NS) | (ts - prev > self._ep_ns)
        self._ep_last[row, d[last]] = ts[last]
        keep = np.zeros(idx.size, bool)
        keep[order] = new
        return idx[keep]

    def _episode_rows(self, slot: int, ss: I64, at: I64, is_open: BOOL) -> BOOL:
        """Which open/clear rows of a maintenance slot are reported (one ticket per episode).

        A re-opening within ``ticket_episode_s`` of the stream's previous clear continues
        that problem episode: neither it nor its clear is reported (the ticket already
        raised stands for the episode). Rows are in (stream, time) order; the last clear
        and whether the open event was suppressed are carried per stream.
        """
        n = ss.size
        p = np.arange(n)
        first = np.ones(n, bool)
        first[1:] = ss[1:] != ss[:-1]
        seg0 = np.maximum.accumulate(np.where(first, p, 0))
        lc = np.maximum.accumulate(np.where(~is_open, p, -1))
        lc_in = lc >= seg0
        prev_clear = np.where(lc_in, at[np.maximum(lc, 0)], self._ep_clear[slot, ss])
        supp_open = is_open & (prev_clear != NEVER_NS) & (at - prev_clear <= self._ep_ns)
        lo = np.maximum.accumulate(np.where(is_open, p, -1))
        lo_in = lo >= seg0
        supp = np.where(
            is_open,
            supp_open,
            np.where(lo_in, supp_open[np.maximum(lo, 0)], self._ep_supp[slot, ss]),
        )
        last = np.ones(n, bool)
        last[:-1] = ss[1:] != ss[:-1]
        ends = ss[last]
        has_c = lc_in[last] & (lc[last] >= 0)
        self._ep_clear[slot, ends[has_c]] = at[lc[last][has_c]]
        has_o = lo_in[last] & (lo[last] >= 0)
        self._ep_supp[slot, ends[has_o]] = supp_open[lo[last][has_o]]
        out: BOOL = ~supp
        return out

    def _table(
        self,
        ss: I64,
        det: npt.NDArray[np.int16],
        opened: BOOL,
        at: I64,
        started: I64,
        ended: I64,
        value: F64,
        score: F64,
        thr: F64,
        base: F64,
        sigma: F64,
    ) -> EventTable:
        infos = self.streams.infos
        return EventTable(
            [infos[j].device_id for j in ss.tolist()],
            [infos[j].metric for j in ss.tolist()],
            det,
            opened,
            at,
            started,
            ended,
            value,
            score,
            thr,
            base,
            sigma,
        )

    def _city_derived(self, s: I64, t: I64, x: F64, used: BOOL, bg: F64) -> DerivedTable:
        if not self.derived_city:
            return DerivedTable.empty()
        st = self.streams
        sel = used & (st.kind[s] == Kind.CITY) & (st.trend_mode[s] == TrendMode.UP)
        idx = np.flatnonzero(sel)
        if idx.size == 0:
            return DerivedTable.empty()
        infos = st.infos
        ss = s[idx].tolist()
        dev = [infos[j].device_id for j in ss]
        ser_e = [infos[j].metric + "_enhancement" for j in ss]
        ser_b = [infos[j].metric + "_background" for j in ss]
        valid = np.ones(2 * idx.size, bool)
        return DerivedTable(
            dev + dev,
            ser_e + ser_b,
            np.concatenate([t[idx], t[idx]]),
            np.concatenate([x[idx] - bg[idx], bg[idx]]),
            valid,
        )
