"""Who a data logger is: its MN and PW resolved to the wire identity, or refused.

The gateway asks a :class:`LoggerDirectory`; :class:`StaticDirectory` answers from the
``gateway.loggers`` settings (deployments without the device registry). A logger's password
is kept only as a hash, the device registry's own (:func:`registry.credentials.hash_password`,
``ghgwatch hj212 hash-password``); its verdicts are cached there, so a logger sending every
10 s costs one key derivation, not one a frame.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from core.settings import GatewaySettings
from registry.credentials import verify_password
from wire.schemas import MineLocation, SourceKind
from wire.topics import DeviceRef

__all__ = [
    "LoggerDirectory",
    "LoggerIdentity",
    "LoggerRefusal",
    "RefusalReason",
    "StaticDirectory",
]


class RefusalReason(enum.StrEnum):
    """Why a logger is refused (also its dead-letter reason)."""

    UNKNOWN_MN = "unknown_mn"
    BAD_PASSWORD = "bad_password"  # noqa: S105 - a reason code, not a password
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class LoggerIdentity:
    """The wire identity of a logger: where its readings go, and a mine sensor's class."""

    ref: DeviceRef
    location: MineLocation | None = None

    @property
    def kind(self) -> SourceKind:
        """The logger's source kind."""
        return self.ref.kind

    @property
    def device_id(self) -> str:
        """``network/site/device``."""
        return self.ref.device_id


@dataclass(frozen=True, slots=True)
class LoggerRefusal:
    """A refused MN/PW pair and why (``detail``: more, for the log and the dead letter)."""

    reason: RefusalReason
    detail: str = ""


class LoggerDirectory(Protocol):
    """Resolves a logger's MN and PW (the device registry, or the static settings)."""

    async def resolve(self, mn: str, pw: str) -> LoggerIdentity | LoggerRefusal:
        """The logger's identity, or why it is refused."""
        ...


class StaticDirectory:
    """A :class:`LoggerDirectory` over the ``gateway.loggers`` settings (MN -> logger)."""

    def __init__(self, cfg: GatewaySettings) -> None:
        self._loggers = dict(cfg.loggers)

    async def resolve(self, mn: str, pw: str) -> LoggerIdentity | LoggerRefusal:
        """The logger registered under ``mn`` if ``pw`` is its password and it is enabled."""
        entry = self._loggers.get(mn)
        if entry is None:
            return LoggerRefusal(RefusalReason.UNKNOWN_MN)
        if not entry.enabled:
            return LoggerRefusal(RefusalReason.DISABLED)
        if not verify_password(entry.password_hash.get_secret_value(), pw):
            return LoggerRefusal(RefusalReason.BAD_PASSWORD)
        return LoggerIdentity(
            DeviceRef(entry.kind, entry.network, entry.site, entry.device), entry.location
        )
