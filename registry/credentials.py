"""Passwords: generated once, shown once, stored only as PBKDF2-HMAC-SHA512 hashes.

The stored form is Mosquitto's own (``$7$iterations$salt$hash``, base64 salt and digest),
which its password file uses, so the broker and ghgwatch read the same hashes. Passwords a
person may choose (a data logger's HJ 212 PW) use :data:`PBKDF2_ITERATIONS`, the OWASP
figure for PBKDF2-SHA512; the generated MQTT passwords use :data:`BROKER_ITERATIONS`, since
the broker derives the hash at every connect and a 192-bit random password cannot be
guessed whatever the KDF's cost.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections import OrderedDict

__all__ = [
    "BROKER_ITERATIONS",
    "PBKDF2_ITERATIONS",
    "generate_password",
    "hash_password",
    "mosquitto_password_line",
    "verify_password",
]

PBKDF2_ITERATIONS = 210_000
# The broker derives this at every connect; 192-bit random passwords need no slow KDF to
# resist guessing, and Mosquitto's own mosquitto_passwd uses 101.
BROKER_ITERATIONS = 1_000
_SALT_BYTES = 12  # as mosquitto_passwd
_PASSWORD_BYTES = 24  # 32 URL-safe characters
_VERIFY_CACHE = 4096


def generate_password() -> str:
    """A new random password (192 bits, URL-safe text)."""
    return secrets.token_urlsafe(_PASSWORD_BYTES)


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS) -> str:
    """``$7$iterations$salt$hash`` of ``password`` with a new random salt."""
    if not password:
        raise ValueError("empty password")
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def _parts(stored_hash: str) -> tuple[int, bytes, bytes] | None:
    fields = stored_hash.split("$")
    if len(fields) != 5 or fields[0] or fields[1] != "7":
        return None
    try:
        iterations = int(fields[2])
        salt = base64.b64decode(fields[3], validate=True)
        digest = base64.b64decode(fields[4], validate=True)
    except (ValueError, binascii.Error):
        return None
    if not 1 <= iterations <= 10_000_000 or not salt or len(digest) != hashlib.sha512().digest_size:
        return None
    return iterations, salt, digest


# (stored hash, SHA-256 of the password) -> verdict; the password itself is never kept.
_verified: OrderedDict[tuple[str, bytes], bool] = OrderedDict()


def verify_password(stored_hash: str, password: str) -> bool:
    """True when ``password`` matches ``stored_hash``; False for any other input.

    Verdicts are cached per (hash, SHA-256 of the password), so a data logger sending its
    HJ 212 PW with every frame costs one key derivation, not one per frame; each distinct
    wrong guess still costs a full derivation. A malformed hash never matches.
    """
    if not password:
        return False
    key = (stored_hash, hashlib.sha256(password.encode()).digest())
    found = _verified.get(key)
    if found is not None:
        _verified.move_to_end(key)
        return found
    parts = _parts(stored_hash)
    ok = False
    if parts is not None:
        iterations, salt, digest = parts
        candidate = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
        ok = hmac.compare_digest(candidate, digest)
    _verified[key] = ok
    if len(_verified) > _VERIFY_CACHE:
        _verified.popitem(last=False)
    return ok


def mosquitto_password_line(username: str, password: str) -> str:
    """One line of a Mosquitto 2.0 password file (``username:$7$...``)."""
    if ":" in username or "\n" in username:
        raise ValueError(f"username {username!r} cannot be in a password file")
    return f"{username}:{hash_password(password, iterations=BROKER_ITERATIONS)}"
