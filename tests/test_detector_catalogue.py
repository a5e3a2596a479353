"""One detector catalogue drives every detector name: engine codes, alert rules, labels, docs.

Each test walks what the engine can really emit (its ``Detector`` codes, or the records the
real engine produces), never the alert side's own idea of the names.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from alerts import AlertMessage, classify, render_text
from core.errors import ConfigurationError
from core.settings import (
    DEFAULT_ALERT_RULES,
    AlertRule,
    AlertsSettings,
    DetectionSettings,
    load_settings,
)
from processors.detection import (
    DETECTOR_NAMES,
    DETECTOR_SEVERITY,
    KIND_NAMES,
    DetectionEngine,
    Detector,
    Kind,
    to_records,
)
from tests.alerts.conftest import det
from wire.detectors import (
    ALL_KINDS,
    DETECTORS,
    FORMER_NAMES,
    KNOWN_DETECTORS,
    DetectorSpec,
    detector_spec,
)
from wire.events import DetectionRecord, DetectionState, Severity

NS = 1_000_000_000
_CJK = re.compile(r"[\u4e00-\u9fff]")
RULES = AlertsSettings().rules


def _spec(d: Detector) -> DetectorSpec:
    spec = detector_spec(DETECTOR_NAMES[d])
    assert spec is not None, f"{d!r} is not in wire.detectors.DETECTORS"
    return spec


def test_engine_codes_are_exactly_the_catalogue() -> None:
    """The engine's IntEnum and the catalogue list the same names with the same codes."""
    assert {d.name.lower(): d.value for d in Detector} == {s.name: s.code for s in DETECTORS}
    assert {DETECTOR_NAMES[d]: d.value for d in Detector} == {s.name: s.code for s in DETECTORS}
    assert len(set(KNOWN_DETECTORS)) == len(DETECTORS)
    assert set(ALL_KINDS) == set(KIND_NAMES.values())


@pytest.mark.parametrize("code", list(Detector), ids=lambda d: d.name.lower())
def test_every_emitted_detector_has_labels_a_rule_and_a_meaning(code: Detector) -> None:
    """Labels in both languages, a documented meaning, and a default rule with its severity."""
    spec = _spec(code)
    assert _CJK.search(spec.label_zh), spec.label_zh
    assert spec.label_en
    assert not _CJK.search(spec.label_en)
    assert spec.meaning.endswith(".")
    assert len(spec.meaning.split()) >= 6
    assert spec.kinds
    assert set(spec.kinds) <= set(ALL_KINDS)
    # the engine stamps the catalogue severity on its records
    assert DETECTOR_SEVERITY[code] == spec.severity.value
    rule = next(r for r in DEFAULT_ALERT_RULES if spec.name in r.detectors)
    # a kind-dependent severity (no_data) is stamped by the detector; its rule keeps it
    assert rule.severity == (None if spec.severity_by_kind else spec.severity.value)
    for kind in spec.kinds:
        # the record's own severity must not matter: the rule decides
        stamped = spec.severity_for(kind) if spec.severity_by_kind else Severity.INFO
        d = classify(det(detector=spec.name, kind=kind, severity=stamped), RULES)
        assert d.rule != "default"
        assert d.severity == spec.severity_for(kind).value
        assert d.group == spec.group
    text = render_text(_message(spec.name), "both")
    assert f"{spec.label_zh} {spec.name}" in text
    assert spec.label_en in render_text(_message(spec.name), "en")


def test_default_rules_name_only_catalogue_detectors_once_each() -> None:
    """Each catalogue detector is in exactly one default rule; nothing else is."""
    named = [n for r in DEFAULT_ALERT_RULES for n in r.detectors]
    assert sorted(named) == sorted(KNOWN_DETECTORS)


