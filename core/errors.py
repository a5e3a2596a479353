"""The root of ghgwatch's one error hierarchy; imports nothing else from ghgwatch.

Every error ghgwatch raises descends from :class:`GhgwatchError`, grouped by what the caller
must do about it::

    GhgwatchError
    ├── RejectedReading          bad input: store it with its reason, never retry
    ├── TransientError           retry after .retry_after seconds
    │   ├── BrokerUnavailable    MQTT broker or Kafka cannot be reached right now
    │   └── StorageBackpressure  the database is slow or unreachable; pause and rewind
    └── FatalError               bad configuration or refused credentials: stop, exit non-zero
        └── ConfigurationError   settings that cannot work (bad URL, missing binary)

Packages add their own subclasses in their ``exceptions`` modules; driver errors
(aiomqtt, aiokafka, asyncpg, OSError) are translated onto this tree at one boundary per
adapter, with the original chained as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "ConfigurationError",
    "FatalError",
    "GhgwatchError",
    "RejectedReading",
    "StorageBackpressure",
    "TransientError",
]

DEFAULT_RETRY_AFTER_S = 1.0


class GhgwatchError(Exception):
    """Base class of every error ghgwatch raises on purpose."""


class RejectedReading(GhgwatchError):
    """A message failed validation; it is dead-lettered with ``reason`` and never retried."""

    def __init__(self, reason: str, *, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class TransientError(GhgwatchError):
    """A dependency failed in a way that may pass; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float = DEFAULT_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BrokerUnavailable(TransientError):
    """The MQTT broker or the Kafka cluster cannot be reached or timed out."""


class StorageBackpressure(TransientError):
    """The database did not take a batch in time; pause input, rewind, retry later."""


class FatalError(GhgwatchError):
    """Retrying cannot help (refused credentials, broken configuration): stop and exit non-zero."""


class ConfigurationError(FatalError):
    """Settings that cannot work: a malformed URL, a missing binary, an impossible limit."""
