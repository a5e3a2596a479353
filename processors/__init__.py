"""Processors: consume the Kafka topics, store readings and dead letters exactly once."""

from processors.checkpoint import Checkpoint, CommitOnRevoke
from processors.consumer import Processor, ProcessorStats
from processors.events import DetectionRecord, DetectionState, Severity, detection_id
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
    "Checkpoint",
    "CommitOnRevoke",
    "DeadLetter",
    "DetectionRecord",
    "DetectionState",
    "MigrationReport",
    "Processor",
    "ProcessorStats",
    "ReadingStore",
    "SchemaMissing",
    "Severity",
    "WriteResult",
    "decode_values",
    "detection_id",
    "migrate",
]
