"""A :class:`~gateway.directory.LoggerDirectory` over the device registry, and the one choice
between it and the ``gateway.loggers`` settings.

:func:`open_directory` decides which directory resolves loggers, for ``ghgwatch hj212`` and
for ``ghgwatch import`` of HJ 212 dumps alike: :class:`~gateway.directory.StaticDirectory`
when ``gateway.loggers`` lists any logger, else :class:`RegistryDirectory`.

:class:`RegistryDirectory` answers from a :class:`registry.RegistryView`, the cached view the
bridge uses: the registry is held in memory, reloaded whole every
``ingest.registry_refresh_s`` and within moments of a change (PostgreSQL ``NOTIFY`` on
``registry_devices``), so a frame costs no query, and a device disabled, or whose logger PW
was changed, is refused from its first frame after the notification. The MN is looked up in
an index of the view (rebuilt when the view is reloaded); the PW is checked with
:func:`registry.credentials.verify_password` against the hash ``stations add
--hj212-password`` stored, and a PW that verified is remembered per MN (as its SHA-256) until
the stored hash changes, as in :class:`~gateway.directory.StaticDirectory`.

While the database is unreachable the last view is used (the view retries with backoff); a
logger it does not know is refused as ``unknown_mn`` with a detail saying since when the
registry could not be read. Before the first view, :func:`open_directory` waits up to its
timeout and then fails: the gateway does not guess who is registered.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from core.settings import Settings
from gateway.directory import (
    LoggerDirectory,
    LoggerIdentity,
    LoggerRefusal,
    RefusalReason,
    StaticDirectory,
)
from registry import RegistryView, verify_password
from registry.models import DeviceRecord
from wire.schemas import MineLocation
from wire.topics import DeviceRef

__all__ = ["RegistryDirectory", "open_directory", "open_registry_view", "uses_registry"]


class RegistryDirectory:
    """Resolves loggers by their MN in a cached registry view; PW checked against its hash.

    Args:
        view: a started :class:`registry.RegistryView` (the caller owns it).
        verify: checks a PW against a stored hash.
    """

    def __init__(
        self, view: RegistryView, verify: Callable[[str, str], bool] = verify_password
    ) -> None:
        self._view = view
        self._verify = verify
        self._indexed: dict[str, DeviceRecord] | None = None  # the view the index is of
        self._by_mn: dict[str, DeviceRecord] = {}
        self._verified: dict[str, tuple[str, bytes]] = {}  # MN -> (stored hash, PW digest)

    def _lookup(self, mn: str) -> DeviceRecord | None:
        records = self._view.records
        if records is not self._indexed:  # a reload replaces the view's dictionary
            self._by_mn = {r.hj212_mn: r for r in records.values() if r.hj212_mn is not None}
            self._indexed = records
        return self._by_mn.get(mn)

    def _unknown(self) -> LoggerRefusal:
        since = self._view.stale_since
        if since is None:
            return LoggerRefusal(
                RefusalReason.UNKNOWN_MN, "no registered device has this MN and an HJ 212 PW"
            )
        when = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
        return LoggerRefusal(
            RefusalReason.UNKNOWN_MN,
            f"not in the registry view; the registry is not readable since {when}"
            " (the last view is used)",
        )

    async def resolve(self, mn: str, pw: str) -> LoggerIdentity | LoggerRefusal:
        """The registered, enabled device with this MN whose password is ``pw``."""
        record = self._lookup(mn)
        if record is None or record.hj212_password_hash is None:
            return self._unknown()
        if not record.enabled:
            return LoggerRefusal(RefusalReason.DISABLED, f"{record.device_id} is disabled")
        digest = hashlib.sha256(pw.encode()).digest()
        stored = record.hj212_password_hash
        known = self._verified.get(mn)
        if known is None or known[0] != stored or not hmac.compare_digest(known[1], digest):
            if not self._verify(stored, pw):
                return LoggerRefusal(RefusalReason.BAD_PASSWORD)
            self._verified[mn] = (stored, digest)
        location = record.location_class
        return LoggerIdentity(
            DeviceRef(record.kind, record.network, record.site, record.device),
            MineLocation(location) if location else None,
        )


def uses_registry(settings: Settings) -> bool:
    """True when loggers are resolved in the device registry (``gateway.loggers`` is empty)."""
    return not settings.gateway.loggers


@asynccontextmanager
async def open_registry_view(
    settings: Settings, start_timeout_s: float
) -> AsyncIterator[RegistryView]:
    """A started :class:`registry.RegistryView` of ``settings``' database, closed at the end.

    Raises:
        FatalError: no view could be read within ``start_timeout_s`` (or the database refused
            us, or has no registry table).
    """
    view = RegistryView(settings.db_url(), settings.ingest.registry_refresh_s)
    await view.start(start_timeout_s)
    try:
        yield view
    finally:
        await view.close()


@asynccontextmanager
async def open_directory(
    settings: Settings, *, start_timeout_s: float, view: RegistryView | None = None
) -> AsyncIterator[LoggerDirectory]:
    """The directory loggers are resolved in: ``gateway.loggers`` when it lists any, else the
    device registry through ``view`` (or a view of its own, started within
    ``start_timeout_s`` and closed at the end).

    Raises:
        FatalError: the registry is needed and no view could be read in time.
    """
    if not uses_registry(settings):
        yield StaticDirectory(settings.gateway)
    elif view is not None:
        yield RegistryDirectory(view)
    else:
        async with open_registry_view(settings, start_timeout_s) as own:
            yield RegistryDirectory(own)
