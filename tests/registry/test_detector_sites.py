"""The detector takes location classes and site data from the registry, not from names."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import numpy as np
import pytest

from core.settings import Settings
from processors.detection import DetectionEngine
from processors.detector import DetectorService
from processors.storage import migrate
from registry.models import DeviceRecord
from registry.onboard import NoBroker, Onboarding
from wire import AcceptedMessage, MineLocation, validate_messages


def _batch(topic: str, body: str) -> AcceptedMessage:
    [verdict] = validate_messages([(topic, body.encode(), datetime.now(UTC))], root="ghg/v1")
    assert isinstance(verdict, AcceptedMessage), verdict
    return verdict


@pytest.mark.parametrize(
    ("location", "alarm", "cut"),
    [("T4", 0.5, 0.5), ("T5", 1.0, 1.5), ("T6", 1.0, 1.0), ("T8", 1.0, 1.0), ("T3", 0.5, 0.5)],
)
def test_every_regulation_class_has_its_own_levels(location: str, alarm: float, cut: float) -> None:
    """A T4 sensor (serially ventilated face intake) alarms at 0.5 %, not "other"'s 1.0 %."""
    assert MineLocation(location).value == location
    engine = DetectionEngine(Settings().detection)
    sid = engine.register("ordos-coal/buertai/s-17", "ch4_pct_vol", None, location)
    assert engine.streams.alarm[sid] == pytest.approx(alarm)
    assert engine.streams.cut[sid] == pytest.approx(cut)


async def test_detector_uses_registry_location_and_site_pressure(
    settings_factory: Callable[..., Settings], pg_url: str
) -> None:
    settings = settings_factory()
    await migrate(pg_url, settings.db)
    conn = await asyncpg.connect(pg_url)
    try:
        onboarding = Onboarding(conn, NoBroker())
        # nothing in the names says T4 or where the plant is
        await onboarding.add(
            DeviceRecord(device_id="ordos-coal/buertai/s-17", kind="mine", location_class="T4")
        )
        await onboarding.add(
            DeviceRecord(
                device_id="beifang/dalate/u3", kind="cems", cems_class="600mw_sc",
                site_altitude_m=1300.0,
            )
        )  # fmt: skip
    finally:
        await conn.close()
    service = DetectorService(settings)
    await service.registry.start(10.0)
    try:
        # the sensor itself says "other" (1.0 % alarm); the registry says T4 (0.5 %)
        mine = _batch(
            "ghg/v1/mine/ordos-coal/buertai/s-17/data",
            '{"ts": "2026-11-25T08:00:05+08:00", "metric": "ch4_pct_vol", "value": 0.2,'
            ' "location": "other"}',
        )
        sid = service._stream_of(mine.batch, "ch4_pct_vol")
        assert service.engine.streams.alarm[sid] == pytest.approx(0.5)
        # an unregistered sensor keeps the class its messages name
        other = _batch(
            "ghg/v1/mine/ordos-coal/buertai/t1-0001/data",
            '{"ts": "2026-11-25T08:00:05+08:00", "metric": "ch4_pct_vol", "value": 0.2,'
            ' "location": "T7"}',
        )
        sid = service._stream_of(other.batch, "ch4_pct_vol")
        assert service.engine.streams.alarm[sid] == pytest.approx(2.5)
        # the CEMS unit: Ordos plateau pressure (~86.7 kPa at 1300 m), its benchmark class
        cems = service.engine.cems
        unit = cems._unit("beifang/dalate/u3")
        assert cems.site_baro_pa[unit] == pytest.approx(86_700, rel=0.005)
        assert cems.bench_g_kwh[unit] == pytest.approx(300.0 * settings.detection.co2_t_per_t_sce)
        unknown = cems._unit("beifang/dalate/u9")
        # no registry pressure and none configured: no silent sea-level default (NaN: a
        # minute without a measured pressure is invalid)
        assert np.isnan(cems.site_baro_pa[unknown])
    finally:
        await service.registry.close()