def test_severities_follow_the_regulations_and_operations() -> None:
    """Regulatory levels and gas releases critical, CEMS intensity a warning, a plume
    information, every fault a maintenance ticket per device; there is no rising-trend
    detector, and the catalogue says what covers it."""
    sev = {s.name: s.severity for s in DETECTORS}
    assert sev["threshold_alarm"] == sev["power_cut"] == Severity.CRITICAL
    release = detector_spec("release")
    assert release is not None
    assert release.severity == Severity.CRITICAL
    assert set(release.kinds) == {"mine", "leak"}
    assert "rising-trend" in release.meaning
    assert "rising_trend" not in KNOWN_DETECTORS
    assert FORMER_NAMES["rising_trend"].startswith("release")
    assert sev["plume"] == Severity.INFO
    assert not detector_spec("plume").pages  # type: ignore[union-attr]
    assert sev["intensity_above_benchmark"] == Severity.WARNING
    faults = {
        "spike", "stuck", "drift", "neighbour_drift", "out_of_range", "gap", "hour_invalid",
        "co2_without_flow", "load_without_flow", "implausible_co2_o2", "mass_rate_step",
    }  # fmt: skip
    for name in faults:
        spec = detector_spec(name)
        assert spec is not None
        assert (spec.severity, spec.group_by, spec.pages) == (Severity.MAINTENANCE, "device", False)
    assert {s.name for s in DETECTORS if s.regulatory} == {"threshold_alarm", "power_cut"}


def test_a_silent_device_is_critical_on_a_mine_and_a_setting_per_kind() -> None:
    """no_data: a disconnected mine sensor is an alarm condition (critical), a silent leak
    monitor a warning, city and CEMS maintenance; the detector stamps the setting."""
    spec = detector_spec("no_data")
    assert spec is not None
    assert spec.severity == Severity.CRITICAL
    assert set(spec.kinds) == set(ALL_KINDS)
    assert DetectionSettings().no_data_severity == {
        "mine": "critical", "leak": "warning", "city": "maintenance", "cems": "maintenance",
        "generic": "maintenance",
    }  # fmt: skip
    d = classify(det(detector="no_data", kind="leak", severity=Severity.WARNING), RULES)
    assert (d.severity, d.group) == ("warning", "liveness")


@pytest.mark.parametrize("name", [*FORMER_NAMES, "releese"])
def test_a_rule_naming_an_unknown_detector_is_refused_with_the_valid_names(name: str) -> None:
    """Settings refuse the rule, name the bad detector and list every valid one."""
    with pytest.raises(ValidationError) as err:
        AlertsSettings.model_validate(
            {"rules": [{"name": "mine", "detectors": ["power_cut", name], "severity": "critical"}]}
        )
    msg = str(err.value)
    assert f"unknown detector {name!r}" in msg
    assert all(known in msg for known in KNOWN_DETECTORS)
    if name in FORMER_NAMES:
        assert f"use {FORMER_NAMES[name]}" in msg
    assert AlertRule(name="ok", detectors=("release",)).detectors == ("release",)


def test_settings_file_with_an_old_detector_name_fails_to_load(tmp_path: Path) -> None:
    """A TOML configuration still naming ``sudden_release`` does not load silently."""
    cfg = tmp_path / "ghgwatch.toml"
    cfg.write_text('[[alerts.rules]]\nname = "gas"\ndetectors = ["sudden_release"]\n')
    with pytest.raises(ConfigurationError, match="unknown detector 'sudden_release'"):
        load_settings(cfg)


def _message(detector: str) -> AlertMessage:
    at = datetime(2026, 11, 24, 17, 5, tzinfo=UTC)
    return AlertMessage(
        alert_id=1, event="opened", severity="critical", rule="r", network="im", site="s",
        kind="mine", device_id="im/s/t1-01", metric="ch4_pct_vol", detector=detector,
        value=1.0, started_at=at, at=at,
    )  # fmt: skip


def _series(n: int, level: float, sd: float, seed: int) -> np.ndarray:
    return level + sd * np.random.default_rng(seed).standard_normal(n)


