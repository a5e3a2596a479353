"""The processors' errors, placed on ghgwatch's one error tree.

::

    GhgwatchError
    ├── TransientError
    │   ├── BrokerUnavailable      Kafka unreachable or timed out (ingest's Kafka adapter)
    │   └── StorageBackpressure    the database is slow or unreachable: pause, rewind, retry
    └── FatalError
        └── SchemaMissing          the database has no ghgwatch schema: run `ghgwatch db migrate`

Undecodable Kafka records are not errors: they become dead letters with reason
``undecodable_record`` and the stream goes on.
"""

from __future__ import annotations

from core.errors import BrokerUnavailable, FatalError, StorageBackpressure

__all__ = ["BrokerUnavailable", "SchemaMissing", "StorageBackpressure"]


class SchemaMissing(FatalError):
    """The database lacks the tables the processor writes to; migrations were not run."""
