"""Timestamp parsing agrees with pydantic: the array path wherever it answers, the one-by-one
path always (it is pydantic's own rule)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import AwareDatetime, TypeAdapter, ValidationError

from wire import epoch_us, parse_rfc3339_us
from wire.timestamps import VECTOR_MIN_STRINGS, parse_timestamp_us

_AWARE: TypeAdapter[AwareDatetime] = TypeAdapter(AwareDatetime)


def _pydantic_us(text: str) -> int | None:
    """What the wire models make of ``text`` as a JSON string."""
    try:
        return epoch_us(_AWARE.validate_json(f'"{text}"'))
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


def _check_against_pydantic(texts: list[str]) -> list[bool]:
    """Parse ``texts`` as one array and one at a time; return what the array understood.

    One at a time must give pydantic's verdict and instant for every string; the array must
    give pydantic's instant for every string it understands, and only accepted ones.
    """
    assert len(texts) >= VECTOR_MIN_STRINGS
    values, ok = parse_rfc3339_us(texts)
    for text, value, good in zip(texts, values.tolist(), ok.tolist(), strict=True):
        expected = _pydantic_us(text)
        assert parse_timestamp_us(text) == expected, text
        alone_value, alone_ok = parse_rfc3339_us([text])
        assert bool(alone_ok[0]) == (expected is not None), text
        if good:
            assert value == expected, text
            assert int(alone_value[0]) == value, text
    return ok.tolist()


def test_common_shapes_parse_to_the_instant_pydantic_gives() -> None:
    """Thousands of random RFC 3339 stamps: every one understood, every value exact."""
    rng = random.Random(7)
    assert all(_check_against_pydantic([_random_stamp(rng) for _ in range(3000)]))


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
        "2026-11-25T08:00:05.1234567Z",  # more than microseconds (pydantic truncates)
        "2026-11-25T08:00:05.Z",
        "2026-11-25X08:00:05Z",
        "2026-11-25T08:00:05+0800",  # pydantic accepts; the array path leaves it to pydantic
        "2026-11-25 08:00:05Z",
        "1764054000",
        "２０２６-11-25T08:00:05Z",  # full-width digits
        "2026-11-25T08:00:05Z\x00",
        "0000-01-01T00:00:00Z",
        "",
        "garbage",
    ],
)
def test_other_shapes_are_left_to_pydantic(text: str) -> None:
    """The array path marks any other shape as not understood; one at a time, pydantic's
    verdict and instant stand."""
    padding = ["2026-11-25T08:00:05Z"] * VECTOR_MIN_STRINGS
    _, ok = parse_rfc3339_us([text, *padding])
    assert ok.tolist() == [False] + [True] * VECTOR_MIN_STRINGS
    assert parse_timestamp_us(text) == _pydantic_us(text)


def test_everything_understood_is_accepted_by_pydantic() -> None:
    """Mutated stamps: whenever the array path answers, pydantic agrees on the instant."""
    rng = random.Random(11)
    alphabet = "0123456789-:T.Z+ z"
    texts = []
    for _ in range(4000):
        chars = list(_random_stamp(rng))
        for _ in range(rng.randrange(1, 3)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        texts.append("".join(chars))
    assert sum(_check_against_pydantic(texts)) > 100  # the mutations leave many valid stamps
