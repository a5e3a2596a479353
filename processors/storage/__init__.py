"""Storage: schema migrations, decoding of Kafka values and the batch writer."""

from processors.storage.decode import (
    UNDECODABLE_REASON,
    DeadLetter,
    DecodedBatch,
    KafkaBatches,
    KafkaRecordLike,
    KafkaValue,
    decode_values,
)
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
    "UNDECODABLE_REASON",
    "DeadLetter",
    "DecodedBatch",
    "KafkaBatches",
    "KafkaRecordLike",
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
