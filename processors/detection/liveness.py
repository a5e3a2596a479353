"""Wall-clock liveness: ``no_data`` while a device or gateway is silent, cleared when it is back.

The gap detector judges event time and reports a silence only when data resumes, so a device
that stops for good is invisible to it. This tracker runs on the wall clock instead: a device
whose last message arrived longer ago than it may be silent is ``no_data`` (one OPEN record),
and its next message clears it (the CLEARED record, same id). How long a device may be
silent is the longest its streams' learned sampling pattern allows
(:meth:`DetectionEngine.silence_allowance_s`: typical intervals, duty-cycle pauses), at least
``no_data_floor_s``. A device's MQTT last will (see docs/wire-contract.md) counts as offline
at once. Severity per source kind is ``no_data_severity`` (a silent mine sensor is an alarm
condition: critical).

A detection is per device: its ``metric`` is ``*`` (all the device's metrics) and its onset
the wall-clock time the device's last message arrived.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from core.settings import DetectionSettings
from wire.events import DetectionRecord, DetectionState, Severity, detection_id

__all__ = ["DEVICE_METRIC", "NO_DATA", "LivenessTracker"]

NO_DATA = "no_data"
# The metric of a device-level detection: all of the device's metrics.
DEVICE_METRIC = "*"
# Evidence key of a no_data raised by the device's last will (value 1.0).
WILL = "will"


@dataclass(slots=True)
class _Device:
    kind: str
    location: str | None
    last_s: float
    open: DetectionRecord | None = None


class LivenessTracker:
    """Per-device last arrival and open ``no_data`` episode (pure; the detector drives it).

    Args:
        cfg: the detection settings (``no_data_*``).
    """

    def __init__(self, cfg: DetectionSettings) -> None:
        self._cfg = cfg
        self._devices: dict[str, _Device] = {}

    def __len__(self) -> int:
        """Devices tracked."""
        return len(self._devices)

    def is_open(self, device_id: str) -> bool:
        """Whether the device is ``no_data`` now."""
        dev = self._devices.get(device_id)
        return dev is not None and dev.open is not None

    def seen(
        self, device_id: str, kind: str, location: str | None, at_s: float
    ) -> DetectionRecord | None:
        """A message of the device arrived at ``at_s`` (epoch s); returns its clear if open."""
        dev = self._devices.get(device_id)
        if dev is None:
            self._devices[device_id] = _Device(kind, location, at_s)
            return None
        dev.kind, dev.location = kind, location
        dev.last_s = max(dev.last_s, at_s)
        if dev.open is None:
            return None
        rec, dev.open = dev.open, None
        return rec.model_copy(update={"state": DetectionState.CLEARED, "ended_at": _utc(at_s)})

    def seed(self, device_id: str, kind: str, location: str | None, at_s: float) -> None:
        """Know a device from before a restart (warm-up), last heard of at ``at_s``."""
        dev = self._devices.get(device_id)
        if dev is None:
            self._devices[device_id] = _Device(kind, location, at_s)
        elif dev.open is None:
            dev.last_s = max(dev.last_s, at_s)

    def adopt(self, rec: DetectionRecord) -> None:
        """Continue a ``no_data`` stored open before a restart (its clear keeps the id)."""
        dev = self._devices.get(rec.device_id)
        if dev is None:
            dev = self._devices[rec.device_id] = _Device(
                rec.kind, rec.location, rec.started_at.timestamp()
            )
        dev.open = rec

    def will(self, device_id: str, kind: str, at_s: float) -> DetectionRecord | None:
        """The device's last will arrived: ``no_data`` at once (None if already open)."""
        dev = self._devices.get(device_id)
        if dev is None:
            dev = self._devices[device_id] = _Device(kind, None, at_s)
        if dev.open is not None:
            return None
        dev.open = self._record(device_id, dev, at_s, allowed_s=0.0, will=True)
        return dev.open

    def due(self, now_s: float, allowance_s: Callable[[str], float]) -> list[str]:
        """Devices silent longer than they may be and not yet ``no_data``."""
        floor = self._cfg.no_data_floor_s
        return [
            dev_id
            for dev_id, dev in self._devices.items()
            if dev.open is None
            and now_s - dev.last_s > floor
            and now_s - dev.last_s > allowance_s(dev_id)
        ]

    def open(self, device_id: str, now_s: float, allowed_s: float) -> DetectionRecord | None:
        """Raise ``no_data`` for a device :meth:`due` named (None if it was opened since)."""
        dev = self._devices.get(device_id)
        if dev is None or dev.open is not None:
            return None
        dev.open = self._record(device_id, dev, now_s, allowed_s=allowed_s, will=False)
        return dev.open

    def forget(self, device_ids: Iterable[str]) -> None:
        """Stop tracking devices (their partition was revoked)."""
        for d in device_ids:
            self._devices.pop(d, None)

    def _record(
        self, device_id: str, dev: _Device, now_s: float, *, allowed_s: float, will: bool
    ) -> DetectionRecord:
        started = _utc(dev.last_s if not will else now_s)
        silent_s = max(0.0, now_s - dev.last_s)
        parts = device_id.split("/")
        network, site = (parts[0], parts[1]) if len(parts) >= 3 else ("", "")
        evidence = {"silent_s": silent_s, "allowed_s": allowed_s}
        if will:
            evidence[WILL] = 1.0
        return DetectionRecord(
            detection_id=detection_id(device_id, DEVICE_METRIC, NO_DATA, started),
            state=DetectionState.OPEN,
            device_id=device_id,
            kind=dev.kind,
            network=network,
            site=site,
            metric=DEVICE_METRIC,
            detector=NO_DATA,
            severity=Severity(self._cfg.no_data_severity.get(dev.kind, "maintenance")),
            started_at=started,
            score=silent_s,
            value=silent_s,
            threshold=allowed_s or None,
            location=dev.location,
            evidence=evidence,
        )


def _utc(at_s: float) -> datetime:
    return datetime.fromtimestamp(at_s, UTC)
