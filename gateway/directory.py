"""Who a data logger is: its MN and PW resolved to the wire identity, or refused.

The gateway asks a :class:`LoggerDirectory`; :class:`StaticDirectory` answers from the
``gateway.loggers`` settings (deployments without the device registry). A logger's password
is kept only as a PBKDF2-SHA256 hash (:func:`hash_password`); a PW that verified once is
remembered (as its digest) so a logger sending every 10 s costs one hash, not one a frame.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Protocol

from core.settings import GatewaySettings
from wire.schemas import MineLocation, SourceKind
from wire.topics import DeviceRef

__all__ = [
    "LoggerDirectory",
    "LoggerIdentity",
    "LoggerRefusal",
    "RefusalReason",
    "StaticDirectory",
    "hash_password",
    "verify_password",
]

_SCHEME = "pbkdf2_sha256"
_ITERATIONS = 200_000


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
    """A refused MN/PW pair and why."""

    reason: RefusalReason


class LoggerDirectory(Protocol):
    """Resolves a logger's MN and PW (the device registry, or the static settings)."""

    async def resolve(self, mn: str, pw: str) -> LoggerIdentity | LoggerRefusal:
        """The logger's identity, or why it is refused."""
        ...


def hash_password(password: str, *, iterations: int = _ITERATIONS) -> str:
    """``pbkdf2_sha256$<iterations>$<salt>$<digest>`` (base64) of a logger's PW."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"{_SCHEME}${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(stored_hash: str, password: str) -> bool:
    """Whether ``password`` is the one :func:`hash_password` made ``stored_hash`` of."""
    try:
        scheme, iterations, salt, digest = stored_hash.split("$")
        if scheme != _SCHEME:
            return False
        want = base64.b64decode(digest, validate=True)
        got = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), base64.b64decode(salt, validate=True), int(iterations)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(want, got)


class StaticDirectory:
    """A :class:`LoggerDirectory` over the ``gateway.loggers`` settings (MN -> logger)."""

    def __init__(self, cfg: GatewaySettings) -> None:
        self._loggers = dict(cfg.loggers)
        self._verified: dict[str, bytes] = {}

    async def resolve(self, mn: str, pw: str) -> LoggerIdentity | LoggerRefusal:
        """The logger registered under ``mn`` if ``pw`` is its password and it is enabled."""
        entry = self._loggers.get(mn)
        if entry is None:
            return LoggerRefusal(RefusalReason.UNKNOWN_MN)
        if not entry.enabled:
            return LoggerRefusal(RefusalReason.DISABLED)
        key = hashlib.sha256(pw.encode()).digest()
        known = self._verified.get(mn)
        if known is None or not hmac.compare_digest(known, key):
            if not verify_password(entry.password_hash.get_secret_value(), pw):
                return LoggerRefusal(RefusalReason.BAD_PASSWORD)
            self._verified[mn] = key
        return LoggerIdentity(
            DeviceRef(entry.kind, entry.network, entry.site, entry.device), entry.location
        )
