"""Processors: consume the Kafka topics, store readings and dead letters exactly once."""

from processors.consumer import Processor, ProcessorStats
from processors.exceptions import SchemaMissing
from processors.storage import (
    DeadLetter,
    MigrationReport,
    ReadingStore,
    WriteResult,
    decode_values,
    migrate,
)

__all__ = [
    "DeadLetter",
    "MigrationReport",
    "Processor",
    "ProcessorStats",
    "ReadingStore",
    "SchemaMissing",
    "WriteResult",
    "decode_values",
    "migrate",
]
