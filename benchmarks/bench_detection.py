"""Detection-stage benchmark: engine throughput with 10,000 streams, vs a per-reading baseline.

The engine gets batches as the service sees them (every stream a few readings a batch) and is
timed alone (no decode, no I/O). The baseline is the straightforward implementation of the
core mine detector (threshold with restore hysteresis, median-of-3 level, Huber-EWMA baseline
and scale, robust z with persistence) as a Python loop over readings, run on a slice and
reported as a ratio.

    python benchmarks/bench_detection.py [--streams 10000] [--batches 40] [--per-batch 10]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from core.settings import DetectionSettings
from processors.detection import DetectionEngine

TARGET_PER_S = 1_000_000


class NaiveStream:
    """One stream's state for the per-reading baseline."""

    def __init__(self) -> None:
        self.n = 0
        self.base = 0.0
        self.scale = 0.0
        self.last_t = -1.0
        self.x1 = math.nan
        self.x2 = math.nan
        self.n_hi = 0
        self.n_lo = 0
        self.alarm = False
        self.open = False


def naive(streams: list[NaiveStream], sid: np.ndarray, t_s: np.ndarray, x: np.ndarray) -> int:
    """The per-reading loop; returns the number of onsets."""
    cfg = DetectionSettings()
    onsets = 0
    for s, t, v in zip(sid.tolist(), t_s.tolist(), x.tolist(), strict=True):
        st = streams[s]
        dt = t - st.last_t if st.last_t >= 0 else 0.0
        st.last_t = t
        if not st.alarm and v >= 1.0:
            st.alarm = True
            onsets += 1
        elif st.alarm and v < 0.95:
            st.alarm = False
        lvl = v if math.isnan(st.x2) else sorted((st.x1, st.x2, v))[1]
        st.x2, st.x1 = st.x1, v
        sigma = max(st.scale * 1.2533, 0.01)
        r = 0.0 if st.n == 0 else lvl - st.base
        z = r / sigma
        warm = st.n < cfg.warmup_samples
        if z >= cfg.z_open and r >= 0.05 and not warm:
            st.n_hi += 1
        else:
            st.n_hi = 0
        st.n_lo = st.n_lo + 1 if z < cfg.z_close else 0
        if not st.open and st.n_hi >= cfg.open_samples:
            st.open = True
            onsets += 1
        elif st.open and st.n_lo >= cfg.close_samples:
            st.open = False
        if not st.open:
            if st.n == 0:
                st.base = v
            else:
                a = 1.0 / (st.n + 1) if warm else 1 - math.exp(-dt / cfg.baseline_tau_s)
                lim = cfg.huber_c * sigma
                st.base += a * (r if warm else min(max(r, -lim), lim))
                b = 1.0 / st.n if warm else 1 - math.exp(-dt / cfg.scale_tau_s)
                st.scale += b * ((abs(r) if warm else min(abs(r), lim)) - st.scale)
        st.n += 1
    return onsets


def main() -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=10_000)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--per-batch", type=int, default=10, help="readings per stream per batch")
    args = ap.parse_args()
    s, k = args.streams, args.per_batch
    engine = DetectionEngine(DetectionSettings())
    kinds = ("t1-{:05d}", "t2-{:05d}", "main_return-{:05d}")
    ids = np.asarray(
        [engine.register(f"mine/m{i // 100}/" + kinds[i % 3].format(i), "ch4_pct_vol")
         for i in range(s)]
    )  # fmt: skip
    rng = np.random.default_rng(1)
    batches = []
    for b in range(args.batches):
        ts = np.repeat(np.arange(b * k, (b + 1) * k, dtype=np.int64) * 10_000_000_000, s)
        st = np.tile(ids, k)
        v = 0.3 + 0.02 * rng.standard_normal(s * k)
        if b % 10 == 5:
            v[rng.integers(0, s * k, 50)] += 1.0
        batches.append((st, ts, v, np.ones(s * k, bool)))
    engine.process(*batches[0])  # first batch: allocation, warm caches
    t = time.perf_counter()
    onsets = 0
    for batch in batches[1:]:
        onsets += int(engine.process(*batch).events.opened.sum())
    dt = time.perf_counter() - t
    n = s * k * (args.batches - 1)
    rate = n / dt
    print(
        f"engine: {n:,} readings, {s:,} streams, {k} per stream per batch: {dt:.2f} s = "
        f"{rate:,.0f} readings/s per core ({onsets} onsets); target {TARGET_PER_S:,}/s: "
        f"{'met' if rate >= TARGET_PER_S else 'NOT met'}"
    )
    # the baseline sees the same readings from the start (so its warm-up matches), timed
    # after its own warm-up, like the engine
    streams = [NaiveStream() for _ in range(s)]
    for st, ts, v, _ in batches[:5]:
        naive(streams, st, ts / 1e9, v)
    t = time.perf_counter()
    m = 0
    for st, ts, v, _ in batches[5:8]:
        naive(streams, st, ts / 1e9, v)
        m += st.shape[0]
    naive_rate = m / (time.perf_counter() - t)
    print(
        f"baseline (per-reading Python loop, core mine detector only): {naive_rate:,.0f} "
        f"readings/s; engine (all detectors) = {rate / naive_rate:.1f}x"
    )


if __name__ == "__main__":
    main()
