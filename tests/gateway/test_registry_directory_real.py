"""The gateway's logger directory over the real device registry (its cached view): a logger
registered with ``stations add --hj212-mn --hj212-password`` is resolved by its MN and PW; a
wrong PW, an unknown MN and a disabled device (after the view's reload) are refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from core.settings import Settings
from gateway.directory import LoggerIdentity, LoggerRefusal, RefusalReason
from gateway.registry_directory import RegistryDirectory, open_registry_view
from processors.storage import migrate
from registry import RegistryView
from registry.models import DeviceRecord
from registry.onboard import NoBroker, Onboarding
from wire.schemas import SourceKind

MN = "88888880000007"


async def test_registered_logger_resolves_and_refusals_follow_the_registry(
    settings_factory: Callable[..., Settings], pg_url: str
) -> None:
    await migrate(pg_url, settings_factory().db)
    conn = await asyncpg.connect(pg_url)
    try:
        onboarding = Onboarding(conn, NoBroker())
        unit = DeviceRecord(device_id="beifang-power/dalate-plant/unit-3", kind="cems", hj212_mn=MN)
        await onboarding.add(unit, hj212_password="123456")
        async with open_registry_view(settings_factory(), 30.0) as view:
            await _check(RegistryDirectory(view), view, onboarding, unit.device_id)
    finally:
        await conn.close()


async def _reloaded(view: RegistryView, loads: int) -> None:
    async with asyncio.timeout(30.0):
        while view.loads == loads:
            await asyncio.sleep(0.02)


async def _check(
    directory: RegistryDirectory, view: RegistryView, onboarding: Onboarding, device_id: str
) -> None:
    found = await directory.resolve(MN, "123456")
    assert isinstance(found, LoggerIdentity)
    assert found.ref.kind is SourceKind.CEMS
    assert (found.ref.network, found.ref.site, found.ref.device) == (
        "beifang-power",
        "dalate-plant",
        "unit-3",
    )
    wrong = await directory.resolve(MN, "654321")
    assert isinstance(wrong, LoggerRefusal)
    assert wrong.reason is RefusalReason.BAD_PASSWORD
    unknown = await directory.resolve("88888880000099", "123456")
    assert isinstance(unknown, LoggerRefusal)
    assert unknown.reason is RefusalReason.UNKNOWN_MN
    loads = view.loads
    await onboarding.set_enabled(device_id, False)
    await _reloaded(view, loads)  # NOTIFY
    disabled = await directory.resolve(MN, "123456")
    assert isinstance(disabled, LoggerRefusal)
    assert disabled.reason is RefusalReason.DISABLED
