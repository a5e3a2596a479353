"""The alerts' PostgreSQL connection: pool, one transaction at a time, errors and row mapping.

Shared by the three storage modules (:mod:`alerts.writes`, :mod:`alerts.outbox`,
:mod:`alerts.reads`), which hold every SQL statement of the package. asyncpg errors are mapped
onto the error tree in :func:`db_errors`. The tables come from ``alerts/migrations/2NN_*.sql``,
applied by ``ghgwatch db migrate`` (:func:`processors.storage.migrate`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import asyncpg
from pydantic import BaseModel

from adapters import pg_errors
from alerts.models import AlertView, SilenceView
from core.errors import FatalError
from core.settings import DbSettings

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = PoolConnectionProxy[Any]

__all__ = ["AlertDb", "alert_view", "db_errors", "row_model", "silence_view"]

M = TypeVar("M", bound=BaseModel)


def db_errors(action: str) -> contextlib.AbstractContextManager[None]:
    """:func:`adapters.pg_errors` as alerts uses it: an unknown database is fatal.

    Args:
        action: what was being done, for the message.

    Returns:
        The context manager translating asyncpg and socket errors raised inside it.

    Raises:
        FatalError: refused credentials, missing database or schema (stop).
        StorageBackpressure: the database is unreachable, slow or the transaction conflicted.
    """
    return pg_errors(f"alerts {action}", missing_database_fatal=True)


async def _init_connection(conn: asyncpg.Connection[Any]) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class AlertDb:
    """A connection pool to the alert tables, handing out one transaction at a time.

    Args:
        url: database URL.
        db: the ``db`` settings section (pool size, command timeout).
    """

    def __init__(self, url: str, db: DbSettings) -> None:
        self._url = url
        self._db = db
        self._pool: asyncpg.Pool[Any] | None = None

    async def open(self) -> None:
        """Connect the pool.

        Raises:
            FatalError: refused credentials or unknown database.
            StorageBackpressure: the server cannot be reached.
        """
        with db_errors("connect"):
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=self._db.pool_min,
                max_size=max(self._db.pool_max, self._db.pool_min),
                command_timeout=self._db.command_timeout_s,
                timeout=self._db.command_timeout_s,
                init=_init_connection,
            )

    async def close(self) -> None:
        """Close the pool (idempotent)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @contextlib.asynccontextmanager
    async def tx(self, action: str) -> AsyncIterator[Conn]:
        """One transaction on a pooled connection; driver errors are mapped (:func:`db_errors`).

        Args:
            action: what the transaction does, for error messages.

        Yields:
            The connection, inside the transaction (committed when the block ends normally).

        Raises:
            FatalError: the pool is not open, or the database refused for good.
            StorageBackpressure: the database is slow or unreachable; nothing was committed.
        """
        if self._pool is None:
            raise FatalError("alert store is not open")
        with db_errors(action):
            async with self._pool.acquire() as conn, conn.transaction():
                yield conn


def row_model(model: type[M], row: asyncpg.Record, **extra: Any) -> M:
    """``model`` filled from the row's columns of the same names, and from ``extra``.

    Args:
        model: the view to build; every field not in ``extra`` must be a column of the row.
        row: the row (columns the model does not have are left out).
        **extra: fields that are not columns (or are named otherwise in the table).

    Returns:
        The validated model.
    """
    return model(**{k: row[k] for k in model.model_fields if k not in extra}, **extra)


def alert_view(row: asyncpg.Record) -> AlertView:
    """The :class:`AlertView` of an ``alerts`` row (its internal columns left out)."""
    return row_model(AlertView, row)


def silence_view(row: asyncpg.Record) -> SilenceView:
    """The :class:`SilenceView` of an ``alert_silences`` row (``grp`` is its ``group``)."""
    return row_model(SilenceView, row, group=row["grp"])
