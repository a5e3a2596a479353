"""What the registry knows of a device: one validated record per ``network/site/device``."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from wire.cems import pressure_at_altitude_pa
from wire.schemas import METRICS, MineLocation, SourceKind

__all__ = ["DeviceRecord", "mqtt_username", "parse_device_id"]

_SEGMENT = re.compile(r"[a-z0-9_-]{1,64}")
# HJ 212-2017 MN: the monitoring point code, up to 24 characters (letters and digits).
_MN = re.compile(r"[0-9A-Za-z]{1,24}")


def parse_device_id(device_id: str) -> tuple[str, str, str]:
    """Split ``network/site/device`` into its segments.

    Raises:
        ValueError: not three lower-case ``[a-z0-9_-]`` segments of 1-64 characters.
    """
    parts = device_id.split("/")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) for p in parts):
        raise ValueError(
            f"device id {device_id!r} must be network/site/device, each segment lower-case"
            " [a-z0-9_-], 1-64 characters"
        )
    return parts[0], parts[1], parts[2]


def mqtt_username(device_id: str) -> str:
    """The MQTT username of a device: its id with ``.`` for ``/`` (``baotou.kundulun.p-01``)."""
    return device_id.replace("/", ".")


def _location(value: object) -> object:
    """``t4``/``T4``/``serial_intake`` alike; empty means none."""
    if isinstance(value, str):
        v = value.strip()
        if not v:
            return None
        by_name = {m.name.lower(): m for m in MineLocation}
        return by_name.get(v.lower(), v.upper() if len(v) == 2 else v.lower())
    return value


class DeviceRecord(BaseModel):
    """A registered device.

    ``device_id`` is the key used in the ``devices`` table, on Kafka and in the topic scheme;
    ``kind`` with it names the device's topics. Mine CH4 sensors need ``location_class``;
    CEMS units may name their benchmark class and site pressure (or altitude).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str
    kind: SourceKind
    network: str
    site: str
    device: str
    enabled: bool = True
    mqtt_username: str = ""
    hj212_mn: str | None = Field(default=None, description="HJ 212 MN of its data logger")
    hj212_password_hash: str | None = None
    location_class: Annotated[MineLocation | None, BeforeValidator(_location)] = None
    units: dict[str, str] = Field(default_factory=dict, description="metric -> unit reported")
    cems_class: str | None = None
    site_pressure_pa: float | None = Field(default=None, gt=30_000, lt=120_000)
    site_altitude_m: float | None = Field(default=None, ge=-500, le=9_000)
    sampling_interval_s: float | None = Field(default=None, gt=0, le=86_400)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)

    @model_validator(mode="before")
    @classmethod
    def _split_id(cls, data: object) -> object:
        if isinstance(data, dict) and "device_id" in data:
            network, site, device = parse_device_id(str(data["device_id"]))
            data = {"network": network, "site": site, "device": device, **data}
            if not data.get("mqtt_username"):
                data["mqtt_username"] = mqtt_username(str(data["device_id"]))
        return data

    @model_validator(mode="after")
    def _consistent(self) -> DeviceRecord:
        if self.device_id != f"{self.network}/{self.site}/{self.device}":
            raise ValueError("device_id must be network/site/device")
        if self.hj212_mn is not None and not _MN.fullmatch(self.hj212_mn):
            raise ValueError("hj212_mn must be 1-24 letters or digits (HJ 212 MN)")
        if self.kind is SourceKind.MINE and self.location_class is None:
            raise ValueError(
                "a mine sensor needs its location class: "
                + ", ".join(m.value for m in MineLocation)
            )
        if self.kind is not SourceKind.MINE and self.location_class is not None:
            raise ValueError("only mine sensors have a location class")
        if self.kind is not SourceKind.CEMS and self.cems_class is not None:
            raise ValueError("only CEMS units have a CEMS unit class")
        for metric, unit in self.units.items():
            spec = METRICS.get(metric)
            if spec is None or self.kind not in spec.kinds:
                raise ValueError(f"metric {metric!r} is not one a {self.kind.value} device sends")
            if unit != spec.unit:
                raise ValueError(f"{metric} is reported in {spec.unit}, not {unit!r}")
        return self

    def baro_pressure_pa(self) -> float | None:
        """The site's barometric pressure: given, or from its altitude (standard atmosphere)."""
        if self.site_pressure_pa is not None:
            return self.site_pressure_pa
        if self.site_altitude_m is not None:
            return float(pressure_at_altitude_pa(self.site_altitude_m))
        return None

    def data_topic(self, root: str) -> str:
        """The topic this device publishes on."""
        return f"{root}/{self.kind.value}/{self.device_id}/data"

    def status_topic(self, root: str) -> str:
        """The topic ghgwatch answers this device on."""
        return f"{root}/{self.kind.value}/{self.device_id}/status"
