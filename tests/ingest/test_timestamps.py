"""The vectorised timestamp parser agrees with pydantic wherever it gives an answer."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import AwareDatetime, TypeAdapter, ValidationError

from ingest import epoch_us, parse_rfc3339_us
from ingest.timestamps import VECTOR_MIN_STRINGS

_AWARE: TypeAdapter[AwareDatetime] = TypeAdapter(AwareDatetime)


def _pydantic_us(text: str) -> int | None:
    try:
        return epoch_us(_AWARE.validate_python(text))
    except ValidationError:
        return None


def _random_stamp(rng: random.Random) -> str:
    dt = datetime(1971, 1, 1, tzinfo=UTC) + timedelta(
        seconds=rng.randrange(0, 80 * 365 * 86_400), microseconds=rng.randrange(0, 10**6)
    )
    digits = rng.choice([0, 1, 3, 6])
    frac = f".{dt.microsecond:06d}"[: digits + 1] if digits else ""
    zone = rng.choice(["Z", "+08:00", "-05:30", "+00:00", "+14:00", "-00:00"])
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + frac + zone


def _both_paths(texts: list[str]) -> tuple[list[int], list[bool]]:
    """Parse as one array and one string at a time; both paths must agree."""
    values, ok = parse_rfc3339_us(texts)
    assert len(texts) >= VECTOR_MIN_STRINGS
    alone = [parse_rfc3339_us([t]) for t in texts]
    assert [bool(a[1][0]) for a in alone] == ok.tolist()
    assert [int(a[0][0]) for a, good in zip(alone, ok, strict=True) if good] == [
        v for v, good in zip(values.tolist(), ok, strict=True) if good
    ]
    return values.tolist(), ok.tolist()


def test_common_shapes_parse_to_the_instant_pydantic_gives() -> None:
    """Thousands of random RFC 3339 stamps: every one understood, every value exact."""
    rng = random.Random(7)
    texts = [_random_stamp(rng) for _ in range(3000)]
    values, ok = _both_paths(texts)
    assert all(ok)
    assert values == [_pydantic_us(t) for t in texts]


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-25T08:00:05",  # naive: not aware
        "2026-02-29T08:00:05Z",  # not a leap year
        "2024-02-30T08:00:05Z",
        "2026-13-01T08:00:05Z",
        "2026-11-25T24:00:05Z",
        "2026-11-25T08:60:05Z",
        "2026-11-25T08:00:05+24:00",
        "2026-11-25T08:00:05.1234567Z",  # more than microseconds
        "2026-11-25T08:00:05.Z",
        "2026-11-25X08:00:05Z",
        "2026-11-25T08:00:05+0800",
        "２０２６-11-25T08:00:05Z",  # full-width digits
        "2026-11-25T08:00:05Z\x00",
        "0000-01-01T00:00:00Z",
        "",
        "garbage",
    ],
)
def test_other_shapes_are_left_to_pydantic(text: str) -> None:
    """A string the fast path does not understand is marked so, never given a value."""
    _, ok = parse_rfc3339_us([text, "2026-11-25T08:00:05Z"])
    assert ok.tolist() == [False, True]
    _, ok = parse_rfc3339_us([text] + ["2026-11-25T08:00:05Z"] * VECTOR_MIN_STRINGS)
    assert ok.tolist() == [False] + [True] * VECTOR_MIN_STRINGS


def test_everything_understood_is_accepted_by_pydantic() -> None:
    """Mutated stamps: whenever the fast path answers, pydantic agrees on the instant."""
    rng = random.Random(11)
    alphabet = "0123456789-:T.Z+ z"
    texts = []
    for _ in range(4000):
        chars = list(_random_stamp(rng))
        for _ in range(rng.randrange(1, 3)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        texts.append("".join(chars))
    values, ok = _both_paths(texts)
    assert sum(ok) > 100  # the mutations leave many valid stamps
    for text, value, good in zip(texts, values, ok, strict=True):
        if good:
            assert _pydantic_us(text) == value, text
