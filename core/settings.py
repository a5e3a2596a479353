"""The one typed, frozen settings object for every ghgwatch service.

Sources, highest priority first: keyword arguments (the CLI), ``GHGWATCH_*`` environment
variables (nested with ``__``, e.g. ``GHGWATCH_KAFKA__BOOTSTRAP=host:9092``), an optional
TOML file (``--config FILE`` or ``GHGWATCH_CONFIG``), then the defaults below. Only the CLI
builds a :class:`Settings`; everything else receives it (or one of its sections) as an argument.

A service URL left unset (``None``) means "no external service": ``ghgwatch up`` starts an
embedded stand-in for it, and the single-service commands fall back to the standard local
address (see :meth:`Settings.resolved`).
"""

from __future__ import annotations

import hashlib
import re
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, cast
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core.errors import ConfigurationError
from wire.detectors import DETECTORS, DetectorSpec, detector_spec, unknown_detector_message
from wire.schemas import MineLocation, SourceKind

__all__ = [
    "AlertRoute",
    "AlertRule",
    "AlertsSettings",
    "CemsSite",
    "CemsSiteSettings",
    "ConsoleSettings",
    "ConsumerSettings",
    "DbSettings",
    "DetectionSettings",
    "GatewaySettings",
    "Hj212Code",
    "Hj212Logger",
    "IngestSettings",
    "KafkaSettings",
    "LevelThresholds",
    "LogSettings",
    "MetricsSettings",
    "MqttSettings",
    "NotifierTarget",
    "ProcessorSettings",
    "RegistrySettings",
    "ReportSettings",
    "Settings",
    "TargetsSettings",
    "TopicRoot",
    "describe_validation_error",
    "load_settings",
]

_PG_PREFIXES = ("postgresql://", "postgres://")

LOCAL_MQTT_URL = "mqtt://127.0.0.1:1883"
LOCAL_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
LOCAL_DB_URL = "postgresql://postgres@127.0.0.1:5432/ghgwatch"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Files holding the random id systemd / dbus give an OS installation when it is set up.
_MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
_CLIENT_ID_PREFIX = "ghgwatch-bridge-"
_CLIENT_ID_HEX = 20  # 80 bits of the digest: not guessable, short enough for any broker


def _installation_client_id() -> str:
    """The bridge's default MQTT client id: stable per installation, not guessable.

    A constant default (it was ``ghgwatch-bridge-1``, printed in the README) lets anyone
    with a device credential connect under it and take over the bridge's persistent
    session on a broker that does not bind ids to usernames. This one is a digest of the
    machine's random installation id (``/etc/machine-id``) and host name, so the same host
    gets the same id at every start (the broker keeps its session) and no device can guess
    it. Without a machine id the host name and MAC address are used. Two bridges on one host
    must still set ``mqtt.client_id`` each.
    """
    secret = b""
    for path in _MACHINE_ID_FILES:
        try:
            secret = path.read_bytes().strip()
        except OSError:
            continue
        if secret:
            break
    if not secret:
        secret = uuid.getnode().to_bytes(8, "big")
    digest = hashlib.sha256(b"ghgwatch-bridge\0" + secret + b"\0" + socket.gethostname().encode())
    return _CLIENT_ID_PREFIX + digest.hexdigest()[:_CLIENT_ID_HEX]


def _check_topic_root(root: str) -> str:
    """Refuse an MQTT topic root that cannot prefix a topic; return it unchanged.

    Topics are ``<root>/...``: a wildcard would make a subscription match other roots' topics
    (and is not allowed in a published topic at all), a leading, trailing or doubled ``/``
    adds an empty level no device publishes under, and whitespace or NUL is a typo brokers
    treat as part of the name.
    """
    problems = []
    if not root:
        problems.append("it is empty")
    if "+" in root or "#" in root:
        problems.append("it has an MQTT wildcard ('+' or '#')")
    if root.startswith("/") or root.endswith("/"):
        problems.append("it starts or ends with '/'")
    if "//" in root:
        problems.append("it has an empty level ('//')")
    if "\x00" in root:
        problems.append("it has a NUL character")
    if any(ch.isspace() for ch in root):
        problems.append("it has whitespace")
    if problems:
        raise ValueError(f"MQTT topic root {root!r} is not usable: {'; '.join(problems)}")
    return root


# An MQTT topic root: one or more non-empty levels without wildcards, e.g. "ghg/v1".
TopicRoot = Annotated[str, AfterValidator(_check_topic_root)]


class MqttSettings(_Section):
    """MQTT broker connection and the bridge's subscription."""

    url: str | None = Field(
        default=None, description="mqtt://host:port (or mqtts://); None: embedded/local broker"
    )
    username: str | None = None
    password: SecretStr | None = None
    client_id: str = Field(
        default_factory=_installation_client_id,
        description="Fixed per bridge process so the broker keeps its persistent session;"
        " default: derived from this installation's machine id (stable, not guessable)",
    )
    share_group: str = Field(
        default="",
        description='"" (default): plain subscriptions, which Mosquitto keeps with the'
        " bridge's session across a broker restart; bridges split the load by topic_filters."
        " A group name: one shared subscription per filter, bridges in the group split the load"
        " by message, but Mosquitto 2.0 forgets shared subscriptions on restart and drops what"
        " is published until the bridge re-subscribes (measured: 17 of 2,006 readings in a 5 s"
        " test; 25,000-34,000 of 360,000 at 8,000/s)",
    )
    topic_filters: tuple[str, ...] = Field(
        default=("#",),
        min_length=1,
        description="MQTT topic filters below topic_root this bridge subscribes to (plain"
        ' subscriptions unless share_group is set). The default "#" takes every topic under'
        " the root, so a topic off the data scheme is dead-lettered as bad_topic, not lost."
        " To split the load, give each bridge a disjoint share that together cover the"
        ' scheme, e.g. ["city/#", "cems/#"] and ["mine/#", "leak/#"], or named networks'
        ' ["mine/ordos-coal/#"]; only a bridge holding "#" sees topics of unknown kinds',
    )

    @field_validator("topic_filters")
    @classmethod
    def _check_filters(cls, filters: tuple[str, ...]) -> tuple[str, ...]:
        for flt in filters:
            levels = flt.split("/")
            if (
                not flt
                or flt.startswith(("/", "$"))
                or "#" in levels[:-1]
                or any(("#" in lvl or "+" in lvl) and len(lvl) > 1 for lvl in levels)
            ):
                raise ValueError(
                    f"topic filter {flt!r} is not an MQTT filter below the root"
                    ' (e.g. "#", "city/#", "mine/ordos-coal/#")'
                )
        return filters

    protocol: Literal["5", "3.1.1"] = Field(
        default="5",
        description='MQTT version the bridge and simulator speak; "3.1.1" for brokers without'
        " v5 (amqtt): persistent session via clean_session=False, no ReceiveMaximum",
    )
    topic_root: TopicRoot = Field(default="ghg/v1", description="Root of the wire topic scheme")
    qos: Literal[0, 1] = 1
    keepalive_s: int = Field(default=30, ge=5)
    session_expiry_s: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="How long the broker keeps the bridge's session (and its queued readings)",
    )
    receive_maximum: int = Field(
        default=2000,
        ge=1,
        le=65535,
        description="Unacknowledged QoS 1 messages the broker may have in flight to the bridge;"
        " the bridge's backpressure bound",
    )
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)


