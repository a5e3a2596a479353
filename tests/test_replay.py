"""Replay over CSV: same engine, deterministic output, label scoring, time formats."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from core.settings import DetectionSettings
from ghgwatch.cli import app
from processors.replay import ReplayError, evaluate_labels, parse_times_ns, replay_csv
from sensors_sim.scenarios import ScenarioConfig, generate_scenarios
from tests.alerts.conftest import det
from wire.events import Severity

SMALL = ScenarioConfig(hours=12.0, mine_sensors=8, leak_monitors=4, city_stations=2, cems_units=1)


def _write(path: Path, rows: list[str], header: str = "time,device_id,metric,value,flag") -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_replay_flags_the_crossing_reading(tmp_path: Path) -> None:
    """A CSV with one crossing produces a threshold_alarm row at that reading's time."""
    rows = [f"2026-01-01T00:{m:02d}:00Z,mine/a/t1-1,ch4_pct_vol,0.30,N" for m in range(30)]
    rows[20] = "2026-01-01T00:20:00Z,mine/a/t1-1,ch4_pct_vol,1.05,N"
    src = _write(tmp_path / "r.csv", rows)
    out = tmp_path / "d.csv"
    result = replay_csv(src, DetectionSettings(), out=out)
    assert result.readings == 30
    got = list(csv.DictReader(out.read_text().splitlines()))
    alarms = [r for r in got if r["detector"] == "threshold_alarm"]
    assert [r["time"] for r in alarms] == ["2026-01-01T00:20:00Z"]
    assert alarms[0]["severity"] == "critical"
    assert alarms[0]["kind"] == "mine"
    assert alarms[0]["ended"] == "2026-01-01T00:23:00Z"


def test_replay_flags_a_late_over_threshold_reading_at_its_own_time(tmp_path: Path) -> None:
    """A crossing reading arriving after newer ones (a later block) still alarms, at its time."""
    rows = [f"2026-01-01T00:{m:02d}:00Z,mine/a/t1-1,ch4_pct_vol,0.30,N" for m in range(30)]
    rows.append("2026-01-01T00:12:30Z,mine/a/t1-1,ch4_pct_vol,1.05,N")
    src = _write(tmp_path / "r.csv", rows)
    out = tmp_path / "d.csv"
    result = replay_csv(src, DetectionSettings(), out=out, block_bytes=64)
    assert result.late == 1
    got = list(csv.DictReader(out.read_text().splitlines()))
    assert [(r["time"], r["detector"], r["ended"]) for r in got] == [
        ("2026-01-01T00:12:30Z", "threshold_alarm", "2026-01-01T00:12:30Z")
    ]


def test_scenario_station_drifting_against_its_neighbours_is_found(tmp_path: Path) -> None:
    """In the wuhai scenario only the drifting station gets neighbour_drift, inside its label."""
    cfg = ScenarioConfig(
        hours=60.0, mine_sensors=0, leak_monitors=0, city_stations=0, cems_units=0,
        neighbour_stations=5,
    )  # fmt: skip
    generate_scenarios(tmp_path, seed=5, cfg=cfg)
    labels = list(csv.DictReader((tmp_path / "labels.csv").read_text().splitlines()))
    assert [lab["label"] for lab in labels] == ["fault_neighbour_drift"]
    result = replay_csv(
        tmp_path / "readings.csv", DetectionSettings(), labels=tmp_path / "labels.csv"
    )
    found = [
        r for r in result.records if r.detector == "neighbour_drift" and r.state.value == "open"
    ]
    assert {r.device_id for r in found} == {labels[0]["device_id"]}
    assert result.quality is not None
    assert [s.recall for s in result.quality.by_label] == [1.0]


def test_replay_is_independent_of_block_size(tmp_path: Path) -> None:
    """Reading the CSV in tiny blocks gives exactly the same detections as one block."""
    generate_scenarios(tmp_path, seed=21, cfg=SMALL)
    src = tmp_path / "readings.csv"
    big = replay_csv(src, DetectionSettings())
    small = replay_csv(src, DetectionSettings(), block_bytes=200_000)
    assert big.onsets > 10
    assert [r.model_dump() for r in small.records] == [r.model_dump() for r in big.records]


