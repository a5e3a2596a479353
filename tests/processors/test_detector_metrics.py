"""The detector's /metrics endpoint, on real tansu + PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from proc_helpers import produce, wait_until
from prometheus_client.samples import Sample

from core.errors import ConfigurationError
from core.settings import Settings
from processors.detector import DetectorService
from processors.storage import migrate
from tests.adapters.metrics_helpers import scrape as _scrape
from tests.adapters.metrics_helpers import value as _value
from wire import MineLocation, ReadingRecord, SourceKind, WireReading

T0 = datetime(2026, 11, 20, tzinfo=UTC)
DEVICE = "ordos/buertai/t1-0101"
READINGS = 600


def _settings(proc_settings: Callable[..., Settings], test_id: str, **metrics: Any) -> Settings:
    return proc_settings(
        kafka={"detections_topic": f"det-{test_id}"},
        detection={
            "group_id": f"det-{test_id}",
            "commit_interval_s": 0.2,
            "poll_timeout_ms": 200,
            "warmup_s": 600.0,
        },
        metrics={"enabled": True, "detector_port": 0, **metrics},
    )


def _leak_records() -> list[ReadingRecord]:
    """A T1 methane sensor at 0.3 % vol with a release of +1 % vol (past the alarm level)."""
    rng = np.random.default_rng(11)
    values = 0.3 + 0.01 * rng.standard_normal(READINGS)
    values[400:500] += 1.0
    network, site, device = DEVICE.split("/")
    out = []
    for i in range(0, READINGS, 6):
        readings = [
            WireReading(
                ts=T0 + timedelta(seconds=10 * k), metric="ch4_pct_vol", value=float(values[k])
            )
            for k in range(i, i + 6)
        ]
        out.append(
            ReadingRecord(
                device_id=DEVICE,
                kind=SourceKind.MINE,
                network=network,
                site=site,
                device=device,
                location=MineLocation("T1"),
                mqtt_topic=f"ghg/v1/mine/{DEVICE}/data",
                received_at=readings[-1].ts,
                readings=readings,
            )
        )
    return out


async def test_metrics_endpoint_shows_readings_and_the_opened_leak(
    proc_settings: Callable[..., Settings], test_id: str
) -> None:
    """On a leak, /metrics counts every reading, the critical alarm opened and cleared, no lag."""
    settings = _settings(proc_settings, test_id)
    await migrate(settings.db_url(), settings.db)
    await produce(settings, _leak_records())
    svc = DetectorService(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop=stop, timeout_s=60))
    samples: list[Sample] = []
    try:

        async def caught_up() -> bool:
            nonlocal samples
            if task.done():
                task.result()  # a crashed service fails the test with its own error
            if svc.stats.readings < READINGS or svc.metrics_port is None:
                return False
            samples = await asyncio.to_thread(_scrape, svc.metrics_port)
            lags = [s.value for s in samples if s.name == "ghgwatch_detector_consumer_lag"]
            return bool(lags) and not any(lags)

        await wait_until(caught_up, "all readings processed and no lag on /metrics", 60)
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task
    name = "ghgwatch_detector_detections_total"
    assert _value(samples, "ghgwatch_detector_readings_processed_total") == READINGS
    assert _value(samples, "ghgwatch_detector_readings_late_total") == 0
    alarm = {"detector": "threshold_alarm", "severity": "critical"}
    assert _value(samples, name, state="open", **alarm) == 1
    assert _value(samples, name, state="cleared", **alarm) == 1
    assert (_value(samples, "ghgwatch_detector_batch_seconds_count") or 0) >= 1
    assert _value(samples, "ghgwatch_detector_derived_points_stored_total") is not None


async def test_detector_metrics_port_in_use_is_a_configuration_error(
    proc_settings: Callable[..., Settings], test_id: str
) -> None:
    """A taken detector metrics port stops start-up with a ConfigurationError naming it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = _settings(proc_settings, test_id, detector_port=port)
        with pytest.raises(ConfigurationError, match=str(port)):
            await DetectorService(settings).run(timeout_s=5)
