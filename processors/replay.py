"""Replay / backtest: run the streaming detection engine over a long-format CSV, score it on labels.

``ghgwatch replay READINGS.csv --out DETECTIONS.csv [--kind K] [--labels LABELS.csv]``

The input has a header with at least ``time,device_id,metric,value`` and optionally ``flag``,
``kind`` and ``location``; rows are in time order (within a device at least). ``time`` is ISO
8601 (``Z``/``+00:00``/any offset, or naive UTC) or epoch seconds. The file is read in big
blocks and split with ``str.split`` into columns that numpy converts at once; each block is one
engine batch, and because the engine's recursions are exact per stream the result is the same
as the live service's for the same readings.

The output has one row per detection onset:
``time,device_id,metric,kind,detector,severity,score,value,threshold,ended,detection_id``.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

from core.errors import GhgwatchError
from core.settings import DetectionSettings
from processors.detection import DetectionEngine, flag_codes, parse_kind, to_records
from wire.detectors import DETECTORS, detector_spec
from wire.events import DetectionRecord, DetectionState

__all__ = [
    "LabelScore",
    "QualityReport",
    "ReplayError",
    "ReplayResult",
    "evaluate_labels",
    "iter_csv_blocks",
    "parse_times_ns",
    "replay_csv",
]

BLOCK_BYTES = 32 * 1024 * 1024
NS_PER_S = 1_000_000_000
# A detection this long after a labelled event ends still counts for it.
LABEL_GRACE_S = 600.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# End time of a detection still open at the end of the replay.
_OPEN_NS = np.iinfo(np.int64).max
_ALARM_SEVERITIES = {"warning", "critical"}
_FAMILIES: dict[str, set[str]] = {
    "release": {"release", "threshold_alarm", "power_cut"},
    "outburst": {"release", "threshold_alarm", "power_cut"},
    "plume": {"plume", "anomaly"},
    "flow_failure": {"co2_without_flow", "load_without_flow"},
    "fault": {"spike", "stuck", "out_of_range", "gap", "drift", "neighbour_drift"},
}
# Detectors whose reading crossed a regulatory level: never a false alarm, whatever the cause.
_REGULATORY = frozenset(d.name for d in DETECTORS if d.regulatory)


def _pages(detector: str, severity: str) -> bool:
    """Whether a detection pages, by the catalogue (a name it lacks: by its own severity)."""
    spec = detector_spec(detector)
    return spec.pages if spec is not None else severity in _ALARM_SEVERITIES


class ReplayError(GhgwatchError):
    """The CSV cannot be replayed (missing columns, unparseable times)."""


@dataclass(frozen=True, slots=True)
class CsvBlock:
    """One block of the input, as columns."""

    time: list[str]
    device_id: list[str]
    metric: list[str]
    value: list[str]
    flag: list[str] | None
    kind: list[str] | None
    location: list[str] | None


def iter_csv_blocks(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[CsvBlock]:
    """Read a long-format CSV in big blocks of whole lines, split into columns.

    Raises:
        ReplayError: required columns are missing.
    """
    with path.open("r", encoding="utf-8", newline="") as fh:
        header = [h.strip() for h in fh.readline().strip().split(",")]
        need = ("time", "device_id", "metric", "value")
        missing = [c for c in need if c not in header]
        if missing:
            raise ReplayError(f"{path}: missing columns {', '.join(missing)}; got {header}")
        col = {name: i for i, name in enumerate(header)}
        ncol = len(header)
        rest = ""
        while True:
            data = fh.read(block_bytes)
            if not data and not rest:
                break
            text = rest + data
            if data:
                cut = text.rfind("\n")
                if cut < 0:
                    rest = text
                    continue
                text, rest = text[:cut], text[cut + 1 :]
            else:
                rest = ""
            text = text.replace("\r", "").strip("\n")
            if not text:
                continue
            flat = text.replace("\n", ",").split(",")
            if len(flat) % ncol or '"' in text:
                rows = [r for r in csv.reader(io.StringIO(text)) if r]
                if any(len(r) != ncol for r in rows):
                    raise ReplayError(f"{path}: rows with a column count other than {ncol}")
                flat = [c for r in rows for c in r]

            def column(name: str, flat: list[str] = flat) -> list[str] | None:
                i = col.get(name)
                return None if i is None else flat[i::ncol]

            yield CsvBlock(
                time=flat[col["time"] :: ncol],
                device_id=flat[col["device_id"] :: ncol],
                metric=flat[col["metric"] :: ncol],
                value=flat[col["value"] :: ncol],
                flag=column("flag"),
                kind=column("kind"),
                location=column("location"),
            )


def _parse_one(text: str) -> int:
    s = text.strip()
    try:
        return round(float(s) * NS_PER_S)
    except ValueError:
        pass
    dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


def parse_times_ns(values: list[str]) -> npt.NDArray[np.int64]:
    """Parse time strings (ISO 8601 or epoch seconds) to epoch ns, each distinct string once.

    Raises:
        ReplayError: a time cannot be parsed.
    """
    keys = list(dict.fromkeys(values))
    plain = [k[:-1] if k.endswith("Z") else k[:-6] if k.endswith("+00:00") else k for k in keys]
    try:
        if any(("+" in p[10:]) or ("-" in p[10:]) or not p[:1].isdigit() for p in plain) or any(
            "T" not in p and " " not in p for p in plain
        ):
            raise ValueError("not plain UTC ISO")
        parsed = np.array(plain, dtype="datetime64[ns]").astype(np.int64)
    except ValueError:
        try:
            parsed = np.array([_parse_one(k) for k in keys], dtype=np.int64)
        except ValueError as exc:
            raise ReplayError(f"unparseable time: {exc}") from exc
    lookup = dict(zip(keys, parsed.tolist(), strict=True))
    return np.fromiter(map(lookup.__getitem__, values), dtype=np.int64, count=len(values))


@dataclass(frozen=True, slots=True)
class LabelScore:
    """Detection quality for one label type."""

    label: str
    events: int
    detected: int
    median_delay_s: float | None
    p90_delay_s: float | None

    @property
    def recall(self) -> float:
        """Detected fraction of the labelled events."""
        return self.detected / self.events if self.events else 1.0


@dataclass(frozen=True, slots=True)
class QualityReport:
    """How the detections compare with the labels.

    Attributes:
        by_label: recall and delay per label type.
        false_alarms: paging onsets outside every labelled event (regulatory crossings
            excepted: a reading above a regulatory level is never false).
        device_days: observed device-days.
        quiet_window_alarms: paging onsets inside ``quiet`` windows (calibration, drift).
        faults_reported_as_leaks: labelled sensor faults overlapped by a paging detection
            (by the catalogue) that is not a regulatory-level crossing: a fault paged as if
            it were a gas event.
        fault_events: labelled sensor faults.
        faults_paged: labelled sensor faults overlapped by any paging detection.
        fault_pages: paging detections overlapping a labelled sensor fault.
        fault_pages_regulatory: of those, regulatory-level crossings (``threshold_alarm``,
            ``power_cut``): the faulty reading was above the level, and the regulation acts on
            the reading, so they must page; the summary says how many there were.
    """

    by_label: list[LabelScore]
    false_alarms: int
    device_days: float
    quiet_window_alarms: int
    faults_reported_as_leaks: int
    fault_events: int
    faults_paged: int = 0
    fault_pages: int = 0
    fault_pages_regulatory: int = 0

    @property
    def false_alarms_per_device_day(self) -> float:
        """Alarm-severity onsets outside labelled events, per device-day observed."""
        return self.false_alarms / self.device_days if self.device_days else 0.0

    def lines(self) -> list[str]:
        """A printable summary."""
        out = [f"{'label':<22}{'events':>8}{'recall':>9}{'median delay':>14}{'p90 delay':>11}"]
        for s in self.by_label:
            med = "-" if s.median_delay_s is None else f"{s.median_delay_s:.0f} s"
            p90 = "-" if s.p90_delay_s is None else f"{s.p90_delay_s:.0f} s"
            out.append(f"{s.label:<22}{s.events:>8}{s.recall:>9.1%}{med:>14}{p90:>11}")
        out.append(
            f"false alarms: {self.false_alarms} over {self.device_days:.1f} device-days = "
            f"{self.false_alarms_per_device_day:.3f}/device-day "
            f"({7 * self.false_alarms_per_device_day:.3f}/sensor-week)"
        )
        out.append(f"alarms inside quiet windows (calibration, drift): {self.quiet_window_alarms}")
        others = self.fault_pages - self.fault_pages_regulatory
        out.append(
            f"sensor faults that paged: {self.faults_paged}/{self.fault_events} "
            f"({self.fault_pages} paging detections: {self.fault_pages_regulatory} "
            f"regulatory-level crossings, which alarm whatever the cause, and {others} others); "
            f"faults reported as leaks (paged with no regulatory level crossed): "
            f"{self.faults_reported_as_leaks}/{self.fault_events}"
        )
        return out


@dataclass(slots=True)
class ReplayResult:
    """What a replay did."""

    readings: int = 0
    late: int = 0
    onsets: int = 0
    seconds: float = 0.0
    records: list[DetectionRecord] = field(default_factory=list)
    quality: QualityReport | None = None

    @property
    def readings_per_s(self) -> float:
        """Throughput, parse included."""
        return self.readings / self.seconds if self.seconds else 0.0


def _family(label: str) -> set[str] | None:
    for prefix, fam in _FAMILIES.items():
        if label.startswith(prefix):
            return fam
    return None


def evaluate_labels(
    onsets: list[DetectionRecord],
    labels_path: Path,
    spans: dict[str, tuple[int, int]],
    ends: dict[str, int] | None = None,
) -> QualityReport:
    """Score detection onsets against labelled event windows.

    Args:
        onsets: OPEN records.
        labels_path: CSV with ``device_id,start,end`` and optionally ``label``, ``expect``
            (``detect`` / ``quiet``) and ``reach`` (delay reference time).
        spans: device_id -> (first, last) reading time in ns, for device-days.
        ends: detection_id -> end time in ns of the detections that cleared; a detection
            missing here is taken as still open (it overlaps every later fault).

    Returns:
        Recall and delay per label type, false alarms per device-day and more.
    """
    with labels_path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    ends = ends or {}
    by_dev: dict[str, list[tuple[int, str, str]]] = {}
    # per device, (detection_id, onset, end, regulatory) of every paging detection
    paging: dict[str, list[tuple[str, int, int, bool]]] = {}
    for r in onsets:
        onset = _ns(r.started_at)
        by_dev.setdefault(r.device_id, []).append((onset, r.detector, r.severity.value))
        if _pages(r.detector, r.severity.value):
            end_ns = ends.get(r.detection_id, _OPEN_NS)
            paging.setdefault(r.device_id, []).append(
                (r.detection_id, onset, end_ns, r.detector in _REGULATORY)
            )
    fault_pages: dict[str, bool] = {}  # detection_id -> regulatory
    grace = int(LABEL_GRACE_S * NS_PER_S)
    windows: dict[str, list[tuple[int, int]]] = {}
    quiet: dict[str, list[tuple[int, int]]] = {}
    stats: dict[str, list[float | None]] = {}
    faults = faults_as_leaks = faults_paged = 0
    for row in rows:
        dev = row["device_id"]
        start = parse_times_ns([row["start"]])[0]
        end = parse_times_ns([row["end"]])[0]
        label = row.get("label") or "event"
        expect = row.get("expect") or "detect"
        reach = parse_times_ns([row["reach"]])[0] if row.get("reach") else start
        dets = by_dev.get(dev, [])
        if expect == "quiet":
            quiet.setdefault(dev, []).append((int(start), int(end)))
            continue
        windows.setdefault(dev, []).append((int(start), int(end) + grace))
        fam = _family(label)
        hits = sorted(
            ts
            for ts, det, sev in dets
            if start <= ts <= end + grace
            and (det in fam if fam is not None else sev in _ALARM_SEVERITIES)
        )
        delay = (hits[0] - reach) / NS_PER_S if hits else None
        stats.setdefault(label, []).append(delay)
        if label.startswith("fault"):
            faults += 1
            # every paging detection whose span overlaps the fault's (grace included) counts
            hit = {
                i: reg for i, a, b, reg in paging.get(dev, []) if a <= end + grace and b >= start
            }
            faults_paged += bool(hit)
            faults_as_leaks += not all(hit.values())
            fault_pages.update(hit)
    by_label = []
    for label in sorted(stats):
        delays = [d for d in stats[label] if d is not None]
        arr = np.maximum(np.asarray(delays), 0.0) if delays else None
        by_label.append(
            LabelScore(
                label,
                len(stats[label]),
                len(delays),
                None if arr is None else float(np.median(arr)),
                None if arr is None else float(np.percentile(arr, 90)),
            )
        )
    false_alarms = quiet_alarms = 0
    for dev, dets in by_dev.items():
        for ts, det, sev in dets:
            if not _pages(det, sev):
                continue
            if any(a <= ts <= b for a, b in quiet.get(dev, [])):
                quiet_alarms += 1
            if det in _REGULATORY:
                # a regulatory level crossed is never false, whatever the cause
                continue
            if not any(a <= ts <= b for a, b in windows.get(dev, [])):
                false_alarms += 1
    device_days = sum((b - a) / NS_PER_S / 86400.0 for a, b in spans.values())
    return QualityReport(
        by_label,
        false_alarms,
        device_days,
        quiet_alarms,
        faults_as_leaks,
        faults,
        faults_paged=faults_paged,
        fault_pages=len(fault_pages),
        fault_pages_regulatory=sum(fault_pages.values()),
    )


def _ns(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


def replay_csv(
    path: Path,
    cfg: DetectionSettings,
    *,
    out: Path | None = None,
    kind: str | None = None,
    labels: Path | None = None,
    block_bytes: int = BLOCK_BYTES,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Run the detection engine over a readings CSV in time order.

    Args:
        path: the readings CSV (long format).
        cfg: detection settings.
        out: where to write one row per detection onset; None writes nothing.
        kind: source kind for rows without a ``kind`` column value.
        labels: optional labels CSV to score against.
        block_bytes: input block size (one engine batch per block).
        on_progress: called after each block with the readings replayed so far.

    Returns:
        Counts, timing, all records (OPEN and CLEARED) and the quality report.

    Raises:
        ReplayError: the input cannot be read.
    """
    default_kind = parse_kind(kind) if kind else None
    engine = DetectionEngine(cfg, derived_city=False)
    result = ReplayResult()
    keys: dict[str, int] = {}
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    t0 = time.perf_counter()
    for block in iter_csv_blocks(path, block_bytes):
        n = len(block.time)
        combo = [d + "\x1f" + m for d, m in zip(block.device_id, block.metric, strict=True)]
        new = [k for k in dict.fromkeys(combo) if k not in keys]
        if new:
            pos = {k: i for i, k in reversed(list(enumerate(combo)))} if new else {}
            for k in new:
                i = pos[k]
                dev, met = k.split("\x1f")
                k_txt = block.kind[i] if block.kind is not None else ""
                loc = block.location[i] if block.location is not None else ""
                row_kind = parse_kind(k_txt) if k_txt else default_kind
                keys[k] = engine.register(dev, met, row_kind, loc or None)
        stream = np.fromiter(map(keys.__getitem__, combo), dtype=np.int64, count=n)
        ts = parse_times_ns(block.time)
        try:
            value = np.array(block.value, dtype=np.float64)
        except ValueError as exc:
            raise ReplayError(f"{path}: non-numeric value: {exc}") from exc
        flags = flag_codes(block.flag) if block.flag is not None else np.full(n, ord("N"), np.uint8)
        output = engine.process(stream, ts, value, engine.usable(flags, value), flags=flags)
        result.records.extend(to_records(output.events, engine.streams))
        result.readings += n
        result.late += output.late
        if on_progress is not None:
            on_progress(result.readings)
        uniq, first_idx = np.unique(stream, return_index=True)
        last_idx = n - 1 - np.unique(stream[::-1], return_index=True)[1]
        for sid, a, b in zip(
            uniq.tolist(), ts[first_idx].tolist(), ts[last_idx].tolist(), strict=True
        ):
            first.setdefault(sid, a)
            last[sid] = b
    result.records.extend(to_records(engine.flush().events, engine.streams))
    onsets = [r for r in result.records if r.state is DetectionState.OPEN]
    result.onsets = len(onsets)
    result.seconds = time.perf_counter() - t0
    if out is not None:
        _write_onsets(out, result.records)
    if labels is not None:
        spans: dict[str, tuple[int, int]] = {}
        for sid, a in first.items():
            dev = engine.streams.infos[sid].device_id
            lo, hi = spans.get(dev, (a, last[sid]))
            spans[dev] = (min(lo, a), max(hi, last[sid]))
        ends = {r.detection_id: _ns(r.ended_at) for r in result.records if r.ended_at is not None}
        result.quality = evaluate_labels(onsets, labels, spans, ends)
    return result


def _write_onsets(out: Path, records: list[DetectionRecord]) -> None:
    ended = {r.detection_id: r.ended_at for r in records if r.ended_at is not None}
    with out.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(
            [
                "time", "device_id", "metric", "kind", "detector", "severity", "score",
                "value", "threshold", "ended", "detection_id",
            ]
        )  # fmt: skip
        for r in records:
            if r.state is not DetectionState.OPEN:
                continue
            end = ended.get(r.detection_id)
            w.writerow(
                [
                    _iso(r.started_at), r.device_id, r.metric, r.kind, r.detector,
                    r.severity.value, f"{r.score:.6g}", f"{r.value:.6g}",
                    "" if r.threshold is None else f"{r.threshold:.6g}",
                    "" if end is None else _iso(end), r.detection_id,
                ]
            )  # fmt: skip


def _iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")
