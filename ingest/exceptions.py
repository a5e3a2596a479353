"""The ingest package's errors, placed on ghgwatch's one error tree by what the caller must do.

::

    GhgwatchError
    ├── TransientError
    │   └── BrokerUnavailable
    │       └── MqttUnavailable      the MQTT broker cannot be reached, or the link dropped
    └── FatalError
        ├── CredentialsRefused       the broker refused our login or our subscription
        └── SessionClosed            a closed MQTT session or bridge was used again
"""

from __future__ import annotations

from core.errors import BrokerUnavailable, FatalError

__all__ = ["CredentialsRefused", "MqttUnavailable", "SessionClosed"]


class MqttUnavailable(BrokerUnavailable):
    """The MQTT broker cannot be reached, timed out, or dropped the connection; reconnect."""


class CredentialsRefused(FatalError):
    """The MQTT broker refused the bridge's credentials or authorisation; retrying cannot help."""


class SessionClosed(FatalError):
    """A closed :class:`~ingest.mqtt.MqttSession` or a finished bridge was asked to run again."""
