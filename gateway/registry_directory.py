"""A :class:`~gateway.directory.LoggerDirectory` over the device registry (for the lead to wire).

Written against the shape the registry branch announced, without importing it (it is not on
this branch): ``RegistryStore.by_mn(mn) -> DeviceRecord | None`` (sync or async) with fields
``device_id, kind, network, site, device, enabled, hj212_mn, hj212_password_hash``, and
``registry.credentials.verify_password(stored_hash, password) -> bool``. Wire it as::

    RegistryDirectory(store, registry.credentials.verify_password)

A PW that verified once is remembered per MN (as its SHA-256) until it changes, as in
:class:`~gateway.directory.StaticDirectory`; a disabled or rotated device is asked about again
on every frame, so disabling it cuts it off at its next frame.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from gateway.directory import LoggerIdentity, LoggerRefusal, RefusalReason
from wire.schemas import MineLocation, SourceKind
from wire.topics import DeviceRef

__all__ = ["RegistryDirectory"]


class _DeviceRecord(Protocol):
    device_id: str
    kind: Any
    network: str
    site: str
    device: str
    enabled: bool
    hj212_mn: str | None
    hj212_password_hash: str | None


class _Store(Protocol):
    def by_mn(self, mn: str) -> _DeviceRecord | Awaitable[_DeviceRecord | None] | None: ...


class RegistryDirectory:
    """Resolves loggers by their MN in the registry; PW checked against the stored hash."""

    def __init__(self, store: _Store, verify_password: Callable[[str, str], bool]) -> None:
        self._store = store
        self._verify = verify_password
        self._verified: dict[str, tuple[str, bytes]] = {}  # MN -> (stored hash, PW digest)

    async def resolve(self, mn: str, pw: str) -> LoggerIdentity | LoggerRefusal:
        """The registered, enabled device with this MN whose password is ``pw``."""
        found = self._store.by_mn(mn)
        record = await found if inspect.isawaitable(found) else found
        if record is None or record.hj212_password_hash is None:
            return LoggerRefusal(RefusalReason.UNKNOWN_MN)
        if not record.enabled:
            return LoggerRefusal(RefusalReason.DISABLED)
        digest = hashlib.sha256(pw.encode()).digest()
        stored = record.hj212_password_hash
        known = self._verified.get(mn)
        if known is None or known[0] != stored or not hmac.compare_digest(known[1], digest):
            if not self._verify(stored, pw):
                return LoggerRefusal(RefusalReason.BAD_PASSWORD)
            self._verified[mn] = (stored, digest)
        kind = SourceKind(getattr(record.kind, "value", record.kind))
        location = getattr(record, "location", None)
        return LoggerIdentity(
            DeviceRef(kind, record.network, record.site, record.device),
            MineLocation(location) if location else None,
        )
