"""Onboarding: a registry change and its broker credentials, together or not at all.

Each operation runs in one database transaction; the broker is changed inside it, and a
broker that refuses rolls the registry change back, so the registry and the broker never
disagree about who may connect. Generated passwords are returned once, to be shown once; the
registry stores only their hashes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import asyncpg

from registry.credentials import BROKER_ITERATIONS, generate_password, hash_password
from registry.dynsec import DynsecClient
from registry.files import acl_file_text, password_file_text, write_private
from registry.importer import ImportRow
from registry.models import DeviceRecord
from registry.store import RegistryStore

__all__ = [
    "BrokerApplier",
    "DynsecApplier",
    "FilesApplier",
    "ImportReport",
    "Issued",
    "NoBroker",
    "Onboarding",
]


@dataclass(frozen=True, slots=True)
class Issued:
    """Credentials just issued: shown once, never stored in clear."""

    device: DeviceRecord
    username: str
    password: str


class BrokerApplier(Protocol):
    """Where credentials go: the dynamic-security plugin, password/ACL files, or nowhere."""

    async def add(self, store: RegistryStore, device: DeviceRecord, password: str) -> None:
        """A new device may connect."""

    async def set_enabled(self, store: RegistryStore, device: DeviceRecord) -> None:
        """Apply ``device.enabled``."""

    async def rotate(self, store: RegistryStore, device: DeviceRecord, password: str) -> None:
        """Only the new password works from now."""


class NoBroker:
    """Registry only (the broker is managed elsewhere)."""

    async def add(self, store: RegistryStore, device: DeviceRecord, password: str) -> None:
        """Nothing to do."""

    async def set_enabled(self, store: RegistryStore, device: DeviceRecord) -> None:
        """Nothing to do."""

    async def rotate(self, store: RegistryStore, device: DeviceRecord, password: str) -> None:
        """Nothing to do."""


class DynsecApplier:
    """Changes through a running broker's dynamic-security API.

    Args:
        connect: opens a :class:`~registry.dynsec.DynsecClient` (entered per operation).
    """

    def __init__(self, connect: Callable[[], DynsecClient]) -> None:
        self._connect = connect

    async def add(self, store: RegistryStore, device: DeviceRecord, password: str) -> None:
        """Create the device's role and client."""
        async with self._connect() as dynsec:
            await dynsec.add_device(device, password)

    async def set_enabled(self, store: RegistryStore, device: DeviceRecord) -> None:
        """Enable or disable (and disconnect) its client."""
        async with self._connect() as dynsec:
            await dynsec.set_enabled(device, enabled=device.enabled)

    async def rotate(self, store: RegistryStore, device: DeviceRecord, password: str) -> None:
        """New password; the old connection is dropped."""
        async with self._connect() as dynsec:
            await dynsec.rotate(device, password)


def _restore(path: Path, text: str | None) -> None:
    """Put ``path`` back as it was (``None``: it did not exist)."""
    if text is None:
        path.unlink(missing_ok=True)
    else:
        write_private(path, text)


