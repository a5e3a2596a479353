"""The processor's /metrics endpoint serves its series and refuses a port in use."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from adapters.ports import free_port
from core.errors import ConfigurationError
from core.settings import MetricsSettings
from processors.metrics import ProcessorMetrics


def test_metrics_endpoint_serves_processor_series() -> None:
    """/metrics lists the stored, duplicate, dead-letter, batch, lag and latency series."""
    port = free_port()
    server = ProcessorMetrics().serve(MetricsSettings(processor_port=port))
    assert server is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
    finally:
        server.close()
    for name in (
        "ghgwatch_processor_readings_stored_total",
        "ghgwatch_processor_duplicates_skipped_total",
        "ghgwatch_processor_batch_seconds",
        "ghgwatch_processor_end_to_end_seconds",
        "ghgwatch_processor_consumer_lag",
    ):
        assert name in body


def test_metrics_port_in_use_is_a_configuration_error() -> None:
    """A taken port stops start-up with a ConfigurationError naming the address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=str(port)):
            ProcessorMetrics().serve(MetricsSettings(processor_port=port))


def test_disabled_metrics_start_nothing() -> None:
    """enabled=False serves nothing."""
    assert ProcessorMetrics().serve(MetricsSettings(enabled=False)) is None