class KafkaSettings(_Section):
    """Kafka cluster, topics and client tuning shared by producers and consumers."""

    bootstrap: str | None = Field(
        default=None, description="host:port[,host:port]; None: embedded/local broker"
    )
    readings_topic: str = "ghg.readings"
    deadletter_topic: str = "ghg.deadletter"
    events_topic: str = Field(
        default="ghg.device-events", description="Device events: last wills (bridge → detector)"
    )
    detections_topic: str = Field(
        default="ghg.detections", description="Detections (OPEN/CLEARED) for alerting"
    )
    partitions: int = Field(default=6, ge=1, description="Partitions for topics ghgwatch creates")
    replication_factor: int = Field(default=1, ge=1)
    linger_ms: int = Field(default=5, ge=0)
    max_batch_bytes: int = Field(default=1_048_576, ge=16_384)
    request_timeout_s: float = Field(default=30.0, gt=0)
    enable_idempotence: bool = Field(
        default=False,
        description="Idempotent producer; needs a broker that supports it (Apache Kafka does)",
    )
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None


class DbSettings(_Section):
    """PostgreSQL / TimescaleDB connection and storage policies."""

    url: SecretStr | None = Field(
        default=None, description="postgresql://user:pass@host:port/db; None: embedded/local"
    )

    @field_validator("url")
    @classmethod
    def _url_is_a_postgres_url(cls, url: SecretStr | None) -> SecretStr | None:
        """Refuse what asyncpg would misread (and then echo, password included, in an error).

        A URL without a scheme is taken as a DSN whose parts land in the database name; a
        ``/`` or ``@`` in an unencoded password splits the URL elsewhere. The messages name
        the problem, never the URL.
        """
        if url is None:
            return None
        text = url.get_secret_value()
        parts = urlsplit(text)
        if not text.startswith(_PG_PREFIXES):
            raise ValueError("must start with postgresql:// (or postgres://)")
        if "@" in parts.path or "@" in parts.query:
            raise ValueError(
                "the user name or password contains a reserved character (/ @ : ? #):"
                " percent-encode it, e.g. / as %2F"
            )
        try:
            _ = parts.port
        except ValueError:
            raise ValueError(
                "the port is not a number (or the password holds a reserved character:"
                " percent-encode it, e.g. / as %2F)"
            ) from None
        return url

    pool_min: int = Field(default=1, ge=1)
    pool_max: int = Field(default=4, ge=1)
    command_timeout_s: float = Field(default=30.0, gt=0)
    start_timeout_s: float = Field(
        default=600.0,
        ge=0,
        description="How long a service waits for its database at start (down, restarting,"
        " not created yet) before it gives up",
    )
    chunk_interval: str = Field(default="1 day", description="Hypertable chunk interval")
    compress_after: str = Field(default="7 days", description="Compress chunks older than this")
    raw_retention: str | None = Field(
        default="400 days",
        description="Drop raw readings older than this (the coal-mine rule keeps real-time data"
        " >= 3 months); None keeps everything",
    )
    aggregate_retention: str | None = Field(
        default=None, description="Drop 1-minute aggregates older than this; None keeps them"
    )


# One declaration per consumer knob: each service's section below only picks its defaults.
_GroupId = Annotated[str, Field(description="Kafka consumer group")]
_BatchMax = Annotated[int, Field(ge=1, description="Kafka records per poll")]
_PollTimeoutMs = Annotated[int, Field(ge=1, description="Longest wait of one poll")]
_CommitIntervalS = Annotated[
    float, Field(ge=0, description="Commit durable offsets at most this often; 0: every batch")
]


class ConsumerSettings(_Section):
    """One Kafka consumer group's tuning; the processor, detector and alert sections extend it.

    Every ghgwatch consumer runs the same loop (:class:`adapters.ConsumerLoop`); a service's
    section adds its own knobs and may choose other defaults, never other names.
    """

    group_id: _GroupId = "ghgwatch-processor"
    batch_max: _BatchMax = 20_000
    poll_timeout_ms: _PollTimeoutMs = 500
    commit_interval_s: _CommitIntervalS = 1.0
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    session_timeout_ms: int = Field(
        default=10_000,
        ge=6_000,
        description="Kafka group session timeout; tansu admits a new member after about half",
    )
    fetch_max_wait_ms: int | None = Field(
        default=None, ge=0, description="Broker-side fetch wait; None keeps the client's default"
    )


class ProcessorSettings(ConsumerSettings):
    """The Kafka consumer that stores readings and dead letters."""

    batch_max_readings: int = Field(
        default=200_000,
        ge=1,
        description="About this many readings per write: polls take fewer records when"
        " records carry many readings (a gateway's batches), so a backlog is stored in"
        " transactions of bounded size and memory",
    )
    backpressure_pause_s: float = Field(default=2.0, gt=0)


class MetricsSettings(_Section):
    """Prometheus exposition."""

    enabled: bool = True
    host: str = "127.0.0.1"
    bridge_port: int = Field(default=9641, ge=0, le=65535, description="0: any free port")
    processor_port: int = Field(default=9642, ge=0, le=65535)
    detector_port: int = Field(default=9644, ge=0, le=65535)
    alerts_port: int = Field(default=9645, ge=0, le=65535)


