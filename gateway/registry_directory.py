"""A :class:`~gateway.directory.LoggerDirectory` over the device registry.

``ghgwatch hj212`` uses it when ``gateway.loggers`` lists no logger: the MN is looked up with
:meth:`registry.RegistryStore.by_mn` and the PW checked with
:func:`registry.credentials.verify_password` against the hash ``stations add --hj212-password``
stored.

A PW that verified once is remembered per MN (as its SHA-256) until it changes, as in
:class:`~gateway.directory.StaticDirectory`; a disabled or rotated device is asked about again
on every frame, so disabling it cuts it off at its next frame.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from gateway.directory import LoggerIdentity, LoggerRefusal, RefusalReason
from registry import RegistryStore
from wire.schemas import MineLocation, SourceKind
from wire.topics import DeviceRef

__all__ = ["RegistryDirectory"]


class RegistryDirectory:
    """Resolves loggers by their MN in the registry; PW checked against the stored hash."""

    def __init__(self, store: RegistryStore, verify_password: Callable[[str, str], bool]) -> None:
        self._store = store
        self._verify = verify_password
        self._verified: dict[str, tuple[str, bytes]] = {}  # MN -> (stored hash, PW digest)

    async def resolve(self, mn: str, pw: str) -> LoggerIdentity | LoggerRefusal:
        """The registered, enabled device with this MN whose password is ``pw``."""
        record = await self._store.by_mn(mn)
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
        location = getattr(record, "location_class", None) or getattr(record, "location", None)
        return LoggerIdentity(
            DeviceRef(kind, record.network, record.site, record.device),
            MineLocation(location) if location else None,
        )
