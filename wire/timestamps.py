"""Parsing device timestamps (RFC 3339 text) into epoch microseconds, many at a time.

Devices send ``ts`` as text such as ``2026-11-25T08:00:05.120+08:00``. Parsing each one into a
``datetime`` and back costs over a microsecond per reading; :func:`parse_rfc3339_us` reads a
large batch of strings as character arrays instead. That path handles the shape nearly every
device uses, ``YYYY-MM-DDTHH:MM:SS``, optionally ``.`` and 1-6 fraction digits, then ``Z`` or
``±HH:MM``, and marks a string of any other shape as not understood, so the caller can let
pydantic decide that message (epoch numbers, a space instead of ``T``, leap seconds and
garbage go that way). Whatever it accepts, pydantic's ``AwareDatetime`` accepts too, with the
same instant.

A few strings are cheaper one by one: below :data:`VECTOR_MIN_STRINGS` each goes through
pydantic itself (:func:`parse_timestamp_us`), which understands every shape it accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
from pydantic import AwareDatetime, TypeAdapter, ValidationError

__all__ = ["VECTOR_MIN_STRINGS", "parse_rfc3339_us", "parse_timestamp_us"]

# From this many strings on they are parsed as character arrays; fewer go one by one through
# pydantic. Measured here: one by one ~1.0 us a string; arrays 2.6 us at 64 strings, 0.9 at
# 256, 0.4 at 2,048 (numpy's per-call overhead is fixed per batch).
VECTOR_MIN_STRINGS = 256
_US_PER_S = 1_000_000
_BASE = "0000-00-00T00:00:00"  # '0' marks a digit position
_DIGIT_POS = np.array([i for i, c in enumerate(_BASE) if c == "0"])
_SEP_POS = np.array([i for i, c in enumerate(_BASE) if c != "0"])
_SEP_CODES = np.array([ord(c) for c in _BASE if c != "0"], dtype=np.uint32)
_ZERO, _NINE = ord("0"), ord("9")
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
# Epoch day of 0000-03-01 in the proleptic Gregorian calendar (days_from_civil's shift).
_CIVIL_EPOCH_SHIFT = 719_468
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_AWARE: TypeAdapter[AwareDatetime] = TypeAdapter(AwareDatetime)

BoolArray = npt.NDArray[np.bool_]
Int64Array = npt.NDArray[np.int64]
Codes = npt.NDArray[np.uint32]


def _number(codes: Codes, start: int, width: int) -> Int64Array:
    out = np.zeros(codes.shape[0], dtype=np.int64)
    for i in range(start, start + width):
        out = out * 10 + (codes[:, i].astype(np.int64) - _ZERO)
    return out


def _days_from_civil(y: Int64Array, m: Int64Array, d: Int64Array) -> Int64Array:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    result: Int64Array = era * 146_097 + doe - _CIVIL_EPOCH_SHIFT
    return result


def _parse_group(codes: Codes) -> tuple[Int64Array, BoolArray]:
    """Parse rows of one length; returns epoch microseconds and which rows were understood."""
    n, length = codes.shape
    ok = np.ones(n, dtype=bool)
    if length < len(_BASE) + 1:
        return np.zeros(n, np.int64), ~ok
    # The zone: 'Z' / 'z', or ±HH:MM.
    last = codes[:, -1]
    zulu = (last == ord("Z")) | (last == ord("z"))
    sign_code = codes[:, -6] if length >= len(_BASE) + 6 else np.zeros(n, np.uint32)
    signed = ((sign_code == ord("+")) | (sign_code == ord("-"))) & ~zulu
    ok &= zulu | signed
    offset_min = np.zeros(n, dtype=np.int64)
    if signed.any():
        z = codes[:, -5:]
        zone_digits = np.concatenate([z[:, :2], z[:, 3:]], axis=1)
        ok &= ~signed | (
            (z[:, 2] == ord(":")) & ((zone_digits >= _ZERO) & (zone_digits <= _NINE)).all(axis=1)
        )
        hh, mm = _number(z, 0, 2), _number(z, 3, 2)
        ok &= ~signed | ((hh <= 23) & (mm <= 59))
        offset_min = np.where(signed, np.where(sign_code == ord("-"), -1, 1) * (hh * 60 + mm), 0)
    # The date and time; zulu rows end one character sooner than signed ones.
    ok &= (codes[:, _SEP_POS] == _SEP_CODES).all(axis=1)
    base = codes[:, _DIGIT_POS]
    ok &= ((base >= _ZERO) & (base <= _NINE)).all(axis=1)
    frac_us = np.zeros(n, dtype=np.int64)
    for is_zone, zone_len in ((zulu, 1), (signed, 6)):
        rows = is_zone & ok
        if not rows.any():
            continue
        frac_len = length - zone_len - len(_BASE)  # '.' plus the digits, or nothing
        if frac_len == 0:
            continue
        digits = frac_len - 1
        if not 1 <= digits <= 6:
            ok &= ~is_zone
            continue
        frac = codes[:, len(_BASE) + 1 : len(_BASE) + frac_len]
        good = (codes[:, len(_BASE)] == ord(".")) & ((frac >= _ZERO) & (frac <= _NINE)).all(axis=1)
        ok &= ~is_zone | good
        value = _number(codes, len(_BASE) + 1, digits) * 10 ** (6 - digits)
        frac_us = np.where(is_zone, value, frac_us)
    year, month, day = _number(codes, 0, 4), _number(codes, 5, 2), _number(codes, 8, 2)
    hour, minute, second = _number(codes, 11, 2), _number(codes, 14, 2), _number(codes, 17, 2)
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_ok = (month >= 1) & (month <= 12)
    dim = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + ((month == 2) & leap)
    ok &= (year >= 1) & month_ok & (day >= 1) & (day <= dim)
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59)
    days = _days_from_civil(year, np.where(month_ok, month, 1), day)
    seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_min * 60
    return seconds * _US_PER_S + frac_us, ok


def parse_timestamp_us(text: str) -> int | None:
    """One timestamp string as epoch microseconds, by the wire models' own rules.

    pydantic's ``AwareDatetime`` decides (any shape it accepts, epoch numbers in strings
    included), so this is exact by construction; None when it refuses the string.
    """
    try:
        return (_AWARE.validate_strings(text) - _EPOCH) // _ONE_US
    except ValidationError:
        return None


def parse_rfc3339_us(texts: Sequence[str]) -> tuple[Int64Array, BoolArray]:
    """Parse timestamps: as character arrays from :data:`VECTOR_MIN_STRINGS` strings on,
    else one by one through pydantic (see the module docstring).

    Args:
        texts: the timestamp strings.

    Returns:
        Epoch microseconds (UTC) per string, and a mask of the strings understood; the value
        of a string not understood is meaningless and the caller must decide it otherwise.
    """
    n = len(texts)
    if n < VECTOR_MIN_STRINGS:
        parsed = [parse_timestamp_us(t) for t in texts]
        return (
            np.array([0 if v is None else v for v in parsed], dtype=np.int64),
            np.array([v is not None for v in parsed], dtype=bool),
        )
    arr = np.array(texts, dtype=str)
    width = arr.dtype.itemsize // 4
    codes: Codes = arr.view(np.uint32).reshape(n, width)
    # numpy drops trailing NULs and pads with them: the true length decides the shape.
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    out = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    for length in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == length)
        group = codes[rows, :length] if len(rows) < n else codes[:, :length]
        value, good = _parse_group(np.ascontiguousarray(group))
        out[rows] = value
        ok[rows] = good & (np.count_nonzero(group, axis=1) == length)
    return out, ok
