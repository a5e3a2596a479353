"""The bridge's Prometheus metrics: plain counters rendered at scrape time, served over HTTP."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable

from ingest_helpers import DEADLINE_S, city_readings, mqtt_host_port, publish_many
from prometheus_client import generate_latest

from adapters import MetricsServer
from core.settings import Settings
from ingest import Bridge, BridgeMetrics


def test_exposition_carries_counters_labels_gauge_and_histogram() -> None:
    """Counts bumped on the hot path show up under their Prometheus names and labels."""
    metrics = BridgeMetrics()
    metrics.received += 3
    metrics.accepted += 2
    metrics.count_rejected("out_of_range")
    metrics.count_produced("readings")
    metrics.produce_errors += 4
    metrics.in_flight = 7
    metrics.observe_ack_latency(0.003)
    metrics.observe_ack_latency(42.0)
    text = generate_latest(metrics.registry).decode()
    assert "ghgwatch_bridge_messages_received_total 3.0" in text
    assert "ghgwatch_bridge_messages_accepted_total 2.0" in text
    assert 'ghgwatch_bridge_messages_rejected_total{reason="out_of_range"} 1.0' in text
    assert 'ghgwatch_bridge_records_produced_total{topic="readings"} 1.0' in text
    assert "ghgwatch_bridge_produce_errors_total 4.0" in text
    assert "ghgwatch_bridge_in_flight_messages 7.0" in text
    assert 'ghgwatch_bridge_ack_latency_seconds_bucket{le="0.005"} 1.0' in text
    assert 'ghgwatch_bridge_ack_latency_seconds_bucket{le="60"} 2.0' in text
    assert "ghgwatch_bridge_ack_latency_seconds_count 2.0" in text


def test_metrics_server_serves_over_http_and_frees_the_port() -> None:
    """A real HTTP scrape returns the registry; close() stops the server."""
    metrics = BridgeMetrics()
    metrics.received += 5
    server = MetricsServer(metrics.registry, "127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
    finally:
        server.close()
    assert "ghgwatch_bridge_messages_received_total 5.0" in body


async def test_a_running_bridge_exposes_what_it_did(
    settings_factory: Callable[..., Settings],
) -> None:
    """With metrics enabled the bridge serves its counters while it runs."""
    settings = settings_factory(metrics={"enabled": True, "bridge_port": 0})
    bridge = Bridge(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop=stop, timeout_s=DEADLINE_S))
    await bridge.wait_connected(DEADLINE_S)
    await publish_many(*mqtt_host_port(settings), city_readings(settings.mqtt.topic_root, 10))
    async with asyncio.timeout(DEADLINE_S):
        while bridge.stats().acked < 10:
            await asyncio.sleep(0.05)
    url = f"http://127.0.0.1:{bridge.metrics_port}/metrics"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    stop.set()
    await task
    assert "ghgwatch_bridge_messages_acked_total 10.0" in body
    assert "ghgwatch_bridge_mqtt_connects_total 1.0" in body
