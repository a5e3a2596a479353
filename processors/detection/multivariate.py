"""A per-device multivariate score for generic devices: Hotelling T² of the channel vector.

A generic device (metrics of unknown meaning and time scale: a pump's vibration, current,
pressure, temperatures, flow) often fails in a way no single channel shows: a valve closing
moves pressure and flow *against* their usual relation, each within its own noise range. The
per-metric anomaly detector cannot see that; the device's channel vector can.

For every device with two or more generic metrics the readings at one timestamp form its
vector (a channel missing at that time carries its last value). The score looks at the
device's smoothed level, an exponentially weighted mean of its vectors,

    z_t = z_(t-1) + lambda (x_t - z_(t-1)),   lambda = ``multivariate_smoothing`` (0.1),

which averages the per-vector noise away, so a lasting shift smaller than that noise shows
(Lowry et al. 1992, the multivariate EWMA chart). A channel's step ``x_t - z_(t-1)`` beyond
``GLITCH_K`` (6) times its typical step (RMS, learned with the mean) is left out of the level
unless the channel's previous step was outlying too: a lone glitch is the per-metric spike
detector's (a maintenance ticket) and never reaches this score, and a real change of level
costs one vector. Over the first ``generic_warmup_samples`` vectors the mean and covariance
*of the smoothed level* are learned (plain averages), so the smoothing and whatever
autocorrelation the device has are in them; then each smoothed level's Hotelling T²,

    T² = (z - mu)ᵀ S⁻¹ (z - mu),   S = (1 - shrinkage) C + shrinkage diag(C) + floor,

is compared with the chi-square upper quantile of ``p`` degrees of freedom (``p`` channels) at
``multivariate_alpha`` (its closed-form tail, no scipy). An ``anomaly`` on the device's
``multivariate`` metric opens after ``open_samples`` consecutive vectors beyond it and clears
after ``multivariate_close_samples`` vectors below the quantile at ``multivariate_close_alpha``.
After the warm-up, mean and covariance follow the device with a time constant of
``multivariate_tau_samples`` vectors (Huber-clipped updates), frozen while an event is open
for at most ``generic_warmup_samples`` vectors (then it is the new normal). Streaming, one
pass, O(p²) per vector and device, vectorised with numpy across devices: the only Python loop
runs over vector ranks, as in the engine.

Once a device is armed here its per-metric ``anomaly`` events give way to this score (the
engine stops opening them from that vector on; see :attr:`MultivariateScore.cover_ts`):
on the development split of SKAB (``valve1``) per-metric events added false alarms for less
recall. Single-metric generic devices and every gas stream are untouched.

The constants (smoothing 0.1, open at 1e-3, clear at 0.1) were chosen on SKAB's development
split (``valve1``) under the condition that SKAB's anomaly-free run stays at or below 3 %
flagged; the other experiments were held out (figures in the README).

Readings of a device at or before its last scored vector time are late for this score and
skipped (the per-metric detectors and level checks still see them), so a batch cut that
splits one timestamp's channels scores the part that arrived first.

Generic devices exist in replay only (``ghgwatch replay``, the benchmarks): the wire
contract's source kinds and metric catalogue are closed, so the live detector never scores a
device here, and no device-level episode has to survive a detector restart.
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from core.settings import DetectionSettings
from processors.detection.catalogue import Detector, Kind
from processors.detection.streams import StreamTable
from processors.detection.tables import NEVER_NS, EventTable

__all__ = ["MV_METRIC", "MultivariateScore", "chi2_upper"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]

# The metric name the device-level events carry.
MV_METRIC = "multivariate"
# Most channels of one device the score takes (further generic metrics are left out of it).
MAX_CHANNELS = 16
# Residual clip for the mean/covariance updates: T² beyond HUBER_C² p is scaled down to it.
HUBER_C = 3.0
# A channel's step from its smoothed level beyond GLITCH_K times its typical step (RMS) is an
# outlier: left out of the level unless the channel's previous step was one too, so a lone
# glitch never reaches the score and a real level change costs one vector.
GLITCH_K = 6.0
# Variance floor per channel, relative to its level (as the per-metric noise floor).
_REL_FLOOR = 1e-3
_ABS_FLOOR = 1e-18
NEVER_COVER = int(np.iinfo(np.int64).max)

# Per generic device: attribute, channel axes (0 scalar, 1 per channel, 2 channel x channel),
# initial value, dtype. A reset restores these; the channels given out (``_nchan``) stay,
# as the streams keep their slots.
_DEVICE_STATE: tuple[tuple[str, int, float | int | bool, type], ...] = (
    ("_last", 1, np.nan, np.float64),
    ("_z", 1, np.nan, np.float64),
    ("_e2", 1, 0.0, np.float64),
    ("_out", 1, False, bool),
    ("_mu", 1, 0.0, np.float64),
    ("_cov", 2, 0.0, np.float64),
    ("_n", 0, 0, np.int64),
    ("_chan", 1, False, bool),  # channels scored (frozen at arming)
    ("_thr", 0, np.inf, np.float64),
    ("_thr_close", 0, np.inf, np.float64),
    ("_active", 0, False, bool),
    ("_onset", 0, NEVER_NS, np.int64),
    ("_open_n", 0, 0, np.int64),
    ("_n_hi", 0, 0, np.int64),
    ("_n_lo", 0, 0, np.int64),
    ("_last_ts", 0, NEVER_NS, np.int64),
    ("_arm_ts", 0, NEVER_COVER, np.int64),
)


def _chi2_sf(k: int, x: float) -> float:
    """Chi-square survival function for integer degrees of freedom (closed form)."""
    if x <= 0:
        return 1.0
    if k % 2 == 0:
        term, acc = 1.0, 1.0
        for i in range(1, k // 2):
            term *= x / (2 * i)
            acc += term
        return math.exp(-x / 2) * acc
    acc, term = 0.0, math.sqrt(x)
    for i in range(1, (k - 1) // 2 + 1):
        acc += term
        term *= x / (2 * i + 1)
    phi = math.exp(-x / 2) / math.sqrt(2 * math.pi)
    return math.erfc(math.sqrt(x / 2)) + 2 * phi * acc


@functools.lru_cache(maxsize=256)
def _chi2_isf(k: int, alpha: float) -> float:
    # bracket from the Wilson-Hilferty approximation, then bisection on the exact tail
    z = NormalDist().inv_cdf(1.0 - alpha)
    a = 2.0 / (9.0 * k)
    lo, hi = 0.0, 2.0 * k * (1.0 - a + z * math.sqrt(a)) ** 3 + 50.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _chi2_sf(k, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def chi2_upper(dof: F64 | I64, alpha: float) -> F64:
    """Upper ``alpha`` quantile of the chi-square distribution for integer degrees of freedom.

    Exact (closed-form tail, solved by bisection; no scipy), per distinct ``dof``.
    """
    k = np.asarray(dof).astype(np.int64)
    out: F64 = np.array([_chi2_isf(int(j), alpha) for j in k.ravel().tolist()]).reshape(k.shape)
    return out


class MultivariateScore:
    """Hotelling T² per generic device, state in arrays indexed by the stream table's device.

    State rows exist only for devices with generic metrics (a compact index of their own), so
    a fleet of gas sensors costs nothing here.

    Args:
        cfg: the detection settings.
        streams: the engine's stream table (kinds, device index per stream).
    """

    # per generic device (rows: the compact index ``_mv_of`` gives a stream-table device)
    _nchan: I64  # channels given out
    _last: F64  # last value per channel (carried into vectors missing it)
    _z: F64  # the smoothed level (EWMA of the vectors)
    _e2: F64  # mean square step of each channel from its smoothed level
    _out: BOOL  # the channel's previous step was an outlier
    _mu: F64  # mean and covariance of the channel vector
    _cov: F64
    _n: I64  # vectors seen
    _chan: BOOL  # channels scored (fixed at arming)
    _thr: F64  # chi-square levels to open and to clear (inf: not scored)
    _thr_close: F64
    _active: BOOL
    _onset: I64
    _open_n: I64  # vectors the open event has lasted
    _n_hi: I64
    _n_lo: I64
    _last_ts: I64  # newest vector time
    _arm_ts: I64  # the per-metric anomaly gives way from this time (NEVER_COVER: never)

    def __init__(self, cfg: DetectionSettings, streams: StreamTable) -> None:
        self.cfg = cfg
        self.streams = streams
        self._warm = int(cfg.generic_warmup_samples)
        self._a = 1.0 / cfg.multivariate_tau_samples
        self._cap = 0
        # per stream: its channel (-1 not placed yet, -2 left out of the score)
        self._slot_of: I64 = np.zeros(0, np.int64)
        self._mv_of: I64 = np.zeros(0, np.int64)  # per stream-table device: its row, -1 none
        self._dev_name: list[str] = []
        self._init_devices(0, 16)

    # -- state -----------------------------------------------------------------------------

    def _init_devices(self, old: int, cap: int) -> None:
        p = MAX_CHANNELS

        def grow(name: str, shape: tuple[int, ...], fill: float | int | bool, dt: type) -> None:
            new: npt.NDArray[Any] = np.full((cap, *shape), fill, dtype=dt)
            if old:
                new[:old] = getattr(self, name)
            setattr(self, name, new)

        grow("_nchan", (), 0, np.int64)
        for name, axes, fill, dt in _DEVICE_STATE:
            grow(name, (p,) * axes, fill, dt)
        self._cap = cap

    def _ensure(self) -> None:
        ns = self.streams.capacity
        if self._slot_of.shape[0] < ns:
            new = np.full(ns, -1, np.int64)
            new[: self._slot_of.shape[0]] = self._slot_of
            self._slot_of = new
        nd = self.streams.n_devices
        if self._mv_of.shape[0] < nd:
            new = np.full(max(nd, 2 * self._mv_of.shape[0]), -1, np.int64)
            new[: self._mv_of.shape[0]] = self._mv_of
            self._mv_of = new
        if len(self._dev_name) > self._cap:
            self._init_devices(self._cap, max(len(self._dev_name), 2 * self._cap))

    def cover_ts(self, stream: I64) -> I64:
        """From which reading time a stream's per-metric anomaly gives way to the device score.

        ``NEVER_COVER`` (int64 max) for streams of devices that are not armed here.
        """
        self._ensure()
        row = self._mv_of[self.streams.device[stream]]
        covered = self._slot_of[stream] >= 0
        out: I64 = np.where(covered, self._arm_ts[np.maximum(row, 0)], NEVER_COVER)
        return out

    def reset(self, ids: I64) -> None:
        """Forget the state of the devices of some streams (their partition was revoked)."""
        self._ensure()
        rows = self._mv_of[np.unique(self.streams.device[ids])]
        dev = rows[rows >= 0]
        for name, _axes, fill, _dt in _DEVICE_STATE:
            getattr(self, name)[dev] = fill

    # -- the batch -------------------------------------------------------------------------

    def process(self, s: I64, t: I64, x: F64, use: BOOL) -> EventTable:
        """Score one batch (readings in stream, time order; ``use``: usable and in range).

        Returns:
            The device-level ``anomaly`` transitions on the ``multivariate`` metric.
        """
        self._ensure()
        st = self.streams
        sel = np.flatnonzero(use & (st.kind[s] == Kind.GENERIC))
        if sel.size == 0:
            return EventTable.empty()
        ss, tt, xx = s[sel], t[sel], x[sel]
        self._give_slots(np.unique(ss))
        slot = self._slot_of[ss]
        dev = self._mv_of[st.device[ss]]
        keep = (slot >= 0) & (self._nchan[dev] >= 2) & (tt > self._last_ts[dev])
        if not keep.any():
            return EventTable.empty()
        ss, tt, xx, slot, dev = ss[keep], tt[keep], xx[keep], slot[keep], dev[keep]
        # one vector per (device, time): the readings at that time over the carried values
        order = np.lexsort((tt, dev))
        dev, tt, xx, slot = dev[order], tt[order], xx[order], slot[order]
        newg = np.ones(dev.size, bool)
        newg[1:] = (dev[1:] != dev[:-1]) | (tt[1:] != tt[:-1])
        g_of = np.cumsum(newg) - 1
        g_dev, g_t = dev[newg], tt[newg]
        ng = g_dev.size
        vec = np.full((ng, MAX_CHANNELS), np.nan)
        vec[g_of, slot] = xx
        # forward fill within each device, seeded with its carried last values
        dfirst = np.ones(ng, bool)
        dfirst[1:] = g_dev[1:] != g_dev[:-1]
        seed = np.where(dfirst[:, None] & np.isnan(vec), self._last[g_dev], vec)
        have = ~np.isnan(seed)
        gi = np.arange(ng)[:, None]
        seg0 = np.maximum.accumulate(np.where(dfirst, np.arange(ng), 0))[:, None]
        at = np.maximum.accumulate(np.where(have, gi, -1), axis=0)
        vec = np.where(at >= seg0, seed[np.maximum(at, 0), np.arange(MAX_CHANNELS)], np.nan)
        dlast = np.ones(ng, bool)
        dlast[:-1] = g_dev[1:] != g_dev[:-1]
        self._last[g_dev[dlast]] = vec[dlast]
        self._last_ts[g_dev[dlast]] = g_t[dlast]
        return self._recursion(g_dev, g_t, vec, dfirst)

    def _give_slots(self, streams: I64) -> None:
        """Channels for generic streams not yet placed (in order of first sight)."""
        new = streams[self._slot_of[streams] == -1]
        for j in new.tolist():
            sd = int(self.streams.device[j])
            if self._mv_of[sd] < 0:
                self._mv_of[sd] = len(self._dev_name)
                self._dev_name.append(self.streams.infos[j].device_id)
                self._ensure()
            d = int(self._mv_of[sd])
            if self._nchan[d] < MAX_CHANNELS and self._n[d] < self._warm:
                self._slot_of[j] = self._nchan[d]
                self._nchan[d] += 1
            else:
                self._slot_of[j] = -2

    def _recursion(self, g_dev: I64, g_t: I64, vec: F64, dfirst: BOOL) -> EventTable:
        cfg = self.cfg
        ng = g_dev.size
        starts = np.flatnonzero(dfirst)
        counts = np.diff(np.append(starts, ng))
        rank = np.arange(ng) - np.repeat(starts, counts)
        order = np.argsort(rank, kind="stable")
        r_sorted = rank[order]
        bounds = np.searchsorted(r_sorted, np.arange(int(counts.max()) + 1))
        bounds = np.append(bounds, ng)
        p_idx = np.arange(MAX_CHANNELS)
        open_n, close_n = cfg.open_samples, cfg.multivariate_close_samples
        shrink = cfg.multivariate_shrinkage
        lam = cfg.multivariate_smoothing
        rows: list[tuple[I64, I64, BOOL, I64, F64, F64]] = []
        for k in range(int(counts.max())):
            gi = order[bounds[k] : bounds[k + 1]]
            d, tk, v = g_dev[gi], g_t[gi], vec[gi]
            n = self._n[d]
            warm = n < self._warm
            # the smoothed level; a lone outlying step (a glitch) is left out of it
            z = self._z[d]
            step = np.nan_to_num(v - z)
            d2, e2 = step * step, self._e2[d]
            out = ~warm[:, None] & (d2 > GLITCH_K**2 * e2)
            self._e2[d] = np.where(
                warm[:, None],
                e2 + (d2 - e2) / (n + 1.0)[:, None],
                e2 + self._a * (np.minimum(d2, HUBER_C**2 * e2) - e2),
            )
            take = ~out | self._out[d]
            self._out[d] = out
            lvl = np.where(np.isnan(z), v, np.where(take, z + lam * step, z))
            self._z[d] = lvl
            # warm-up: running mean and covariance (channels with no value yet count as 0)
            lw = np.nan_to_num(lvl)
            if warm.any():
                w = np.flatnonzero(warm)
                dw, n1 = d[w], (n[w] + 1).astype(np.float64)
                mu_old = self._mu[dw]
                mu_new = mu_old + (lw[w] - mu_old) / n1[:, None]
                outer = (lw[w] - mu_old)[:, :, None] * (lw[w] - mu_new)[:, None, :]
                self._mu[dw] = mu_new
                self._cov[dw] += (outer - self._cov[dw]) / n1[:, None, None]
                self._n[dw] += 1
                armed_now = w[self._n[dw] == self._warm]
                if armed_now.size:
                    self._arm(d[armed_now], tk[armed_now], lvl[armed_now])
            sc = np.flatnonzero(~warm & (self._thr[d] < np.inf))
            if sc.size == 0:
                continue
            ds, ts_, ls = d[sc], tk[sc], lw[sc]
            chan = self._chan[ds]
            mu, cov = self._mu[ds], self._cov[ds]
            diag = np.diagonal(cov, axis1=1, axis2=2)
            floor = (_REL_FLOOR * np.abs(mu)) ** 2 + _ABS_FLOOR
            s_mat = (1.0 - shrink) * cov
            s_mat[:, p_idx, p_idx] = diag + floor
            both = chan[:, :, None] & chan[:, None, :]
            s_mat = np.where(both, s_mat, 0.0)
            s_mat[:, p_idx, p_idx] = np.where(chan, s_mat[:, p_idx, p_idx], 1.0)
            r = np.where(chan, ls - mu, 0.0)
            t2 = np.einsum("ij,ij->i", r, np.linalg.solve(s_mat, r[:, :, None])[:, :, 0])
            thr, thr_c = self._thr[ds], self._thr_close[ds]
            n_hi = np.where(t2 > thr, self._n_hi[ds] + 1, 0)
            n_lo = np.where(t2 < thr_c, self._n_lo[ds] + 1, 0)
            self._n_hi[ds], self._n_lo[ds] = n_hi, n_lo
            was = self._active[ds]
            now = np.where(was, n_lo < close_n, n_hi >= open_n)
            opened, cleared = now & ~was, was & ~now
            open_cnt = np.where(now, np.where(was, self._open_n[ds] + 1, 0), 0)
            self._open_n[ds] = open_cnt
            self._active[ds] = now
            if opened.any() or cleared.any():
                ch = np.flatnonzero(opened | cleared)
                onset = np.where(opened[ch], ts_[ch], self._onset[ds[ch]])
                rows.append((ds[ch], ts_[ch], opened[ch], onset, t2[ch], thr[ch]))
            self._onset[ds] = np.where(opened, ts_, self._onset[ds])
            # follow the device (Huber-clipped), frozen while open for at most the warm-up
            upd = ~now | (open_cnt >= self._warm)
            if upd.any():
                u = np.flatnonzero(upd)
                du = ds[u]
                p = chan[u].sum(axis=1)
                lim = HUBER_C**2 * p
                shrink_r = np.sqrt(np.minimum(1.0, lim / np.maximum(t2[u], 1e-300)))
                ru = r[u] * shrink_r[:, None]
                a = self._a
                self._mu[du] = mu[u] + a * ru
                self._cov[du] = (1.0 - a) * cov[u] + a * ru[:, :, None] * ru[:, None, :]
            self._n[ds] += 1
        return self._table(rows)

    def _arm(self, d: I64, tk: I64, lvl: F64) -> None:
        """The warm-up is over: fix the scored channels, their chi-square levels and cover."""
        cfg = self.cfg
        chan = ~np.isnan(lvl) & (np.arange(MAX_CHANNELS) < self._nchan[d][:, None])
        p = chan.sum(axis=1)
        ok = p >= 2
        self._chan[d] = chan
        pf = np.maximum(p, 2).astype(np.float64)
        self._thr[d] = np.where(ok, chi2_upper(pf, cfg.multivariate_alpha), np.inf)
        self._thr_close[d] = np.where(ok, chi2_upper(pf, cfg.multivariate_close_alpha), np.inf)
        self._arm_ts[d] = np.where(ok, tk, NEVER_COVER)

    def _table(self, rows: list[tuple[I64, I64, BOOL, I64, F64, F64]]) -> EventTable:
        if not rows:
            return EventTable.empty()
        d = np.concatenate([r[0] for r in rows])
        at = np.concatenate([r[1] for r in rows])
        opened = np.concatenate([r[2] for r in rows])
        onset = np.concatenate([r[3] for r in rows])
        t2 = np.concatenate([r[4] for r in rows])
        thr = np.concatenate([r[5] for r in rows])
        nan = np.full(d.size, np.nan)
        return EventTable(
            [self._dev_name[j] for j in d.tolist()],
            [MV_METRIC] * d.size,
            np.full(d.size, Detector.ANOMALY, np.int16),
            opened,
            at,
            np.where(opened, at, onset),
            np.where(opened, NEVER_NS, at),
            t2,
            t2,
            thr,
            nan,
            nan,
        )
