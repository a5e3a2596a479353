"""core: what every layer above stands on, the settings object, the error tree and logging.

It imports nothing else of ghgwatch. The packages above it take a :class:`Settings` as an
argument; only the app shell (``ghgwatch``) builds one.
"""

from core.errors import (
    BrokerUnavailable,
    ConfigurationError,
    FatalError,
    GhgwatchError,
    RejectedReading,
    StorageBackpressure,
    TransientError,
)
from core.logs import configure_logging
from core.settings import Settings, load_settings

__all__ = [
    "BrokerUnavailable",
    "ConfigurationError",
    "FatalError",
    "GhgwatchError",
    "RejectedReading",
    "Settings",
    "StorageBackpressure",
    "TransientError",
    "configure_logging",
    "load_settings",
]
