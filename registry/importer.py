"""Bulk onboarding from CSV: every row checked, a report line per row, nothing half-done.

Columns (header row required, order free, unknown columns refused): ``device_id``
(``network/site/device``), ``kind`` (city, cems, mine, leak), and optionally
``location_class``, ``units`` (``metric`` or ``metric=unit`` separated by ``;``),
``cems_class``, ``site_pressure_pa``, ``site_altitude_m``, ``sampling_interval_s``, ``lat``,
``lon``, ``hj212_mn``, ``hj212_password``, ``enabled`` (true/false). Line numbers in the
report are the file's own (the header is line 1).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from registry.models import DeviceRecord
from wire.schemas import METRICS

__all__ = ["COLUMNS", "ImportRow", "parse_csv", "parse_units"]

COLUMNS = (
    "device_id",
    "kind",
    "location_class",
    "units",
    "cems_class",
    "site_pressure_pa",
    "site_altitude_m",
    "sampling_interval_s",
    "lat",
    "lon",
    "hj212_mn",
    "hj212_password",
    "enabled",
)
_REQUIRED = ("device_id", "kind")
_NUMBERS = ("site_pressure_pa", "site_altitude_m", "sampling_interval_s", "lat", "lon")
_TRUE, _FALSE = {"true", "yes", "1", "y"}, {"false", "no", "0", "n"}


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One data row: its line, the record when valid, else the reason."""

    line: int
    device_id: str
    record: DeviceRecord | None
    hj212_password: str | None
    error: str | None


def parse_units(text: str) -> dict[str, str]:
    """``co2_ppm;ch4_ppb`` or ``co2_pct_vol=% vol;...`` as metric -> unit (unit from the
    contract when not given; a wrong or unknown one is refused by :class:`DeviceRecord`)."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(";"))):
        metric, sep, unit = item.partition("=")
        metric = metric.strip()
        spec = METRICS.get(metric)
        out[metric] = unit.strip() if sep else (spec.unit if spec else "")
    return out


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def _row(line: int, raw: dict[str, str]) -> ImportRow:
    values = {k: (v or "").strip() for k, v in raw.items()}
    device_id = values.get("device_id", "")
    data: dict[str, Any] = {"device_id": device_id, "kind": values.get("kind", "")}
    try:
        for name in _NUMBERS:
            if values.get(name):
                data[name] = float(values[name])
    except ValueError:
        return ImportRow(line, device_id, None, None, f"{name}: not a number: {values[name]!r}")
    enabled = values.get("enabled", "").lower()
    if enabled and enabled not in _TRUE | _FALSE:
        return ImportRow(line, device_id, None, None, f"enabled: not true/false: {enabled!r}")
    data["enabled"] = enabled not in _FALSE
    for name in ("location_class", "cems_class", "hj212_mn"):
        if values.get(name):
            data[name] = values[name]
    if values.get("units"):
        data["units"] = parse_units(values["units"])
    password = values.get("hj212_password") or None
    if password is not None and not data.get("hj212_mn"):
        return ImportRow(line, device_id, None, None, "hj212_password given without hj212_mn")
    try:
        record = DeviceRecord.model_validate(data)
    except ValidationError as exc:
        return ImportRow(line, device_id, None, None, _first_error(exc))
    except ValueError as exc:
        return ImportRow(line, device_id, None, None, str(exc))
    return ImportRow(line, device_id, record, password, None)


def parse_csv(text: str) -> list[ImportRow]:
    """Check every row of a registry CSV; duplicates within the file are errors too.

    Raises:
        ValueError: the header is missing, lacks a required column or has unknown ones.
    """
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=False)
    header = reader.fieldnames
    if not header:
        raise ValueError("empty file: the first line must name the columns")
    names = [h.strip() for h in header]
    missing = [c for c in _REQUIRED if c not in names]
    unknown = [c for c in names if c not in COLUMNS]
    if missing or unknown:
        raise ValueError(
            "bad header:"
            + (f" missing {', '.join(missing)}" if missing else "")
            + (f" unknown {', '.join(unknown)}" if unknown else "")
            + f" (columns: {', '.join(COLUMNS)})"
        )
    reader.fieldnames = names
    rows: list[ImportRow] = []
    seen_ids: dict[str, int] = {}
    seen_mns: dict[str, int] = {}
    for raw in reader:
        line = reader.line_num
        if None in raw:
            rows.append(ImportRow(line, raw.get("device_id") or "", None, None,
                                  "more fields than columns"))  # fmt: skip
            continue
        row = _row(line, raw)
        rec = row.record
        if rec is not None and rec.device_id in seen_ids:
            row = ImportRow(line, row.device_id, None, None,
                            f"device_id repeats line {seen_ids[rec.device_id]}")  # fmt: skip
        elif rec is not None and rec.hj212_mn is not None and rec.hj212_mn in seen_mns:
            row = ImportRow(line, row.device_id, None, None,
                            f"hj212_mn repeats line {seen_mns[rec.hj212_mn]}")  # fmt: skip
        if row.record is not None:
            seen_ids[row.record.device_id] = line
            if row.record.hj212_mn is not None:
                seen_mns[row.record.hj212_mn] = line
        rows.append(row)
    return rows
