"""Vectorised parsing of device timestamps (RFC 3339 text) into epoch microseconds.

Devices send ``ts`` as text such as ``2026-11-25T08:00:05.120+08:00``. Parsing each one into a
``datetime`` and back costs about a microsecond per reading; :func:`parse_rfc3339_us` reads a
whole batch of strings as character arrays instead. It handles the shape nearly every device
uses, and answers None for a string of any other shape, so the caller can let pydantic decide
that message instead (epoch numbers, a space instead of ``T``, leap seconds, and outright
garbage all go that way). Whatever it accepts, pydantic's ``AwareDatetime`` accepts too, with
the same instant.

The shape: ``YYYY-MM-DDTHH:MM:SS``, then optionally ``.`` and 1-6 fraction digits, then ``Z``
or ``±HH:MM``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

__all__ = ["VECTOR_MIN_STRINGS", "parse_rfc3339_one", "parse_rfc3339_us"]

# From this many strings on they are parsed as character arrays; fewer go one by one
# (numpy's per-call overhead made a one-string parse cost ~150 us).
VECTOR_MIN_STRINGS = 64
# The same shape for the one-by-one path (ASCII digits only, as in the array path).
_SHAPE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:[Zz]|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

_US_PER_S = 1_000_000
_BASE = "0000-00-00T00:00:00"  # '0' marks a digit position
_DIGIT_POS = np.array([i for i, c in enumerate(_BASE) if c == "0"])
_SEP_POS = np.array([i for i, c in enumerate(_BASE) if c != "0"])
_SEP_CODES = np.array([ord(c) for c in _BASE if c != "0"], dtype=np.uint32)
_ZERO, _NINE = ord("0"), ord("9")
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
# Epoch day of 0000-03-01 in the proleptic Gregorian calendar (days_from_civil's shift).
_CIVIL_EPOCH_SHIFT = 719_468

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


def parse_rfc3339_one(text: str) -> int | None:
    """One string of the common shape as epoch microseconds, None for anything else."""
    m = _SHAPE.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        # datetime checks the calendar and clock ranges (year >= 1, day of month, hour < 24)
        at = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None
    frac = m.group(7)
    us = (at - _EPOCH) // _ONE_US + (int(frac.ljust(6, "0")) if frac else 0)
    if m.group(8) is not None:
        hh, mm = int(m.group(9)), int(m.group(10))
        if hh > 23 or mm > 59:
            return None
        us -= (1 if m.group(8) == "+" else -1) * (hh * 60 + mm) * 60 * _US_PER_S
    return us


def parse_rfc3339_us(texts: Sequence[str]) -> tuple[Int64Array, BoolArray]:
    """Parse timestamps of the common RFC 3339 shape (see the module docstring).

    Args:
        texts: the timestamp strings.

    Returns:
        Epoch microseconds (UTC) per string, and a mask of the strings understood; the value
        of a string not understood is meaningless and the caller must decide it otherwise.
    """
    n = len(texts)
    if n < VECTOR_MIN_STRINGS:
        parsed = [parse_rfc3339_one(t) for t in texts]
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
