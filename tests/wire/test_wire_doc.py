"""The operators' wire-contract page lists exactly the metrics and reasons the code accepts."""

from __future__ import annotations

from pathlib import Path

from wire.schemas import METRICS, RejectReason


def _metrics_table_rows(doc: str) -> list[str]:
    start = doc.index("<!-- metrics-table")
    end = doc.index("<!-- /metrics-table -->")
    lines = doc[start:end].splitlines()[3:]  # skip the marker, header and rule
    return [line for line in lines if line.startswith("| `")]


def test_metric_table_matches_the_catalogue(repo_root: Path) -> None:
    """Every metric in wire.schemas.METRICS appears in the doc with its unit, kinds and range."""
    doc = (repo_root / "docs" / "wire-contract.md").read_text()
    expected = [
        f"| `{m}` | {s.unit} | {', '.join(sorted(k.value for k in s.kinds))} | "
        f"{s.min_value:g} … {s.max_value:g} | {s.description} |"
        for m, s in METRICS.items()
    ]
    assert _metrics_table_rows(doc) == expected


def test_every_reject_reason_is_explained(repo_root: Path) -> None:
    """An operator can look up every reason code a device may receive."""
    doc = (repo_root / "docs" / "wire-contract.md").read_text()
    for reason in RejectReason:
        assert f"| `{reason.value}` |" in doc, reason
