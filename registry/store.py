"""The registry's PostgreSQL store: every SQL statement on ``registry_devices`` lives here.

Takes an asyncpg pool or connection. Reads return :class:`~registry.models.DeviceRecord`;
the MQTT password hash is written here but never read back into a record (nothing outside
the store needs it). Database errors come out mapped by :func:`adapters.pgerrors.pg_errors`
(``StorageBackpressure`` while it is unreachable).
"""

# ruff: noqa: S608  # the SQL is built from the column constants below, never from input

from __future__ import annotations

import json
from typing import Any

import asyncpg

from adapters.pgerrors import pg_errors
from core.errors import GhgwatchError
from registry.models import DeviceRecord

__all__ = ["NOTIFY_CHANNEL", "DeviceExists", "RegistryStore", "UnknownDevice"]

NOTIFY_CHANNEL = "ghgwatch_registry"

_COLUMNS = (
    "device_id, kind, network, site, device, enabled, mqtt_username, hj212_mn,"
    " hj212_password_hash, location_class, units, cems_class, site_pressure_pa,"
    " site_altitude_m, sampling_interval_s, lat, lon"
)
_FIELDS = [c.strip() for c in _COLUMNS.split(",")]

_INSERT = f"""
INSERT INTO registry_devices ({_COLUMNS}, mqtt_password_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $14, $15, $16, $17, $18)
"""
_SELECT = f"SELECT {_COLUMNS} FROM registry_devices"


class DeviceExists(GhgwatchError):
    """A device with this id, MQTT username or HJ 212 MN is registered already."""


class UnknownDevice(GhgwatchError):
    """No device with this id is registered."""


def _record(row: asyncpg.Record) -> DeviceRecord:
    data: dict[str, Any] = dict(row)
    data["units"] = json.loads(data["units"]) if isinstance(data["units"], str) else {}
    return DeviceRecord.model_validate(data)


def _args(record: DeviceRecord, password_hash: str | None) -> list[object]:
    values = record.model_dump(mode="json")
    args: list[object] = [values[f] for f in _FIELDS]
    args[_FIELDS.index("units")] = json.dumps(record.units)
    args.append(password_hash)
    return args


class RegistryStore:
    """Registered devices in PostgreSQL (``registry_devices``, migration 050).

    Args:
        db: an asyncpg pool or connection (the caller owns it).
    """

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection) -> None:
        self._db = db

    async def get(self, device_id: str) -> DeviceRecord | None:
        """The device with this ``network/site/device`` id, or None."""
        with pg_errors("read device"):
            row = await self._db.fetchrow(f"{_SELECT} WHERE device_id = $1", device_id)
        return None if row is None else _record(row)

    async def by_mn(self, mn: str) -> DeviceRecord | None:
        """The device whose data logger has this HJ 212 MN, or None."""
        with pg_errors("read device by MN"):
            row = await self._db.fetchrow(f"{_SELECT} WHERE hj212_mn = $1", mn)
        return None if row is None else _record(row)

    async def list_devices(self, *, enabled_only: bool = False) -> list[DeviceRecord]:
        """Every registered device, by id."""
        where = " WHERE enabled" if enabled_only else ""
        with pg_errors("list devices"):
            rows = await self._db.fetch(f"{_SELECT}{where} ORDER BY device_id")
        return [_record(r) for r in rows]

    async def enabled_kinds(self) -> dict[str, str]:
        """device_id -> kind of every enabled device: the bridge's admission view."""
        with pg_errors("read registry view"):
            rows = await self._db.fetch(
                "SELECT device_id, kind FROM registry_devices WHERE enabled"
            )
        return {r["device_id"]: r["kind"] for r in rows}

    async def add(self, record: DeviceRecord, password_hash: str | None) -> None:
        """Register a new device.

        Raises:
            DeviceExists: its id, username or MN is taken.
        """
        try:
            with pg_errors("add device"):
                await self._db.execute(_INSERT, *_args(record, password_hash))
        except GhgwatchError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise DeviceExists(
                    f"{record.device_id}: already registered (id, username or MN taken)"
                ) from exc
            raise

    async def add_many(self, items: list[tuple[DeviceRecord, str | None]]) -> None:
        """Register several new devices in one transaction: all of them or none.

        Raises:
            DeviceExists: one of them is registered already (none is added).
        """
        try:
            with pg_errors("add devices"):
                if isinstance(self._db, asyncpg.Pool):
                    async with self._db.acquire() as conn:
                        await self._insert_all(conn, items)
                else:
                    await self._insert_all(self._db, items)
        except GhgwatchError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise DeviceExists(f"a device is already registered: {exc.__cause__}") from exc
            raise

    @staticmethod
    async def _insert_all(
        conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
        items: list[tuple[DeviceRecord, str | None]],
    ) -> None:
        async with conn.transaction():
            await conn.executemany(_INSERT, [_args(r, h) for r, h in items])

    async def existing(self, device_ids: list[str], mns: list[str]) -> tuple[set[str], set[str]]:
        """Which of these device ids and HJ 212 MNs are registered already."""
        with pg_errors("check devices"):
            ids = await self._db.fetch(
                "SELECT device_id FROM registry_devices WHERE device_id = ANY($1::text[])",
                device_ids,
            )
            found_mns = await self._db.fetch(
                "SELECT hj212_mn FROM registry_devices WHERE hj212_mn = ANY($1::text[])", mns
            )
        return {r["device_id"] for r in ids}, {r["hj212_mn"] for r in found_mns}

    async def set_enabled(self, device_id: str, enabled: bool) -> DeviceRecord:
        """Enable or disable a device.

        Raises:
            UnknownDevice: no such device.
        """
        with pg_errors("enable/disable device"):
            row = await self._db.fetchrow(
                f"UPDATE registry_devices SET enabled = $2, updated_at = now()"
                f" WHERE device_id = $1 RETURNING {_COLUMNS}",
                device_id,
                enabled,
            )
        if row is None:
            raise UnknownDevice(f"{device_id}: not registered")
        return _record(row)

    async def set_password_hash(self, device_id: str, password_hash: str) -> DeviceRecord:
        """Store a device's new MQTT password hash (rotation).

        Raises:
            UnknownDevice: no such device.
        """
        with pg_errors("rotate password"):
            row = await self._db.fetchrow(
                f"UPDATE registry_devices SET mqtt_password_hash = $2, updated_at = now()"
                f" WHERE device_id = $1 RETURNING {_COLUMNS}",
                device_id,
                password_hash,
            )
        if row is None:
            raise UnknownDevice(f"{device_id}: not registered")
        return _record(row)

    async def password_hashes(self) -> dict[str, str]:
        """mqtt_username -> stored hash of every enabled device (for password files)."""
        with pg_errors("read password hashes"):
            rows = await self._db.fetch(
                "SELECT mqtt_username, mqtt_password_hash FROM registry_devices"
                " WHERE enabled AND mqtt_password_hash IS NOT NULL"
            )
        return {r["mqtt_username"]: r["mqtt_password_hash"] for r in rows}
