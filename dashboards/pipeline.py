"""The pipeline-health dashboard: rejected messages, ingest rate, delay, bridge and broker."""

# ruff: noqa: S608  # the SQL here is Grafana query text built from constants, not executed

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b

from dashboards.panels import (
    READINGS_1M,
    W_HALF,
    Board,
    DeviceFilter,
    Level,
    series_sql,
)

__all__ = ["pipeline_dashboard"]

_DESCRIPTION = (
    "Rejected messages by reason, ingest rates, storage delay, and the bridge's and the"
    " MQTT broker's own counters (Prometheus)."
)


def pipeline_dashboard() -> dash_b.Dashboard:
    """The pipeline dashboard: the database's view of ingest, then the services' metrics."""
    devices = DeviceFilter(None, [Level("kind", "Source kind", "{t}kind")])
    b = Board("ghgwatch-pipeline", "Pipeline health", _DESCRIPTION, ["pipeline"], devices)
    b.row("Database")
    b.graph(
        "Rejected messages by reason",
        "Distinct rejected messages per reason, by when each was first received"
        " (repeats of the same bytes on the same topic count once).",
        series_sql("dead_letters", "received_at", "reason", "count(*) AS rejected"),
        unit="none",
    )
    b.graph(
        "Ingest rate by source kind",
        "Readings stored per second, by device time, from the 1-minute aggregates.",
        series_sql(
            READINGS_1M,
            "r.bucket",
            "d.kind",
            "sum(r.n_all) / ($__interval_ms / 1000.0) AS readings_per_s",
            devices.where(),
        ),
        unit="reqps",
    )
    b.graph(
        "Delay from device to database (p50, p95)",
        "stored_at − device time of raw readings (the last 15 minutes only: it reads the"
        " raw table).",
        f"""
        SELECT $__timeGroupAlias(r.ts, $__interval),
               percentile_cont(0.5) WITHIN GROUP (
                 ORDER BY extract(epoch FROM r.stored_at - r.ts)) AS p50_s,
               percentile_cont(0.95) WITHIN GROUP (
                 ORDER BY extract(epoch FROM r.stored_at - r.ts)) AS p95_s
        FROM readings r JOIN devices d USING (device_id)
        WHERE $__timeFilter(r.ts) AND {devices.where()}
        GROUP BY 1 ORDER BY 1
        """,
        unit="s",
        time_from="15m",
    )
    b.table(
        "Latest rejected messages",
        "The newest 100 rejected messages with the reason the device was told.",
        """
        SELECT last_received_at, device_id, mqtt_topic, reason, detail, occurrences
        FROM dead_letters
        WHERE $__timeFilter(last_received_at)
        ORDER BY last_received_at DESC
        LIMIT 100
        """,
        width=W_HALF,
    )
    b.stat(
        "Alert notifications by outcome",
        "Rows of the alert outbox per status: pending and sending are on their way; failed"
        " ones gave up after alerts.max_attempts.",
        """
        SELECT o.status, count(*) AS notifications
        FROM alert_outbox o
        GROUP BY 1 ORDER BY 1
        """,
        unit="none",
        width=W_HALF,
    )
    b.row("Bridge and broker (Prometheus)")
    b.prom_graph(
        "Bridge messages",
        "MQTT messages the bridges received, accepted and rejected, per second.",
        [
            ("sum(rate(ghgwatch_bridge_messages_received_total[5m]))", "received"),
            ("sum(rate(ghgwatch_bridge_messages_accepted_total[5m]))", "accepted"),
            (
                "sum by (reason) (rate(ghgwatch_bridge_messages_rejected_total[5m]))",
                "rejected {{reason}}",
            ),
        ],
        unit="reqps",
    )
    b.prom_graph(
        "Messages dropped",
        "Anything above zero is data lost: the broker's $SYS/broker/publish/messages/dropped"
        " (queue or in-flight limits, via mosquitto-exporter) and the bridges' own drops.",
        [
            ("sum(rate(broker_publish_messages_dropped[5m]))", "broker dropped"),
            (
                "sum by (reason) (rate(ghgwatch_bridge_messages_dropped_total[5m]))",
                "bridge dropped {{reason}}",
            ),
        ],
        unit="reqps",
    )
    b.prom_graph(
        "Ack latency and in-flight",
        "p99 from MQTT receive to acknowledgement (after Kafka confirmed), and messages"
        " received but not yet acknowledged.",
        [
            (
                "histogram_quantile(0.99, sum by (le)"
                " (rate(ghgwatch_bridge_ack_latency_seconds_bucket[5m])))",
                "p99 ack latency (s)",
            ),
            ("sum(ghgwatch_bridge_in_flight_messages)", "in flight"),
        ],
        unit="short",
    )
    b.row("Consumers and outbox (Prometheus)")
    b.prom_graph(
        "Consumer lag",
        "Records each consumer group has not consumed yet, per service and topic (high"
        " watermark − position). A line that keeps rising: that service cannot keep up.",
        [
            (f"sum by (topic) (ghgwatch_{svc}_consumer_lag)", f"{svc} {{{{topic}}}}")
            for svc in ("processor", "detector", "alerts")
        ],
        unit="short",
    )
    b.prom_graph(
        "Alert outbox waiting",
        "Outbox rows waiting to be sent or being sent (as of the alert service's last sweep),"
        " and notifications sent and failed per second, by notifier.",
        [
            ("sum(ghgwatch_alerts_outbox_pending)", "waiting"),
            (
                "sum by (notifier) (rate(ghgwatch_alerts_notifications_sent_total[5m]))",
                "sent {{notifier}}",
            ),
            (
                "sum by (notifier) (rate(ghgwatch_alerts_notifications_failed_total[5m]))",
                "failed {{notifier}}",
            ),
        ],
        unit="short",
    )
    return b.dashboard
