"""Waiting for PostgreSQL at start: capped, jittered backoff, logged without the password.

A service that starts while its database is down, restarting or still being created waits
for it (up to a deadline) instead of exiting; refused credentials stop at once. Errors are
mapped by :mod:`adapters.pgerrors`; every message and log line names the database by
:func:`redact_url`, never with its password.
"""

from __future__ import annotations

import asyncio
import random
import urllib.parse

import asyncpg
import structlog

from adapters.pgerrors import pg_errors
from core.errors import FatalError, StorageBackpressure

__all__ = [
    "DB_CONNECT_TIMEOUT_S",
    "DB_WAIT_FIRST_DELAY_S",
    "DB_WAIT_MAX_DELAY_S",
    "redact_url",
    "start_wait_s",
    "wait_for_database",
]

log = structlog.get_logger(__name__)

DB_WAIT_FIRST_DELAY_S = 0.5
DB_WAIT_MAX_DELAY_S = 10.0  # a restarted server is found within this of coming back
DB_CONNECT_TIMEOUT_S = 5.0
_CLOSE_TIMEOUT_S = 5.0
_JITTER = 0.2  # +-20 %, so services started together do not retry in step
_MASK = "***"


def redact_url(url: str) -> str:
    """The database URL with its password replaced by ``***`` (safe to log).

    Args:
        url: a ``postgresql://user:password@host:port/db`` URL (possibly malformed).

    Returns:
        The URL without its password; a fixed placeholder when it cannot be parsed.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable database URL>"
    if password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{_MASK}@{hostinfo}"))


def _scrub(text: str, url: str) -> str:
    """``text`` with the URL's password (raw and percent-decoded) masked."""
    _, _, rest = url.partition("://")
    userinfo = rest.rpartition("@")[0]
    raw = userinfo.partition(":")[2]
    for secret in {raw, urllib.parse.unquote(raw)}:
        if secret:
            text = text.replace(secret, _MASK)
    return text


async def wait_for_database(
    url: str,
    timeout_s: float,
    *,
    first_delay_s: float = DB_WAIT_FIRST_DELAY_S,
    max_delay_s: float = DB_WAIT_MAX_DELAY_S,
    connect_timeout_s: float = DB_CONNECT_TIMEOUT_S,
) -> None:
    """Return once a connection to ``url`` succeeds; retry with capped backoff until then.

    Each failed attempt is logged (``waiting for the database``) with the attempt number,
    the delay and the reason, the URL's password masked. A database that does not exist
    yet is waited for like a server that is down (it may be being created or restored).

    Args:
        url: database URL.
        timeout_s: give up after this long.
        first_delay_s: delay after the first failure; doubled after each, up to ``max_delay_s``.
        max_delay_s: the longest delay between attempts.
        connect_timeout_s: deadline of one connection attempt.

    Raises:
        StorageBackpressure: still unreachable after ``timeout_s``.
        FatalError: credentials refused, or another error retrying cannot fix.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = first_delay_s
    attempt = 0
    safe_url = redact_url(url)
    while True:
        attempt += 1
        try:
            with pg_errors("connect"):
                async with asyncio.timeout(connect_timeout_s):
                    conn = await asyncpg.connect(url, timeout=connect_timeout_s)
                await conn.close(timeout=_CLOSE_TIMEOUT_S)
        except StorageBackpressure as exc:
            reason = _scrub(str(exc), url)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StorageBackpressure(
                    f"database {safe_url} not reachable after {timeout_s:g} s "
                    f"({attempt} attempts): {reason}",
                    retry_after=max_delay_s,
                ) from exc
            pause = min(delay * random.uniform(1 - _JITTER, 1 + _JITTER), remaining)
            log.warning(
                "waiting for the database",
                db=safe_url,
                attempt=attempt,
                retry_in_s=round(pause, 2),
                reason=reason,
            )
            await asyncio.sleep(pause)
            delay = min(delay * 2, max_delay_s)
            continue
        except FatalError as exc:
            raise FatalError(_scrub(str(exc), url)) from exc
        if attempt > 1:
            log.info("database reachable", db=safe_url, attempts=attempt)
        return


def start_wait_s(start_timeout_s: float, run_timeout_s: float | None) -> float:
    """How long a service waits for its database at start: its setting, or less when the
    service itself was asked to stop sooner (``run(timeout_s=...)``)."""
    return start_timeout_s if run_timeout_s is None else min(start_timeout_s, run_timeout_s)
