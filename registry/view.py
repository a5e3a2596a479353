"""A cached, self-refreshing view of the registry for services that check every message.

The bridge asks :meth:`RegistryView.admits` for every reading: a dictionary look-up, no
database round trip. The view is reloaded whole every ``refresh_s`` and, within moments of
a change, on PostgreSQL ``NOTIFY ghgwatch_registry`` (a trigger on ``registry_devices``
sends it), so a device disabled with ``ghgwatch stations disable`` is refused by the bridge
too, not only by the broker.

A lost connection (the database restarted or went away) is noticed at once and the view
reloaded, reconnecting with backoff. When the database is down: before the first load
:meth:`start` waits up to its timeout and then raises (a service must not guess who is
registered); after it, the last view is kept and used, a warning is logged once per outage
and the view is retried with backoff, and
:attr:`stale_since` says since when it may be out of date.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import asyncpg
import structlog

from adapters.pg import redact_url
from core.errors import FatalError, GhgwatchError
from registry.models import DeviceRecord
from registry.store import NOTIFY_CHANNEL, RegistryStore
from wire import SourceKind

__all__ = ["RegistryView"]

log = structlog.get_logger(__name__)

_RETRY_MIN_S = 0.5
_RETRY_MAX_S = 10.0
_NOTIFY_DEBOUNCE_S = 0.05
_CONNECT_TIMEOUT_S = 5.0


class RegistryView:
    """Registered devices held in memory, refreshed periodically and on change.

    Args:
        dsn: the PostgreSQL URL.
        refresh_s: full reload at least this often.
        on_change: called after each successful load (e.g. to reset derived caches).
    """

    def __init__(
        self,
        dsn: str,
        refresh_s: float,
        on_change: Callable[[RegistryView], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._refresh_s = refresh_s
        self._on_change = on_change
        self._kinds: dict[str, str] = {}
        self._records: dict[str, DeviceRecord] = {}
        self._settled = asyncio.Event()  # a first view, or a reason there will be none
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._fatal: FatalError | None = None
        self.loads = 0
        self.stale_since: float | None = None

    @property
    def loaded(self) -> bool:
        """True once a first view has been read."""
        return self.loads > 0

    def admits(self, device_id: str, kind: str) -> bool:
        """True when the device is registered, enabled, and of this kind."""
        return self._kinds.get(device_id) == kind

    def refusal(self, device_id: str, kind: SourceKind) -> str | None:
        """Why a reading of this device and kind is refused as ``unregistered`` (the bridge's
        and the import's one wording), or None when the device is admitted."""
        if self.admits(device_id, kind):
            return None
        known = self._records.get(device_id)
        why = (
            "device not registered"
            if known is None
            else "device disabled in the registry"
            if not known.enabled
            else f"device registered as {known.kind.value}, not {kind.value}"
        )
        return f"{why}; ask the operator to register it (ghgwatch stations add)"

    def record(self, device_id: str) -> DeviceRecord | None:
        """The registered device (enabled or not), or None."""
        return self._records.get(device_id)

    @property
    def records(self) -> dict[str, DeviceRecord]:
        """Every registered device by id (the current view; do not modify)."""
        return self._records

    async def start(self, timeout_s: float) -> None:
        """Load the first view (waiting for the database) and keep it fresh.

        Raises:
            FatalError: no view could be read within ``timeout_s``, or at once when the
                database refuses us or has no registry table (run ``ghgwatch db migrate``).
        """
        self._task = asyncio.create_task(self._keep_fresh(), name="registry-view")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._settled.wait()
        if self.loaded:
            return
        await self.close()
        raise self._fatal or FatalError(
            f"registry not readable from {redact_url(self._dsn)} within {timeout_s} s"
        )

    async def close(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop_conn()

    async def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), _CONNECT_TIMEOUT_S)

    def _notified(self, *_args: object) -> None:
        self._changed.set()

    async def _load(self) -> None:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn, timeout=_CONNECT_TIMEOUT_S)
            await self._conn.add_listener(NOTIFY_CHANNEL, self._notified)
            # A lost connection hears no NOTIFY: reload (reconnecting) at once, not at the
            # next periodic refresh, so a change is not missed and stale_since is set.
            self._conn.add_termination_listener(self._notified)
        records = await RegistryStore(self._conn).list_devices()
        self._records = {r.device_id: r for r in records}
        self._kinds = {r.device_id: r.kind.value for r in records if r.enabled}
        self.loads += 1
        self._settled.set()
        if self.stale_since is not None:
            log.info("registry view current again", devices=len(records))
        self.stale_since = None
        if self._on_change is not None:
            self._on_change(self)

    async def _keep_fresh(self) -> None:
        delay = _RETRY_MIN_S
        while True:
            self._changed.clear()
            try:
                await self._load()
                delay = _RETRY_MIN_S
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._refresh_s):
                        await self._changed.wait()
                await asyncio.sleep(_NOTIFY_DEBOUNCE_S)  # a bulk import notifies per row
            except (OSError, asyncpg.PostgresError, GhgwatchError, TimeoutError) as exc:
                if isinstance(exc, FatalError) and not self.loaded:
                    # refused credentials or no registry table (schema not migrated): waiting
                    # will not help, so start() fails at once with the reason
                    self._fatal = FatalError(f"registry not readable: {exc}")
                    self._settled.set()
                    return
                if self.stale_since is None:
                    self.stale_since = time.time()
                    log.warning(
                        "registry not readable; keeping the last view" if self.loaded
                        else "registry not readable yet; waiting",
                        db=redact_url(self._dsn), error=str(exc)[:200],
                        devices=len(self._records),
                    )  # fmt: skip
                await self._drop_conn()
                await asyncio.sleep(delay)
                delay = min(2 * delay, _RETRY_MAX_S)
