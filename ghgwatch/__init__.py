"""ghgwatch app shell: the ``ghgwatch`` CLI, the settings object and the error root."""

from ghgwatch.errors import (
    BrokerUnavailable,
    ConfigurationError,
    FatalError,
    GhgwatchError,
    RejectedReading,
    StorageBackpressure,
    TransientError,
)
from ghgwatch.settings import Settings, load_settings

__all__ = [
    "BrokerUnavailable",
    "ConfigurationError",
    "FatalError",
    "GhgwatchError",
    "RejectedReading",
    "Settings",
    "StorageBackpressure",
    "TransientError",
    "load_settings",
]
__version__ = "0.1.0"
