"""The MQTT topic scheme: which topic a device publishes on and where it hears back.

::

    {root}/{kind}/{network}/{site}/{device}/data     device → ghgwatch (readings)
    {root}/{kind}/{network}/{site}/{device}/status   ghgwatch → device (rejections, retained)

``root`` defaults to ``ghg/v1``; ``kind`` is one of :class:`~wire.schemas.SourceKind`
(``city``, ``cems``, ``mine``, ``leak``). Examples::

    ghg/v1/city/baotou/kundulun/picarro-01/data      a Baotou city station's analyser
    ghg/v1/cems/beifang-power/dalate-plant/unit-3/data   CEMS of unit 3 of a power plant
    ghg/v1/mine/ordos-coal/buertai/t1-0302/data      a working-face sensor of a coal mine
    ghg/v1/leak/changqing/sulige-cs7/ch4-04/data     a fixed CH4 monitor at a gas site

Segments are lower-case ``[a-z0-9_-]``, 1–64 characters, so they are safe as Kafka keys,
database values and Grafana variables.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from wire.schemas import SourceKind

__all__ = [
    "DATA_CHANNEL",
    "STATUS_CHANNEL",
    "DeviceRef",
    "data_subscription",
    "parse_data_topic",
]

DATA_CHANNEL = "data"
STATUS_CHANNEL = "status"
# Matched with fullmatch: ``$`` alone also matches before a final newline.
_SEGMENT = re.compile(r"[a-z0-9_-]{1,64}")
_KINDS = {k.value for k in SourceKind}


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """Where a device sits in the topic scheme; ``device_id`` is its stable key everywhere."""

    kind: SourceKind
    network: str
    site: str
    device: str

    @property
    def device_id(self) -> str:
        """``network/site/device``: the Kafka key and the database key of this device."""
        return f"{self.network}/{self.site}/{self.device}"

    def data_topic(self, root: str) -> str:
        """The topic this device publishes readings on."""
        return f"{root}/{self.kind.value}/{self.network}/{self.site}/{self.device}/{DATA_CHANNEL}"

    def status_topic(self, root: str) -> str:
        """The topic on which ghgwatch tells this device why a message was rejected."""
        return f"{root}/{self.kind.value}/{self.network}/{self.site}/{self.device}/{STATUS_CHANNEL}"


def data_subscription(root: str, share_group: str | None) -> str:
    """The subscription filter that catches every device's data topic.

    Args:
        root: topic root, e.g. ``ghg/v1``.
        share_group: shared-subscription group name, or None for a plain subscription.
    """
    flt = f"{root}/+/+/+/+/{DATA_CHANNEL}"
    return f"$share/{share_group}/{flt}" if share_group else flt


# Devices publish on the same topic over and over; the bridge parses each one once.
PARSE_CACHE_TOPICS = 65_536


@functools.lru_cache(maxsize=PARSE_CACHE_TOPICS)
def parse_data_topic(topic: str, root: str) -> DeviceRef | None:
    """Parse a device data topic; None when it does not follow the scheme (results cached)."""
    prefix = root + "/"
    if not topic.startswith(prefix):
        return None
    parts = topic[len(prefix) :].split("/")
    if len(parts) != 5 or parts[4] != DATA_CHANNEL:
        return None
    kind, network, site, device = parts[:4]
    if kind not in _KINDS or not all(_SEGMENT.fullmatch(p) for p in (network, site, device)):
        return None
    return DeviceRef(SourceKind(kind), network, site, device)
