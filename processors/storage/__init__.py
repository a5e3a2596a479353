"""Storage: schema migrations, decoding of Kafka values, the readings and detection writers."""

from processors.storage.decode import (
    UNDECODABLE_REASON,
    DeadLetter,
    DecodedBatch,
    KafkaBatches,
    KafkaValue,
    decode_values,
)
from processors.storage.detections import RESTART_CLOSED, RESTART_DUPLICATE, DetectionStore
from processors.storage.migrate import (
    MIGRATION_PACKAGES,
    MIGRATIONS_DIR,
    Migration,
    MigrationReport,
    discover_migrations,
    migrate,
    timescale_available,
)
from processors.storage.writer import (
    QUARANTINE_REASON,
    REQUIRED_TABLES,
    ReadingStore,
    WriteResult,
)

__all__ = [
    "MIGRATIONS_DIR",
    "MIGRATION_PACKAGES",
    "QUARANTINE_REASON",
    "REQUIRED_TABLES",
    "RESTART_CLOSED",
    "RESTART_DUPLICATE",
    "UNDECODABLE_REASON",
    "DeadLetter",
    "DecodedBatch",
    "DetectionStore",
    "KafkaBatches",
    "KafkaValue",
    "Migration",
    "MigrationReport",
    "ReadingStore",
    "WriteResult",
    "decode_values",
    "discover_migrations",
    "migrate",
    "timescale_available",
]