class LogSettings(_Section):
    """Structured logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["console", "json"] = "console"


AlertSeverity = Literal["info", "maintenance", "warning", "critical"]


class AlertRule(_Section):
    """Turns matching detections into alerts; the first rule that matches wins.

    Empty match lists match anything. ``severity`` None keeps the detection's own severity.
    Detections with the same ``group`` at one site (or one device, ``group_by="device"``) join
    one alert while it is active. ``detectors`` must be names from the detector catalogue
    (:data:`wire.detectors.DETECTORS`): a rule naming a detector nothing emits would never
    match, so it is refused.
    """

    name: str
    detectors: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    severity: AlertSeverity | None = None
    group: str = "detections"
    group_by: Literal["site", "device"] = "site"

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [n for n in names if detector_spec(n) is None]
        if unknown:
            raise ValueError("; ".join(unknown_detector_message(n) for n in unknown))
        return names


def _catalogue_rules() -> tuple[AlertRule, ...]:
    """One rule per (group, severity) of the detector catalogue, in catalogue order.

    So every detector the engine can emit has a rule with its catalogue severity: threshold
    alarm, power cut and gas release critical (one ``gas`` alert per site), anomaly and CEMS
    intensity warnings, a city plume information, and every sensor or data fault a
    ``maintenance`` ticket per device.
    """
    members: dict[tuple[str, str], list[DetectorSpec]] = {}
    for spec in DETECTORS:
        # per-kind severities: a rule of its own
        sev = f"{spec.severity}/{spec.name}" if spec.severity_by_kind else str(spec.severity)
        members.setdefault((spec.group, sev), []).append(spec)
    groups = [g for g, _ in members]
    rules = []
    for (group, severity), specs in members.items():
        name = group if groups.count(group) == 1 else f"{group}_{severity}"
        rules.append(
            AlertRule(
                name=name,
                detectors=tuple(s.name for s in specs),
                # a detector whose severity depends on the kind (no_data) keeps the one the
                # detector stamped from its settings (DetectionSettings.no_data_severity)
                severity=None
                if specs[0].severity_by_kind
                else cast("AlertSeverity", severity),  # Severity's values are these
                group=group,
                group_by=specs[0].group_by,
            )
        )
    return tuple(rules)


DEFAULT_ALERT_RULES: tuple[AlertRule, ...] = _catalogue_rules()


class NotifierTarget(_Section):
    """One place a notification can go (a DingTalk robot, a mailbox, a siren topic...)."""

    name: str
    type: Literal["webhook", "dingtalk", "wecom", "email", "mqtt"]
    url: str | None = Field(
        default=None,
        description="webhook/robot URL (with access_token/key); mqtt: broker URL, None = mqtt.url",
    )
    secret: SecretStr | None = Field(
        default=None, description="DingTalk signing secret (SEC...); webhook: HMAC-SHA256 key"
    )
    email_to: tuple[str, ...] = ()
    topic: TopicRoot | None = Field(default=None, description="mqtt: topic root, None = alerts'")
    language: Literal["zh", "en", "both"] = "both"


class AlertRoute(_Section):
    """Which targets hear about which alerts; every matching route is used.

    Empty match lists match anything. ``escalation`` lists the next contacts in order: each
    escalation of an unacknowledged alert re-notifies ``targets`` plus the next one.
    """

    name: str
    networks: tuple[str, ...] = ()
    sites: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    severities: tuple[AlertSeverity, ...] = ("warning", "critical")
    targets: tuple[str, ...] = ()
    escalation: tuple[str, ...] = ()


# Operations' defaults: a critical alert re-pages after 10 min, a warning after 30 min;
# information and maintenance tickets page nobody, so they never escalate.
_ESCALATE_AFTER_S: dict[AlertSeverity, float] = {"warning": 1800.0, "critical": 600.0}


class AlertsSettings(ConsumerSettings):
    """The alert service (detections -> alerts -> notifications) and the on-call API.

    Its consumer group reads ``kafka.detections_topic``; offsets are committed after every
    batch (``commit_interval_s`` 0) and the broker waits at most ``fetch_max_wait_ms`` for a
    fetch, which bounds the detection-to-alert latency.
    """

    group_id: _GroupId = "ghgwatch-alerts"
    batch_max: _BatchMax = 500
    poll_timeout_ms: _PollTimeoutMs = 200
    commit_interval_s: _CommitIntervalS = 0.0
    fetch_max_wait_ms: int | None = Field(
        default=50, ge=0, description="Broker-side fetch wait: bounds detection->alert latency"
    )
    rules: tuple[AlertRule, ...] = DEFAULT_ALERT_RULES
    routes: tuple[AlertRoute, ...] = ()
    notifiers: tuple[NotifierTarget, ...] = ()
    resolve_hold_s: float = Field(
        default=120.0, ge=0, description="All detections must stay cleared this long (hysteresis)"
    )
    escalate_after_s: dict[AlertSeverity, float] = Field(
        default_factory=lambda: dict(_ESCALATE_AFTER_S),
        description="Per severity: an open alert not acknowledged this long after it opened"
        " (then after each escalation) is re-notified and escalated to the route's next"
        " contact; severities not listed never escalate. One number (the old form) is the"
        " critical alerts' time alone",
    )
    ack_url_template: str | None = Field(
        default=None,
        description="Acknowledgement link put in every notification, e.g."
        " https://oncall.example/alerts/{alert_id}/ack ({alert_id} is replaced)",
    )
    max_escalations: int = Field(default=3, ge=0)
    silence_default_s: float = Field(default=3600.0, gt=0)
    tick_s: float = Field(default=1.0, gt=0, description="Auto-resolve / escalation check")
    dispatch_enabled: bool = Field(default=True, description="Send outbox rows in this process")
    dispatch_poll_s: float = Field(default=1.0, gt=0)
    dispatch_batch: int = Field(default=50, ge=1)
    dispatch_concurrency: int = Field(default=8, ge=1)
    send_timeout_s: float = Field(default=10.0, gt=0)
    lease_s: float = Field(
        default=10.0,
        gt=0,
        description="A claimed outbox row's lease, renewed every third of it while it is sent;"
        " a crashed sender's row is due again after this",
    )
    retry_base_s: float = Field(default=2.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=10, ge=1)
    timezone: str = "Asia/Shanghai"
    grafana_url: str | None = Field(
        default=None, description="Grafana base URL: panel links and annotations"
    )
    grafana_token: SecretStr | None = None
    grafana_dashboards: dict[str, str] = Field(
        default_factory=lambda: {
            "city": "ghgwatch-city",
            "cems": "ghgwatch-cems",
            "mine": "ghgwatch-mine",
        },
        description="Dashboard uid per source kind, for links (others: dashboard search)",
    )
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "ghgwatch@localhost"
    smtp_starttls: bool = False
    mqtt_topic_root: TopicRoot = "ghg/v1/alerts"
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=9643, ge=0, le=65535)
    api_tokens: dict[str, SecretStr] = Field(
        default_factory=dict, description="name -> bearer token; the name is recorded as actor"
    )

    @field_validator("escalate_after_s", mode="before")
    @classmethod
    def _escalation_times(cls, value: object) -> object:
        # The old single value meant "critical alerts escalate after this"; keep that meaning.
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            return {"critical": value}
        return value

    @field_validator("escalate_after_s")
    @classmethod
    def _escalation_times_positive(
        cls, value: dict[AlertSeverity, float]
    ) -> dict[AlertSeverity, float]:
        bad = sorted(sev for sev, s in value.items() if not s > 0)
        if bad:
            raise ValueError(f"escalate_after_s must be > 0 s (not for {', '.join(bad)})")
        return value

    @field_validator("ack_url_template")
    @classmethod
    def _ack_url_names_the_alert(cls, value: str | None) -> str | None:
        if value is not None and "{alert_id}" not in value:
            raise ValueError("ack_url_template must contain {alert_id}")
        return value


class MethaneLevels(_Section):
    """Coal-mine CH4 levels for one sensor location class (% vol); None: no such level."""

    alarm_pct_vol: float | None = Field(description="Alarm at or above this")
    cut_pct_vol: float | None = Field(default=None, description="Power cut at or above this")
    restore_pct_vol: float | None = Field(default=None, description="Power restored below this")


def _mine_levels() -> dict[str, MethaneLevels]:
    # Coal Mine Safety Regulations 2022 / AQ 1029 (DOMAIN.md); "other" is our assumption.
    m = MethaneLevels
    return {
        "T0": m(alarm_pct_vol=1.0, cut_pct_vol=1.5, restore_pct_vol=1.5),
        "T1": m(alarm_pct_vol=1.0, cut_pct_vol=1.5, restore_pct_vol=1.0),
        "T2": m(alarm_pct_vol=1.0, cut_pct_vol=1.0, restore_pct_vol=1.0),
        "T3": m(alarm_pct_vol=0.5, cut_pct_vol=0.5, restore_pct_vol=0.5),
        "T4": m(alarm_pct_vol=0.5, cut_pct_vol=0.5, restore_pct_vol=0.5),
        "T5": m(alarm_pct_vol=1.0, cut_pct_vol=1.5, restore_pct_vol=1.0),
        "T6": m(alarm_pct_vol=1.0, cut_pct_vol=1.0, restore_pct_vol=1.0),
        "T7": m(alarm_pct_vol=2.5, cut_pct_vol=2.5, restore_pct_vol=2.5),
        "T8": m(alarm_pct_vol=1.0, cut_pct_vol=1.0, restore_pct_vol=1.0),
        "main_return": m(alarm_pct_vol=0.75),
        "wing_return": m(alarm_pct_vol=0.75),
        "other": m(alarm_pct_vol=1.0, cut_pct_vol=1.5, restore_pct_vol=1.0),
    }


def _cems_benchmarks() -> dict[str, float]:
    # Supply coal consumption, g standard coal per kWh (MISSION.md, plan box 3).
    return {
        "1000mw_usc": 285.0,
        "600mw_usc": 293.0,
        "600mw_sc": 300.0,
        "600mw_subc": 314.0,
        "300mw_sc": 308.0,
        "300mw_subc": 323.0,
        "200mw_uhp": 352.0,
        "cfb_600mw_wet": 306.0,
        "cfb_600mw_air": 325.0,
        "cfb_300mw_wet": 318.0,
        "cfb_300mw_air": 338.0,
    }


def _no_data_severity() -> dict[str, AlertSeverity]:
    spec = detector_spec("no_data")
    assert spec is not None, "no_data is in the catalogue"
    return {k: cast("AlertSeverity", str(v)) for k, v in spec.severity_by_kind}


class CemsSiteSettings(_Section):
    """What a CEMS unit does not send but its totals depend on: pressure, basis, aux rate, class.

    Barometric pressure is taken, per minute, from the unit's own ``baro_pressure_pa``
    reading; without one, from ``baro_pa``; else from ``altitude_m`` through the standard
    atmosphere (:func:`wire.cems.pressure_at_altitude_pa`); with none of the three the minute
    is invalid (never a sea-level default: at Baotou/Ordos altitudes that overstates the mass
    rate by 13-19 %).
    """

    baro_pa: float | None = Field(
        default=None, gt=30_000, lt=110_000, description="Site barometric pressure, Pa"
    )
    altitude_m: float | None = Field(
        default=None, ge=-500, le=6_000, description="Site altitude (standard atmosphere), m"
    )
    co2_basis: Literal["dry", "wet"] = Field(
        default="dry",
        description="Basis of the CO2 analyser: wet readings are made dry with the measured"
        " moisture, C_dry = C_wet / (1 - X_sw)",
    )
    aux_power_frac: float | None = Field(
        default=None,
        ge=0,
        lt=0.5,
        description="Auxiliary power rate (share of gross generation used in the plant);"
        " None: detection.cems_default_aux_power_frac",
    )
    unit_class: str | None = Field(
        default=None, description="Benchmark class (detection.cems_benchmarks_g_sce_kwh keys)"
    )


@dataclass(frozen=True, slots=True)
class CemsSite:
    """A CEMS unit's resolved site configuration (see :meth:`DetectionSettings.cems_site`)."""

    baro_pa: float | None
    altitude_m: float | None
    co2_basis: Literal["dry", "wet"]
    aux_power_frac: float
    aux_configured: bool
    unit_class: str | None


