"""Every SQL query of the provisioned dashboards runs on a migrated database and returns rows."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

from core.settings import DbSettings, DetectionSettings
from dashboards import DASHBOARD_UIDS, build_dashboards, dashboard_json
from processors.detection import CemsAggregator
from processors.storage import migrate

INTERVAL = "1m"
# Dashboards over issued quarterly reports, whose queries run on a database with reports.
REPORT_DASHBOARDS = frozenset({"ghgwatch-quarterly"})
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _dashboards(repo_root: Path) -> dict[str, dict[str, Any]]:
    folder = repo_root / "deploy" / "grafana" / "dashboards"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside collapsed rows


def _queries(board: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(title, panel or annotation, target) for every query the dashboard runs."""
    for panel in _panels(board):
        for target in panel.get("targets", []):
            yield panel["title"], panel, target
    for annotation in board.get("annotations", {}).get("list", []):
        if annotation.get("target"):
            yield f"annotation {annotation['name']}", annotation, annotation["target"]


def _seconds(interval: str) -> int:
    m = re.fullmatch(r"(\d+)([smhd])", interval.strip().strip("'\""))
    assert m, f"unsupported interval {interval!r}"
    return int(m.group(1)) * _UNITS_S[m.group(2)]


def _call_args(sql: str, start: int) -> tuple[list[str], int]:
    """Arguments of the macro call whose '(' is at ``start``; returns (args, end index)."""
    depth, args, cur = 0, [], []
    for i in range(start, len(sql)):
        ch = sql[i]
        if ch == "(":
            depth += 1
            if depth == 1:
                continue
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(cur).strip())
                return [a for a in args if a], i + 1
        elif ch == "," and depth == 1:
            args.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    raise AssertionError(f"unbalanced macro call in {sql!r}")


