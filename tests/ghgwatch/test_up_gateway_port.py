"""`ghgwatch up` runs the HJ 212 gateway on gateway.port, or on a free port kept for next time."""

from __future__ import annotations

import json
import socket

from core.settings import Settings
from ghgwatch.up import PORTS_FILE, UpOptions, _gateway_port


def test_a_taken_gateway_port_is_replaced_kept_and_named(settings: Settings) -> None:
    """gateway.port taken: a free port, in ports.json, taken again by the next `up`; the
    address is one a logger on this machine connects to; its metrics port is listed."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    metrics = settings.metrics.model_copy(update={"enabled": True})
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # where the gateway listens by default
        taken.listen()
        port = taken.getsockname()[1]
        gateway = settings.gateway.model_copy(update={"port": port, "metrics_port": 0})
        cfg = settings.model_copy(update={"gateway": gateway, "metrics": metrics})
        resolved, address, metrics_url = _gateway_port(cfg, UpOptions())
        again, _, _ = _gateway_port(cfg, UpOptions())
    picked = resolved.gateway.port
    assert picked not in {0, port}
    assert address == f"tcp://127.0.0.1:{picked}"
    kept = json.loads((settings.data_dir / PORTS_FILE).read_text())
    assert kept["gateway"] == picked
    assert again.gateway.port == picked
    assert metrics_url == f"hj212 http://127.0.0.1:{resolved.gateway.metrics_port}/metrics"
    assert resolved.gateway.metrics_port != 0


def test_no_hj212_picks_nothing(settings: Settings) -> None:
    resolved, address, metrics_url = _gateway_port(settings, UpOptions(hj212=False))
    assert (address, metrics_url) == (None, None)
    assert resolved.gateway == settings.gateway