class DetectionSettings(ConsumerSettings):
    """Windowed detection: regulatory levels, detector parameters, the detector's consumer."""

    group_id: _GroupId = "ghgwatch-detector"
    warmup_records: int = Field(
        default=5_000,
        ge=0,
        description="Records re-read per partition before the committed offset to rebuild"
        " window state after a restart or rebalance (their detections are not re-emitted)",
    )
    excluded_flags: tuple[str, ...] = Field(
        default=("F", "M", "D", "C", "B"),
        description="HJ 212 flags kept out of detection and averages (stored all the same)",
    )
    mine_levels: dict[str, MethaneLevels] = Field(
        default_factory=_mine_levels,
        description="Per location class: T0-T8, main_return, wing_return, other",
    )
    sensor_levels: dict[str, MethaneLevels] = Field(
        default_factory=dict, description="device_id -> levels overriding its location class"
    )
    alarm_hysteresis_pct_vol: float = Field(
        default=0.05,
        ge=0,
        description="An alarm clears below its level minus this; power is restored below"
        " min(restore level, cut level minus this)",
    )
    gap_s: float = Field(default=300.0, gt=0, description="Silence longer than this is a gap")
    late_grace_s: float = Field(
        default=0.0,
        ge=0,
        description="Per-stream reorder grace: readings are held until the stream has seen one"
        " this much newer, then merged in event-time order; older ones are late (level checks"
        " only). 0 = no hold-back, so a threshold crossing is flagged at once",
    )
    gap_factor: float = Field(
        default=5.0, gt=1, description="... and longer than this many typical intervals"
    )
    stuck_s: float = Field(default=3600.0, gt=0, description="Unchanged value this long: stuck")
    stuck_min_samples: int = Field(
        default=10,
        ge=2,
        description="... and over at least this many readings (hourly means repeat by chance)",
    )
    duty_pause_max_s: float = Field(
        default=2 * 3600.0,
        gt=0,
        description="Longest silence that can be a regular pause of a duty cycle (inlet"
        " switching, hourly means, calibration cycles); a learned pause is not a gap",
    )
    duty_pause_factor: float = Field(
        default=1.5,
        gt=1,
        description="A silence up to this many times the stream's learned regular pause is"
        " part of its sampling pattern, not a gap",
    )
    duty_pause_recur_s: float = Field(
        default=26 * 3600.0,
        gt=0,
        description="... while it recurs: the previous regular pause ended at most this long"
        " before (a daily calibration cycle included)",
    )
    ticket_episode_s: float = Field(
        default=24 * 3600.0,
        ge=0,
        description="Maintenance detections of one device and detector closer than this to"
        " the previous occurrence belong to the same problem episode: one ticket",
    )
    no_data_floor_s: float = Field(
        default=600.0,
        gt=0,
        description="A device silent (wall clock) longer than this, and than its learned"
        " sampling pattern allows, raises no_data until its data is back",
    )
    no_data_factor: float = Field(
        default=5.0,
        gt=1,
        description="... the pattern allows this many typical intervals, or its learned"
        " regular pause times duty_pause_factor",
    )
    no_data_check_s: float = Field(
        default=1.0, gt=0, description="How often the wall-clock liveness check runs"
    )
    no_data_severity: dict[str, AlertSeverity] = Field(
        default_factory=_no_data_severity,
        description="Severity of no_data per source kind (a silent mine sensor is an alarm"
        " condition: critical)",
    )
    baseline_tau_s: float = Field(default=1800.0, gt=0, description="Baseline time constant")
    scale_tau_s: float = Field(default=3600.0, gt=0, description="Noise-scale time constant")
    warmup_samples: int = Field(default=30, ge=2, description="Samples of plain averaging first")
    warmup_s: float = Field(
        default=3600.0, ge=0, description="Data a stream needs before trend detectors arm"
    )
    generic_warmup_samples: int = Field(
        default=300,
        ge=2,
        description="Generic metrics (unknown time scale) also arm after this many samples,"
        " if sooner than warmup_s",
    )
    multivariate: bool = Field(
        default=True,
        description="A device with two or more co-sampled generic metrics is also scored as one"
        " vector (Hotelling T2 of its smoothed level); its per-metric anomaly events then give"
        " way to it. false: per-metric anomaly events only",
    )
    multivariate_alpha: float = Field(
        default=1e-3,
        gt=0,
        lt=1,
        description="T2 opens beyond the chi-square upper quantile of this tail probability",
    )
    multivariate_close_alpha: float = Field(
        default=0.1, gt=0, lt=1, description="... and may clear below this one's quantile"
    )
    multivariate_close_samples: int = Field(
        default=20, ge=1, description="Consecutive vectors below the clear quantile to clear"
    )
    multivariate_tau_samples: float = Field(
        default=600.0,
        gt=1,
        description="After the warm-up, mean and covariance follow the device over this many"
        " vectors (frozen while open, for at most generic_warmup_samples)",
    )
    multivariate_shrinkage: float = Field(
        default=0.1, ge=0, le=1, description="Covariance shrinkage towards its diagonal"
    )
    multivariate_smoothing: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Weight of the newest vector in the smoothed level the T2 scores (EWMA;"
        " 1 = no smoothing); the mean and covariance are those of the smoothed level",
    )
    huber_c: float = Field(default=2.5, gt=0, description="Residual clip (sigmas) for updates")
    z_open: float = Field(
        default=6.0, gt=0, description="Robust z of the residual that opens a trend event"
    )
    z_close: float = Field(default=2.0, ge=0, description="Robust z below which it may clear")
    open_samples: int = Field(
        default=3, ge=1, description="Consecutive samples beyond z_open to open (persistence)"
    )
    close_samples: int = Field(
        default=6, ge=1, description="Consecutive samples below z_close (or a level) to clear"
    )
    level_clear_samples: int = Field(
        default=3, ge=1, description="Consecutive readings below a restore level to clear it"
    )
    rebaseline_s: float = Field(
        default=4 * 3600.0,
        gt=0,
        description="An event open this long lets the baseline adapt again (a new normal)",
    )
    spike_z: float = Field(default=8.0, gt=0, description="Robust z of a one-sample spike")
    sigma_floor: dict[str, float] = Field(
        default_factory=lambda: {
            "ch4_pct_vol": 0.01,
            "ch4_ppm": 0.05,
            "ch4_ppb": 2.0,
            "co2_ppm": 0.5,
            "co2_pct_vol": 0.05,
        },
        description="Lowest noise scale per metric (sensor resolution); others: relative",
    )
    min_rise: dict[str, float] = Field(
        default_factory=lambda: {
            "ch4_pct_vol": 0.05,
            "ch4_ppm": 0.5,
            "ch4_ppb": 20.0,
            "co2_ppm": 5.0,
        },
        description="Smallest rise above baseline worth a release/plume detection",
    )
    plausible: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "ch4_pct_vol": (-0.1, 100.0),
            "ch4_ppm": (0.5, 1_000_000.0),
            "ch4_ppb": (500.0, 1e9),
            "co2_ppm": (300.0, 5_000.0),
            "co2_pct_vol": (0.0, 25.0),
            "o2_pct_vol": (0.0, 21.5),
            "moisture_pct_vol": (0.0, 60.0),
        },
        description="Plausible range per metric; outside it a reading is a sensor fault",
    )
    drift_limit: dict[str, float] = Field(
        default_factory=lambda: {
            "ch4_pct_vol": 0.1,
            "ch4_ppm": 1.0,
            "ch4_ppb": 50.0,
            "co2_ppm": 15.0,
        },
        description="Baseline this far from its slow reference is drift (a calibration fault)",
    )
    drift_tau_s: float = Field(default=7 * 86_400.0, gt=0, description="Drift reference")
    drift_persist_s: float = Field(default=2 * 3600.0, gt=0, description="Drift must last")
    drift_smooth_s: float = Field(
        default=86_400.0, gt=0, description="City background smoothing before drift checks"
    )
    neighbour_drift_limit: dict[str, float] = Field(
        default_factory=lambda: {"co2_ppm": 5.0, "ch4_ppb": 30.0},
        description="City stations: baseline offset from the median of the same network's"
        " other stations, beyond its learned normal offset, that counts as drift (per metric)",
    )
    neighbour_step_s: float = Field(
        default=600.0, gt=0, description="Neighbour comparison every this much event time"
    )
    neighbour_min_stations: int = Field(
        default=3, ge=3, description="Stations of a network reporting for a comparison"
    )
    neighbour_persist_s: float = Field(
        default=3600.0, gt=0, description="Neighbour drift must last this long"
    )
    neighbour_smooth_s: float = Field(
        default=12 * 3600.0, gt=0, description="Offset from the neighbours smoothed over this"
    )
    neighbour_learn_s: float = Field(
        default=86_400.0, gt=0, description="Time a station's normal offset is learned first"
    )
    neighbour_stale_s: float = Field(
        default=3600.0, gt=0, description="A station silent this long is left out of comparisons"
    )
    background_quantile: float = Field(
        default=0.05, gt=0, lt=0.5, description="City background: rolling low percentile"
    )
    background_tau_s: float = Field(default=6 * 3600.0, gt=0)
    cems_unit_class: dict[str, str] = Field(
        default_factory=dict, description="CEMS device_id -> benchmark class (keys below)"
    )
    cems_benchmarks_g_sce_kwh: dict[str, float] = Field(default_factory=_cems_benchmarks)
    co2_t_per_t_sce: float = Field(
        default=2.66, gt=0, description="t CO2 per t standard coal burnt (benchmark conversion)"
    )
    intensity_tolerance: float = Field(
        default=0.10, ge=0, description="Hourly intensity above benchmark x (1 + this): warn"
    )
    min_valid_minutes: int = Field(default=45, ge=1, le=60, description="HJ 76 valid hour")
    min_samples_per_minute: int = Field(default=1, ge=1)
    cems_sites: dict[str, CemsSiteSettings] = Field(
        default_factory=dict,
        description="CEMS device_id -> site configuration (pressure or altitude, analyser"
        " basis, auxiliary power rate, class); read through cems_site()",
    )
    cems_default_aux_power_frac: float = Field(
        default=0.06,
        ge=0,
        lt=0.5,
        description="Auxiliary power rate of a unit without its own (coal units: 4-8 %);"
        " reports say when this default was used",
    )
    zero_flow_m3_h: float = Field(default=1_000.0, ge=0, description="Flow at/below: no flow")
    co2_present_pct_vol: float = Field(default=1.0, ge=0)
    load_present_mw: float = Field(default=10.0, ge=0)
    max_co2_plus_o2_pct_vol: float = Field(
        default=22.0, gt=0, description="Dry flue gas of air combustion cannot exceed ~21 %"
    )
    cems_step_frac: float = Field(
        default=0.3, gt=0, description="Minute mass rate jump (fraction) that is abnormal ..."
    )
    cems_load_steady_frac: float = Field(
        default=0.05, ge=0, description="... while the load changed less than this fraction"
    )

    def cems_site(self, device_id: str) -> CemsSite:
        """The site configuration of one CEMS unit: the one lookup detection and reports use.

        Today it reads ``cems_sites`` (and the older ``cems_unit_class`` map for the class);
        the device registry can feed it later without changing its callers.

        Args:
            device_id: the unit's device id (``company/plant/unit``).

        Returns:
            Its pressure, altitude, analyser basis, auxiliary power rate and class.
        """
        site = self.cems_sites.get(device_id) or CemsSiteSettings()
        aux = site.aux_power_frac
        return CemsSite(
            baro_pa=site.baro_pa,
            altitude_m=site.altitude_m,
            co2_basis=site.co2_basis,
            aux_power_frac=self.cems_default_aux_power_frac if aux is None else aux,
            aux_configured=aux is not None,
            unit_class=site.unit_class or self.cems_unit_class.get(device_id),
        )