class FilesApplier:
    """Rewrites the broker's password and ACL files from the registry, then reloads it.

    Mosquitto rereads the files on SIGHUP and drops connected clients whose credentials are
    gone. When ``reload`` fails, the files are put back as they were and the error raised,
    so the registry change rolls back and the broker keeps what it had.

    Args:
        password_file: the broker's ``password_file``.
        acl_file: the broker's ``acl_file``.
        root, alerts_root: topic roots the ACLs are written for.
        bridge_users, notifier_user: the services' users (their passwords are kept).
        reload: called after writing (:func:`registry.files.broker_reloader`), or None (the
            operator reloads the broker).
    """

    def __init__(
        self,
        password_file: Path,
        acl_file: Path,
        *,
        root: str,
        alerts_root: str,
        bridge_users: tuple[str, ...],
        notifier_user: str,
        reload: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._passwd, self._acl = password_file, acl_file
        self._root, self._alerts_root = root, alerts_root
        self._bridges, self._notifier = bridge_users, notifier_user
        self._reload = reload

    async def _write(self, store: RegistryStore) -> None:
        devices = await store.list_devices()
        hashes = await store.password_hashes()
        old_passwd = self._passwd.read_text() if self._passwd.exists() else None
        old_acl = self._acl.read_text() if self._acl.exists() else None
        existing = old_passwd or ""
        write_private(
            self._passwd,
            password_file_text(existing, [d.mqtt_username for d in devices], hashes),
        )
        write_private(
            self._acl,
            acl_file_text(
                devices,
                root=self._root,
                alerts_root=self._alerts_root,
                bridge_users=self._bridges,
                notifier_user=self._notifier,
            ),
        )
        if self._reload is None:
            return
        try:
            await self._reload()
        except BaseException:
            # The registry change rolls back: so do the files, and the broker keeps its own.
            _restore(self._passwd, old_passwd)
            _restore(self._acl, old_acl)
            raise

    async def add(self, store: RegistryStore, device: DeviceRecord, password: str) -> None:
        """Rewrite both files."""
        await self._write(store)

    async def set_enabled(self, store: RegistryStore, device: DeviceRecord) -> None:
        """Rewrite both files."""
        await self._write(store)

    async def rotate(self, store: RegistryStore, device: DeviceRecord, password: str) -> None:
        """Rewrite both files."""
        await self._write(store)


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did (or, on a dry run, would do) with each row."""

    rows: list[tuple[int, str, str, str]]  # line, device_id, status, reason
    issued: list[Issued]

    @property
    def ok(self) -> bool:
        """True when every row was (or would be) registered."""
        return all(status in {"added", "would add"} for _, _, status, _ in self.rows)


class Onboarding:
    """Registry changes with their credentials, on one connection.

    Args:
        conn: an asyncpg connection (each operation is one transaction on it).
        broker: where the credentials go.
    """

    def __init__(self, conn: asyncpg.Connection, broker: BrokerApplier) -> None:
        self._conn = conn
        self._broker = broker
        self.store = RegistryStore(conn)

    async def add(self, device: DeviceRecord, hj212_password: str | None = None) -> Issued:
        """Register a device and issue its MQTT credentials.

        Raises:
            DeviceExists: already registered (nothing changed).
            DynsecError: the broker refused (nothing registered).
        """
        password = generate_password()
        if hj212_password is not None:
            device = device.model_copy(
                update={"hj212_password_hash": hash_password(hj212_password)}
            )
        async with self._conn.transaction():
            await self.store.add(device, hash_password(password, iterations=BROKER_ITERATIONS))
            await self._broker.add(self.store, device, password)
        return Issued(device, device.mqtt_username, password)

    async def set_enabled(self, device_id: str, enabled: bool) -> DeviceRecord:
        """Enable or disable a device; disabling cuts its live connection.

        Raises:
            UnknownDevice: not registered.
        """
        async with self._conn.transaction():
            device = await self.store.set_enabled(device_id, enabled)
            await self._broker.set_enabled(self.store, device)
        return device

    async def rotate(self, device_id: str) -> Issued:
        """Issue a new password; the old one stops working and its connection is cut.

        Raises:
            UnknownDevice: not registered.
        """
        password = generate_password()
        async with self._conn.transaction():
            device = await self.store.set_password_hash(
                device_id, hash_password(password, iterations=BROKER_ITERATIONS)
            )
            await self._broker.rotate(self.store, device, password)
        return Issued(device, device.mqtt_username, password)

    async def import_rows(self, rows: list[ImportRow], *, dry_run: bool) -> ImportReport:
        """Register every valid, new row; report each row (a dry run changes nothing).

        Rows already registered are reported (``exists``) and left as they are; invalid rows
        are reported with their reason. The valid new rows are added one by one, each with
        its broker credentials.
        """
        good = [r for r in rows if r.record is not None]
        ids, mns = await self.store.existing(
            [r.record.device_id for r in good if r.record is not None],
            [r.record.hj212_mn for r in good if r.record is not None and r.record.hj212_mn],
        )
        report: list[tuple[int, str, str, str]] = []
        issued: list[Issued] = []
        for row in rows:
            rec = row.record
            if rec is None:
                report.append((row.line, row.device_id, "error", row.error or "invalid"))
            elif rec.device_id in ids:
                report.append((row.line, rec.device_id, "exists", "already registered"))
            elif rec.hj212_mn is not None and rec.hj212_mn in mns:
                report.append((row.line, rec.device_id, "error", f"hj212_mn {rec.hj212_mn} taken"))
            elif dry_run:
                report.append((row.line, rec.device_id, "would add", ""))
            else:
                issued.append(await self.add(rec, row.hj212_password))
                report.append((row.line, rec.device_id, "added", ""))
        return ImportReport(report, issued)
