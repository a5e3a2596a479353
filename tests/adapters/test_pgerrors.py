"""Every asyncpg/socket error we claim to handle maps onto the ghgwatch tree, chained."""

from __future__ import annotations

import asyncpg
import pytest

from adapters import map_pg_error, pg_errors
from core.errors import FatalError, StorageBackpressure

TRANSIENT: list[BaseException] = [
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("pool is closing"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
    asyncpg.ConnectionFailureError("connection failure"),
    asyncpg.SerializationError("could not serialize access"),
    asyncpg.DeadlockDetectedError("deadlock detected"),
    asyncpg.LockNotAvailableError("could not obtain lock"),
    asyncpg.InvalidCatalogNameError('database "x" does not exist'),
    asyncpg.DiskFullError("could not extend file"),
    ConnectionRefusedError(111, "Connection refused"),
    OSError("Network is unreachable"),
    TimeoutError(),
]
FATAL: list[BaseException] = [
    asyncpg.InvalidPasswordError("password authentication failed"),
    asyncpg.InvalidAuthorizationSpecificationError('role "x" does not exist'),
    asyncpg.UndefinedTableError('relation "readings" does not exist'),
    asyncpg.UniqueViolationError("duplicate key"),
    asyncpg.NotNullViolationError("null value in column"),
    asyncpg.DataError("invalid input"),
    asyncpg.SyntaxOrAccessError("syntax error"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_driver_errors_become_backpressure(exc: BaseException) -> None:
    """Lost connections, overload and timeouts ask the caller to pause and retry."""
    with pytest.raises(StorageBackpressure) as info, pg_errors("write", retry_after=3.0):
        raise exc
    assert info.value.__cause__ is exc
    assert info.value.retry_after == 3.0


@pytest.mark.parametrize("exc", FATAL, ids=lambda e: type(e).__name__)
def test_bug_and_credential_errors_are_fatal(exc: BaseException) -> None:
    """Refused credentials, a missing schema and refused data stop the service."""
    with pytest.raises(FatalError) as info, pg_errors("write"):
        raise exc
    assert not isinstance(info.value, StorageBackpressure)
    assert info.value.__cause__ is exc


def test_a_missing_database_is_fatal_when_the_caller_says_so() -> None:
    """A caller that cannot wait for a database to reappear stops on 3D000 instead."""
    exc = asyncpg.InvalidCatalogNameError('database "x" does not exist')
    with pytest.raises(FatalError) as info, pg_errors("connect", missing_database_fatal=True):
        raise exc
    assert not isinstance(info.value, StorageBackpressure)
    assert info.value.__cause__ is exc


def test_unrelated_errors_are_not_mapped() -> None:
    """Programming errors outside the driver pass through untouched."""
    assert map_pg_error(KeyError("x"), "write") is None
    with pytest.raises(KeyError), pg_errors("write"):
        raise KeyError("x")