def _completeness_required() -> dict[str, float]:
    # HJ 75-2017 asks CEMS for a quarterly valid-data capture rate of at least 90 %; the
    # other source kinds follow the same default until their operators agree on their own.
    return {"cems": 0.90, "city": 0.75, "mine": 0.95, "leak": 0.90}


class TargetsSettings(_Section):
    """Budgets, targets, baselines and the warning rules of the quarterly early warning.

    Plants are ``company/plant`` (the first two parts of a CEMS device id); regions are the
    league/city names of the plan (``Baotou``, ``Ordos``). Budgets and targets are annual
    tonnes of CO2. Warning levels (green < yellow < orange < red) of units, plants and
    regions: the projected year total over the budget or target reaching
    ``projection_yellow_ratio`` / ``projection_orange_ratio`` / ``projection_red_ratio``; the
    quarter's net intensity over its class benchmark reaching ``intensity_yellow_ratio`` /
    ``intensity_orange_ratio``; valid-hour completeness below the source kind's
    ``completeness_required`` raises the level to at least yellow, below
    ``completeness_orange_frac`` of it to at least orange. The worst rule decides.
    """

    unit_budget_t: dict[str, float] = Field(
        default_factory=dict, description="CEMS device_id -> annual CO2 budget (allowance), t"
    )
    plant_budget_t: dict[str, float] = Field(
        default_factory=dict, description="company/plant -> annual CO2 budget, t"
    )
    plant_region: dict[str, str] = Field(
        default_factory=dict, description="company/plant -> region (league/city)"
    )
    region_target_t: dict[str, float] = Field(
        default_factory=dict, description="Region -> the year's CO2 target for its CEMS units, t"
    )
    city_baseline_ppm: dict[str, float] = Field(
        default_factory=dict,
        description="City or city network -> CO2 baseline for urban enhancement, ppm",
    )
    mine_allowed_exceedance_h: dict[str, float] = Field(
        default_factory=dict,
        description="Mine site (network/site) -> hours above the alarm level allowed a quarter",
    )
    completeness_required: dict[str, float] = Field(
        default_factory=_completeness_required,
        description="Source kind (cems, city, mine, leak) or source -> required share of valid"
        " hours in the quarter (0-1). A source is a device id (network/site/device: a CEMS unit,"
        " a city station) or a site, plant or mine (network/site); the most specific key wins:"
        " the device, then its site or plant, then its kind. Kinds left out keep their default",
    )
    projection_min_days: int = Field(
        default=14,
        ge=2,
        description="Days with data the quarter needs before a year projection is made",
    )
    projection_yellow_ratio: float = Field(default=0.95, gt=0)
    projection_orange_ratio: float = Field(default=1.0, gt=0)
    projection_red_ratio: float = Field(default=1.10, gt=0)
    intensity_yellow_ratio: float = Field(default=1.0, gt=0)
    intensity_orange_ratio: float = Field(default=1.05, gt=0)
    completeness_orange_frac: float = Field(
        default=0.75,
        gt=0,
        le=1,
        description="Completeness below this fraction of the requirement: at least orange",
    )
    # HJ 75-2017 §12.2, missing data during maintenance and other abnormal periods: an invalid
    # or missing hour's emission is the maximum of a number of valid hours before its run,
    # by the quarter's valid-data capture rate and the run's length (reports.accounting).
    substitution_short_gap_h: int = Field(
        default=24,
        ge=1,
        description="HJ 75-2017 substitution: the longest run of invalid or missing hours of"
        " the short case",
    )
    substitution_short_lookback_h: int = Field(
        default=180,
        ge=1,
        description="... capture >= substitution_full_capture, short run: the maximum of"
        " this many valid hours before it",
    )
    substitution_lookback_h: int = Field(
        default=720,
        ge=1,
        description="... capture >= substitution_full_capture, longer run: the maximum of"
        " this many valid hours before it",
    )
    substitution_low_capture_lookback_h: int = Field(
        default=2160,
        ge=1,
        description="... capture below substitution_full_capture: the maximum of this many"
        " valid hours before the run",
    )
    substitution_full_capture: float = Field(
        default=0.90,
        gt=0,
        le=1,
        description="... the quarterly capture rate from which the 180/720-hour look-backs apply",
    )
    substitution_low_capture: float = Field(
        default=0.75,
        gt=0,
        le=1,
        description="... the capture rate where the standard's table ends (below it the"
        " 2,160-hour maximum is used and the hours are marked capture_below_75)",
    )

    @model_validator(mode="after")
    def _ordered(self) -> TargetsSettings:
        ratios = (self.projection_yellow_ratio, self.projection_orange_ratio)
        if not ratios[0] <= ratios[1] <= self.projection_red_ratio:
            raise ValueError("projection ratios must rise: yellow <= orange <= red")
        if self.intensity_yellow_ratio > self.intensity_orange_ratio:
            raise ValueError("intensity ratios must rise: yellow <= orange")
        if self.substitution_low_capture > self.substitution_full_capture:
            raise ValueError("substitution_low_capture must not exceed substitution_full_capture")
        return self

    @field_validator("completeness_required")
    @classmethod
    def _completeness_keys(cls, v: dict[str, float]) -> dict[str, float]:
        kinds = [k.value for k in SourceKind]
        segment = r"[a-z0-9_-]{1,64}"
        unknown = [
            k for k in v if k not in kinds and not re.fullmatch(rf"{segment}(/{segment}){{1,2}}", k)
        ]
        if unknown:
            raise ValueError(
                f"completeness_required keys {unknown} are neither a source kind"
                f" ({', '.join(kinds)}) nor a source id: a device (network/site/device) or a"
                " site, plant or mine (network/site), lower-case [a-z0-9_-] segments"
            )
        bad = sorted(k for k, x in v.items() if not 0 <= x <= 1)
        if bad:
            raise ValueError(f"completeness_required must be fractions 0-1: {bad}")
        return _completeness_required() | v


