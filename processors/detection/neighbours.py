"""Drift against neighbours: each city station's baseline against its network's other stations.

Per city network and metric (``detection.neighbour_drift_limit``), every
``neighbour_step_s`` of event time (a *tick*) each station contributes a snapshot: its
baseline at its first usable, warmed-up reading of that tick. A tick of a network is judged
once every station of it still reporting (heard from within ``neighbour_stale_s`` of the
network's newest tick) has moved past it, so the verdict does not depend on how readings are
cut into batches. Ticks are judged in order, with at least ``neighbour_min_stations``
snapshots in the (network, tick) cell.

Stations differ (urban stations sit above rural ones), so over its first
``neighbour_learn_s`` each station learns its normal offset from the network median; after
that it follows slowly (time constant ``drift_tau_s``, frozen while out). Each station's
baseline minus its normal offset is compared with the median of the *other* stations'
corrected baselines (vectorised per cell from one sort, no loop over readings or stations), so
one drifting station cannot drag its neighbours' verdicts; that offset is smoothed over
``neighbour_smooth_s`` (stations' diurnal cycles differ in amplitude). ``neighbour_drift``
(maintenance) opens when that offset stays beyond the metric's limit for
``neighbour_persist_s`` and clears below half the limit. A change common to the network
(regional background, weather, the diurnal cycle) moves the median with the station and is
never flagged.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from core.settings import DetectionSettings
from processors.detection.tables import NEVER_NS

__all__ = ["NeighbourCheck", "NeighbourEvents"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

NS_PER_S = 1_000_000_000
_NO_TICK = -1

# (stream, opened, at_ns, started_ns, offset, deviation, limit, neighbour median)
NeighbourEvents = tuple[I64, BOOL, I64, I64, F64, F64, F64, F64]


class NeighbourCheck:
    """Neighbour-drift state for every stream, as arrays indexed by stream id.

    Args:
        cfg: the detection settings.
    """

    def __init__(self, cfg: DetectionSettings) -> None:
        self.cfg = cfg
        self._step_ns = round(cfg.neighbour_step_s * NS_PER_S)
        self._stale_ticks = int(np.ceil(cfg.neighbour_stale_s / cfg.neighbour_step_s))
        self._groups: dict[tuple[str, str], int] = {}
        self._cap = 0
        self.group: I64 = np.zeros(0, np.int64)
        self.limit: F64 = np.zeros(0)
        self.last_tick: I64 = np.zeros(0, np.int64)
        self.first_tick: I64 = np.zeros(0, np.int64)
        self.n_ref: F64 = np.zeros(0)
        self.ref: F64 = np.zeros(0)
        self.smooth: F64 = np.zeros(0)
        self.since: I64 = np.zeros(0, np.int64)
        self.active: BOOL = np.zeros(0, bool)
        self.onset: I64 = np.zeros(0, np.int64)
        e_i = np.empty(0, np.int64)
        # pending snapshots: stream, tick, reading time, baseline
        self._pending: tuple[I64, I64, I64, F64] = (e_i, e_i, e_i, np.empty(0))

    def grow(self, cap: int) -> None:
        """Make room for ``cap`` streams."""
        if cap <= self._cap:
            return
        old = self._cap

        def grow(a: npt.NDArray[np.generic], fill: object) -> npt.NDArray[np.generic]:
            new = np.full(cap, fill, dtype=a.dtype)
            new[:old] = a
            return new

        self.group = grow(self.group, -1)  # type: ignore[assignment]
        self.limit = grow(self.limit, np.nan)  # type: ignore[assignment]
        self.last_tick = grow(self.last_tick, _NO_TICK)  # type: ignore[assignment]
        self.first_tick = grow(self.first_tick, _NO_TICK)  # type: ignore[assignment]
        self.n_ref = grow(self.n_ref, 0.0)  # type: ignore[assignment]
        self.ref = grow(self.ref, np.nan)  # type: ignore[assignment]
        self.smooth = grow(self.smooth, np.nan)  # type: ignore[assignment]
        self.since = grow(self.since, NEVER_NS)  # type: ignore[assignment]
        self.active = grow(self.active, False)  # type: ignore[assignment]
        self.onset = grow(self.onset, NEVER_NS)  # type: ignore[assignment]
        self._cap = cap

    def register(self, stream: int, device_id: str, metric: str) -> None:
        """Put a city stream into its (network, metric) group if the metric has a limit."""
        limit = self.cfg.neighbour_drift_limit.get(metric)
        if limit is None:
            return
        key = (device_id.split("/", 1)[0], metric)
        gid = self._groups.setdefault(key, len(self._groups))
        self.group[stream] = gid
        self.limit[stream] = limit

    def reset(self, ids: I64) -> None:
        """Forget the state and pending snapshots of some streams."""
        self.last_tick[ids] = _NO_TICK
        self.first_tick[ids] = _NO_TICK
        self.n_ref[ids] = 0.0
        self.ref[ids] = np.nan
        self.smooth[ids] = np.nan
        self.since[ids] = NEVER_NS
        self.active[ids] = False
        self.onset[ids] = NEVER_NS
        keep = ~np.isin(self._pending[0], ids)
        self._pending = (
            self._pending[0][keep],
            self._pending[1][keep],
            self._pending[2][keep],
            self._pending[3][keep],
        )

    def update(self, s: I64, t: I64, base: F64, ok: BOOL) -> NeighbourEvents | None:
        """Take a batch's baselines, judge the ticks every station has passed.

        Args:
            s: stream per reading, sorted by (stream, time).
            t: reading times.
            base: the stream's baseline at each reading.
            ok: readings whose baseline counts (usable, warmed up).

        Returns:
            The neighbour-drift transitions, or None when there are none.
        """
        sel = ok & (self.group[s] >= 0) & np.isfinite(base)
        if sel.any():
            self._snapshot(s[sel], t[sel], base[sel])
        if self._pending[0].shape[0] == 0:
            return None
        return self._judge()

    def _snapshot(self, s: I64, t: I64, base: F64) -> None:
        tick = t // self._step_ns
        prev = np.empty_like(tick)
        prev[1:] = tick[:-1]
        first = np.ones(s.shape[0], bool)
        first[1:] = s[1:] != s[:-1]
        prev[first] = self.last_tick[s[first]]
        new = tick > prev
        last = np.ones(s.shape[0], bool)
        last[:-1] = s[1:] != s[:-1]
        self.last_tick[s[last]] = np.maximum(self.last_tick[s[last]], tick[last])
        ps, pk, pt, pb = self._pending
        self._pending = (
            np.concatenate([ps, s[new]]),
            np.concatenate([pk, tick[new]]),
            np.concatenate([pt, t[new]]),
            np.concatenate([pb, base[new]]),
        )

    def _judge(self) -> NeighbourEvents | None:
        ps, pk, pt, pb = self._pending
        n_groups = len(self._groups)
        members = np.flatnonzero((self.group[: self._cap] >= 0) & (self.last_tick >= 0))
        g_of = self.group[members]
        g_max = np.full(n_groups, _NO_TICK, np.int64)
        np.maximum.at(g_max, g_of, self.last_tick[members])
        live = self.last_tick[members] >= g_max[g_of] - self._stale_ticks
        done = np.full(n_groups, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(done, g_of[live], self.last_tick[members][live])
        pg = self.group[ps]
        ready = pk < done[pg]
        if not ready.any():
            return None
        self._pending = (ps[~ready], pk[~ready], pt[~ready], pb[~ready])
        s, k, t, b, g = ps[ready], pk[ready], pt[ready], pb[ready], pg[ready]

        order = np.lexsort((g, k))
        s, k, t, b, g = s[order], k[order], t[order], b[order], g[order]
        bounds = np.flatnonzero(np.diff(k)) + 1
        parts = [
            self._tick(s[lo:hi], k[lo:hi], t[lo:hi], b[lo:hi], g[lo:hi])
            for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, k.shape[0]], strict=True)
        ]
        found = [p for p in parts if p is not None]
        if not found:
            return None
        return tuple(np.concatenate([p[i] for p in found]) for i in range(8))  # type: ignore[return-value]

    def _tick(self, s: I64, k: I64, t: I64, b: F64, g: I64) -> NeighbourEvents | None:
        """Judge one tick of every group: one row per station, state updated in place."""
        cfg = self.cfg
        med_all, _, enough = _cell_medians(g, b, cfg.neighbour_min_stations)
        if not enough.any():
            return None
        s, k, t, b, g, med_all = (
            s[enough],
            k[enough],
            t[enough],
            b[enough],
            g[enough],
            med_all[enough],
        )
        fr = np.where(self.first_tick[s] == _NO_TICK, k, self.first_tick[s])
        self.first_tick[s] = fr
        learning = (k - fr) < cfg.neighbour_learn_s / cfg.neighbour_step_s
        norm = self.ref[s]
        # the station's normal offset from its network: learned as a mean first
        n_ref = self.n_ref[s] + learning
        self.n_ref[s] = n_ref
        learned = np.where(np.isnan(norm), b - med_all, norm)
        corrected = b - learned
        _, med_other, _ = _cell_medians(g, corrected, cfg.neighbour_min_stations)
        # the offset smoothed over neighbour_smooth_s: stations' diurnal cycles differ
        raw_off = corrected - med_other
        sm = self.smooth[s]
        a_sm = -np.expm1(-cfg.neighbour_step_s / cfg.neighbour_smooth_s)
        sm = np.where(np.isnan(sm), 0.0, sm)  # normalised: the offset starts from 0
        off = np.where(learning, 0.0, sm + a_sm * (raw_off - sm))
        self.smooth[s] = off
        limit = self.limit[s]
        a = self.active[s]
        dev = np.where(learning, 0.0, np.abs(off))
        over = ~learning & (dev > limit)
        alpha = -np.expm1(-cfg.neighbour_step_s / cfg.drift_tau_s)
        step = np.where(learning, 1.0 / np.maximum(n_ref, 1.0), np.where(over | a, 0.0, alpha))
        raw = b - med_all
        self.ref[s] = np.where(np.isnan(norm), raw, norm + step * (raw - norm))
        sn = self.since[s]
        sn = np.where(over, np.where(sn == NEVER_NS, t, sn), NEVER_NS)
        self.since[s] = sn
        persist_ns = round(cfg.neighbour_persist_s * NS_PER_S)
        new = np.where(a, dev > 0.5 * limit, over & (t - sn >= persist_ns))
        self.active[s] = new
        opened = new & ~a
        onset = np.where(opened, t, self.onset[s])
        self.onset[s] = onset
        idx = np.flatnonzero(new != a)
        if idx.size == 0:
            return None
        return (
            s[idx], opened[idx], t[idx], onset[idx], off[idx], dev[idx], limit[idx],
            med_other[idx] + learned[idx],
        )  # fmt: skip


def _cell_medians(g: I64, v: F64, min_n: int) -> tuple[F64, F64, BOOL]:
    """Per row: the median of its group's values, of the *other* rows' values, and whether
    the group has at least ``min_n`` rows (one sort, no loop)."""
    n = g.shape[0]
    order = np.lexsort((v, g))
    gs, vs = g[order], v[order]
    start = np.ones(n, bool)
    start[1:] = gs[1:] != gs[:-1]
    starts = np.flatnonzero(start)
    counts = np.diff(np.append(starts, n))
    c0 = np.repeat(starts, counts)
    size = np.repeat(counts, counts)
    rank = np.arange(n) - c0
    med_all = 0.5 * (vs[c0 + (size - 1) // 2] + vs[c0 + size // 2])
    others = np.maximum(size - 1, 1)
    ja = (others - 1) // 2
    jb = others // 2
    ia = np.minimum(c0 + ja + (ja >= rank), n - 1)
    ib = np.minimum(c0 + jb + (jb >= rank), n - 1)
    med_other = 0.5 * (vs[ia] + vs[ib])
    out_all = np.empty(n)
    out_other = np.empty(n)
    out_ok = np.empty(n, bool)
    out_all[order] = med_all
    out_other[order] = med_other
    out_ok[order] = size >= min_n
    return out_all, out_other, out_ok
