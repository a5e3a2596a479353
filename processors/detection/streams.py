"""The stream registry: dense ids per (device, metric) and per-stream parameters as arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from core.settings import DetectionSettings, MethaneLevels
from processors.detection.catalogue import Detector, Kind, infer_kind, infer_location

__all__ = ["StreamInfo", "StreamTable", "TrendMode"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I8 = npt.NDArray[np.int8]

_INITIAL_CAPACITY = 1024
# Generic metrics have no known resolution: their noise floor is relative to their level.
_RELATIVE_SIGMA_FLOOR = 1e-3
_ABSOLUTE_SIGMA_FLOOR = 1e-9


class TrendMode:
    """Which residual detector a stream runs (codes in ``StreamTable.trend_mode``)."""

    NONE = 0
    UP = 1  # releases and plumes: only rises matter
    BOTH = 2  # generic anomalies


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """Who a stream belongs to."""

    device_id: str
    metric: str
    kind: Kind
    location: str | None


class StreamTable:
    """Dense stream ids and the per-stream parameters the vectorised detectors read.

    Args:
        cfg: the detection settings (levels, floors, plausible ranges).
    """

    def __init__(self, cfg: DetectionSettings) -> None:
        self._cfg = cfg
        self._index: dict[tuple[str, str], int] = {}
        self.infos: list[StreamInfo] = []
        cap = _INITIAL_CAPACITY
        self.kind: I8 = np.zeros(cap, np.int8)
        self.trend_mode: I8 = np.zeros(cap, np.int8)
        self.trend_detector: I8 = np.zeros(cap, np.int8)
        self.alarm: F64 = np.full(cap, np.nan)
        self.alarm_clear: F64 = np.full(cap, np.nan)
        self.cut: F64 = np.full(cap, np.nan)
        self.restore: F64 = np.full(cap, np.nan)
        self.lo: F64 = np.full(cap, -np.inf)
        self.hi: F64 = np.full(cap, np.inf)
        self.sigma_floor: F64 = np.zeros(cap)
        self.sigma_rel: F64 = np.zeros(cap)
        self.min_rise: F64 = np.zeros(cap)
        self.drift_limit: F64 = np.full(cap, np.nan)
        # dense device index per stream (one maintenance ticket per device and episode)
        self._devices: dict[str, int] = {}
        self.device: I64 = np.zeros(cap, np.int64)

    def __len__(self) -> int:
        return len(self.infos)

    @property
    def n_devices(self) -> int:
        """How many distinct devices have streams."""
        return len(self._devices)

    @property
    def capacity(self) -> int:
        """How many streams the parameter arrays can hold before they grow."""
        return int(self.kind.shape[0])

    def get(self, device_id: str, metric: str) -> int | None:
        """The id of a known stream, or None."""
        return self._index.get((device_id, metric))

    def register(
        self, device_id: str, metric: str, kind: Kind | None = None, location: str | None = None
    ) -> int:
        """Return the stream id of (device, metric), creating it with its parameters if new.

        Args:
            device_id: ``network/site/device``.
            metric: metric name (unit in the name).
            kind: source kind; None infers it from the metric.
            location: mine location class; None infers it from the device name.

        Returns:
            The dense stream id.
        """
        key = (device_id, metric)
        found = self._index.get(key)
        if found is not None:
            return found
        idx = len(self.infos)
        if idx >= self.capacity:
            self._grow(2 * self.capacity)
        k = kind if kind is not None else infer_kind(metric)
        loc = location
        if k is Kind.MINE and loc is None:
            loc = infer_location(device_id)
        self._index[key] = idx
        self.infos.append(StreamInfo(device_id, metric, k, loc))
        self.device[idx] = self._devices.setdefault(device_id, len(self._devices))
        self._set_params(idx, device_id, metric, k, loc)
        return idx

    def _set_params(
        self, idx: int, device_id: str, metric: str, kind: Kind, location: str | None
    ) -> None:
        cfg = self._cfg
        self.kind[idx] = kind
        mode, det = TrendMode.NONE, Detector.ANOMALY
        if kind is Kind.MINE and metric == "ch4_pct_vol":
            mode, det = TrendMode.UP, Detector.RELEASE
            levels = cfg.sensor_levels.get(device_id) or cfg.mine_levels.get(location or "other")
            if levels is None:
                levels = cfg.mine_levels.get("other", MethaneLevels(alarm_pct_vol=None))
            if levels.alarm_pct_vol is not None:
                self.alarm[idx] = levels.alarm_pct_vol
                self.alarm_clear[idx] = levels.alarm_pct_vol - cfg.alarm_hysteresis_pct_vol
            if levels.cut_pct_vol is not None:
                self.cut[idx] = levels.cut_pct_vol
                restore = levels.restore_pct_vol
                restore = restore if restore is not None else levels.cut_pct_vol
                # no chattering power cuts: never restore above cut level minus the hysteresis
                # (stricter than, so compatible with, the regulation's restore level)
                cut_clear = levels.cut_pct_vol - cfg.alarm_hysteresis_pct_vol
                self.restore[idx] = min(restore, cut_clear)
        elif kind is Kind.LEAK and metric.startswith("ch4"):
            mode, det = TrendMode.UP, Detector.RELEASE
        elif kind is Kind.CITY and metric in {"co2_ppm", "ch4_ppm", "ch4_ppb"}:
            mode, det = TrendMode.UP, Detector.PLUME
        elif kind is Kind.GENERIC or (kind is Kind.MINE and metric != "ch4_pct_vol"):
            mode, det = TrendMode.BOTH, Detector.ANOMALY
        self.trend_mode[idx] = mode
        self.trend_detector[idx] = det
        lo, hi = cfg.plausible.get(metric, (-np.inf, np.inf))
        self.lo[idx], self.hi[idx] = lo, hi
        floor = cfg.sigma_floor.get(metric)
        if floor is None:
            self.sigma_floor[idx] = _ABSOLUTE_SIGMA_FLOOR
            self.sigma_rel[idx] = _RELATIVE_SIGMA_FLOOR
        else:
            self.sigma_floor[idx] = floor
        self.min_rise[idx] = cfg.min_rise.get(metric, 0.0)
        self.drift_limit[idx] = cfg.drift_limit.get(metric, np.nan)

    def _grow(self, cap: int) -> None:
        for name in (
            "kind",
            "trend_mode",
            "trend_detector",
            "alarm",
            "alarm_clear",
            "cut",
            "restore",
            "lo",
            "hi",
            "sigma_floor",
            "sigma_rel",
            "min_rise",
            "drift_limit",
            "device",
        ):
            old = getattr(self, name)
            fill = {"lo": -np.inf, "hi": np.inf}.get(name, np.nan if old.dtype.kind == "f" else 0)
            if name in {"sigma_floor", "sigma_rel", "min_rise"}:
                fill = 0.0
            new = np.full(cap, fill, dtype=old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)

    def ids_for_devices(self, device_ids: set[str]) -> I64:
        """Stream ids of every stream of the given devices (for dropping state on revoke)."""
        ids = [i for i, info in enumerate(self.infos) if info.device_id in device_ids]
        return np.asarray(ids, dtype=np.int64)
