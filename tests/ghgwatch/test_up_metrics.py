"""`ghgwatch up` gives each service's metrics endpoint its own free port and lists its URL."""

from __future__ import annotations

import socket

from core.settings import Settings
from ghgwatch.up import UpOptions, _metrics_ports

PORT_FIELDS = ("bridge_port", "processor_port", "detector_port", "alerts_port")


def _with_metrics(settings: Settings, **ports: int) -> Settings:
    metrics = settings.metrics.model_copy(update={"enabled": True, **ports})
    return settings.model_copy(update={"metrics": metrics})


def test_taken_detector_port_is_replaced_and_every_service_url_is_listed(
    settings: Settings,
) -> None:
    """A taken detector port gets a free one; four distinct ports, four URLs."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        resolved, urls = _metrics_ports(
            _with_metrics(settings, detector_port=port, alerts_port=port), UpOptions()
        )
    ports = {f: getattr(resolved.metrics, f) for f in PORT_FIELDS}
    assert ports["detector_port"] != port
    assert ports["alerts_port"] != port
    assert len(set(ports.values())) == len(PORT_FIELDS)
    assert all(ports.values())
    assert urls == [
        f"bridge http://127.0.0.1:{ports['bridge_port']}/metrics",
        f"processor http://127.0.0.1:{ports['processor_port']}/metrics",
        f"detector http://127.0.0.1:{ports['detector_port']}/metrics",
        f"alerts http://127.0.0.1:{ports['alerts_port']}/metrics",
    ]


def test_services_up_does_not_run_are_not_listed(settings: Settings) -> None:
    """Without the detector and the alert service only the bridge and processor URLs show."""
    _resolved, urls = _metrics_ports(
        _with_metrics(settings, **dict.fromkeys(PORT_FIELDS, 0)),
        UpOptions(detect=False, alerts=False),
    )
    assert [u.split()[0] for u in urls] == ["bridge", "processor"]


def test_disabled_metrics_list_nothing(settings: Settings) -> None:
    """metrics.enabled=False: no ports picked, no URLs."""
    resolved, urls = _metrics_ports(settings, UpOptions())
    assert urls == []
    assert resolved.metrics == settings.metrics
