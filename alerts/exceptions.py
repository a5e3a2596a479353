"""The alert package's errors, placed on ghgwatch's one error tree (:mod:`core.errors`).

Grouped, like the rest of the tree, by what the caller must do::

    GhgwatchError
    ├── AlertError                  an on-call request cannot be done (API: 4xx)
    │   ├── AlertNotFound           no alert or silence with that id (404)
    │   └── InvalidTransition       e.g. acknowledging a resolved alert (409)
    ├── NotifyRejected              the receiver refused the message for good: record the
    │                               attempt and its reason, mark the row failed, never retry
    └── TransientError
        └── NotifyFailed            a send failed; retry after .retry_after (outbox backoff)

``NotifyRejected`` is the notification's counterpart of ``RejectedReading``: it is no
``TransientError``, so no handler that retries transient failures can retry it.
"""

from __future__ import annotations

from core.errors import GhgwatchError, TransientError

__all__ = ["AlertError", "AlertNotFound", "InvalidTransition", "NotifyFailed", "NotifyRejected"]


class AlertError(GhgwatchError):
    """An on-call request (acknowledge, resolve, silence) cannot be carried out."""


class AlertNotFound(AlertError):
    """No alert (or silence) has the given id."""


class InvalidTransition(AlertError):
    """The alert's state does not allow the request (e.g. acknowledging a resolved alert)."""


class NotifyFailed(TransientError):
    """Sending a notification failed in a way that may pass (timeout, 5xx, rate limit)."""


class NotifyRejected(GhgwatchError):
    """The receiver refused the notification (4xx, bad secret): retrying cannot help."""