def test_scenarios_are_deterministic_per_seed(tmp_path: Path) -> None:
    """The same seed writes the same files; another seed writes different ones."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    cfg = ScenarioConfig(hours=3.0, mine_sensors=2, leak_monitors=1, city_stations=1, cems_units=1)
    generate_scenarios(a, 4, cfg)
    generate_scenarios(b, 4, cfg)
    generate_scenarios(c, 5, cfg)
    assert (a / "readings.csv").read_bytes() == (b / "readings.csv").read_bytes()
    assert (a / "readings.csv").read_bytes() != (c / "readings.csv").read_bytes()
    header = (a / "labels.csv").read_text().splitlines()[0]
    assert header == "device_id,start,end,label,expect,magnitude,reach"


def test_labels_score_recall_delay_and_false_alarms(tmp_path: Path) -> None:
    """Scoring on a generated set finds the releases quickly and few false alarms."""
    generate_scenarios(tmp_path, seed=33, cfg=ScenarioConfig(hours=24.0))
    result = replay_csv(
        tmp_path / "readings.csv", DetectionSettings(), labels=tmp_path / "labels.csv"
    )
    q = result.quality
    assert q is not None
    releases = [s for s in q.by_label if s.label.startswith("release") or s.label == "outburst"]
    events = sum(s.events for s in releases)
    detected = sum(s.detected for s in releases)
    assert events > 20
    assert detected / events >= 0.9
    assert q.false_alarms_per_device_day * 7 <= 1.0
    assert q.faults_reported_as_leaks <= max(1, q.fault_events // 10)


def test_time_formats(tmp_path: Path) -> None:
    """ISO with Z, +00:00, other offsets, naive UTC and epoch seconds all parse to UTC ns."""
    ref = int(np.datetime64("2026-01-01T00:00:00", "ns").astype(np.int64))
    got = parse_times_ns(
        [
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00+00:00",
            "2026-01-01T08:00:00+08:00",
            "2026-01-01T00:00:00",
            str(ref // 1_000_000_000),
        ]
    )
    assert got.tolist() == [ref] * 5
    with pytest.raises(ReplayError):
        parse_times_ns(["yesterday"])


def test_missing_columns_are_an_error(tmp_path: Path) -> None:
    """A CSV without a value column is refused with a clear error."""
    src = _write(tmp_path / "bad.csv", ["2026-01-01T00:00:00Z,a/b/c,x"], "time,device_id,metric")
    with pytest.raises(ReplayError, match="value"):
        replay_csv(src, DetectionSettings())


def test_cli_scenarios_then_replay(tmp_path: Path) -> None:
    """`ghgwatch scenarios` then `ghgwatch replay --labels` write files and print quality."""
    runner = CliRunner()
    res = runner.invoke(app, ["scenarios", "--out", str(tmp_path), "--seed", "3", "--hours", "6"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "det.csv"
    res = runner.invoke(
        app,
        [
            "replay", str(tmp_path / "readings.csv"), "--out", str(out),
            "--labels", str(tmp_path / "labels.csv"),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "false alarms" in res.output
    assert out.read_text().startswith("time,device_id,metric,kind,detector,severity,score")


def test_unknown_metric_with_kind_option_uses_generic_detector(tmp_path: Path) -> None:
    """Rows of an unknown metric get the generic anomaly detector."""
    rng = np.random.default_rng(1)
    vals = 100 + rng.standard_normal(2000)
    vals[1500:1600] += 15
    rows = [
        f"{1_700_000_000 + 60 * i},plant/a/pump-1,bearing_temp_c,{v:.3f},N"
        for i, v in enumerate(vals)
    ]
    src = _write(tmp_path / "g.csv", rows)
    result = replay_csv(src, DetectionSettings(), kind="generic")
    onsets = [r for r in result.records if r.detector == "anomaly" and r.state.value == "open"]
    assert len(onsets) == 1
    assert onsets[0].kind == "generic"


def test_every_paging_detection_on_a_labelled_fault_counts(tmp_path: Path) -> None:
    """Faults paged by any catalogue detector count, and regulatory crossings are told apart.

    A spike above the alarm level pages by its threshold_alarm (it must: the regulation acts
    on the reading); a release still open when a stuck fault starts pages as a leak; a plume
    on a drifting station pages nobody.
    """
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "device_id,start,end,label\n"
        f"m/a/t1-1,{t0.isoformat()},{(t0 + timedelta(seconds=60)).isoformat()},fault_spike\n"
        f"g/b/ch4-1,{t0.isoformat()},{(t0 + timedelta(hours=1)).isoformat()},fault_stuck\n"
        f"c/c/st-1,{t0.isoformat()},{(t0 + timedelta(hours=1)).isoformat()},fault_drift\n"
    )
    at = t0 + timedelta(seconds=10)
    onsets = [
        det(device="m/a/t1-1", detector="threshold_alarm", started_at=at),
        det(device="m/a/t1-1", detector="spike", severity=Severity.MAINTENANCE, started_at=at),
        det(
            device="g/b/ch4-1", detector="release", kind="leak", metric="ch4_ppm",
            started_at=t0 - timedelta(minutes=5),
        ),
        det(
            device="c/c/st-1", detector="plume", kind="city", metric="co2_ppm",
            severity=Severity.INFO, started_at=at,
        ),
    ]  # fmt: skip
    spans = dict.fromkeys(("m/a/t1-1", "g/b/ch4-1", "c/c/st-1"), (0, 86400 * 10**9))
    q = evaluate_labels(onsets, labels, spans)
    assert (q.fault_events, q.faults_paged, q.faults_reported_as_leaks) == (3, 2, 1)
    assert (q.fault_pages, q.fault_pages_regulatory) == (2, 1)
    summary = "\n".join(q.lines())
    assert "sensor faults that paged: 2/3 (2 paging detections: 1 regulatory-level" in summary
    assert "faults reported as leaks (paged with no regulatory level crossed): 1/3" in summary


def test_replay_summary_reports_a_faulty_reading_above_the_alarm_level(tmp_path: Path) -> None:
    """A labelled spike fault reading above the alarm level still alarms, and the summary says
    so: one paging detection on a fault, a regulatory crossing, no fault reported as a leak."""
    rows = [f"2026-01-01T00:{m:02d}:00Z,mine/a/t1-1,ch4_pct_vol,0.30,N" for m in range(40)]
    rows[20] = "2026-01-01T00:20:00Z,mine/a/t1-1,ch4_pct_vol,1.20,N"
    src = _write(tmp_path / "r.csv", rows)
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "device_id,start,end,label\nmine/a/t1-1,2026-01-01T00:20:00Z,2026-01-01T00:20:00Z,"
        "fault_spike\n"
    )
    result = replay_csv(src, DetectionSettings(), labels=labels)
    q = result.quality
    assert q is not None
    assert (q.fault_events, q.faults_paged, q.fault_pages, q.fault_pages_regulatory) == (1, 1, 1, 1)
    assert q.faults_reported_as_leaks == 0
