"""The one place asyncpg and socket errors are translated onto ghgwatch's error tree.

::

    asyncpg / OSError                               ghgwatch
    ─────────────────────────────────────────────   ──────────────────────────────────────
    connection lost or refused, OSError,            StorageBackpressure   pause, rewind,
      InterfaceError on a closed connection           retry after ``retry_after``
    SQLSTATE 08 (connection), 53 (resources, e.g.
      too many connections), 57 (operator
      intervention: shutdown, query cancelled
      by statement_timeout), 40 (serialisation,
      deadlock), 55P03 (lock not available),
      58 (system I/O), 3D000 (database missing:
      being restored or renamed), timeouts
    SQLSTATE 28 (credentials), 42 (schema or SQL    FatalError            a bug or a missing
      wrong, e.g. table missing), 23 (constraint),                          schema: stop
      22 (data), anything else; 3D000 too when
      the caller passes ``missing_database_fatal``
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import asyncpg
import structlog

from core.errors import FatalError, StorageBackpressure

__all__ = [
    "DEFAULT_RETRY_AFTER_S",
    "MISSING_DATABASE_SQLSTATE",
    "TRANSIENT_SQLSTATE_CLASSES",
    "map_pg_error",
    "pg_errors",
]

log = structlog.get_logger(__name__)

DEFAULT_RETRY_AFTER_S = 2.0
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
MISSING_DATABASE_SQLSTATE = "3D000"
_TRANSIENT_SQLSTATES = frozenset({"55P03", MISSING_DATABASE_SQLSTATE})


def map_pg_error(
    exc: BaseException,
    action: str,
    *,
    retry_after: float = DEFAULT_RETRY_AFTER_S,
    missing_database_fatal: bool = False,
) -> StorageBackpressure | FatalError | None:
    """The ghgwatch error for a driver error, or None when ``exc`` is not one we map.

    Args:
        exc: the exception raised by asyncpg (or the socket layer).
        action: what was being done, for the message.
        retry_after: seconds a transient failure should wait before retrying.
        missing_database_fatal: treat an unknown database (3D000) as a configuration error
            to stop on, instead of one being restored to wait for.
    """
    text = f"postgres {action}: {type(exc).__name__}: {exc}"
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        if missing_database_fatal and state == MISSING_DATABASE_SQLSTATE:
            return FatalError(text)
        if state[:2] in TRANSIENT_SQLSTATE_CLASSES or state in _TRANSIENT_SQLSTATES:
            return StorageBackpressure(text, retry_after=retry_after)
        return FatalError(text)
    if isinstance(
        exc,
        asyncpg.InterfaceError | asyncpg.InternalClientError | OSError | asyncio.TimeoutError,
    ):
        # Closed/lost connections, pool closing, network errors and our own deadlines.
        return StorageBackpressure(text, retry_after=retry_after)
    return None


@contextlib.contextmanager
def pg_errors(
    action: str,
    *,
    retry_after: float = DEFAULT_RETRY_AFTER_S,
    missing_database_fatal: bool = False,
) -> Iterator[None]:
    """Translate asyncpg and socket errors raised inside the block (original chained).

    Args:
        action: what was being done, for the message (e.g. ``"write batch"``).
        retry_after: seconds a :class:`StorageBackpressure` asks the caller to wait.
        missing_database_fatal: an unknown database raises FatalError, not backpressure.

    Raises:
        StorageBackpressure: the database is unreachable, overloaded or too slow.
        FatalError: credentials refused, schema missing, or data the schema refuses (a bug).
    """
    try:
        yield
    except (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        OSError,
        TimeoutError,
    ) as exc:
        mapped = map_pg_error(
            exc, action, retry_after=retry_after, missing_database_fatal=missing_database_fatal
        )
        if mapped is None:  # pragma: no cover - every caught type maps
            raise
        raise mapped from exc