def expand(sql: str, t_from: datetime, t_to: datetime, variables: dict[str, list[str]]) -> str:
    """Expand Grafana's PostgreSQL macros and template variables the way Grafana does."""
    frm = f"'{t_from.isoformat().replace('+00:00', 'Z')}'"
    to = f"'{t_to.isoformat().replace('+00:00', 'Z')}'"
    sql = sql.replace("$__interval_ms", str(_seconds(INTERVAL) * 1000))
    sql = sql.replace("$__interval", INTERVAL)
    sql = sql.replace("$__timeFrom()", frm).replace("$__timeTo()", to)

    def render(name: str, args: list[str]) -> str:
        if name == "timeFilter":
            return f"{args[0]} BETWEEN {frm} AND {to}"
        if name in {"timeGroup", "timeGroupAlias"}:
            s = _seconds(args[1])
            expr = f"floor(extract(epoch from {args[0]})/{s})*{s}"
            return f'{expr} AS "time"' if name == "timeGroupAlias" else expr
        raise AssertionError(f"macro $__{name} is not expanded by this test")

    while (m := re.search(r"\$__(\w+)\(", sql)) is not None:
        args, end = _call_args(sql, m.end() - 1)
        sql = sql[: m.start()] + render(m.group(1), args) + sql[end:]

    def var(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in variables, f"unknown variable ${name}"
        values = variables[name]
        assert values, f"variable ${name} has no values"
        return ", ".join("'" + v.replace("'", "''") + "'" for v in values)

    sql = _VAR.sub(var, sql)
    assert "$" not in sql, f"unexpanded macro or variable left in: {sql}"
    return sql


async def _seed(conn: asyncpg.Connection, now: datetime) -> None:
    """Devices of every kind with readings every minute for 2 hours, detections (one open,
    one cleared per device), derived series and dead letters.

    The CEMS unit's derived series are what the detection engine's CEMS aggregator makes of
    the seeded readings, as the detection service would store them.
    """
    devices = [
        ("baotou/kundulun/pic-01", "city", None, {"co2_ppm": 425.0, "ch4_ppb": 2010.0}),
        ("ordos/kangbashi/pic-02", "city", None, {"co2_ppm": 418.0, "ch4_ppm": 2.0}),
        (
            "beifang/dalate/unit-3",
            "cems",
            None,
            {
                "co2_pct_vol": 12.0,
                "flow_m3_h": 1.6e6,
                "flue_temp_c": 50.0,
                "static_pressure_pa": -200.0,
                "baro_pressure_pa": 88_000.0,
                "moisture_pct_vol": 10.0,
                "o2_pct_vol": 6.0,
                "load_mw": 540.0,
            },
        ),
        ("ordos-coal/buertai/t1-0302", "mine", "T1", {"ch4_pct_vol": 1.2}),
        ("ordos-coal/buertai/main-01", "mine", "main_return", {"ch4_pct_vol": 0.3}),
        ("changqing/sulige-cs7/ch4-04", "leak", None, {"ch4_ppm": 2.5}),
    ]
    start = now - timedelta(hours=2)
    rows = []
    for device_id, _kind, _loc, metrics in devices:
        for minute in range(120):
            ts = start + timedelta(minutes=minute, seconds=7)
            for metric, value in metrics.items():
                flag = "C" if minute % 30 == 0 else "N"
                rows.append((ts, device_id, metric, value + minute * 0.001, flag, ts, ts))
    await conn.copy_records_to_table(
        "readings",
        records=rows,
        columns=["ts", "device_id", "metric", "value", "flag", "received_at", "stored_at"],
    )
    for device_id, kind, loc, metrics in devices:
        network, site, device = device_id.split("/")
        await conn.execute(
            """INSERT INTO devices (device_id, kind, network, site, device, location,
                                    first_seen, last_seen, last_reading_ts, readings_count)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)""",
            device_id,
            kind,
            network,
            site,
            device,
            loc,
            start,
            now,
            120 * len(metrics),
        )
    # One device that went silent an hour ago.
    await conn.execute(
        """INSERT INTO devices (device_id, kind, network, site, device, location, first_seen,
                                last_seen, last_reading_ts, readings_count)
           VALUES ('baotou/donghe/pic-07', 'city', 'baotou', 'donghe', 'pic-07', NULL,
                   $1, $2, $2, 3)""",
        start,
        now - timedelta(hours=1),
    )
    for device_id, kind, loc, metrics in devices:
        network, site, _device = device_id.split("/")
        metric = next(iter(metrics))
        for n, (ended, severity) in enumerate([(None, "critical"), (now, "warning")]):
            await conn.execute(
                """INSERT INTO detections (detection_id, state, device_id, kind, network, site,
                       metric, detector, severity, location, started_at, ended_at, score,
                       value, threshold)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, 'threshold_alarm', $8, $9, $10, $11,
                           3.0, $12, 1.0)""",
                f"{device_id}-{n}",
                "open" if ended is None else "cleared",
                device_id,
                kind,
                network,
                site,
                metric,
                severity,
                loc,
                now - timedelta(minutes=30 + n),
                ended,
                metrics[metric],
            )
    derived = []
    for hour in range(3):
        ts = now.replace(minute=0, second=0) - timedelta(hours=hour)
        for device_id in ("baotou/kundulun/pic-01", "ordos/kangbashi/pic-02"):
            derived.append((ts, device_id, "co2_ppm_enhancement", 12.5, True))
    derived += _engine_derived([r for r in rows if r[1] == "beifang/dalate/unit-3"])
    await conn.copy_records_to_table(
        "derived", records=derived, columns=["ts", "device_id", "series", "value", "valid"]
    )
    # Positions of some sites (the region map); the silent city station has none.
    for device_id, lat, lon in [
        ("baotou/kundulun/pic-01", 40.657, 109.840),
        ("ordos/kangbashi/pic-02", 39.608, 109.781),
        ("beifang/dalate/unit-3", 40.400, 110.030),
        ("ordos-coal/buertai/t1-0302", 39.600, 110.200),
    ]:
        await conn.execute(
            "UPDATE devices SET lat = $2, lon = $3 WHERE device_id = $1", device_id, lat, lon
        )
    await _seed_alerts(conn, now)
    for i, (reason, detail) in enumerate(
        [("malformed_json", "Invalid JSON: EOF"), ("metric_not_for_kind", "co2_pct_vol")]
    ):
        at = now - timedelta(minutes=10 + i)
        await conn.execute(
            """INSERT INTO dead_letters (mqtt_topic, device_id, reason, detail, payload,
                                         payload_sha256, received_at, last_received_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $7)""",
            "ghg/v1/city/ordos/kangbashi/pic-09/data",
            "ordos/kangbashi/pic-09",
            reason,
            detail,
            b"{bad",
            bytes([i]) * 32,
            at,
        )


async def _seed_alerts(conn: asyncpg.Connection, now: datetime) -> None:
    """An open, an acknowledged and a resolved alert with their events and notifications."""
    for n, (state, severity, device_id) in enumerate(
        [
            ("open", "critical", "ordos-coal/buertai/t1-0302"),
            ("acknowledged", "warning", "beifang/dalate/unit-3"),
            ("resolved", "info", "baotou/kundulun/pic-01"),
        ]
    ):
        network, site, _device = device_id.split("/")
        started = now - timedelta(minutes=40 - n)
        alert_id = await conn.fetchval(
            """INSERT INTO alerts (group_key, rule, grp, network, site, kind, severity, state,
                   device_id, metric, detector, value, threshold, started_at, last_seen_at,
                   acknowledged_at, acknowledged_by)
               VALUES ($1, 'r', 'g', $2, $3, 'mine', $4, $5, $6, 'ch4_pct_vol',
                       'threshold_alarm', 1.2, 1.0, $7, $7, $8, $9)
               RETURNING alert_id""",
            f"group-{n}",
            network,
            site,
            severity,
            state,
            device_id,
            started,
            started if state == "acknowledged" else None,
            "duty" if state == "acknowledged" else None,
        )
        await conn.execute(
            "INSERT INTO alert_events (alert_id, at, event, actor) VALUES ($1, $2, 'opened', 'x')",
            alert_id,
            started,
        )
        await conn.execute(
            """INSERT INTO alert_outbox (idempotency_key, alert_id, event, target, channel,
                   payload, status, next_attempt_at, created_at)
               VALUES ($1, $2, 'opened', 'duty', 'webhook', '{}', $3, $4, $4)""",
            f"k-{n}",
            alert_id,
            ["pending", "sent", "failed"][n],
            started,
        )


def _engine_derived(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The derived rows the engine's CEMS aggregator computes from (ts, device, metric, value,
    flag, ...) readings, NaN stored as NULL like the detection service does."""
    streams = sorted({(r[1], r[2]) for r in rows})
    index = {s: i for i, s in enumerate(streams)}
    rows = sorted(rows, key=lambda r: r[0])
    _events, out = CemsAggregator(DetectionSettings()).process(
        [d for d, _ in streams],
        [m for _, m in streams],
        np.asarray([index[(r[1], r[2])] for r in rows], np.intp),
        np.asarray([int(r[0].timestamp()) * 1_000_000_000 for r in rows], np.int64),
        np.asarray([r[3] for r in rows], np.float64),
        np.asarray([r[4] == "N" for r in rows], np.bool_),
    )
    return [
        (
            datetime.fromtimestamp(ts / 1e9, UTC),
            device,
            series,
            value if np.isfinite(value) else None,
            valid,
        )
        for ts, device, series, value, valid in zip(
            out.ts_ns.tolist(),
            out.device_id,
            out.series,
            out.value.tolist(),
            out.valid.tolist(),
            strict=True,
        )
    ]


@pytest.fixture
async def seeded_db(pg_url: str) -> str:
    """A migrated database with readings of every kind and a few dead letters."""
    await migrate(pg_url, DbSettings())
    conn = await asyncpg.connect(pg_url)
    try:
        await _seed(conn, datetime.now(UTC).replace(microsecond=0))
    finally:
        await conn.close()
    return pg_url


def test_committed_dashboards_match_the_builder(repo_root: Path) -> None:
    """deploy/grafana/dashboards holds exactly what the dashboards package builds (no drift)."""
    folder = repo_root / "deploy" / "grafana" / "dashboards"
    built = build_dashboards()
    assert sorted(built) == sorted(DASHBOARD_UIDS)
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(built)
    for uid, board in built.items():
        committed = (folder / f"{uid}.json").read_text(encoding="utf-8")
        assert committed == dashboard_json(board), (
            f"{uid}.json drifted: run ghgwatch grafana export"
        )


def test_dashboards_use_only_provisioned_datasources(repo_root: Path) -> None:
    """Every panel, variable and annotation names a datasource uid that is provisioned."""
    import yaml

    prov = yaml.safe_load(
        (repo_root / "deploy/grafana/provisioning/datasources/ghgwatch.yaml").read_text()
    )
    uids = {ds["uid"] for ds in prov["datasources"]}
    pg = next(ds for ds in prov["datasources"] if ds["type"] == "grafana-postgresql-datasource")
    assert pg["jsonData"]["timescaledb"] is True
    for uid, board in _dashboards(repo_root).items():
        for panel in _panels(board):
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] in uids, (uid, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in uids, (uid, panel["title"])
        for var in board["templating"]["list"]:
            assert var["datasource"]["uid"] in uids, (uid, var["name"])
        for annotation in board["annotations"].get("list", []):
            # Grafana's own annotation store (the alert annotations) needs no provisioning.
            builtin = annotation["datasource"] == {"type": "grafana", "uid": "-- Grafana --"}
            assert builtin or annotation["datasource"]["uid"] in uids, (uid, annotation["name"])


async def test_every_panel_and_variable_query_returns_rows(seeded_db: str, repo_root: Path) -> None:
    """Each dashboard variable and each SQL target, macros expanded, runs and returns rows."""
    t_to = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    t_from = t_to - timedelta(hours=3)
    conn = await asyncpg.connect(seeded_db)
    checked = 0
    try:
        for uid, board in _dashboards(repo_root).items():
            if uid in REPORT_DASHBOARDS:
                continue  # read issued reports: tests/dashboards/test_quarterly.py runs them
            variables: dict[str, list[str]] = {}
            for var in board["templating"]["list"]:
                sql = expand(var["query"], t_from, t_to, variables)
                values = [str(r[0]) for r in await conn.fetch(sql)]
                assert values, f"{uid}: variable ${var['name']} returned nothing"
                variables[var["name"]] = values  # "All", as the default selection is
                checked += 1
            for title, panel, target in _queries(board):
                if "rawSql" not in target:
                    # Prometheus, or a tag query of Grafana's annotation store: not SQL.
                    assert "expr" in target or target.get("type") == "tags", (uid, title)
                    continue
                frm = t_from
                if panel.get("timeFrom"):
                    frm = t_to - timedelta(seconds=_seconds(panel["timeFrom"]))
                sql = expand(target["rawSql"], frm, t_to, variables)
                try:
                    rows = await conn.fetch(sql)
                except asyncpg.PostgresError as exc:
                    pytest.fail(f"{uid} / {title}: {exc}\n{sql}")
                assert rows, f"{uid} / {title} returned no rows\n{sql}"
                if target["format"] == "time_series" and "time" in rows[0]:
                    assert all(r["time"] is not None for r in rows)
                checked += 1
    finally:
        await conn.close()
    assert checked >= 30


async def _panel_rows(
    db_url: str, repo_root: Path, uid: str, title: str, variables: dict[str, list[str]]
) -> list[asyncpg.Record]:
    """The rows of a panel's first query over the last 3 hours, variables as given."""
    board = _dashboards(repo_root)[uid]
    panel = next(p for p in _panels(board) if p["title"] == title)
    t_to = datetime.now(UTC) + timedelta(minutes=1)
    sql = expand(panel["targets"][0]["rawSql"], t_to - timedelta(hours=3), t_to, variables)
    conn = await asyncpg.connect(db_url)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


_CEMS_UNIT = {
    "network": ["beifang"],
    "site": ["dalate"],
    "device": ["beifang/dalate/unit-3"],
}


async def test_mine_alarm_table_lists_only_the_sensor_above_its_level(
    seeded_db: str, repo_root: Path
) -> None:
    """The mine table lists the T1 sensor at 1.2 % (alarm 1.0 %), not the main-return one."""
    variables = {
        "network": ["ordos-coal"],
        "site": ["buertai"],
        "location": ["T1", "main_return"],
        "device": ["ordos-coal/buertai/t1-0302", "ordos-coal/buertai/main-01"],
    }
    rows = await _panel_rows(
        seeded_db, repo_root, "ghgwatch-mine", "Sensors at or above their alarm level", variables
    )
    assert [(r["sensor"], r["location"], r["alarm_pct_vol"]) for r in rows] == [
        ("ordos-coal/buertai/t1-0302", "T1", 1.0)
    ]
    assert rows[0]["max_ch4_pct_vol"] > 1.2


async def test_cems_emission_rate_follows_the_hj75_formula(seeded_db: str, repo_root: Path) -> None:
    """The CEMS table's CO2 t/h equals C × Q_sn computed by hand for the seeded unit."""
    rows = await _panel_rows(
        seeded_db, repo_root, "ghgwatch-cems", "Units over the selected range", _CEMS_UNIT
    )
    assert len(rows) == 1
    # Seeded values drift by 0.001 per minute; the hand value uses the mid-range ones.
    c_mg_m3 = 12.06 * 10_000 * 1.965
    q_sn = 1.6e6 * 273.15 / (273.15 + 50.06) * (88_000.06 - 199.94) / 101_325 * (1 - 0.1006)
    expected_t_h = c_mg_m3 * q_sn * 1e-9
    assert rows[0]["co2_t_h"] == pytest.approx(expected_t_h, rel=1e-3)
    assert rows[0]["intensity_g_kwh"] == pytest.approx(
        rows[0]["co2_t_h"] * 1000 / rows[0]["load_mw"], rel=1e-9
    )


async def test_cems_panels_show_the_engine_derived_series(seeded_db: str, repo_root: Path) -> None:
    """The CEMS emission rate is the engine's number: the table and the minute graph read the
    derived series the detection service stores, not a second copy of the HJ 75 formula."""
    conn = await asyncpg.connect(seeded_db)
    try:
        engine = await conn.fetchrow(
            """SELECT avg(value) AS g, count(*) AS n, sum(value) AS total FROM derived
               WHERE series = 'co2_mass_t_h' AND valid"""
        )
    finally:
        await conn.close()
    table = await _panel_rows(
        seeded_db, repo_root, "ghgwatch-cems", "Units over the selected range", _CEMS_UNIT
    )
    graph = await _panel_rows(
        seeded_db, repo_root, "ghgwatch-cems", "CO2 mass emission rate", _CEMS_UNIT
    )
    assert engine["n"] > 100
    assert table[0]["co2_t_h"] == pytest.approx(engine["g"], rel=1e-12)
    assert table[0]["valid_minutes"] == engine["n"]
    # $__interval is one minute here: one graph point per engine minute.
    assert sum(r["co2_t_h"] for r in graph) == pytest.approx(engine["total"], rel=1e-12)


async def test_region_map_places_sites_and_tells_reporting_from_silent(
    seeded_db: str, repo_root: Path
) -> None:
    """The region overview's map has one marker per positioned site, in its region, with how
    many of its devices report; the table counts the sources with no position too."""
    everything = {"region": ["Baotou", "Ordos", "unplaced"], "kind": ["city", "cems", "mine"]}
    sites = await _panel_rows(seeded_db, repo_root, "ghgwatch-region", "Sites", everything)
    by_site = {r["site"]: r for r in sites}
    assert set(by_site) == {
        "baotou/kundulun",
        "ordos/kangbashi",
        "beifang/dalate",
        "ordos-coal/buertai",
    }
    assert by_site["beifang/dalate"]["region"] == "Ordos"  # south of the Yellow River
    assert by_site["baotou/kundulun"]["region"] == "Baotou"
    assert by_site["baotou/kundulun"]["latitude"] == pytest.approx(40.657)
    assert all(r["reporting"] >= 1 for r in sites)
    table = await _panel_rows(
        seeded_db, repo_root, "ghgwatch-region", "Sources per region and kind", everything
    )
    baotou_city = next(r for r in table if (r["region"], r["kind"]) == ("Baotou", "city"))
    assert (baotou_city["sources"], baotou_city["reporting"]) == (2, 1)  # pic-07 is silent
    assert baotou_city["without_position"] == 1


async def test_alerts_dashboard_counts_open_and_acknowledged(
    seeded_db: str, repo_root: Path
) -> None:
    """Open and acknowledged are counted apart; the active table leaves out resolved ones."""
    nets = {"network": ["ordos-coal", "beifang", "baotou"]}
    opened = await _panel_rows(seeded_db, repo_root, "ghgwatch-alerts", "Open", nets)
    acked = await _panel_rows(seeded_db, repo_root, "ghgwatch-alerts", "Acknowledged", nets)
    active = await _panel_rows(seeded_db, repo_root, "ghgwatch-alerts", "Active alerts", nets)
    assert [(r["severity"], r["open"]) for r in opened] == [("critical", 1)]
    assert [(r["severity"], r["acknowledged"]) for r in acked] == [("warning", 1)]
    assert [r["state"] for r in active] == ["open", "acknowledged"]
    assert active[1]["acknowledged_by"] == "duty"


def test_alert_annotations_show_on_the_dashboards_and_cems_intensity_has_its_benchmark(
    repo_root: Path,
) -> None:
    """Every dashboard but pipeline health and completeness queries the alert annotations
    by the tags the alert service writes (kind dashboards by their kind too); the CEMS
    intensity panel has its unit and dashed benchmark lines; pipeline health shows lag and
    the outbox."""
    boards = _dashboards(repo_root)
    for uid in ("ghgwatch-city", "ghgwatch-cems", "ghgwatch-mine", "ghgwatch-region"):
        [query] = [a for a in boards[uid]["annotations"]["list"] if a["name"] == "ghgwatch alerts"]
        assert query["target"]["type"] == "tags"
        assert {"ghgwatch", "alert"} <= set(query["target"]["tags"])
    mine_tags = boards["ghgwatch-mine"]["annotations"]["list"]
    assert any("kind:mine" in a.get("target", {}).get("tags", []) for a in mine_tags)
    [intensity] = [
        p for p in _panels(boards["ghgwatch-cems"]) if p["title"].startswith("Hourly emission")
    ]
    defaults = intensity["fieldConfig"]["defaults"]
    assert defaults["unit"] == "suffix: g CO2/kWh"
    steps = [s["value"] for s in defaults["thresholds"]["steps"]]
    assert steps[1:] == [pytest.approx(285.0 * 2.66), pytest.approx(352.0 * 2.66)]
    assert defaults["custom"]["thresholdsStyle"]["mode"] == "dashed"
    titles = {p["title"] for p in _panels(boards["ghgwatch-pipeline"])}
    assert {"Consumer lag", "Alert outbox waiting", "Alert notifications by outcome"} <= titles
