"""Secrets never appear in a settings error, a CLI error or a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import ConfigurationError
from core.settings import load_settings

TOKEN = "tok-5f1e-very-secret"
PASSWORD = "hunter2-pw-9"


def test_tokens_given_as_a_list_are_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A list where a mapping of token names is expected names the field, never the token."""
    monkeypatch.setenv("GHGWATCH_ALERTS__API_TOKENS", f'["{TOKEN}"]')
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    text = str(info.value)
    assert "alerts.api_tokens" in text
    assert TOKEN not in text
    assert "input_value" not in text


@pytest.mark.parametrize(
    "url",
    [
        f"postgres:{PASSWORD}@127.0.0.1",  # no scheme: asyncpg took the password as a database
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:54x2/ghgwatch",  # port not a number
        f"mysql://postgres:{PASSWORD}@127.0.0.1/ghgwatch",
    ],
)
def test_a_malformed_database_url_is_refused_without_its_password(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """db.url must be postgresql://user:pass@host[:port]/db; the error never shows the URL."""
    monkeypatch.setenv("GHGWATCH_DB__URL", url)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert "db.url" in str(info.value)
    assert PASSWORD not in str(info.value)


def test_a_password_with_reserved_characters_must_be_percent_encoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A '/' in the password breaks the URL apart: refused, with the hint to percent-encode."""
    monkeypatch.setenv("GHGWATCH_DB__URL", "postgresql://postgres:hun/ter2@127.0.0.1:5432/x")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert "percent-encode" in str(info.value)
    assert "ter2" not in str(info.value)
    monkeypatch.setenv("GHGWATCH_DB__URL", "postgresql://postgres:hun%2Fter2@127.0.0.1:5432/x")
    assert load_settings().db.url is not None


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("ghgwatch")
    full = {k: v for k, v in os.environ.items() if not k.startswith("GHGWATCH_")} | env
    return subprocess.run(
        [str(exe), *args], env=full, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    "env",
    [
        {"GHGWATCH_ALERTS__API_TOKENS": f'["{TOKEN}"]'},
        {"GHGWATCH_DB__URL": f"postgres:{PASSWORD}@127.0.0.1"},
    ],
)
def test_the_cli_reports_bad_settings_in_one_line_without_secrets(env: dict[str, str]) -> None:
    """Bad settings exit 2 with one clear line: no traceback, no local variables, no secret."""
    done = _cli(env, "status")
    assert done.returncode == 2, done.stderr
    out = done.stdout + done.stderr
    assert TOKEN not in out
    assert PASSWORD not in out
    assert "Traceback" not in out
    assert "configuration" in out.lower()


@pytest.mark.parametrize("given", [PASSWORD, "pbkdf2_sha256$200000$c2FsdA==$ZGlnZXN0"])
def test_a_logger_pw_or_an_old_hash_as_password_hash_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    """A PW pasted where its hash belongs, or a hash of the gateway's earlier form, is refused
    at load with the command that makes a good one; the value is never shown (before, the
    logger was refused at its first frame as a bad password)."""
    logger = {"kind": "cems", "network": "n", "site": "s", "device": "d", "password_hash": given}
    monkeypatch.setenv("GHGWATCH_GATEWAY__LOGGERS", json.dumps({"010000A89": logger}))
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    text = str(info.value)
    assert "password_hash" in text
    assert "ghgwatch hj212 hash-password" in text
    assert given not in text
