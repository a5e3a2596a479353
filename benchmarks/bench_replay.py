"""Replay benchmark: `ghgwatch replay` over a long-format CSV of N readings (default 10 M).

Writes a CSV of ``--streams`` mine/leak/generic streams sampled every 10 s (time order),
then times :func:`processors.replay.replay_csv` over it, parse included, and compares with
the csv module + per-row float/datetime parsing (the straightforward way) on a slice.

    python benchmarks/bench_replay.py [--readings 10000000] [--streams 10000 10]

Both shapes by default: many short streams (10,000) and a few long ones (10), where the
engine's per-rank step (one numpy pass per reading rank over the streams that have it)
covers only ten readings at a time, so its fixed cost per step dominates.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from core.settings import DetectionSettings
from processors.replay import replay_csv

TARGET_S = 60.0


def write_csv(path: Path, readings: int, streams: int, seed: int = 1) -> None:
    """A time-ordered CSV: streams x steps readings, a few releases sprinkled in."""
    rng = np.random.default_rng(seed)
    steps = max(1, readings // streams)
    names = []
    for i in range(streams):
        kind = i % 3
        if kind == 0:
            names.append(f"ordos-coal/mine-{i // 100}/t1-{i:05d},ch4_pct_vol,")
        elif kind == 1:
            names.append(f"changqing/site-{i // 100}/ch4-{i:05d},ch4_ppm,")
        else:
            names.append(f"plant/line-{i // 100}/pump-{i:05d},vibration_mm_s,")
    base = np.asarray([0.3, 2.0, 5.0] * (streams // 3 + 1))[:streams]
    t0 = np.datetime64("2026-01-01T00:00:00", "s")
    with path.open("w") as fh:
        fh.write("time,device_id,metric,value,flag\n")
        for step in range(steps):
            stamp = str(t0 + np.timedelta64(10 * step, "s")) + "Z,"
            vals = base * (1 + 0.02 * rng.standard_normal(streams))
            if step % 500 == 250:
                vals[rng.integers(0, streams, 20)] += 1.0
            lines = [stamp + n + f"{v:.4f},N" for n, v in zip(names, vals.tolist(), strict=True)]
            fh.write("\n".join(lines) + "\n")


def naive_parse(path: Path, rows: int) -> float:
    """Seconds to parse `rows` rows the straightforward way (csv + datetime per row)."""
    t = time.perf_counter()
    with path.open() as fh:
        reader = csv.reader(fh)
        next(reader)
        for k, row in enumerate(reader):
            datetime.fromisoformat(row[0])
            float(row[3])
            if k >= rows:
                break
    return time.perf_counter() - t


def run_shape(readings: int, streams: int) -> None:
    """Write a CSV of one shape, replay it and print its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "readings.csv"
        t = time.perf_counter()
        write_csv(path, readings, streams)
        print(
            f"[{streams:,} streams x {readings // streams:,} readings] wrote "
            f"{path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t:.1f} s"
        )
        result = replay_csv(path, DetectionSettings(), out=Path(tmp) / "det.csv")
        rate = result.readings_per_s
        projected_s = 10_000_000 / rate if rate else float("inf")
        print(
            f"  replay: {result.readings:,} readings, {result.onsets} onsets in "
            f"{result.seconds:.1f} s = {rate:,.0f} readings/s; 10 M readings would take "
            f"{projected_s:.0f} s (target < {TARGET_S:.0f} s: "
            f"{'met' if projected_s < TARGET_S else 'NOT met'})"
        )
        sample = min(200_000, result.readings)
        naive_s = naive_parse(path, sample)
        naive_rate = sample / naive_s
        print(
            f"  baseline (csv.reader + datetime.fromisoformat + float per row, parse only): "
            f"{naive_rate:,.0f} rows/s; replay incl. detection is {rate / naive_rate:.1f}x that"
        )


def main() -> None:
    """Run the benchmark for each stream count (many short streams, then a few long ones)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=10_000_000)
    ap.add_argument("--streams", type=int, nargs="+", default=[10_000, 10])
    args = ap.parse_args()
    for streams in args.streams:
        run_shape(args.readings, streams)


if __name__ == "__main__":
    main()