class ConsoleSettings(_Section):
    """The on-call web console (served by the on-call API at ``/console``) and the signed,
    expiring, single-purpose acknowledgement links every notification carries."""

    signing_key: SecretStr | None = Field(
        default=None,
        description="HMAC key of the acknowledgement links and console sessions (at least 32"
        " characters). Unset: a random key is made once and kept in the database"
        " (console_keys), shared by every process on that database",
    )
    public_url: str | None = Field(
        default=None,
        description="Base URL the on-call desk reaches the API at, for links in notifications"
        " (default http://{alerts.api_host}:{alerts.api_port})",
    )
    link_ttl_s: float = Field(
        default=86_400.0, gt=0, description="An acknowledgement link is refused after this"
    )
    session_ttl_s: float = Field(
        default=43_200.0, gt=0, description="A console log-in lasts this long (one shift)"
    )
    cookie_secure: bool = Field(
        default=False, description="Send the session cookie over HTTPS only (set behind TLS)"
    )

    @field_validator("signing_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("console.signing_key must be at least 32 characters")
        return value

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("console.public_url must start with http:// or https://")
        return value.rstrip("/") if value else value


class IngestSettings(_Section):
    """What the bridge admits beyond the wire contract."""

    require_registration: bool = Field(
        default=False,
        description="Reject (dead letter `unregistered`) readings of devices not in the"
        " registry or disabled there; the bridge keeps a cached view of the registry",
    )
    registry_refresh_s: float = Field(
        default=30.0,
        gt=0,
        description="Full reload of the bridge's registry view at least this often (changes"
        " also arrive at once via PostgreSQL NOTIFY); while the database is down the last"
        " view is kept",
    )
    registry_start_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="How long the bridge waits for its first registry view before it stops"
        " (it reads no message before it has one)",
    )