def _engine_records() -> list[DetectionRecord]:
    """The real engine over a mine release that crosses the alarm and power-cut levels, a gas
    site release, a one-sample spike and a city plume; OPEN records as the engine makes them."""
    engine = DetectionEngine(DetectionSettings())
    streams: list[tuple[str, str, Kind, np.ndarray, int]] = []
    mine = _series(1400, 0.3, 0.01, 1)
    mine[800:900] += 0.25  # a release, still below the T1 alarm level (1.0 % CH4)
    mine[900:950] = 1.2  # above the alarm level
    mine[950:1000] = 1.7  # above the power-cut level (1.5 %)
    streams.append(("im/shendong-3/t1-01", "ch4_pct_vol", Kind.MINE, mine, 10))
    leak = _series(1400, 2.0, 0.05, 2)
    leak[900:1000] += 5.0  # ppm above background at a well pad
    streams.append(("gas/wellpad-7/ch4-01", "ch4_ppm", Kind.LEAK, leak, 10))
    spiky = _series(1400, 0.3, 0.01, 3)
    spiky[1000] += 0.4
    streams.append(("im/shendong-3/t2-02", "ch4_pct_vol", Kind.MINE, spiky, 10))
    city = _series(600, 420.0, 0.3, 4)
    city[400:450] += 30.0
    streams.append(("baotou/st-01/picarro", "co2_ppm", Kind.CITY, city, 60))
    sids, tss, vals = [], [], []
    for dev, metric, kind, values, step_s in streams:
        sid = engine.register(dev, metric, kind)
        sids.append(np.full(values.size, sid, np.int64))
        tss.append(np.arange(values.size, dtype=np.int64) * step_s * NS)
        vals.append(values)
    s, t, v = np.concatenate(sids), np.concatenate(tss), np.concatenate(vals)
    order = np.argsort(t, kind="stable")
    out = engine.process(s[order], t[order], v[order], np.ones(s.size, bool))
    records = to_records(out.events, engine.streams) + to_records(
        engine.flush().events, engine.streams
    )
    return [r for r in records if r.state is DetectionState.OPEN]


def test_real_engine_output_gets_the_severity_the_regulations_demand() -> None:
    """Threshold alarm, power cut and both releases the engine emits are critical alerts in one
    gas alert per site; the spike a maintenance ticket for its device; the plume no page."""
    records = _engine_records()
    by_name: dict[str, list[DetectionRecord]] = {}
    for r in records:
        by_name.setdefault(r.detector, []).append(r)
    assert {"threshold_alarm", "power_cut", "release", "spike", "plume"} <= set(by_name)
    assert {r.kind for r in by_name["release"]} == {"mine", "leak"}
    for r in records:
        decision = classify(r, RULES)
        assert decision.rule != "default", r.detector
        if r.detector in {"threshold_alarm", "power_cut", "release"}:
            assert decision.severity == "critical", r
            assert decision.group_key == f"{r.network}/{r.site}/gas"
    spike = classify(by_name["spike"][0], RULES)
    assert spike.severity == "maintenance"
    assert spike.group_key.endswith("/sensor/im/shendong-3/t2-02")
    assert classify(by_name["plume"][0], RULES).severity == "info"


def _readme_rows() -> list[str]:
    """The README detector table's rows, built from the catalogue."""
    rows = []
    for s in DETECTORS:
        pages = "yes" if s.pages else "no"
        group = f"{s.group} per {s.group_by}"
        rows.append(
            f"| `{s.name}` | {', '.join(s.kinds)} | {s.severity.value} | {pages} | {group} | "
            f"{s.label_zh} / {s.label_en} | {s.meaning} |"
        )
    return rows


def test_readme_detector_table_matches_the_catalogue(repo_root: Path) -> None:
    """The README's detector table lists exactly the catalogue, row for row."""
    readme = (repo_root / "README.md").read_text()
    start = readme.index("<!-- detector-table")
    end = readme.index("<!-- /detector-table -->")
    rows = [line for line in readme[start:end].splitlines() if line.startswith("| `")]
    assert rows == _readme_rows()


if __name__ == "__main__":  # print the table for the README
    print("\n".join(_readme_rows()))
