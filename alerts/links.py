"""Signed, expiring, single-purpose tokens: the acknowledgement link in every notification and
the console's session cookie.

A token is ``<claims>.<mac>``: the claims are compact JSON in unpadded base64url, the MAC is
HMAC-SHA256 over a domain label and the claims with the server key
(``console.signing_key``, or the random key kept in the database). The claims name the
purpose (``ack`` or ``session``), the alert or the user, the recipient, the expiry and a
random nonce; :func:`verify` refuses a token whose MAC does not match (tampered or signed by
another key), whose purpose is not the one asked for, or whose time is up. Single use is the
store's part: a link's nonce is recorded when it is used (:mod:`alerts.writes`).

Nothing here logs a key or a token. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from alerts.exceptions import AlertError

__all__ = [
    "KEY_BYTES",
    "LinkRefused",
    "LinkSigner",
    "Purpose",
    "TokenClaims",
    "ack_path",
    "csrf_token",
    "sign",
    "verify",
]

KEY_BYTES = 32
TOKEN_MAX_CHARS = 2048  # a few hundred in practice; longer is refused before any decoding
_DOMAIN = b"ghgwatch-token-v1."
_NONCE_BYTES = 16
ACK_PATH = "/console/ack/"

Purpose = Literal["ack", "session"]
Refusal = Literal["malformed", "tampered", "wrong_purpose", "expired", "reused"]


class LinkRefused(AlertError):
    """A token cannot be used: malformed, tampered, for another purpose, expired or reused.

    Attributes:
        reason: which of these.
    """

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason: Refusal = reason


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says.

    Attributes:
        purpose: ``ack`` (acknowledge one alert) or ``session`` (a console log-in).
        subject: the alert id (``ack``) or the token name logged in (``session``).
        recipient: who the link was sent to (the notifier target); the user for a session.
        expires_at: when it stops working.
        nonce: random, names this token (a used link's nonce is recorded).
    """

    purpose: Purpose
    subject: str
    recipient: str
    expires_at: datetime
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, _DOMAIN + body.encode("ascii"), hashlib.sha256).digest())


def sign(
    key: bytes,
    purpose: Purpose,
    subject: str,
    recipient: str,
    now: datetime,
    ttl_s: float,
) -> str:
    """A token for ``purpose`` on ``subject`` sent to ``recipient``, valid for ``ttl_s``.

    Returns:
        ``<claims>.<mac>``, URL-safe.
    """
    claims = {
        "p": purpose,
        "s": subject,
        "r": recipient,
        "e": int((now + timedelta(seconds=ttl_s)).timestamp()),
        "n": _b64(secrets.token_bytes(_NONCE_BYTES)),
    }
    body = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=True).encode("ascii"))
    return f"{body}.{_mac(key, body)}"


def verify(key: bytes, token: str, purpose: Purpose, now: datetime) -> TokenClaims:
    """The claims of a token signed with ``key`` for ``purpose`` and not expired at ``now``.

    Raises:
        LinkRefused: malformed, tampered (MAC mismatch), wrong purpose, or expired.
    """
    body, dot, mac = token.partition(".")
    if not dot or not body or not mac or len(token) > TOKEN_MAX_CHARS or not token.isascii():
        raise LinkRefused("malformed", "this link is not a ghgwatch link (cut short?)")
    if not hmac.compare_digest(_mac(key, body).encode(), mac.encode()):
        raise LinkRefused("tampered", "this link's signature does not match: it was changed")
    try:
        raw = json.loads(_unb64(body))
        claims = TokenClaims(
            purpose=raw["p"],
            subject=str(raw["s"]),
            recipient=str(raw["r"]),
            expires_at=datetime.fromtimestamp(int(raw["e"]), UTC),
            nonce=str(raw["n"]),
        )
    except (ValueError, KeyError, TypeError, binascii.Error, OverflowError) as exc:
        raise LinkRefused("malformed", "this link's contents cannot be read") from exc
    if claims.purpose != purpose:
        raise LinkRefused("wrong_purpose", f"this link is not for {purpose}")
    if now >= claims.expires_at:
        raise LinkRefused("expired", f"this link expired at {claims.expires_at:%Y-%m-%d %H:%M} UTC")
    return claims


def csrf_token(key: bytes, session_nonce: str) -> str:
    """The anti-forgery token of a console session: forms and htmx posts must carry it."""
    return _mac(key, f"csrf.{session_nonce}")


def ack_path(token: str) -> str:
    """The console path that opens an acknowledgement link."""
    return f"{ACK_PATH}{token}"


class LinkSigner:
    """Makes the acknowledgement links of notifications once its key is known.

    Args:
        base_url: where the on-call desk reaches the API (``console.public_url``).
        ttl_s: how long a link works (``console.link_ttl_s``).
        template: ``alerts.ack_url_template``: when set, links follow it (``{alert_id}``
            and ``{token}`` filled in), for a desk that fronts the API with its own address.

    Attributes:
        key: the HMAC key; None until the store has loaded it (no links then).
    """

    def __init__(self, base_url: str, ttl_s: float, template: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.ttl_s = ttl_s
        self.template = template
        self.key: bytes | None = None

    def ack_url(self, alert_id: int, recipient: str, now: datetime) -> str | None:
        """The link acknowledging ``alert_id`` sent to ``recipient``; None without a key."""
        if self.key is None:
            return None
        token = sign(self.key, "ack", str(alert_id), recipient, now, self.ttl_s)
        if self.template:
            # str.replace, not str.format: a template may hold other braces.
            return self.template.replace("{alert_id}", str(alert_id)).replace("{token}", token)
        return f"{self.base_url}{ack_path(token)}"