class RegistrySettings(_Section):
    """Device credentials: how `ghgwatch stations` applies them to the MQTT broker."""

    apply: Literal["dynsec", "files", "none"] = Field(
        default="dynsec",
        description='"dynsec": through the broker\'s dynamic-security plugin (at once,'
        ' others stay connected); "files": write password_file/acl_file for brokers without'
        ' it (the broker reloads them: reload_pid_file or reload_command); "none":'
        " registry only",
    )
    broker_url: str | None = Field(
        default=None, description="mqtt(s)://host:port of the broker to manage; None: mqtt.url"
    )
    admin_username: str = Field(
        default="ghgwatch-admin", description="dynamic-security admin (role: dynsec-admin)"
    )
    admin_password: SecretStr | None = None
    password_file: Path = Field(
        default=Path("deploy/mosquitto/mosquitto.passwd"), description='apply = "files"'
    )
    acl_file: Path = Field(default=Path("deploy/mosquitto/acl"), description='apply = "files"')
    reload_pid_file: Path | None = Field(
        default=None,
        description='apply = "files": after writing the files, send SIGHUP to the process whose'
        " id is in this file (mosquitto.conf pid_file, systemd PIDFile=); Mosquitto rereads"
        " them and drops connected clients whose credentials went",
    )
    reload_command: str | None = Field(
        default=None,
        description='apply = "files": after writing the files, run this (split like a shell'
        ' line, no shell), e.g. "docker compose kill -s HUP mosquitto" or "systemctl reload'
        ' mosquitto"; it must exit 0',
    )
    bridge_users: tuple[str, ...] = Field(
        default=("ghgwatch-bridge",), description="One MQTT user per bridge process"
    )
    notifier_user: str = Field(
        default="ghgwatch-notifier", description="The alert service's MQTT siren notifier"
    )
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _one_reload(self) -> RegistrySettings:
        if self.reload_pid_file is not None and self.reload_command is not None:
            raise ValueError("set registry.reload_pid_file or registry.reload_command, not both")
        if self.reload_command is not None and not self.reload_command.strip():
            raise ValueError("registry.reload_command is empty")
        return self


class LevelThresholds(_Section):
    """A figure's thresholds for the warning levels: at or above ``yellow`` is yellow, and so
    on; ``None`` leaves a level out (the figure never reaches it)."""

    yellow: float | None = None
    orange: float | None = None
    red: float | None = None

    def level(self, value: float | None) -> Literal["green", "yellow", "orange", "red"]:
        """The level ``value`` reaches (green for None or below every threshold)."""
        if value is None:
            return "green"
        for name in ("red", "orange", "yellow"):
            limit = getattr(self, name)
            if limit is not None and value >= limit:
                return name
        return "green"


def _min_valid_per_hour() -> dict[str, int]:
    return {"cems": 45, "city": 1, "mine": 1, "leak": 1}


def _primary_metric() -> dict[str, str]:
    return {"cems": "co2_pct_vol", "city": "co2_ppm", "mine": "ch4_pct_vol", "leak": "ch4_ppm"}


class ReportSettings(_Section):
    """The quarterly carbon early warning: schedule, validity rules and warning-level rules.

    The per-source targets (city baselines, a mine's allowed exceedance hours, the
    completeness required per source kind) are read from ``settings.targets`` when that
    section exists and fall back to the defaults here (see the README's quarterly report
    section).
    """

    timezone: str = Field(default="Asia/Shanghai", description="Quarters are local quarters")
    out_dir: Path | None = Field(
        default=None, description="Where issued reports are written; None: data_dir/reports"
    )
    issue_delay_h: float = Field(
        default=72.0, ge=0, description="Wait this long after a quarter closes for late data"
    )
    start_delay_s: float = Field(
        default=60.0, ge=0, description="The alert service's first check, after its start"
    )
    check_interval_s: float = Field(
        default=6 * 3600.0, gt=0, description="How often the alert service checks for a report"
    )
    revise_quarters: int = Field(
        default=1, ge=0, description="Closed quarters before the last one re-checked for revisions"
    )
    schedule_enabled: bool = Field(
        default=True, description="The alert service issues each closed quarter's report"
    )
    pdf: bool = Field(default=True, description="Also write a PDF when chromium is installed")
    publish_alerts: bool = Field(
        default=True, description="Scheduled reports raise orange and red warnings as alerts"
    )
    primary_metric: dict[str, str] = Field(
        default_factory=_primary_metric,
        description="Per source kind, the metric whose hours count for data completeness",
    )
    min_valid_readings_per_hour: dict[str, int] = Field(
        default_factory=_min_valid_per_hour,
        description="Per source kind, valid (flag N) readings an hour needs to be valid"
        " (CEMS: 45, the HJ 75 hourly rule on minute data)",
    )
    completeness_shortfall: LevelThresholds = Field(
        default=LevelThresholds(yellow=0.0001, orange=0.10, red=0.25),
        description="Required minus achieved share of valid hours -> level",
    )
    city_over_baseline_pct: LevelThresholds = Field(
        default=LevelThresholds(yellow=0.0001, orange=10.0, red=25.0),
        description="Mean enhancement above the city's baseline, percent -> level",
    )
    city_change_pct: LevelThresholds = Field(
        default=LevelThresholds(yellow=5.0, orange=10.0, red=25.0),
        description="Year-on-year rise of the mean enhancement, percent -> level"
        " (quarter-on-quarter: at most yellow)",
    )
    default_allowed_exceedance_h: float = Field(default=0.0, ge=0)
    exceedance_over_allowed_h: LevelThresholds = Field(
        default=LevelThresholds(yellow=0.0001, orange=1.0, red=8.0),
        description="Exceedance hours beyond the allowed hours -> level",
    )
    release_events: LevelThresholds = Field(
        default=LevelThresholds(yellow=1, orange=3, red=10),
        description="Gas-release events in the quarter at one site -> level",
    )
    ack_median_min: LevelThresholds = Field(
        default=LevelThresholds(yellow=15.0, orange=30.0, red=60.0),
        description="Median minutes to acknowledge a site's alerts -> level",
    )


