"""The alerts package's errors sit on the one tree, and asyncpg errors are mapped."""

from __future__ import annotations

import asyncpg
import pytest

import alerts
from alerts import db_errors
from core.errors import FatalError, GhgwatchError, StorageBackpressure, TransientError


def test_alert_errors_sit_on_the_one_tree() -> None:
    """On-call errors are GhgwatchErrors; send failures are transient and retryable, but a
    refusal for good is not: nothing that catches TransientError may retry it."""
    assert issubclass(alerts.AlertNotFound, GhgwatchError)
    assert issubclass(alerts.InvalidTransition, alerts.AlertError)
    assert issubclass(alerts.NotifyFailed, TransientError)
    assert issubclass(alerts.NotifyRejected, GhgwatchError)
    assert not issubclass(alerts.NotifyRejected, TransientError)


@pytest.mark.parametrize(
    ("exc", "mapped"),
    [
        (asyncpg.ConnectionDoesNotExistError("gone"), StorageBackpressure),
        (asyncpg.CannotConnectNowError("starting"), StorageBackpressure),
        (asyncpg.TooManyConnectionsError("full"), StorageBackpressure),
        (asyncpg.DeadlockDetectedError("deadlock"), StorageBackpressure),
        (asyncpg.SerializationError("conflict"), StorageBackpressure),
        (asyncpg.QueryCanceledError("timeout"), StorageBackpressure),
        (asyncpg.InterfaceError("closed"), StorageBackpressure),
        (asyncpg.AdminShutdownError("server restarting"), StorageBackpressure),
        (asyncpg.ConnectionFailureError("connection failure"), StorageBackpressure),
        (asyncpg.LockNotAvailableError("locked"), StorageBackpressure),
        (asyncpg.DiskFullError("disk full"), StorageBackpressure),
        (TimeoutError(), StorageBackpressure),
        (ConnectionRefusedError(), StorageBackpressure),
        (OSError("Network is unreachable"), StorageBackpressure),
        (asyncpg.InvalidPasswordError("pw"), FatalError),
        (asyncpg.InvalidAuthorizationSpecificationError("no such role"), FatalError),
        (asyncpg.InvalidCatalogNameError("no db"), FatalError),
        (asyncpg.UndefinedTableError("no alerts table"), FatalError),
        (asyncpg.SyntaxOrAccessError("bad sql"), FatalError),
        (asyncpg.UniqueViolationError("duplicate key"), FatalError),
        (asyncpg.NotNullViolationError("null value"), FatalError),
        (asyncpg.DataError("invalid input"), FatalError),
    ],
)
def test_every_driver_error_we_claim_to_handle_is_mapped(
    exc: BaseException, mapped: type[GhgwatchError]
) -> None:
    """db_errors maps asyncpg and socket errors onto the tree, original chained."""
    with pytest.raises(mapped) as info, db_errors("test"):
        raise exc
    assert info.value.__cause__ is exc


async def test_store_on_an_unmigrated_database_is_fatal(pg_url: str) -> None:
    """A database without the alert tables stops the service (run `ghgwatch db migrate`)."""
    from datetime import UTC, datetime

    from core.settings import AlertsSettings
    from tests.alerts.conftest import det

    async with alerts.AlertStore(pg_url, AlertsSettings()) as store:
        with pytest.raises(FatalError, match="alert_detections"):
            await store.apply_detections([det()], datetime.now(UTC))