_PASSWORD_HASH = re.compile(r"\$7\$[0-9]{1,8}\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*")


class Hj212Logger(_Section):
    """One HJ 212 data logger known to the gateway without the registry (``gateway.loggers``)."""

    kind: SourceKind
    network: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    site: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    device: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    password_hash: SecretStr = Field(
        description="`ghgwatch hj212 hash-password` of the logger's PW (never the PW itself)"
    )
    location: MineLocation | None = Field(default=None, description="mine sensor class")
    enabled: bool = True

    @field_validator("password_hash")
    @classmethod
    def _is_a_hash(cls, v: SecretStr) -> SecretStr:
        # the registry's form ($7$iterations$salt$digest); a PW pasted here by mistake, or a
        # hash of the gateway's earlier pbkdf2_sha256$ form, would otherwise refuse the
        # logger at its first frame as a bad password
        if not _PASSWORD_HASH.fullmatch(v.get_secret_value()):
            raise ValueError(
                "not a password hash: expected `$7$<iterations>$<salt>$<digest>` as"
                " `ghgwatch hj212 hash-password` prints it (hashes of the older"
                " `pbkdf2_sha256$...` form are no longer read: hash the PW again)"
            )
        return v


class Hj212Code(_Section):
    """What a pollutant code means (``gateway.codes``): the metric and a unit factor."""

    metric: str
    scale: float = Field(default=1.0, description="metric value = HJ 212 value x scale")
    kinds: tuple[SourceKind, ...] = Field(
        default=(), description="only for these source kinds (empty: every kind)"
    )


class GatewaySettings(_Section):
    """The HJ 212-2017 gateway (`ghgwatch hj212`): TCP server for data loggers."""

    host: str = "0.0.0.0"  # noqa: S104 - loggers connect from the field
    port: int = Field(default=9212, ge=0, le=65535, description="0: any free port")
    max_connections: int = Field(default=2000, ge=1)
    read_timeout_s: float = Field(
        default=300.0, gt=0, description="a connection silent this long is closed"
    )
    frame_timeout_s: float = Field(
        default=30.0, gt=0, description="a frame must arrive whole within this time"
    )
    frames_in_flight: int = Field(
        default=32,
        ge=1,
        description="frames of one connection read ahead of their Kafka confirmation",
    )
    timezone: str = Field(default="Asia/Shanghai", description="the loggers' clock (DataTime)")
    live_cns: tuple[str, ...] = Field(
        default=("2011",),
        description="uploads stored as readings (2011 real-time; 2051 for minute-only loggers)",
    )
    backfill_cn: str = Field(
        default="2051", pattern=r"^(2031|2051|2061)$", description="history asked for after a gap"
    )
    backfill_min_gap_s: float = Field(default=120.0, ge=0)
    backfill_max_s: float = Field(default=7 * 86400.0, gt=0, description="oldest gap asked for")
    metrics_port: int = Field(default=9646, ge=0, le=65535)
    state_file: Path | None = Field(
        default=None, description="last data time per logger; default <data_dir>/hj212-state.json"
    )
    loggers: dict[str, Hj212Logger] = Field(default_factory=dict, description="MN -> logger")
    codes: dict[str, Hj212Code] = Field(
        default_factory=dict, description="pollutant code -> metric, beyond the built-in table"
    )


class Settings(BaseSettings):
    """Every knob of ghgwatch, one frozen object."""

    model_config = SettingsConfigDict(
        env_prefix="GHGWATCH_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    data_dir: Path = Field(
        default=Path(".ghgwatch"),
        description="Where `ghgwatch up` keeps embedded services' data, logs and endpoints",
    )
    mqtt: MqttSettings = MqttSettings()
    kafka: KafkaSettings = KafkaSettings()
    db: DbSettings = DbSettings()
    processor: ProcessorSettings = ProcessorSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()
    alerts: AlertsSettings = AlertsSettings()
    detection: DetectionSettings = DetectionSettings()
    targets: TargetsSettings = TargetsSettings()
    console: ConsoleSettings = ConsoleSettings()
    ingest: IngestSettings = IngestSettings()
    registry: RegistrySettings = RegistrySettings()
    reports: ReportSettings = ReportSettings()
    gateway: GatewaySettings = GatewaySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _TOML_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def mqtt_url(self) -> str:
        """The MQTT URL to use, falling back to the standard local broker."""
        return self.mqtt.url or LOCAL_MQTT_URL

    def kafka_bootstrap(self) -> str:
        """The Kafka bootstrap servers to use, falling back to the standard local port."""
        return self.kafka.bootstrap or LOCAL_KAFKA_BOOTSTRAP

    def db_url(self) -> str:
        """The database URL to use, falling back to the standard local PostgreSQL."""
        return self.db.url.get_secret_value() if self.db.url is not None else LOCAL_DB_URL

    def with_endpoints(
        self, *, mqtt_url: str | None, kafka_bootstrap: str | None, db_url: str | None
    ) -> Settings:
        """Return a copy whose unset service URLs are filled in (used by ``ghgwatch up``)."""
        update: dict[str, Any] = {}
        if self.mqtt.url is None and mqtt_url is not None:
            update["mqtt"] = self.mqtt.model_copy(update={"url": mqtt_url})
        if self.kafka.bootstrap is None and kafka_bootstrap is not None:
            update["kafka"] = self.kafka.model_copy(update={"bootstrap": kafka_bootstrap})
        if self.db.url is None and db_url is not None:
            update["db"] = self.db.model_copy(update={"url": SecretStr(db_url)})
        return self.model_copy(update=update)


# The TOML path is a process-wide input chosen by the CLI before it builds Settings; keeping
# it out of the model means `Settings()` in tests never reads a file by surprise.
_TOML_FILE: dict[str, Path | None] = {"path": None}


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from (in priority order) overrides, environment and a TOML file.

    Args:
        config_file: optional TOML file with the same nesting as :class:`Settings`.
        **overrides: top-level fields given directly (the CLI's flags).

    Returns:
        The frozen settings object.
    """
    _TOML_FILE["path"] = config_file
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(describe_validation_error(exc)) from None
    finally:
        _TOML_FILE["path"] = None


def describe_validation_error(exc: ValidationError) -> str:
    """The settings' validation errors as lines of ``field: problem``, never the input values.

    pydantic's own text repeats each refused input (``input_value=[...]``), which for a
    token or a URL is the secret itself; ``from None`` at the caller keeps it out of
    tracebacks too.
    """
    lines = [
        f"{'.'.join(str(part) for part in err['loc']) or 'settings'}: "
        + err["msg"].removeprefix("Value error, ")
        for err in exc.errors(include_input=False, include_url=False, include_context=False)
    ]
    return "invalid configuration:\n  " + "\n  ".join(lines)
